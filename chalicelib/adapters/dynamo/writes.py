"""Writes: one generic conditional transaction (``Tx``) that applies what the domain decided, and the
movements built on it: holds, debits and releases on the switch path, journal entries for the portal.

The adapter does no money arithmetic: a ``domain.ledger.BalanceChange`` carries every delta (``available``
included) and every guard; ``change_update`` turns it into ADD actions and a condition.
"""
import logging
import random
import time
from typing import Callable, List, Optional, Sequence, Tuple

from pynamodb.connection import Connection
from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib.domain import counters, ledger
from chalicelib.domain.accounts import Account
from chalicelib.domain.counters import CPS, CounterChange
from chalicelib.domain.escrow import SlotChange
from chalicelib.domain.ledger import BalanceChange, JournalEntry, Movement
from chalicelib.domain.settlement import LevelCharge
from chalicelib.services.ports import AlreadySettled, DuplicateCall, DuplicateEntry, Refused, StoreBusy
from chalicelib.services.records import DONE, EXPIRED, HELD, CallRecord, Route

from . import cache
from .call_codec import encode_levels, encode_result
from .keys import (account_key, call_key, children_list, hash_shard, identity_key, idempotency_key, iso_ms,
                   want_key, cdr_at, cdr_tree)
from .models import (AccountItem, CallItem, CoreItem, IdempotencyItem, IdentityItem,
                     JournalItem)

log = logging.getLogger("cascade.store")

RETRYABLE = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded",
             "RequestLimitExceeded", "TransactionInProgressException"}


def with_retries(operation, what: str, attempts: int = 6, base: float = 0.02, cap: float = 0.5):
    """Retry transaction conflicts and throttling with capped exponential backoff and full jitter."""
    for attempt in range(attempts):
        try:
            return operation()
        except TransactWriteError as exc:
            codes = {r.code for r in (exc.cancellation_reasons or []) if r is not None}
            code = exc.cause_response_code
            if not (codes & RETRYABLE or code in RETRYABLE) or attempt == attempts - 1:
                raise
            log.warning("%s: %s, retry %d", what, codes or code, attempt + 1)
            time.sleep(random.uniform(0, min(cap, base * 2 ** attempt)))
    raise StoreBusy(what)


def _refused(reason) -> bool:
    return reason is not None and reason.code == "ConditionalCheckFailed"


def condition_failed(exc: TransactWriteError) -> bool:
    return any(_refused(r) for r in exc.cancellation_reasons or [])


def slot_update(sc: SlotChange):
    """(actions, conditions) for one escrow slot of a client item (domain.escrow.SlotChange)."""
    a, k = AccountItem, sc.distance
    owner, avail, spent = (getattr(a, f"e{k}{x}") for x in "oas")
    actions = [attr.add(delta) for attr, delta in ((avail, sc.available), (spent, sc.spent)) if delta]
    conditions = []
    if sc.claim:
        actions.append(owner.set(sc.owner))
        conditions.append(owner.does_not_exist() | (owner == sc.owner))
    elif sc.min_available is not None or sc.min_spent is not None:
        conditions.append(owner == sc.owner)
    if sc.min_available is not None:
        conditions.append(avail >= sc.min_available)
    if sc.min_spent is not None:
        conditions.append(spent >= sc.min_spent)
    if sc.want is not None:
        actions += [getattr(a, f"e{k}w").set(sc.owner), getattr(a, f"e{k}n").set(sc.want)]
    if sc.used_at is not None:
        actions.append(getattr(a, f"e{k}u").set(sc.used_at))
    permits, share, second, started = (getattr(a, f"e{k}{x}") for x in "crtq")
    if sc.permits:
        actions.append(permits.add(sc.permits))
    if sc.min_permits is not None:
        conditions.append(permits >= sc.min_permits)
    if sc.share:
        actions.append(share.add(sc.share))
    if sc.idle_since is not None:
        conditions.append(second.does_not_exist() | (second < str(sc.idle_since)))
    if sc.start is not None:
        # Like domain.counters, but the limit is the slot's own share (attributes compare, never add).
        if sc.new_second:
            actions += [second.set(str(sc.start)), started.set(1)]
            conditions += [second.does_not_exist() | (second < str(sc.start)), share >= 1]
        else:
            actions.append(started.add(1))
            conditions += [second == str(sc.start), started < share]
    return actions, conditions


