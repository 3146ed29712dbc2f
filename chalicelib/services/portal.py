"""The portal's use cases: accounts in a walled tree and the money between them.

Every use case takes the caller (``Principal``) and an account id, and goes through ``walled`` first:
an id outside the caller's subtree is answered exactly like an id that does not exist (``NotFound``).
Results are domain objects and plain dicts; the entrypoint decides the HTTP shape.
"""
import logging
import secrets
import time
from dataclasses import replace
from decimal import Decimal
from typing import Callable, Dict, List, Optional, Tuple

from chalicelib.domain import ledger
from chalicelib.domain.access import Principal, child_path
from chalicelib.domain.accounts import (ACTIVE, ADMIN, CLIENT, CLOSED, CREATE_CLIENTS, CREATE_NOTHING,
                                        CREATE_RESELLERS, RESELLER, SUSPENDED, Account, InvalidAccount,
                                        TreeSettings, check_account)
from chalicelib.domain.identity import normalise_email
from chalicelib.domain.ledger import Movement

from .portal_dids import DidCases, NoSuchDid  # noqa: F401
from .portal_reports import NoSuchExport, ReportCases  # noqa: F401
from .portal_tariffs import TariffCases
from .ports import DuplicateEntry, Refused
from .records import Route

log = logging.getLogger("cascade.portal")

MAX_PAGE = 100
ALLOWED_ROLES = {CREATE_NOTHING: (), CREATE_CLIENTS: (CLIENT,), CREATE_RESELLERS: (CLIENT, RESELLER)}
RIGHTS_RANK = {CREATE_NOTHING: 0, CREATE_CLIENTS: 1, CREATE_RESELLERS: 2}


class NotFound(Exception):
    """No such account, or one outside the caller's wall: the same answer for both."""


class NoSuchTariff(Exception):
    """No tariff of that id owned by that account (the account itself is inside the caller's wall)."""


class NoSuchImport(Exception):
    """No deck import of that id for that tariff."""


