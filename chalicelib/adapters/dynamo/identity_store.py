"""DynamoDB implementation of services.identity_ports.IdentityStore (items: identity_models).

Every counter moves by UpdateItem ADD and every state change (token used, family revoked, password
replaced) is a conditional write, so concurrent requests never lose an update or use a token twice;
writes that must happen together (rotate a refresh token, use a reset token) are one transaction.
"""
import logging
import random
import time
from typing import List, Optional

from pynamodb.connection import Connection
from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from chalicelib.domain.identity import EmailTaken, InvalidToken, LoginExists
from chalicelib.services.identity_ports import (ApiKeyRecord, LoginRecord, RefreshRecord, Replayed, ResetRecord,
                                                SessionState)

from .identity_models import (AuthItem, LoginItem, PortalKeyItem, RefreshFamilyItem, RefreshTokenItem,
                              ResetTokenItem, auth_key, family_key, ip_counter_key, login_key, portal_key_key,
                              portal_keys_list, refresh_key, reset_key)
from .keys import account_key
from .models import AccountItem, CoreItem, CounterItem

log = logging.getLogger("cascade.identity.store")

GHOST_TTL = 2 * 86400          # outlives the longest lock (24 h)
CONDITION_FAILED = "ConditionalCheckFailedException"
_connection: Optional[Connection] = None


def _conn() -> Connection:
    global _connection
    if _connection is None:
        _connection = Connection(region=CoreItem.Meta.region)
    return _connection


def _failed(exc) -> bool:
    return getattr(exc, "cause_response_code", None) == CONDITION_FAILED


def _get(model, key, consistent: bool = True):
    """Strongly consistent by default: a lock, an epoch or a used flag written a moment ago must count."""
    try:
        return model.get(*key, consistent_read=consistent)
    except DoesNotExist:
        return None


def _update(item, actions, condition=None) -> bool:
    """One conditional UpdateItem; False when the condition refused it."""
    try:
        item.update(actions=actions, condition=condition)
        return True
    except UpdateError as exc:
        if _failed(exc):
            return False
        raise


def _transact(puts=(), updates=(), deletes=(), attempts: int = 4) -> List[int]:
    """One TransactWriteItems. Returns the positions (in deletes + puts + updates order, PynamoDB's
    own) that a condition refused; [] when it committed. Conflicts are retried with jittered backoff."""
    for attempt in range(attempts):
        try:
            with TransactWrite(connection=_conn()) as tx:
                for item, condition in deletes:
                    tx.delete(item, condition=condition)
                for item, condition in puts:
                    tx.save(item, condition=condition)
                for item, actions, condition in updates:
                    tx.update(item, actions, condition=condition)
            return []
        except TransactWriteError as exc:
            reasons = exc.cancellation_reasons or []
            refused = [i for i, r in enumerate(reasons) if r is not None and r.code == "ConditionalCheckFailed"]
            if refused:
                return refused
            codes = {r.code for r in reasons if r is not None}
            if not codes & {"TransactionConflict", "ThrottlingError"} or attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0, 0.02 * 2 ** attempt))
    return []


def _login(item: LoginItem) -> LoginRecord:
    return LoginRecord(email=item.pk[len("LOGIN#"):], account_id=item.account_id, password_hash=item.password_hash,
                       failures=int(item.failures or 0),
                       locked_until=None if item.locked_until is None else int(item.locked_until),
                       lock_count=int(item.lock_count or 0))