def counter_update(cc: CounterChange):
    """(actions, conditions) for one usage counter of an account item (domain.counters.CounterChange)."""
    a = AccountItem
    period = getattr(a, f"{cc.name}_at")
    value = a.cps_n if cc.name == CPS else getattr(a, f"{cc.name}_used")
    number = int if cc.name == CPS else (lambda x: x)      # a call count is a NumberAttribute
    if cc.start:       # a new period: of two calls that both read the old one, only one starts it
        return [period.set(cc.period), value.set(number(cc.delta))], [period.does_not_exist() | (period < cc.period)]
    conditions = []
    if cc.at_most is not None:   # the limit less this call's share, computed by the domain
        conditions.append((period == cc.period) & (value <= number(cc.at_most)))
    return [value.add(number(cc.delta))], conditions


def _lent_guard(cc: CounterChange) -> list:
    a = AccountItem
    if cc.lent_at_most is None:
        return []
    return [a.cps_lent.does_not_exist() | (a.cps_lent <= cc.lent_at_most)]


def change_update(change: BalanceChange, must_exist: bool = False):
    """(actions, condition) for one account item: ADD every delta, check every guard."""
    a = AccountItem
    actions = [attr.add(delta) for attr, delta in (
        (a.balance, change.balance), (a.held, change.held), (a.credit_limit, change.credit_limit),
        (a.available, change.available), (a.active_calls, change.active_calls)) if delta]
    conditions = []
    for sc in change.slots:
        more, guards = slot_update(sc)
        actions += more
        conditions += guards
    for cc in change.counters:
        more, guards = counter_update(cc)
        actions += more
        conditions += guards + _lent_guard(cc)
    if change.cps_lent:
        actions.append(a.cps_lent.add(change.cps_lent))
    if change.max_active_calls is not None:
        conditions.append(a.active_calls <= change.max_active_calls)
    if change.max_cps_lent is not None:
        conditions.append(a.cps_lent.does_not_exist() | (a.cps_lent <= change.max_cps_lent))
    if change.cps_room is not None:
        second, most = change.cps_room
        conditions.append(a.cps_at.does_not_exist() | (a.cps_at != str(second)) | (a.cps_n <= most))
    if any(sc.want is not None for sc in change.slots):
        actions.append(a.want.set(want_key(change.account_id)))
    if must_exist:
        conditions.append(a.pk.exists())
    if change.active_only:
        conditions.append(a.status == "active")
    if change.min_available is not None:
        conditions.append(a.available >= change.min_available)
    if change.below_max_calls:
        conditions.append(a.active_calls < a.max_calls)
    if change.credit_was is not None:
        conditions.append(a.credit_limit == change.credit_was)
    condition = None
    for c in conditions:
        condition = c if condition is None else condition & c
    return actions, condition


class Tx:
    """One TransactWriteItems built from labelled items. PynamoDB sends deletes, then puts, then updates, so
    labels are kept in that order and a cancellation reason is traced back to what it refused."""

    def __init__(self):
        self._deletes: List[Tuple[object, CoreItem, object]] = []
        self._puts: List[Tuple[object, CoreItem, object]] = []
        self._updates: List[Tuple[object, CoreItem, list, object]] = []

    def delete(self, label, model, condition=None) -> "Tx":
        self._deletes.append((label, model, condition))
        return self

    def put(self, label, model, condition=None) -> "Tx":
        self._puts.append((label, model, condition))
        return self

    def update(self, label, model, actions, condition=None) -> "Tx":
        self._updates.append((label, model, actions, condition))
        return self

    def change(self, change: BalanceChange, must_exist: bool = False) -> "Tx":
        if not change.empty:
            actions, condition = change_update(change, must_exist)
            self.update((change.what, change.account_id), AccountItem(*account_key(change.account_id)),
                        actions, condition)
        return self

    @property
    def labels(self) -> list:
        return [d[0] for d in self._deletes] + [p[0] for p in self._puts] + [u[0] for u in self._updates]

    def refused(self, exc: TransactWriteError) -> list:
        labels = self.labels
        return [labels[i] for i, r in enumerate(exc.cancellation_reasons or []) if _refused(r) and i < len(labels)]

    def commit(self, connection_of: Callable[[], Connection], what: str) -> None:
        def run():
            with TransactWrite(connection=connection_of()) as tx:
                for _, model, condition in self._deletes:
                    tx.delete(model, condition=condition)
                for _, model, condition in self._puts:
                    tx.save(model, condition=condition)
                for _, model, actions, condition in self._updates:
                    tx.update(model, actions, condition=condition)
        with_retries(run, what)


