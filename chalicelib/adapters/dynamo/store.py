"""The switch path's storage on DynamoDB (PynamoDB).

Round trips: authorize = BatchGetItem(identity, key) + BatchGetItem(chain, tariffs, rate groups, call,
counters) + TransactWriteItems(holds). complete = BatchGetItem(call, key) + TransactWriteItems(debits).
"""
import hashlib
import logging
import random
import time
import zlib
from datetime import datetime, timezone
from typing import Dict, Iterable, List, Optional, Tuple

from pynamodb.connection import Connection
from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib.domain.accounts import EARLY, Account, TreeSettings
from chalicelib.domain.authorization import Level, Usage
from chalicelib.domain.money import ZERO
from chalicelib.domain.settlement import LevelCharge
from chalicelib.domain.tariffs import Rate, Tariff, candidate_groups
from chalicelib.services.ports import AlreadySettled, DuplicateCall, Refused, StoreBusy
from chalicelib.services.records import DONE, EXPIRED, HELD, CallRecord, KeyCheck, Lookup, Route, Snapshot

from .models import (HELD_SHARDS, AccountItem, CallItem, CdrItem, CoreItem, CounterItem, IdentityItem,
                     LedgerEntryItem, RateGroupItem, SwitchKeyItem, TariffItem)

log = logging.getLogger("cascade.store")

ROOT = "#"
RETRYABLE = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded",
             "RequestLimitExceeded", "TransactionInProgressException"}
DAY_TTL, MONTH_TTL, CPS_TTL = 40 * 86400, 400 * 86400, 120


def account_key(account_id: str) -> Tuple[str, str]:
    return f"ACC#{account_id}", ROOT


def identity_key(name: str) -> Tuple[str, str]:
    return f"ID#{name}", ROOT


def switch_key_key(digest: str) -> Tuple[str, str]:
    return f"KEY#{digest}", ROOT


def tariff_key(tariff_id: str) -> Tuple[str, str]:
    return f"TRF#{tariff_id}", ROOT


def rate_group_key(tariff_id: str, group: str) -> Tuple[str, str]:
    return f"TRF#{tariff_id}", f"G#{group}"