class DynamoIdentityStore:
    # --- logins -------------------------------------------------------------------------------------

    def get_login(self, email: str) -> Optional[LoginRecord]:
        item = _get(LoginItem, login_key(email))
        return _login(item) if item is not None else None

    def create_login(self, account_id: str, email: str, password_hash: Optional[str]) -> None:
        login = LoginItem(*login_key(email), account_id=account_id, password_hash=password_hash, failures=0,
                          lock_count=0)
        auth = AuthItem(*auth_key(account_id))
        refused = _transact(
            puts=[(login, LoginItem.account_id.does_not_exist())],      # a ghost is replaced
            updates=[(auth, [AuthItem.kind.set(AuthItem), AuthItem.account_id.set(account_id),
                             AuthItem.email.set(email), AuthItem.token_epoch.set(AuthItem.token_epoch | 0)],
                      AuthItem.email.does_not_exist())])
        if 0 in refused:
            raise EmailTaken("this e-mail already signs in to an account")
        if refused:
            raise LoginExists("this account already has a login")

    def close_login(self, account_id: str, email: str) -> None:
        refused = _transact(
            deletes=[(LoginItem(*login_key(email)), LoginItem.account_id == account_id)],
            updates=[(AuthItem(*auth_key(account_id)), [AuthItem.email.remove(), AuthItem.token_epoch.add(1)],
                      AuthItem.account_id.exists())])
        if refused:
            log.warning("close_login: no login %s for account %s; ending its sessions only", email, account_id)
            self.bump_epoch(account_id)

    def record_failure(self, email: str, known: bool, now: int) -> int:
        item = LoginItem(*login_key(email))
        actions = [LoginItem.failures.add(1), LoginItem.kind.set(LoginItem)]
        if known:
            condition = LoginItem.account_id.exists()
        else:
            actions.append(LoginItem.ttl.set(now + GHOST_TTL))
            condition = LoginItem.account_id.does_not_exist()
        return int(item.failures or 0) if _update(item, actions, condition) else 0

    def lock(self, email: str, known: bool, until: int, number: int) -> None:
        owner = LoginItem.account_id.exists() if known else LoginItem.account_id.does_not_exist()
        _update(LoginItem(*login_key(email)), [LoginItem.locked_until.set(until), LoginItem.lock_count.set(number)],
                owner & (LoginItem.locked_until.does_not_exist() | (LoginItem.locked_until < until)))

    def clear_failures(self, email: str) -> None:
        _update(LoginItem(*login_key(email)), [LoginItem.failures.set(0), LoginItem.lock_count.set(0),
                                                LoginItem.locked_until.remove()], LoginItem.account_id.exists())

    def replace_hash(self, email: str, account_id: str, old_hash: Optional[str], new_hash: str,
                     revoke_sessions: bool) -> bool:
        same = LoginItem.password_hash.does_not_exist() if old_hash is None else LoginItem.password_hash == old_hash
        login = (LoginItem(*login_key(email)), [LoginItem.password_hash.set(new_hash)],
                 (LoginItem.account_id == account_id) & same)
        if not revoke_sessions:
            return _update(*login)
        return not _transact(updates=[login, self._bump(account_id)])

    # --- sessions -----------------------------------------------------------------------------------

    def session_state(self, account_id: str) -> Optional[SessionState]:
        account = auth = None
        for item in CoreItem.batch_get([account_key(account_id), auth_key(account_id)], consistent_read=True):
            if isinstance(item, AccountItem):
                account = item
            elif isinstance(item, AuthItem):
                auth = item
        if account is None:
            return None
        return SessionState(account_id=account.id, role=account.role, path=account.path or account.id,
                            status=account.status, epoch=int(auth.token_epoch) if auth else -1,
                            email=auth.email if auth else None)

    def _bump(self, account_id: str):
        return AuthItem(*auth_key(account_id)), [AuthItem.token_epoch.add(1)], AuthItem.account_id.exists()

    def bump_epoch(self, account_id: str) -> None:
        _update(*self._bump(account_id))      # no login: no session to end

    def ip_failures(self, ip: str, window: int) -> int:
        item = _get(CounterItem, ip_counter_key(ip, window), consistent=False)
        return int(item.n or 0) if item is not None else 0

    def add_ip_failure(self, ip: str, window: int, expires: int) -> int:
        item = CounterItem(*ip_counter_key(ip, window))
        item.update(actions=[CounterItem.n.add(1), CounterItem.kind.set(CounterItem), CounterItem.ttl.set(expires)])
        return int(item.n)

    def open_family(self, record: RefreshRecord) -> None:
        """A sign-in: its family and its first refresh token."""
        token = self._refresh_item(record)
        family = RefreshFamilyItem(*family_key(record.family), account_id=record.account_id, revoked=False,
                                   ttl=record.expires)
        _transact(puts=[(family, None), (token, None)])

    def get_refresh(self, digest: str) -> Optional[RefreshRecord]:
        item = _get(RefreshTokenItem, refresh_key(digest))
        if item is None:
            return None
        return RefreshRecord(digest=digest, account_id=item.account_id, family=item.family, epoch=int(item.epoch),
                             expires=int(item.expires), used=bool(item.used))

    def rotate_refresh(self, old_digest: str, new: RefreshRecord) -> None:
        refused = _transact(
            puts=[(self._refresh_item(new), None)],
            updates=[(RefreshTokenItem(*refresh_key(old_digest)), [RefreshTokenItem.used.set(True)],
                      RefreshTokenItem.used == False),  # noqa: E712 (a DynamoDB condition, not a comparison)
                     (RefreshFamilyItem(*family_key(new.family)), [RefreshFamilyItem.ttl.set(new.expires)],
                      RefreshFamilyItem.revoked == False)])  # noqa: E712
        if 1 in refused:
            raise Replayed(old_digest)
        if refused:
            raise InvalidToken("session ended; sign in again")

    def revoke_family(self, family: str) -> None:
        _update(RefreshFamilyItem(*family_key(family)), [RefreshFamilyItem.revoked.set(True)],
                RefreshFamilyItem.account_id.exists())

    @staticmethod
    def _refresh_item(record: RefreshRecord) -> RefreshTokenItem:
        return RefreshTokenItem(*refresh_key(record.digest), account_id=record.account_id, family=record.family,
                                epoch=record.epoch, expires=record.expires, used=record.used, ttl=record.expires)

    # --- password reset -----------------------------------------------------------------------------

    def put_reset(self, record: ResetRecord) -> None:
        ResetTokenItem(*reset_key(record.digest), account_id=record.account_id, email=record.email,
                       purpose=record.purpose, expires=record.expires, used=False, ttl=record.expires).save()

    def drop_reset(self, digest: str) -> None:
        ResetTokenItem(*reset_key(digest)).delete()

    def forget_account(self, account_id: str) -> None:
        """An account that never came to be (its creation was undone): no sign-in item may outlive it."""
        AuthItem(*auth_key(account_id)).delete()

    def get_reset(self, digest: str) -> Optional[ResetRecord]:
        item = _get(ResetTokenItem, reset_key(digest))
        if item is None:
            return None
        return ResetRecord(digest=digest, account_id=item.account_id, email=item.email, expires=int(item.expires),
                           purpose=item.purpose, used=bool(item.used))

    def use_reset(self, digest: str, email: str, account_id: str, new_hash: str) -> bool:
        return not _transact(updates=[
            (ResetTokenItem(*reset_key(digest)), [ResetTokenItem.used.set(True)],
             (ResetTokenItem.used == False) & (ResetTokenItem.account_id == account_id)),  # noqa: E712
            (LoginItem(*login_key(email)), [LoginItem.password_hash.set(new_hash), LoginItem.failures.set(0),
                                            LoginItem.lock_count.set(0), LoginItem.locked_until.remove()],
             LoginItem.account_id == account_id),
            self._bump(account_id)])

    def claim_reset_mail(self, email: str, now: int, interval: int) -> bool:
        return _update(LoginItem(*login_key(email)), [LoginItem.reset_sent_at.set(now)],
                       LoginItem.account_id.exists() & (LoginItem.reset_sent_at.does_not_exist()
                                                        | (LoginItem.reset_sent_at <= now - interval)))

    # --- portal API keys ----------------------------------------------------------------------------

    def put_api_key(self, record: ApiKeyRecord) -> None:
        PortalKeyItem(*portal_key_key(record.digest), account_id=record.account_id, key_ref=record.ref,
                      name=record.name, status=record.status, created=record.created_at,
                      list_pk=portal_keys_list(record.account_id), list_sk=record.ref
                      ).save(condition=PortalKeyItem.pk.does_not_exist())

    def get_api_key(self, digest: str) -> Optional[ApiKeyRecord]:
        item = _get(PortalKeyItem, portal_key_key(digest), consistent=False)
        return self._api_key(item) if item is not None else None

    def list_api_keys(self, account_id: str) -> List[ApiKeyRecord]:
        from .portal_store import full_items   # the listing index projects keys only (models.py)
        return [self._api_key(i) for i in full_items(list(CoreItem.listing.query(portal_keys_list(account_id))))
                if isinstance(i, PortalKeyItem)]

    def revoke_api_key(self, account_id: str, ref: str) -> bool:
        for item in CoreItem.listing.query(portal_keys_list(account_id), CoreItem.list_sk == ref):
            if isinstance(item, PortalKeyItem):
                return _update(PortalKeyItem(item.pk, item.sk), [PortalKeyItem.status.set("revoked")],
                               PortalKeyItem.account_id == account_id)
        return False

    @staticmethod
    def _api_key(item: PortalKeyItem) -> ApiKeyRecord:
        return ApiKeyRecord(digest=item.pk[len("PKEY#"):], ref=item.key_ref, account_id=item.account_id,
                            name=item.name, status=item.status, created_at=int(item.created))
