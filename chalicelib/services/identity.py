"""Identity and access for the portal: sign-in, sessions (access + refresh tokens), lock-out, password
reset and change, logins of accounts, resellers' API keys, and ``authenticate(headers) -> Principal``.

Decisions (the why):
- A SUSPENDED account may still sign in, refresh and read: a suspended client must be able to see why
  and top up. Refusing writes is the portal's business (it reads the account's status anyway). A CLOSED
  account (or one whose item is gone) cannot sign in (same 401 as a wrong password), refresh or use
  any token or key. Suspending should still call ``bump_epoch`` to end the sessions it had.
- Revocation without scans: each login has a ``token_epoch`` (stored per account id, see the store);
  access and refresh tokens carry the epoch they were issued under and die when it moves. Password
  change or reset, suspension and closing move it. Every ``authenticate`` reads the account and its
  epoch (one BatchGetItem) and returns the CURRENT role and path, never the token's.
- Refresh tokens are opaque, stored as SHA-256 only, single use: rotating marks the old one used in
  the same transaction that writes the new one; presenting a used one again is a replay and revokes
  its family (every token descended from that sign-in). Sign-out revokes the family too.
- No enumeration: an unknown e-mail (or a login without a password yet) is verified against a dummy
  hash and its failures are counted on a short-lived "ghost" item, so answers, lock-outs and cost are
  the same as for a real login with a wrong password. Reset requests always answer the same.
- Lock-out counts wrong passwords only: while locked, a wrong password still counts (and may extend
  the lock), the right one answers ``Locked`` without counting, so a user's own retries with the right
  password do not make it worse. Per source IP: 50 failures in a fixed 15-minute window refuse that IP
  for the rest of the window; reset requests count as attempts there.
"""
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Tuple

from chalicelib.domain.access import Principal
from chalicelib.domain.accounts import ADMIN, CLOSED, RESELLER
from chalicelib.domain.identity import (ACCESS_TTL, IP_FAILURE_LIMIT, IP_WINDOW, MAX_PASSWORD, REFRESH_TTL,
                                        RESET_MAIL_INTERVAL, RESET_TTL, WELCOME_TTL, InvalidCredentials,
                                        InvalidRequest, InvalidToken, Locked, Lockout, NotAllowed, NotAuthenticated,
                                        TooManyAttempts, check_password, ip_window, is_unicode, lockout_after,
                                        normalise_email, retry_after)

from .identity_ports import (AccessClaims, ApiKeyRecord, IdentityStore, Mailer, PasswordHasher, RefreshRecord,
                             Replayed, ResetRecord, SessionState, TokenCodec)

log = logging.getLogger("cascade.identity")

API_KEY_PREFIX = "cpk_"
MAX_API_KEYS = 10
MAX_TOKEN_CHARS = 4096


