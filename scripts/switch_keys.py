"""Issue, list and revoke switch API keys (one per switch).

Against the local stack (while `make run` is up):
    .venv/bin/python scripts/switch_keys.py --local new kamailio-1 "Kamailio in Frankfurt"
    .venv/bin/python scripts/switch_keys.py --local list
    .venv/bin/python scripts/switch_keys.py --local rotate kamailio-1          # a second key, same switch
    .venv/bin/python scripts/switch_keys.py --local revoke kamailio-1 --ref 1a2b3c4d5e   # one key
    .venv/bin/python scripts/switch_keys.py --local revoke kamailio-1          # every key of the switch
Against a deployed stage (AWS credentials in the environment, e.g. AWS_PROFILE and AWS_REGION):
    .venv/bin/python scripts/switch_keys.py --stage prod new kamailio-1 "Kamailio in Frankfurt"
which reads the tables cascade-prod-* and the pepper from the secret cascade/prod/switch-key-pepper.
"""
import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from scripts.targets import use_local, use_stage  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local", action="store_true", help="talk to the local stack started by make run")
    parser.add_argument("--stage", help="talk to a deployed stage (infra/): its tables and its pepper secret")
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="issue a key; it is printed once and stored only hashed")
    new.add_argument("key_id")
    new.add_argument("name", nargs="?", default="")
    sub.add_parser("list", help="id, ref, status, created, name of every key")
    rotate = sub.add_parser("rotate", help="issue a further key for a switch; its calls complete with either key")
    rotate.add_argument("key_id")
    revoke = sub.add_parser("revoke", help="revoke every key of a switch, or one with --ref")
    revoke.add_argument("key_id")
    revoke.add_argument("--ref", help="the key's ref as `list` shows it")
    args = parser.parse_args(argv)
    if args.local:
        use_local()
    elif args.stage:
        use_stage(args.stage)
    from chalicelib.adapters.dynamo import writer
    if args.command == "new":
        print(writer.create_switch_key(args.key_id, args.name))
    elif args.command == "list":
        for item in sorted(writer.switch_keys(), key=lambda i: (i.key_id, i.created_at)):
            print(f"{item.key_id}\t{writer.key_ref(item)}\t{item.status}\t{item.created_at}\t{item.name}")
    elif args.command == "rotate":
        try:
            print(writer.rotate_switch_key(args.key_id))
        except writer.UnknownSwitchKey:
            sys.exit(f"no active key {args.key_id!r}")
        print(f"# configure {args.key_id} with this key, then revoke the old one: "
              f"revoke {args.key_id} --ref <its ref in list>", file=sys.stderr)
    else:
        try:
            count = writer.revoke_switch_key(args.key_id, args.ref)
        except writer.UnknownSwitchKey:
            sys.exit(f"no active key {args.key_id!r}" + (f" with ref {args.ref}" if args.ref else ""))
        print(f"revoked {count} key(s) of {args.key_id}")


if __name__ == "__main__":
    main()
