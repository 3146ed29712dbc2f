"""Every per-stage setting in one place. `make deploy STAGE=prod` picks one by name."""
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Stage:
    name: str
    switch_memory_mb: int            # Lambda CPU scales with memory: 1024 MB keeps authorize in milliseconds
    switch_provisioned: int          # warm switch instances (0: none, cold starts possible)
    production: bool                 # deletion protection, tables and secret retained on stack delete
    log_retention: str               # aws_logs.RetentionDays member, e.g. TWO_WEEKS
    authorize_p99_ms: int            # alarm when the switch function's p99 duration exceeds this
    conflicts_per_5min: int          # alarm on this many DynamoDB transaction conflicts per table in 5 minutes
    # Switch-path events counted from the functions' JSON logs (alarm at this many per 5 minutes):
    # completions after the sweep, and a call id reused by another request (a replay attempt or a switch
    # sending ids a caller can repeat). A completion that conflicts with the applied one, and any money a
    # late completion takes below a floor, alarm at the first occurrence.
    late_completions_per_5min: int = 1
    call_id_reuses_per_5min: int = 10
    # EMF metrics the functions emit (entrypoints/metrics.py): sign-ins refused because a login or an
    # address is locked (a password-guessing run), and holds the store refused because funds or limits
    # moved between read and write (contention on a hot reseller).
    lockouts_per_5min: int = 20
    hold_retries_per_5min: int = 100
    # Optional custom domain for the REST API (an ACM certificate in the stack's region). Switches use
    # the function URL, which has no custom domain without a CloudFront distribution in front.
    api_domain: Optional[str] = None
    api_certificate_arn: Optional[str] = None
    # The REST API function serves the switch routes and the portal. Sign-in hashes passwords with scrypt
    # at 128 MiB per hash (adapters/passwords.py), and Lambda's CPU share grows with memory (one vCPU at
    # 1,769 MB): a hash took 0.41 s on one full core here, so expect about 0.7 s at 1024 MB and about
    # 3 s at 256 MB.
    api_memory_mb: int = 1024
    # Portal e-mail (password resets, invitations) through SES. mail_from must be a verified SES identity
    # (the address or its domain) in the stack's region; the function may send from this address only.
    # Default: no-reply@<api_domain>, or no-reply@example.com (a placeholder that SES will refuse).
    mail_from: Optional[str] = None
    # The base of the links in those e-mails (<portal_url>/reset-password?token=...). Default:
    # https://<api_domain> when the stage has one; otherwise set it, or the app's local default is used
    # (the REST API's own URL cannot be given to its function: a circular reference in CloudFormation).
    portal_url: Optional[str] = None

    @property
    def sender(self) -> str:
        return self.mail_from or f"no-reply@{self.api_domain or 'example.com'}"

    @property
    def portal_link_base(self) -> Optional[str]:
        return self.portal_url or (f"https://{self.api_domain}" if self.api_domain else None)


STAGES = {
    "dev": Stage("dev", switch_memory_mb=1024, switch_provisioned=0, production=False, log_retention="TWO_WEEKS",
                 authorize_p99_ms=500, conflicts_per_5min=50),
    "prod": Stage("prod", switch_memory_mb=1024, switch_provisioned=2, production=True, log_retention="THREE_MONTHS",
                  authorize_p99_ms=250, conflicts_per_5min=300),
}


def stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise SystemExit(f"unknown STAGE {name!r}: one of {', '.join(STAGES)} (infra/stages.py)") from None