def digest(secret: str) -> str:
    """Refresh tokens, reset tokens and API keys carry 256 random bits: a plain SHA-256 is enough to
    keep a table leak from being usable (nothing to guess), and it is fast on every request."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Session:
    access_token: str
    refresh_token: str
    expires_in: int
    account_id: str
    role: str


class IdentityService:
    def __init__(self, store: IdentityStore, hasher: PasswordHasher, tokens: TokenCodec, mailer: Mailer,
                 clock: Callable[[], float] = time.time, portal_url: str = "http://127.0.0.1:8000"):
        self.store, self.hasher, self.tokens, self.mailer = store, hasher, tokens, mailer
        self.clock, self.portal_url = clock, portal_url.rstrip("/")
        self._dummy: Optional[str] = None

    # --- sign-in and sessions -----------------------------------------------------------------------

    def sign_in(self, email, password, source_ip: str) -> Session:
        now = self._now()
        self._check_ip(source_ip, now)
        email = normalise_email(email)
        login = self.store.get_login(email)
        known = login is not None and login.account_id is not None and login.password_hash is not None
        encoded = login.password_hash if known else self._dummy_hash()
        ok = self._verify(password, encoded) and known
        locked = retry_after(login.locked_until, now) if login else 0
        if not ok:
            lock = self._fail(email, login is not None and login.account_id is not None, source_ip, now)
            if locked:      # a wrong password while locked: answer the lock, extended if it just was
                raise Locked(max(locked, retry_after(lock.until if lock else None, now)))
            raise InvalidCredentials("wrong e-mail or password")
        if locked:
            raise Locked(locked)
        state = self.store.session_state(login.account_id)
        if state is None or state.status == CLOSED or state.email != email:
            raise InvalidCredentials("wrong e-mail or password")
        if login.failures or login.locked_until:
            self.store.clear_failures(email)
        if self.hasher.needs_rehash(encoded):
            self.store.replace_hash(email, state.account_id, encoded, self.hasher.hash(password), False)
        return self._open_session(state, now)

    def refresh(self, refresh_token) -> Session:
        now = self._now()
        record = self.store.get_refresh(digest(refresh_token)) if _token_text(refresh_token) else None
        if record is None or record.expires <= now:
            raise InvalidToken("unknown or expired refresh token")
        if record.used:
            self.store.revoke_family(record.family)
            log.warning("refresh token replayed: family %s of %s revoked", record.family, record.account_id)
            raise InvalidToken("refresh token already used; sign in again")
        state = self.store.session_state(record.account_id)
        if state is None or state.status == CLOSED or state.epoch != record.epoch:
            raise InvalidToken("session ended; sign in again")
        token = secrets.token_urlsafe(32)
        new = RefreshRecord(digest(token), state.account_id, record.family, state.epoch, now + REFRESH_TTL)
        try:
            self.store.rotate_refresh(record.digest, new)     # InvalidToken: the family was revoked
        except Replayed:
            self.store.revoke_family(record.family)
            raise InvalidToken("refresh token already used; sign in again") from None
        return Session(self._access_token(state, now), token, ACCESS_TTL, state.account_id, state.role)

    def sign_out(self, refresh_token) -> None:
        """Revokes the sign-in the token belongs to; unknown tokens are ignored (same answer)."""
        record = self.store.get_refresh(digest(refresh_token)) if _token_text(refresh_token) else None
        if record is not None:
            self.store.revoke_family(record.family)

    def authenticate(self, headers: Mapping) -> Principal:
        """A request's principal from ``Authorization: Bearer <access token>`` or ``X-Portal-Key``."""
        bearer, key = _credentials(headers)
        if bearer is not None:
            try:
                claims = self.tokens.verify(bearer)
            except InvalidToken as exc:
                raise NotAuthenticated(exc.message) from None
            state = self.store.session_state(claims.sub)
            if state is None or state.status == CLOSED or state.epoch != claims.epoch:
                raise NotAuthenticated("session ended; sign in again")
            return Principal(state.account_id, state.role, state.path, via="token", status=state.status)
        if key is not None:
            record = self.store.get_api_key(digest(key)) if key.startswith(API_KEY_PREFIX) else None
            state = self.store.session_state(record.account_id) if record and record.status == "active" else None
            if state is None or state.status == CLOSED or state.role not in (ADMIN, RESELLER):
                raise NotAuthenticated("unknown or revoked portal key")
            return Principal(state.account_id, state.role, state.path, via="api_key", status=state.status)
        raise NotAuthenticated("missing bearer token or portal key")

    # --- passwords ----------------------------------------------------------------------------------

    def change_password(self, principal: Principal, old_password, new_password, source_ip: str = "unknown") -> Session:
        """Ends every session of the account (epoch moves) and returns a fresh one for the caller."""
        if principal.via != "token":
            raise NotAllowed("a portal key cannot change a password")
        check_password(new_password, "new_password")
        now = self._now()
        self._check_ip(source_ip, now)
        state = self.store.session_state(principal.account_id)
        login = self.store.get_login(state.email) if state and state.email else None
        if login is None or login.account_id != principal.account_id:
            raise NotAuthenticated("this account has no login")
        encoded = login.password_hash or self._dummy_hash()
        ok = self._verify(old_password, encoded) and login.password_hash is not None
        locked = retry_after(login.locked_until, now)
        lock = None if ok else self._fail(login.email, True, source_ip, now)
        if locked:
            raise Locked(max(locked, retry_after(lock.until if lock else None, now)))
        if not ok:
            raise InvalidCredentials("old_password is wrong")
        if not self.store.replace_hash(login.email, login.account_id, login.password_hash,
                                       self.hasher.hash(new_password), True):
            raise InvalidCredentials("the password changed meanwhile")
        return self._open_session(self.store.session_state(principal.account_id), now)

    def request_reset(self, email, source_ip: str) -> None:
        """Always the same answer; a mail goes out only for a live login, at most one a minute."""
        now = self._now()
        self._check_ip(source_ip, now)
        email = normalise_email(email)
        self.store.add_ip_failure(source_ip, ip_window(now), ip_window(now) + IP_WINDOW + 60)
        login = self.store.get_login(email)
        if login is None or login.account_id is None:
            return
        state = self.store.session_state(login.account_id)
        if state is None or state.status == CLOSED or state.email != email:
            return
        if self.store.claim_reset_mail(email, now, RESET_MAIL_INTERVAL):
            try:
                self._send_link(email, login.account_id, "reset", now)
            except Exception:   # noqa: BLE001 an error here would answer differently for a real login
                log.exception("reset mail not sent")

    def confirm_reset(self, token, new_password) -> None:
        """Sets the password, ends every session, clears the lock-out; the token works once."""
        check_password(new_password, "password")
        now = self._now()
        record = self.store.get_reset(digest(token)) if _token_text(token) else None
        if record is None or record.used or record.expires <= now:
            raise InvalidToken("unknown, used or expired reset token")
        state = self.store.session_state(record.account_id)
        if state is None or state.status == CLOSED or state.email != record.email:
            raise InvalidToken("unknown, used or expired reset token")
        if not self.store.use_reset(record.digest, record.email, record.account_id, self.hasher.hash(new_password)):
            raise InvalidToken("unknown, used or expired reset token")

    # --- logins (called by the portal when it creates, suspends or closes accounts) ---------------

    def create_login(self, account_id: str, email, password: Optional[str] = None) -> str:
        """The account's sign-in. Without a password, a set-password link (valid 7 days) is mailed.
        Raises EmailTaken, LoginExists, WeakPassword, InvalidRequest. Returns the normalised e-mail."""
        email = normalise_email(email)
        if password is not None:
            check_password(password)
        state = self.store.session_state(account_id)
        if state is None or state.status == CLOSED:
            raise InvalidRequest("account_id", "no such open account")
        self.store.create_login(account_id, email, self.hasher.hash(password) if password is not None else None)
        if password is None:
            self._send_link(email, account_id, "welcome", self._now())
        return email

    def close_login(self, account_id: str, email) -> None:
        """Deletes the login (the e-mail becomes free), ends every session and revokes API keys."""
        self.store.close_login(account_id, normalise_email(email))
        for key in self.store.list_api_keys(account_id):
            if key.status == "active":
                self.store.revoke_api_key(account_id, key.ref)

    def bump_epoch(self, account_id: str) -> None:
        """Ends every session of the account (call it when suspending); the login stays."""
        self.store.bump_epoch(account_id)

    # --- API keys (resellers and the admin: machine access to the portal API) --------------------

    def create_api_key(self, account_id: str, name) -> str:
        """Returns the plain key, once: ``cpk_<ref>_<secret>``; only its SHA-256 is stored."""
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > 64 or not is_unicode(name) \
                or any(ord(c) < 0x20 for c in name):
            raise InvalidRequest("name", "name must be 1 to 64 printable characters")
        state = self.store.session_state(account_id)
        if state is None or state.status == CLOSED or state.role not in (ADMIN, RESELLER):
            raise NotAllowed("only resellers and the admin may have API keys")
        if sum(k.status == "active" for k in self.store.list_api_keys(account_id)) >= MAX_API_KEYS:
            raise InvalidRequest("name", f"at most {MAX_API_KEYS} active keys per account")
        ref = secrets.token_hex(6)
        key = f"{API_KEY_PREFIX}{ref}_{secrets.token_urlsafe(32)}"
        self.store.put_api_key(ApiKeyRecord(digest(key), ref, account_id, name.strip(), "active", int(self._now())))
        return key

    def revoke_api_key(self, account_id: str, ref: str) -> bool:
        return self.store.revoke_api_key(account_id, ref)

    def list_api_keys(self, account_id: str) -> List[ApiKeyRecord]:
        return self.store.list_api_keys(account_id)

    # --- internals ----------------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self.clock())

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    def _verify(self, password, encoded: str) -> bool:
        """Always one full hash, whatever the input, so the answer's timing says nothing."""
        usable = isinstance(password, str) and len(password) <= MAX_PASSWORD and is_unicode(password)
        return self.hasher.verify(password if usable else "", encoded) and usable

    def _check_ip(self, ip: str, now: int) -> None:
        window = ip_window(now)
        if self.store.ip_failures(ip, window) >= IP_FAILURE_LIMIT:
            raise TooManyAttempts(window + IP_WINDOW - now)

    def _fail(self, email: str, known: bool, ip: str, now: int) -> Optional[Lockout]:
        """Counts a wrong password (login and IP); returns the lock it started, if any."""
        failures = self.store.record_failure(email, known, now)
        lock = lockout_after(failures, now)
        if lock is not None:
            self.store.lock(email, known, lock.until, lock.number)
            log.warning("login locked for %d s after %d failures", lock.until - now, failures)
        self.store.add_ip_failure(ip, ip_window(now), ip_window(now) + IP_WINDOW + 60)
        return lock

    def _access_token(self, state: SessionState, now: int) -> str:
        return self.tokens.issue(AccessClaims(sub=state.account_id, role=state.role, path=state.path,
                                              epoch=state.epoch, iat=now, exp=now + ACCESS_TTL,
                                              jti=secrets.token_hex(16)))

    def _open_session(self, state: SessionState, now: int) -> Session:
        token = secrets.token_urlsafe(32)
        self.store.open_family(RefreshRecord(digest(token), state.account_id, secrets.token_hex(16),
                                             state.epoch, now + REFRESH_TTL))
        return Session(self._access_token(state, now), token, ACCESS_TTL, state.account_id, state.role)

    def _send_link(self, email: str, account_id: str, purpose: str, now: int) -> None:
        token = secrets.token_urlsafe(32)
        ttl = WELCOME_TTL if purpose == "welcome" else RESET_TTL
        self.store.put_reset(ResetRecord(digest(token), account_id, email, now + ttl, purpose))
        link = f"{self.portal_url}/reset-password?token={token}"
        if purpose == "welcome":
            subject = "Set your Cascade password"
            text = f"An account was opened for you on Cascade.\n\nSet your password (link valid 7 days):\n{link}\n"
        else:
            subject = "Reset your Cascade password"
            text = (f"Someone asked to reset your Cascade password.\n\nSet a new one (link valid 1 hour):\n{link}\n\n"
                    "If it was not you, ignore this message: your password stays as it is.\n")
        try:
            self.mailer.send(email, subject, text)
        except Exception:
            self.store.drop_reset(digest(token))   # a link nobody received must not stay usable
            raise

    def forget_account(self, account_id: str, email) -> None:
        """Undo create_login for an account whose creation failed: its login and every item about it."""
        try:
            self.close_login(account_id, email)
        finally:
            self.store.forget_account(account_id)


def _token_text(token) -> bool:
    return isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_CHARS and is_unicode(token)


def _credentials(headers: Optional[Mapping]) -> Tuple[Optional[str], Optional[str]]:
    """(bearer token, portal key) from the headers, case-insensitively; oversized values are ignored."""
    bearer = key = None
    for name, value in (headers.items() if isinstance(headers, Mapping) else ()):
        if not isinstance(name, str) or not isinstance(value, str) or not _token_text(value):
            continue
        lowered = name.lower()
        if lowered == "authorization":
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                bearer = token.strip()
        elif lowered == "x-portal-key" and value.strip():
            key = value.strip()
    return bearer, key