def text_key(text: str) -> str:
    """A key part for text a switch or caller chose (a SIP Call-ID): 32 hex digits of its SHA-256, so
    every key that embeds it has a fixed size whatever the text (DynamoDB refuses sort keys over
    1,024 bytes) and cannot contain the '#' that separates key parts. The text itself is an attribute."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def call_key(call_id: str) -> Tuple[str, str]:
    return f"CALL#{text_key(call_id)}", ROOT


def cps_key(account_id: str, second: int) -> Tuple[str, str]:
    return f"CPS#{account_id}", str(second)


def day_of(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d")


def spend_keys(account_id: str, epoch: int) -> Tuple[Tuple[str, str], Tuple[str, str]]:
    day = day_of(epoch)
    return (f"SPEND#{account_id}", f"D#{day}"), (f"SPEND#{account_id}", f"M#{day[:7]}")


def iso_ms(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --- item <-> domain ----------------------------------------------------------------------------

def to_account(item: AccountItem) -> Account:
    return Account(
        id=item.id, role=item.role, parent_id=item.parent_id, tariff_id=item.tariff_id, name=item.name,
        status=item.status, billing_type=item.billing_type, billing_mode=item.billing_mode,
        balance=item.balance, credit_limit=item.credit_limit, held=item.held,
        active_calls=int(item.active_calls or 0),
        max_calls=None if item.max_calls is None else int(item.max_calls),
        cps_limit=None if item.cps_limit is None else int(item.cps_limit),
        daily_limit=item.daily_limit, monthly_limit=item.monthly_limit, allow_loss=bool(item.allow_loss),
        reseller_model=item.reseller_model, commission_percent=item.commission_percent,
        currency=item.currency,
        settings=TreeSettings.from_dict(item.settings) if item.parent_id is None else None,
    )


def to_tariff(item: TariffItem) -> Tariff:
    return Tariff(id=item.id, owner=item.owner, kind=item.tariff_kind, markup_fixed=item.markup_fixed,
                  markup_percent=item.markup_percent, name=item.name,
                  increments=tuple(int(x) for x in item.increments) if item.increments else None)


def to_call(item: CallItem) -> CallRecord:
    return CallRecord(
        call_id=item.call_id, status=item.status, account=item.account, client_id=item.client_id,
        destination=item.destination, number=item.number, caller_id=item.caller_id,
        authorized_at=int(item.authorized_at), max_duration=int(item.max_duration),
        expires_at=int(item.expires_at or 0), levels=[Level.from_dict(d) for d in item.levels],
        answer=item.answer, result=item.result, switch_id=item.switch_id,
    )


def key_check(item: Optional[SwitchKeyItem]) -> KeyCheck:
    if item is None:
        return KeyCheck(active=False)
    return KeyCheck(active=item.status == "active", switch_id=item.key_id)


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


class Labelled:
    """Remembers what each transaction item is, in the order PynamoDB sends them (condition checks,
    deletes, puts, then updates), so a cancellation reason can be traced to its item."""

    def __init__(self, tx: TransactWrite):
        self.tx, self._puts, self._updates = tx, [], []

    def save(self, label, model, condition=None):
        self.tx.save(model, condition=condition)
        self._puts.append(label)

    def update(self, label, model, actions, condition=None):
        self.tx.update(model, actions, condition=condition)
        self._updates.append(label)

    @property
    def labels(self) -> list:
        return self._puts + self._updates


def _refused(reason) -> bool:
    return reason is not None and reason.code == "ConditionalCheckFailed"


def refused_labels(exc: TransactWriteError, labels: list) -> list:
    return [labels[i] for i, r in enumerate(exc.cancellation_reasons or []) if _refused(r) and i < len(labels)]


def condition_failed(exc: TransactWriteError) -> bool:
    return any(_refused(r) for r in exc.cancellation_reasons or [])


class DynamoStore:
    """Implements services.ports.Directory and BalanceStore."""

    def __init__(self, connection: Optional[Connection] = None):
        self._connection = connection

    def _tx(self) -> TransactWrite:
        if self._connection is None:
            self._connection = Connection(region=CoreItem.Meta.region)
        return TransactWrite(connection=self._connection)

    # --- reads --------------------------------------------------------------------------------

    def lookup(self, account_ref: str, key_hash: str) -> Lookup:
        items = list(CoreItem.batch_get([identity_key(account_ref), switch_key_key(key_hash)]))
        key = next((i for i in items if isinstance(i, SwitchKeyItem)), None)
        ident = next((i for i in items if isinstance(i, IdentityItem)), None)
        route = Route.from_dict(ident.client_id, ident.route) if ident else None
        return Lookup(key=key_check(key), route=route, identity=account_ref)

    def resolve_route(self, client_id: str) -> Optional[Route]:
        """Walk up from the client one account at a time (the slow path, taken only when a cached
        route no longer matches the tree)."""
        chain: List[Account] = []
        next_id: Optional[str] = client_id
        while next_id is not None:
            try:
                account = to_account(AccountItem.get(*account_key(next_id)))
            except AccountItem.DoesNotExist:
                return None
            chain.append(account)
            next_id = account.parent_id
            if len(chain) > 64:
                raise StoreBusy("account tree loop")
        return Route.of_chain(chain)

    def load(self, route: Route, number: str, call_id: str, now: int) -> Snapshot:
        tariff_ids = list(dict.fromkeys(h.tariff_id for h in route.hops if h.tariff_id))
        keys = [account_key(h.account_id) for h in route.hops]
        keys += [tariff_key(t) for t in tariff_ids]
        keys += [rate_group_key(t, g) for t in tariff_ids for g in candidate_groups(number)]
        keys.append(call_key(call_id))
        counter_keys = {h.account_id: (cps_key(h.account_id, now), *spend_keys(h.account_id, now))
                        for h in route.hops}
        for hop in route.hops:
            keys += [k for flag, k in zip("cdm", counter_keys[hop.account_id]) if flag in hop.limits]
        accounts, tariffs, call = {}, {}, None
        books: Dict[str, Dict[str, list]] = {t: {} for t in tariff_ids}
        counters: Dict[Tuple[str, str], CounterItem] = {}
        for item in CoreItem.batch_get(keys):
            if isinstance(item, AccountItem):
                accounts[item.id] = to_account(item)
            elif isinstance(item, TariffItem):
                tariffs[item.id] = to_tariff(item)
            elif isinstance(item, RateGroupItem):
                for prefix, versions in item.rates.items():
                    books[item.tariff_id][prefix] = [Rate.from_dict(v) for v in versions]
            elif isinstance(item, CallItem):
                call = to_call(item)
            elif isinstance(item, CounterItem):
                counters[(item.pk, item.sk)] = item
        usage = {}
        for hop in route.hops:
            cps_at, day, month = counter_keys[hop.account_id]
            cps = counters.get(cps_at)
            usage[hop.account_id] = Usage(
                day_used=(counters[day].used or ZERO) if day in counters else ZERO,
                month_used=(counters[month].used or ZERO) if month in counters else ZERO,
                calls_this_second=int(cps.n) if cps is not None and cps.n is not None else 0,
            )
        return Snapshot(accounts=accounts, tariffs=tariffs, books=books, usage=usage, call=call)

    def find_call(self, call_id: str, key_hash: Optional[str]) -> Tuple[Optional[CallRecord], KeyCheck]:
        """The call and, when ``key_hash`` is given, the key presented with it (None: a trusted caller,
        the sweeper or a re-read after a lost race)."""
        keys = [call_key(call_id)] + ([switch_key_key(key_hash)] if key_hash else [])
        call, key = None, None
        for item in CoreItem.batch_get(keys, consistent_read=True):
            if isinstance(item, CallItem):
                call = to_call(item)
            elif isinstance(item, SwitchKeyItem):
                key = item
        return call, key_check(key) if key_hash else KeyCheck(active=True)

    def accounts(self, account_ids: List[str]) -> Dict[str, Account]:
        if not account_ids:
            return {}
        return {item.id: to_account(item) for item in
                AccountItem.batch_get([account_key(a) for a in account_ids], consistent_read=True)}

    def expired_calls(self, now: int) -> Iterable[CallRecord]:
        for shard in range(HELD_SHARDS):
            for item in CallItem.held_index.query(f"HELD#{shard}", CallItem.expires_at <= now):
                yield to_call(item)

    # --- money-moving writes ------------------------------------------------------------------

    def place_holds(self, call: CallRecord, refresh: Optional[Tuple[str, Route]] = None) -> None:
        sent = Labelled(None)

        def run():
            nonlocal sent
            with self._tx() as tx:
                sent = Labelled(tx)
                for level in call.levels:
                    if not level.charged:
                        continue
                    self._hold_level(sent, level)
                    if level.cps_limit is not None:
                        counter = CounterItem(*cps_key(level.account_id, call.authorized_at))
                        sent.update(("cps", level.account_id), counter,
                                    [CounterItem.n.add(1), CounterItem.kind.set(CounterItem),
                                     CounterItem.ttl.set(call.authorized_at + CPS_TTL)],
                                    condition=CounterItem.n.does_not_exist() | (CounterItem.n < level.cps_limit))
                    for what, key, ttl, limit, reserve in limit_counters(level, call):
                        # used <= limit - reserve: the arithmetic is done here, DynamoDB compares only
                        sent.update((what, level.account_id), CounterItem(*key),
                                    [CounterItem.used.add(reserve), CounterItem.kind.set(CounterItem),
                                     CounterItem.ttl.set(call.authorized_at + ttl)],
                                    condition=CounterItem.used.does_not_exist()
                                    | (CounterItem.used <= limit - reserve))
                sent.save(("call", None), self._call_item(call), condition=CallItem.pk.does_not_exist())
                if refresh is not None:
                    name, route = refresh
                    sent.update(("identity", name), IdentityItem(*identity_key(name)),
                                [IdentityItem.route.set(route.to_dict())], condition=IdentityItem.pk.exists())
        try:
            with_retries(run, f"hold {call.call_id}")
        except TransactWriteError as exc:
            refused = refused_labels(exc, sent.labels)
            if ("call", None) in refused:
                raise DuplicateCall(call.call_id) from exc
            if refused:
                what, account_id = refused[0]
                log.info("call %s: %s refused at level %s", call.call_id, what, account_id)
                raise Refused(account_id, what) from exc
            raise StoreBusy(str(exc)) from exc

    @staticmethod
    def _hold_level(sent: Labelled, level: Level) -> None:
        # Timeline of one level's item during a call (all in the authorize transaction):
        #   authorize: held += hold, available -= hold, active_calls += 1
        #              only if status = active AND available >= hold AND active_calls < max_calls
        #   complete:  balance -= net, held -= hold, available += hold - net, active_calls -= 1
        actions = [AccountItem.active_calls.add(1)]
        if level.hold:
            actions += [AccountItem.held.add(level.hold), AccountItem.available.add(-level.hold)]
        condition = AccountItem.status == "active"
        if level.guarded:
            floor_need = level.hold if level.mode == EARLY else level.charge(1)
            condition &= AccountItem.available >= floor_need
        if level.max_calls is not None:
            condition &= AccountItem.active_calls < AccountItem.max_calls
        sent.update(("hold", level.account_id), AccountItem(*account_key(level.account_id)), actions,
                    condition=condition)

    @staticmethod
    def _call_item(call: CallRecord) -> CallItem:
        pk, sk = call_key(call.call_id)
        return CallItem(
            pk, sk, call_id=call.call_id, status=call.status, account=call.account, client_id=call.client_id,
            destination=call.destination, number=call.number, caller_id=call.caller_id,
            authorized_at=call.authorized_at, max_duration=call.max_duration,
            levels=[l.to_dict() for l in call.levels], answer=call.answer, switch_id=call.switch_id,
            held_shard=f"HELD#{hash_shard(call.call_id)}", expires_at=call.expires_at,
        )

    def settle(self, call: CallRecord, charges: List[LevelCharge], billsec: int, disposition: str,
               result: dict, now: int) -> None:
        stamp = iso_ms(now)
        was_held = call.status == HELD

        def run():
            with self._tx() as tx:
                for level, charge in zip(call.levels, charges):
                    if level.charged:
                        self._debit_level(tx, call, level, charge, was_held, stamp)
                    tx.save(self._cdr(call, level, charge, billsec, disposition, stamp),
                            condition=CdrItem.account_id.does_not_exist())
                tx.update(CallItem(*call_key(call.call_id)),
                          [CallItem.status.set(DONE), CallItem.result.set(result),
                           CallItem.held_shard.remove(), CallItem.expires_at.remove()],
                          condition=CallItem.status == call.status)   # held or expired, as read
        try:
            with_retries(run, f"settle {call.call_id}")
        except TransactWriteError as exc:
            if condition_failed(exc):
                raise AlreadySettled(call.call_id) from exc
            raise StoreBusy(str(exc)) from exc

    @staticmethod
    def _debit_level(tx, call: CallRecord, level: Level, charge: LevelCharge, was_held: bool, stamp: str) -> None:
        actions = []
        if charge.net:
            actions.append(AccountItem.balance.add(-charge.net))
        if charge.hold:
            actions.append(AccountItem.held.add(-charge.hold))
        if charge.hold - charge.net:
            actions.append(AccountItem.available.add(charge.hold - charge.net))
        if was_held:
            actions.append(AccountItem.active_calls.add(-1))
        if actions:
            tx.update(AccountItem(*account_key(level.account_id)), actions)
        late = True if call.status == EXPIRED else None    # stored only when true
        for amount, kind in ((-charge.cost, "call"), (charge.commission, "commission")):
            if amount:
                tx.save(LedgerEntryItem(level.account_id, f"{stamp}#{text_key(call.call_id)}#{kind}", amount=amount,
                                        entry_kind=kind, ref=call.call_id, created_at=stamp, late=late,
                                        description=("late call to " if late else "call to ") + call.number),
                        condition=LedgerEntryItem.account_id.does_not_exist())
        # The reservation made at authorize becomes the real spend (an expired call's was released).
        for _, key, _, _, reserve in limit_counters(level, call):
            reserved = reserve if was_held else ZERO
            if charge.net or reserved:
                tx.update(CounterItem(*key), [CounterItem.used.add(charge.net - reserved),
                                              CounterItem.spent.add(charge.net)])

    @staticmethod
    def _cdr(call: CallRecord, level: Level, charge: LevelCharge, billsec: int, disposition: str,
             stamp: str) -> CdrItem:
        return CdrItem(
            level.account_id, f"{stamp}#{text_key(call.call_id)}", call_id=call.call_id, client_id=call.client_id,
            role=level.role, destination=call.number, prefix=level.rate.prefix,
            destination_name=level.rate.name, disposition=disposition, billsec=billsec,
            billed_seconds=charge.billed_seconds, buy=charge.cost, sell=charge.sell,
            commission=charge.commission, profit=charge.profit, over_max=billsec > call.max_duration,
            started_at=call.authorized_at, late=True if call.status == EXPIRED else None,
        )

    def release(self, call: CallRecord, now: int) -> bool:
        def run():
            with self._tx() as tx:
                for level in call.levels:
                    if not level.charged:
                        continue
                    actions = [AccountItem.active_calls.add(-1)]
                    if level.hold:
                        actions += [AccountItem.held.add(-level.hold), AccountItem.available.add(level.hold)]
                    tx.update(AccountItem(*account_key(level.account_id)), actions)
                    for _, key, _, _, reserve in limit_counters(level, call):
                        tx.update(CounterItem(*key), [CounterItem.used.add(-reserve)])
                tx.update(CallItem(*call_key(call.call_id)),
                          [CallItem.status.set(EXPIRED), CallItem.held_shard.remove()],
                          condition=CallItem.status == HELD)
        try:
            with_retries(run, f"release {call.call_id}")
            return True
        except TransactWriteError as exc:
            if condition_failed(exc):
                return False   # completed meanwhile
            raise StoreBusy(str(exc)) from exc


def limit_counters(level: Level, call: CallRecord):
    """The spend-limit counters a level's call counts against: those of the day and month it was
    authorized in (a call that crosses midnight belongs to the day it started)."""
    if not level.charged:
        return
    # What a call reserves against a limit while it runs: its charge for the whole granted time.
    reserve = level.charge(call.max_duration)
    day, month = spend_keys(level.account_id, call.authorized_at)
    if level.daily_limit is not None:
        yield "daily", day, DAY_TTL, level.daily_limit, reserve
    if level.monthly_limit is not None:
        yield "monthly", month, MONTH_TTL, level.monthly_limit, reserve


def hash_shard(call_id: str) -> int:
    return zlib.crc32(call_id.encode("utf-8")) % HELD_SHARDS
