"""Identity rules that need no storage: password policy, e-mail normalisation, lock-out arithmetic and
the errors the identity service raises.

Lock-out: ``failures`` counts consecutive wrong passwords of one login (a successful sign-in resets it).
Every fifth one locks the login: the n-th lock of a run lasts 15 minutes doubled n-1 times, at most a
day. The lock number is ``failures // 5``, so it follows from the one atomic counter and needs no
second read-modify-write (``lock_count`` is stored only for operators to read).
"""
import math
from dataclasses import dataclass
from typing import Optional

MIN_PASSWORD, MAX_PASSWORD = 12, 256      # characters (OWASP ASVS 2.1.1 / 2.1.2)
MAX_EMAIL = 254                           # RFC 5321 path limit
FAILURES_PER_LOCK = 5
FIRST_LOCK, MAX_LOCK = 15 * 60, 24 * 3600
IP_FAILURE_LIMIT, IP_WINDOW = 50, 15 * 60
ACCESS_TTL = 15 * 60
REFRESH_TTL = 30 * 86400
RESET_TTL = 3600
WELCOME_TTL = 7 * 86400                   # a set-password link sent to a new account
RESET_MAIL_INTERVAL = 60                  # at most one reset mail per login per minute


class IdentityError(Exception):
    """Base of every error the identity layer answers with; ``code`` is the API's error code."""
    code = "identity_error"

    def __init__(self, message: str = ""):
        super().__init__(message or self.code)
        self.message = message or self.code


class InvalidRequest(IdentityError):
    code = "invalid_request"

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class WeakPassword(InvalidRequest):
    code = "weak_password"


class InvalidCredentials(IdentityError):
    """Wrong e-mail or password, no password set yet, or a closed account: one answer for all."""
    code = "invalid_credentials"


class InvalidToken(IdentityError):
    """A refresh, reset or access token that is unknown, expired, used, revoked or malformed."""
    code = "invalid_token"


class NotAuthenticated(InvalidToken):
    """No usable bearer token or portal key on a request that needs one."""


class NotAllowed(IdentityError):
    code = "forbidden"


class EmailTaken(IdentityError):
    code = "email_taken"


class LoginExists(IdentityError):
    """The account already has a login (one per account)."""
    code = "login_exists"


class _RetryLater(IdentityError):
    def __init__(self, retry_after: int):
        super().__init__(f"try again in {retry_after} s")
        self.retry_after = max(1, int(retry_after))


class Locked(_RetryLater):
    code = "locked"


class TooManyAttempts(_RetryLater):
    code = "too_many_attempts"


def check_password(password, field: str = "password") -> str:
    """The policy: 12 to 256 characters of valid Unicode, not only whitespace. No composition rules
    (NIST SP 800-63B): length is what matters."""
    if not isinstance(password, str):
        raise WeakPassword(field, f"{field} must be a string")
    if len(password) < MIN_PASSWORD:
        raise WeakPassword(field, f"{field} must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise WeakPassword(field, f"{field} must be at most {MAX_PASSWORD} characters")
    if not password.strip():
        raise WeakPassword(field, f"{field} must not be only whitespace")
    if not is_unicode(password):
        raise WeakPassword(field, f"{field} must be valid Unicode")
    return password


def is_unicode(text: str) -> bool:
    """False for lone surrogates ("\\ud800"): JSON lets them through, UTF-8 cannot encode them."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def normalise_email(raw, field: str = "email") -> str:
    """Lower case, surrounding whitespace stripped; one '@' with text on both sides, no whitespace or
    control characters inside, at most 254 characters. Deliberately no further RFC 5322 parsing: the
    set-password mail proves the address."""
    if not isinstance(raw, str):
        raise InvalidRequest(field, f"{field} must be a string")
    email = raw.strip().lower()
    local, at, domain = email.partition("@")
    if (not at or not local or not domain or "@" in domain or len(email) > MAX_EMAIL
            or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in email) or not is_unicode(email)):
        raise InvalidRequest(field, f"{field} is not a valid e-mail address")
    return email


@dataclass(frozen=True)
class Lockout:
    until: int        # epoch seconds
    number: int       # 1 for the first lock of a run of failures


def lock_duration(number: int) -> int:
    """15 minutes for the first lock, doubled for each further one, capped at 24 hours."""
    if number < 1:
        return 0
    return min(MAX_LOCK, FIRST_LOCK * 2 ** min(number - 1, 16))


def lockout_after(failures: int, now: float) -> Optional[Lockout]:
    """The lock that the ``failures``-th consecutive failure starts, or None. Only the request whose
    atomic increment returned a multiple of 5 starts a lock, so concurrent failures lock once."""
    if failures <= 0 or failures % FAILURES_PER_LOCK:
        return None
    number = failures // FAILURES_PER_LOCK
    return Lockout(until=int(now) + lock_duration(number), number=number)


def retry_after(until: Optional[float], now: float) -> int:
    """Whole seconds until ``until`` (0 when it has passed or is unset)."""
    if until is None or until <= now:
        return 0
    return max(1, math.ceil(until - now))


def ip_window(now: float) -> int:
    """Start of the fixed 15-minute window ``now`` falls in (the per-IP counter's key)."""
    return int(now) // IP_WINDOW * IP_WINDOW
