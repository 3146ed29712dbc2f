"""What the identity service needs from the outside world, as Protocols, and the records it trades.

Adapters: adapters.dynamo.identity_store (IdentityStore), adapters.passwords (PasswordHasher),
adapters.tokens (TokenCodec), adapters.mail (Mailer). Tests may pass fakes of any of them.
"""
from dataclasses import dataclass
from typing import List, Optional, Protocol


@dataclass(frozen=True)
class LoginRecord:
    """``LOGIN#<email>``. A "ghost" (account_id None) is a login that does not exist, holding only the
    failure counters of an unknown e-mail, so that lock-out behaves alike for every address."""
    email: str
    account_id: Optional[str]
    password_hash: Optional[str] = None
    failures: int = 0
    locked_until: Optional[int] = None
    lock_count: int = 0


@dataclass(frozen=True)
class SessionState:
    """What every token check reads: the account as it is now and its login's token epoch."""
    account_id: str
    role: str
    path: str
    status: str
    epoch: int                 # -1 when the account has no login
    email: Optional[str]


@dataclass(frozen=True)
class RefreshRecord:
    digest: str
    account_id: str
    family: str
    epoch: int
    expires: int
    used: bool = False


@dataclass(frozen=True)
class ResetRecord:
    digest: str
    account_id: str
    email: str
    expires: int
    purpose: str = "reset"     # or "welcome"
    used: bool = False


@dataclass(frozen=True)
class ApiKeyRecord:
    digest: str
    ref: str                   # public id, shown in lists and used to revoke
    account_id: str
    name: str
    status: str
    created_at: int


@dataclass(frozen=True)
class AccessClaims:
    sub: str
    role: str
    path: str
    epoch: int
    iat: int
    exp: int
    jti: str


class Replayed(Exception):
    """A refresh token was presented after it had been used."""


class IdentityStore(Protocol):
    def get_login(self, email: str) -> Optional[LoginRecord]: ...
    def create_login(self, account_id: str, email: str, password_hash: Optional[str]) -> None: ...
    def close_login(self, account_id: str, email: str) -> None: ...
    def record_failure(self, email: str, known: bool, now: int) -> int: ...
    def lock(self, email: str, known: bool, until: int, number: int) -> None: ...
    def clear_failures(self, email: str) -> None: ...
    def replace_hash(self, email: str, account_id: str, old_hash: Optional[str], new_hash: str,
                     revoke_sessions: bool) -> bool: ...
    def session_state(self, account_id: str) -> Optional[SessionState]: ...
    def bump_epoch(self, account_id: str) -> None: ...
    def ip_failures(self, ip: str, window: int) -> int: ...
    def add_ip_failure(self, ip: str, window: int, expires: int) -> int: ...
    def open_family(self, record: RefreshRecord) -> None: ...
    def get_refresh(self, digest: str) -> Optional[RefreshRecord]: ...
    def rotate_refresh(self, old_digest: str, new: RefreshRecord) -> None: ...
    def revoke_family(self, family: str) -> None: ...
    def put_reset(self, record: ResetRecord) -> None: ...
    def get_reset(self, digest: str) -> Optional[ResetRecord]: ...
    def drop_reset(self, digest: str) -> None: ...
    def forget_account(self, account_id: str) -> None: ...
    def use_reset(self, digest: str, email: str, account_id: str, new_hash: str) -> bool: ...
    def claim_reset_mail(self, email: str, now: int, interval: int) -> bool: ...
    def put_api_key(self, record: ApiKeyRecord) -> None: ...
    def get_api_key(self, digest: str) -> Optional[ApiKeyRecord]: ...
    def list_api_keys(self, account_id: str) -> List[ApiKeyRecord]: ...
    def revoke_api_key(self, account_id: str, ref: str) -> bool: ...


class PasswordHasher(Protocol):
    def hash(self, password: str) -> str: ...
    def verify(self, password: str, encoded: str) -> bool: ...
    def needs_rehash(self, encoded: str) -> bool: ...


class TokenCodec(Protocol):
    def issue(self, claims: AccessClaims) -> str: ...
    def verify(self, token: str) -> AccessClaims: ...     # raises domain.identity.InvalidToken


class Mailer(Protocol):
    def send(self, to: str, subject: str, text: str) -> None: ...