def set_fields(item, model, expect_status: Optional[Sequence[str]] = None, **values) -> bool:
    """Set fields of an existing background job's item (a deck import, a CDR export); with
    ``expect_status``, only while it is in one of those states. False when it is not (or gone)."""
    from pynamodb.exceptions import UpdateError
    actions = [getattr(model, k).set(v) for k, v in values.items() if v is not None]
    condition = model.pk.exists()
    if expect_status:
        condition &= model.status.is_in(*expect_status)
    try:
        item.update(actions=actions, condition=condition)
    except UpdateError as exc:
        if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
            return False
        raise StoreBusy(str(exc)) from exc
    return True


def journal_item(entry: JournalEntry, at: str) -> JournalItem:
    return JournalItem(entry.subject, entry.id, at_id=f"{at}#{entry.id}", entry_kind=entry.kind,
                       postings={p.book: str(p.amount) for p in entry.postings}, peer_id=entry.peer,
                       created_at=at, ref=entry.ref, description=entry.description, by=entry.by,
                       details=entry.details or None)


def account_item(a: Account) -> AccountItem:
    """The whole item for a new account (or the seed's); ``available`` from the domain's formula."""
    settings = None
    if a.settings is not None:
        s = a.settings
        settings = {"max_depth": s.max_depth, "max_duration": s.max_duration, "hold_grace": s.hold_grace,
                    "billing_mode": s.billing_mode, "dial_plan": s.dial_plan.to_dict()}
    return AccountItem(
        *account_key(a.id), id=a.id, role=a.role, parent_id=a.parent_id, tariff_id=a.tariff_id, name=a.name,
        status=a.status, billing_type=a.billing_type, billing_mode=a.billing_mode, balance=a.balance,
        credit_limit=a.credit_limit, held=a.held,
        available=ledger.available_delta(a.billing_type, a.balance, a.held, a.credit_limit),
        active_calls=a.active_calls, max_calls=a.max_calls, cps_limit=a.cps_limit, daily_limit=a.daily_limit,
        monthly_limit=a.monthly_limit, allow_loss=a.allow_loss, reseller_model=a.reseller_model,
        commission_percent=a.commission_percent, currency=a.currency, settings=settings,
        path=a.path or None, tree=a.path.split("/")[0] if a.path else None, email=a.email,
        timezone=a.timezone, billing_day=a.billing_day, low_balance=a.low_balance, may_create=a.may_create,
        created_at=a.created_at or None, closed_at=a.closed_at, search_text=search_text(a.name, a.email),
        list_pk=children_list(a.parent_id) if a.parent_id else None, list_sk=a.id if a.parent_id else None,
    )


def search_text(name: Optional[str], email: Optional[str]) -> str:
    return f"{name or ''} {email or ''}".lower()