class Forbidden(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class Conflict(Exception):
    def __init__(self, code: str, message: str, details: Optional[dict] = None):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details or {}


class InvalidInput(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field} {message}")
        self.field, self.message = field, message


def _same_request(existing, movement: Movement) -> bool:
    """Is a stored journal item the entry this movement would write? Compared on what the request said
    (account, kind, postings; a credit limit's new value), not on what the account is now."""
    entry = movement.entry
    if (existing.account_id, existing.entry_kind) != (entry.subject, entry.kind):
        return False
    if {k: Decimal(v) for k, v in existing.postings.items()} != {p.book: p.amount for p in entry.postings}:
        return False
    if entry.kind == ledger.CREDIT_LIMIT:
        return Decimal((existing.details or {}).get("new", "-1")) == Decimal(entry.details["new"])
    return True


def new_id(prefix: str) -> str:
    """Unguessable ids (96 random bits): an id is never a hint about another tenant's."""
    return prefix + secrets.token_hex(12)


LIMIT_FIELDS = ("max_calls", "cps_limit", "daily_limit", "monthly_limit")


class Portal(TariffCases, DidCases, ReportCases):
    def __init__(self, store, identity=None, clock: Callable[[], float] = time.time, decks=None, jobs=None):
        self.store, self.identity, self.clock = store, identity, clock
        self.decks, self.jobs = decks, jobs          # S3 decks and background tasks (large imports only)

    # --- the wall ---------------------------------------------------------------------------------

    def walled(self, principal: Principal, account_id: str) -> Account:
        """The one check every route makes: the account, if the caller may see it; else NotFound."""
        account = self.store.account(account_id) if isinstance(account_id, str) and account_id else None
        if account is None or not principal.sees(account.path):
            raise NotFound(account_id)
        return account

    def managed(self, principal: Principal, account_id: str) -> Account:
        """An account the caller may act on: inside its wall and below it (a caller never manages
        itself), and the caller itself must be active."""
        account = self.walled(principal, account_id)
        if not principal.manages(account.path):
            raise Forbidden("forbidden", "only an ancestor of this account may do this")
        # the caller's status was read with its session (services.identity.authenticate)
        if principal.status != ACTIVE:
            raise Forbidden("caller_not_active", "a suspended or closed account cannot change others")
        return account

    # --- accounts ---------------------------------------------------------------------------------

    def create_child(self, principal: Principal, parent_id: str, fields: dict) -> Tuple[Account, dict]:
        """A reseller or client below ``parent_id``; what may be created there is set by the parent's
        ``may_create`` (the admin may create anything anywhere). Returns the account and what is shown
        once (the sign-in invitation's address, the SIP password)."""
        parent = self.walled(principal, parent_id)
        if principal.role == CLIENT:
            raise Forbidden("forbidden", "clients cannot create accounts")
        if principal.status != ACTIVE:
            raise Forbidden("caller_not_active", "a suspended or closed account cannot create accounts")
        if parent.status != ACTIVE:
            raise Conflict("parent_not_active", "accounts can only be created under an active account")
        role = fields["role"]
        if principal.role != ADMIN:
            me = self.store.account(principal.account_id)
            # what the parent may create, and never more than the caller itself may: a reseller limited
            # to clients creates no reseller anywhere below it
            for who in (parent, me):
                if role not in ALLOWED_ROLES.get(who.may_create, ()):
                    raise Forbidden("not_allowed_to_create", f"{who.id} may not create a {role}")
            if RIGHTS_RANK.get(fields.get("may_create") or CREATE_NOTHING, 0) > RIGHTS_RANK.get(me.may_create, 0):
                raise Forbidden("not_allowed_to_create", "an account cannot be given rights its creator does not have")
        root = self._root(parent)
        account_id = new_id("c_" if role == CLIENT else "r_")
        may_create = fields.get("may_create") or (CREATE_NOTHING if role == CLIENT else CREATE_CLIENTS)
        account = Account(
            id=account_id, role=role, parent_id=parent.id, tariff_id=fields.get("tariff_id"),
            name=fields["name"], status=ACTIVE, billing_type=fields.get("billing_type", "prepaid"),
            billing_mode=fields.get("billing_mode"), credit_limit=fields.get("credit_limit") or Decimal(0),
            max_calls=fields.get("max_calls"), cps_limit=fields.get("cps_limit"),
            daily_limit=fields.get("daily_limit"), monthly_limit=fields.get("monthly_limit"),
            allow_loss=bool(fields.get("allow_loss", False)),
            reseller_model=fields.get("reseller_model", "margin"),
            commission_percent=fields.get("commission_percent") or Decimal(0), currency=parent.currency,
            path=child_path(parent.path, account_id),
            email=normalise_email(fields["email"]) if fields.get("email") is not None else None,
            timezone=fields.get("timezone", "UTC"), billing_day=fields.get("billing_day", 1),
            low_balance=fields.get("low_balance"), may_create=may_create,
            created_at=self._now_iso(),
        )
        if fields.get("currency") not in (None, parent.currency):
            raise InvalidInput("currency", f"must be the tree's currency {parent.currency}")
        self._check(account, parent, root.settings)
        if account.tariff_id is not None:
            self._check_tariff(account.tariff_id, parent)
        identities = []
        if role == CLIENT:
            chain = self._chain_of(parent)
            identities.append((account.id, Route.of_chain([account] + chain)))
        self.store.create_account(account, identities)
        shown = {}
        if account.email and self.identity is not None:
            try:
                shown["email"] = self.identity.create_login(account.id, account.email, fields.get("password"))
            except Exception:
                # all or nothing: a login written before the invitation mail failed goes too
                try:
                    self.identity.forget_account(account.id, account.email)
                except Exception:   # noqa: BLE001 - no login was written (e.g. the e-mail was taken)
                    log.warning("account %s: creation undone, no login to remove", account.id)
                self.store.remove_new_account(account.id, [n for n, _ in identities])
                raise
        log.info("account %s (%s) created under %s by %s", account.id, role, parent.id, principal.account_id,
                 extra={"event": "account_created", "account_id": account.id, "by": principal.account_id})
        return account, shown

    def get(self, principal: Principal, account_id: str) -> Account:
        return self.walled(principal, account_id)

    def edit(self, principal: Principal, account_id: str, fields: dict) -> Account:
        account = self.managed(principal, account_id)
        if "may_create" in fields and principal.role != ADMIN:
            me = self.store.account(principal.account_id)
            if RIGHTS_RANK.get(fields["may_create"], 0) > RIGHTS_RANK.get(me.may_create if me else CREATE_NOTHING, 0):
                raise Forbidden("not_allowed_to_create", "an account cannot be given rights its manager does not have")
        if account.status == CLOSED:
            raise Conflict("account_closed", "a closed account cannot be changed")
        parent = self.store.account(account.parent_id)
        updated = replace(account, **fields)
        self._check(updated, parent, self._root(account).settings)
        if "tariff_id" in fields and fields["tariff_id"] is not None:
            self._check_tariff(fields["tariff_id"], parent)
        change = None
        if "billing_type" in fields and fields["billing_type"] != account.billing_type:
            change = ledger.billing_type_change(account, fields["billing_type"])
        try:
            self.store.update_account(account.id, fields, expect_status=(ACTIVE, SUSPENDED), change=change,
                                      search=(updated.name, updated.email),
                                      tariff_move=(account.tariff_id, fields["tariff_id"], parent.id, self._now_iso())
                                      if "tariff_id" in fields else None)
        except Refused as exc:
            raise self._refusal(account, exc) from exc
        if any(getattr(updated, f) != getattr(account, f) for f in LIMIT_FIELDS if f in fields):
            # Permits and CPS shares lent under the old limits (and money, if a spend limit now keeps the
            # level on its own item) come back within a rebalancer tick and are lent again under the new.
            self.store.request_recall(account.id, int(self.clock()))
        return self.store.account(account.id)

    def set_status(self, principal: Principal, account_id: str, action: str) -> Account:
        account = self.managed(principal, account_id)
        target = {"suspend": SUSPENDED, "resume": ACTIVE, "close": CLOSED}[action]
        allowed_from = {"suspend": (ACTIVE,), "resume": (SUSPENDED,), "close": (ACTIVE, SUSPENDED)}[action]
        if account.status == target:
            return account                 # idempotent
        if account.status not in allowed_from:
            raise Conflict(f"cannot_{action}", f"a {account.status} account cannot be {target}")
        if action == "close":
            open_children = [c for c in self._all_children(account.id) if c.status != CLOSED]
            if open_children:
                raise Conflict("has_open_children", "close its accounts first", {"open_children": len(open_children)})
        values: Dict[str, object] = {"status": target}
        if action == "close":
            values["closed_at"] = self._now_iso()
        try:
            self.store.update_account(account.id, values, expect_status=allowed_from)
        except Refused as exc:
            raise Conflict("changed_meanwhile", "the account changed; read it and try again") from exc
        if target != ACTIVE:
            # Escrow this account keeps on its clients' items comes back within a rebalancer tick; calls
            # are refused at once (authorize reads every level's status).
            self.store.request_recall(account.id, int(self.clock()))
        if self.identity is not None:
            if action == "close" and account.email:
                self.identity.close_login(account.id, account.email)
            elif action == "suspend":
                self.identity.bump_epoch(account.id)
        log.info("account %s %s by %s", account.id, target, principal.account_id,
                 extra={"event": f"account_{target}", "account_id": account.id, "by": principal.account_id})
        return self.store.account(account.id)

    def children(self, principal: Principal, account_id: str, limit: int, cursor: Optional[str]):
        account = self.walled(principal, account_id)
        return self.store.children(account.id, limit, cursor)

    # --- tariffs (read) -----------------------------------------------------------------------------

    def tariffs(self, principal: Principal, account_id: str, limit: int, cursor: Optional[str]):
        """The price lists an account owns (sells with), for the account and its ancestors. What its
        parent charges it is not among them: the parent owns that tariff."""
        account = self.walled(principal, account_id)
        return self.store.tariffs(account.id, limit, cursor)

    def tariff(self, principal: Principal, account_id: str, tariff_id: str, limit: int = 1000,
               cursor: Optional[str] = None):
        """One tariff the account owns, with a page of its rate versions by prefix."""
        account = self.walled(principal, account_id)
        tariff = self._owned(account, tariff_id).tariff
        book, next_cursor = self.store.rate_page(tariff.id, limit, cursor)
        return tariff, book, next_cursor

    def descendants(self, principal: Principal, account_id: str, limit: int, cursor: Optional[str],
                    role: Optional[str] = None, status: Optional[str] = None, text: Optional[str] = None):
        account = self.walled(principal, account_id)
        return self.store.subtree(account.path.split("/")[0], account.path, limit, cursor, role, status, text)

    # --- SIP users --------------------------------------------------------------------------------

    def add_sip_user(self, principal: Principal, account_id: str, username: str) -> dict:
        account = self.managed(principal, account_id)
        if account.role != CLIENT:
            raise Conflict("not_a_client", "SIP users belong to clients")
        if account.status == CLOSED:
            raise Conflict("account_closed", "a closed account cannot get SIP users")
        route = Route.of_chain([account] + self._chain_of(self.store.account(account.parent_id)))
        password = secrets.token_urlsafe(18)
        self.store.add_identity(username, account.id, route, password)
        log.info("SIP user %s added to %s", username, account.id)
        # Shown once; stored for the switch's registrar to read (a later issue), never returned again.
        return {"username": username, "account_id": account.id, "status": "active", "password": password}

    def sip_users(self, principal: Principal, account_id: str) -> List[dict]:
        account = self.walled(principal, account_id)
        return [{"username": i.name, "account_id": account.id, "status": "active"}
                for i in self.store.identities(account.id) if i.name != account.id]

    def remove_sip_user(self, principal: Principal, account_id: str, username: str) -> None:
        account = self.managed(principal, account_id)
        if username == account.id or not self.store.remove_identity(username, account.id):
            raise NotFound(username)

    # --- money ------------------------------------------------------------------------------------

    def _money_target(self, principal: Principal, account_id: str) -> Account:
        account = self.managed(principal, account_id)
        if account.status == CLOSED:
            raise Conflict("account_closed", "a closed account's money does not move")
        return account

    def payment(self, principal: Principal, account_id: str, amount: Decimal, key: str, ref: str = "",
                description: str = ""):
        account = self._money_target(principal, account_id)
        return self._post(account, ledger.payment(account, amount, self._key(principal, key), principal.account_id,
                                                  ref, description), amount, principal.account_id, key)

    def charge(self, principal: Principal, account_id: str, amount: Decimal, key: str, ref: str = "",
               description: str = ""):
        account = self._money_target(principal, account_id)
        return self._post(account, ledger.charge(account, amount, self._key(principal, key), principal.account_id,
                                                  ref, description), amount, principal.account_id, key)

    def transfer(self, principal: Principal, account_id: str, amount: Decimal, key: str, ref: str = "",
                 description: str = ""):
        """From the caller's own balance to one of its direct children."""
        account = self._money_target(principal, account_id)
        if account.parent_id != principal.account_id or principal.role != RESELLER:
            raise Forbidden("forbidden", "a reseller transfers from its own balance to its own accounts")
        payer = self.store.account(principal.account_id)
        return self._post(account, ledger.transfer(payer, account, amount, self._key(principal, key),
                                                   principal.account_id, ref, description), amount,
                          principal.account_id, key)

    def set_credit_limit(self, principal: Principal, account_id: str, limit: Decimal, key: str, description: str = ""):
        account = self._money_target(principal, account_id)
        movement = ledger.credit_limit_change(account, limit, self._key(principal, key), principal.account_id,
                                              description)
        return self._post(account, movement, limit, principal.account_id, key)

    def balance(self, principal: Principal, account_id: str) -> Account:
        return self.walled(principal, account_id)

    def history(self, principal: Principal, account_id: str, limit: int, cursor: Optional[str],
                kind: Optional[str] = None, since: Optional[str] = None, until: Optional[str] = None):
        account = self.walled(principal, account_id)
        calls = kind in (None, ledger.CALL)
        entries = kind != ledger.CALL
        rows, next_cursor = self.store.history(account.id, limit, cursor, since, until, calls=calls, entries=entries,
                                               path=account.path, role=account.role)
        if kind not in (None, ledger.CALL):
            rows = [r for r in rows if getattr(r, "entry_kind", None) == kind]
        return account, rows, next_cursor

    # --- internals --------------------------------------------------------------------------------

    def _post(self, account: Account, movement: Movement, amount: Decimal, caller: str, key: str):
        """Apply once. The idempotency key is the caller's, whatever the account or kind: a retried
        request gets the first entry back; the same key for another account, kind or amount is a
        conflict, never a second movement."""
        try:
            self.store.post(movement, self.clock(), idempotency=(caller, key))
        except DuplicateEntry:
            existing = self.store.entry_for_key(caller, key)
            if existing is None or not _same_request(existing, movement):
                raise Conflict("idempotency_key_reused", "this idempotency key was used for another request")
            return existing, False
        except Refused as exc:
            raise self._refusal(account, exc) from exc
        log.info("%s %s on %s", movement.entry.kind, amount, account.id,
                 extra={"event": movement.entry.kind, "account_id": account.id, "entry_id": movement.entry.id})
        return self.store.journal_entry(movement.entry.subject, movement.entry.id), True

    def _refusal(self, before: Account, exc: Refused) -> Conflict:
        """Why the store refused: if the account is as it was read, its funds did (money held for calls
        in flight stays held); otherwise it changed meanwhile and the caller should read it again."""
        now = self.store.account(before.id)
        if now is not None and (now.credit_limit, now.billing_type, now.status) == \
                (before.credit_limit, before.billing_type, before.status):
            return Conflict("insufficient_funds", "not enough available funds (money held for calls in flight "
                                                  "stays held)")
        return Conflict("changed_meanwhile", "the account changed; read it and try again")

    @staticmethod
    def _key(principal: Principal, key: str) -> str:
        # Keys are the caller's own namespace: two resellers using the same key never collide.
        return f"{principal.account_id}:{key}"

    def _check(self, account: Account, parent: Optional[Account], settings: Optional[TreeSettings]) -> None:
        try:
            check_account(account, parent, settings or TreeSettings())
        except InvalidAccount as exc:
            raise InvalidInput(exc.field, str(exc).split(" ", 1)[1]) from exc

    def _check_tariff(self, tariff_id: str, parent: Account) -> None:
        """A child's tariff must be one its parent owns (it sells at the parent's prices)."""
        tariff = self.store.tariff(tariff_id)
        if tariff is None or tariff.owner != parent.id:
            raise InvalidInput("tariff_id", "no such tariff of the parent account")

    def _root(self, account: Account) -> Account:
        root_id = account.path.split("/")[0]
        root = account if root_id == account.id else self.store.account(root_id)
        if root is None:
            raise NotFound(root_id)
        return root

    def _chain_of(self, account: Account) -> List[Account]:
        """``account`` and its ancestors up to the root, from its path (one read)."""
        ids = account.path.split("/")
        found = self.store.accounts(ids)
        return [found[i] for i in reversed(ids)]

    def _all_children(self, account_id: str) -> List[Account]:
        out, cursor = [], None
        while True:
            page, cursor = self.store.children(account_id, MAX_PAGE, cursor)
            out += page
            if not cursor:
                return out

    def _now_iso(self) -> str:
        from datetime import datetime, timezone
        return datetime.fromtimestamp(self.clock(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
