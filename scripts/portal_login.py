"""Give an account its portal sign-in from the command line: the first login of a deployed stage (the
admin's), or a login for an account created before the portal existed. Everyone else is invited from
the portal (POST /accounts/{id}/children with an email).

    .venv/bin/python scripts/portal_login.py --stage prod invite admin ops@example.com
        mails a set-password link (valid 7 days) through SES from the stage's sender
    .venv/bin/python scripts/portal_login.py --local set atlas atlas@example.test
        asks for a password (12 characters or more) and sets it; no mail
A deployed stage needs AWS credentials and the stage's settings in the environment: CASCADE_MAIL_FROM
(the verified SES sender) and CASCADE_PORTAL_URL (where the link points) for `invite`.
"""
import argparse
import getpass
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from scripts.targets import use_local, use_stage  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local", action="store_true", help="the local stack started by make run")
    parser.add_argument("--stage", help="a deployed stage (infra/): its tables and secrets")
    parser.add_argument("command", choices=("invite", "set"))
    parser.add_argument("account_id")
    parser.add_argument("email")
    args = parser.parse_args(argv)
    if args.local:
        use_local()
    elif args.stage:
        use_stage(args.stage)
    from chalicelib.bootstrap import container
    from chalicelib.domain.identity import IdentityError
    account = container().store.account(args.account_id)
    if account is None:
        sys.exit(f"no account {args.account_id!r}")
    password = None
    if args.command == "set":
        password = getpass.getpass("new password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    try:
        email = container().identity.create_login(account.id, args.email, password)
    except IdentityError as exc:
        sys.exit(f"{exc.code}: {exc.message}")
    # the account shows the address it signs in with (and the subtree search finds it)
    container().store.update_account(account.id, {"email": email}, search=(account.name, email))
    print(f"{account.id} signs in as {email}" + (" (a set-password link was mailed)" if password is None else ""))


if __name__ == "__main__":
    main()