class DynamoWrites:
    """The money-moving half of services.ports (BalanceStore) and the portal's journal writes."""

    def __init__(self, connection: Optional[Connection] = None):
        self._connection = connection

    def _conn(self) -> Connection:
        if self._connection is None:
            self._connection = Connection(region=CoreItem.Meta.region)
        return self._connection

    # --- the switch path --------------------------------------------------------------------------

    def place_holds(self, call: CallRecord, refresh: Optional[Tuple[str, Route]] = None) -> None:
        tx = Tx()
        for change in ledger.holds(call.levels, call.wants, call.authorized_at, call.counters, call.fresh):
            tx.change(change)
        tx.put(("call", None), self._call_item(call), condition=CallItem.pk.does_not_exist())
        if refresh is not None:
            name, route = refresh
            tx.update(("identity", name), IdentityItem(*identity_key(name)),
                      [IdentityItem.route.set(route.to_dict())], condition=IdentityItem.pk.exists())
        try:
            tx.commit(self._conn, f"hold {call.call_id}")
            if refresh is not None:
                cache.SWITCH_CACHE.drop(("identity", refresh[0]))     # the next call reads the new route
        except TransactWriteError as exc:
            refused = tx.refused(exc)
            if ("call", None) in refused:
                raise DuplicateCall(call.call_id) from exc
            if refused:
                what, account_id = refused[0]
                log.info("call %s: %s refused at level %s", call.call_id, what, account_id)
                raise Refused(account_id, what) from exc
            raise StoreBusy(str(exc)) from exc

    @staticmethod
    def _call_item(call: CallRecord) -> CallItem:
        pk, sk = call_key(call.call_id)
        return CallItem(
            pk, sk, call_id=call.call_id, status=call.status, account=call.account, client_id=call.client_id,
            destination=call.destination, number=call.number, caller_id=call.caller_id,
            authorized_at=call.authorized_at, max_duration=call.max_duration,
            levels=encode_levels(call.levels), switch_id=call.switch_id, direction=call.direction,
            held_shard=f"HELD#{hash_shard(call.call_id)}", expires_at=call.expires_at,
        )

    def settle(self, call: CallRecord, charges: List[LevelCharge], billsec: int, disposition: str,
               result: dict, now: int) -> None:
        """The call record becomes the call's journal entry (its charges are what the postings follow
        from: domain.ledger.call_entry) and its only CDR: no ledger item and no CDR item is written. Its
        ``cdr_*`` keys put it in the two CDR listings (client, tree)."""
        was_held = call.status == HELD
        tx = Tx()
        spend = counters.settled(call.levels, [c.net for c in charges], call.authorized_at, call.max_duration,
                                 now, was_held)
        for change in ledger.debits(call.levels, charges, was_held, spend):
            tx.change(change)
        path = "/".join(l.account_id for l in reversed(call.levels))
        tx.update(("call", None), CallItem(*call_key(call.call_id)),
                  [CallItem.status.set(DONE),
                   CallItem.result.set(encode_result(billsec, disposition, call.status == EXPIRED, charges)),
                   CallItem.held_shard.remove(), CallItem.expires_at.remove(),
                   CallItem.cdr_client.set(call.client_id), CallItem.cdr_at.set(cdr_at(call.call_id, now)),
                   CallItem.cdr_tree.set(cdr_tree(call.levels[-1].account_id, call.call_id)),
                   CallItem.cdr_path.set(path)],
                  condition=CallItem.status == call.status)   # held or expired, as read
        try:
            tx.commit(self._conn, f"settle {call.call_id}")
        except TransactWriteError as exc:
            if condition_failed(exc):
                raise AlreadySettled(call.call_id) from exc
            raise StoreBusy(str(exc)) from exc

    def release(self, call: CallRecord, now: int) -> bool:
        tx = Tx()
        spend = counters.released(call.levels, call.authorized_at, call.max_duration, now)
        for change in ledger.releases(call.levels, spend):
            tx.change(change)
        tx.update(("call", None), CallItem(*call_key(call.call_id)),
                  [CallItem.status.set(EXPIRED), CallItem.held_shard.remove()],
                  condition=CallItem.status == HELD)
        try:
            tx.commit(self._conn, f"release {call.call_id}")
            return True
        except TransactWriteError as exc:
            if condition_failed(exc):
                return False   # completed meanwhile
            raise StoreBusy(str(exc)) from exc

    # --- the portal -------------------------------------------------------------------------------

    def post(self, movement: Movement, now: float, extra: Sequence[Tuple[object, CoreItem, list, object]] = (),
             idempotency: Optional[Tuple[str, str]] = None) -> None:
        """Apply a movement's balance changes and write its journal entry, in one transaction: all or
        nothing. ``idempotency`` (caller, key) spends the caller's key in the same transaction. ``extra``
        updates (label, item, actions, condition) ride along. Raises DuplicateEntry (the entry id or the
        key exists: a replay) or Refused."""
        tx = Tx()
        tx.put(("entry", movement.entry.id), journal_item(movement.entry, iso_ms(now)),
               condition=JournalItem.entry_id.does_not_exist())
        if idempotency is not None:
            tx.put(("entry", "key"), IdempotencyItem(*idempotency_key(*idempotency), entry_account=movement.entry.subject,
                                                     entry_id=movement.entry.id),
                   condition=IdempotencyItem.pk.does_not_exist())
        for change in movement.changes:
            tx.change(change, must_exist=True)
        for label, item, actions, condition in extra:
            tx.update(label, item, actions, condition)
        from .report_store import money_updates      # the month's report rows, in the same transaction
        for label, item, actions, condition in money_updates(
                {p.book: p.amount for p in movement.entry.postings}, movement.entry.kind, iso_ms(now)):
            tx.update(label, item, actions, condition)
        try:
            tx.commit(self._conn, f"post {movement.entry.id}")
        except TransactWriteError as exc:
            refused = tx.refused(exc)
            if ("entry", movement.entry.id) in refused or ("entry", "key") in refused:
                raise DuplicateEntry(movement.entry.id) from exc
            if refused:
                what, account_id = refused[0]
                raise Refused(account_id, what) from exc
            raise StoreBusy(str(exc)) from exc
