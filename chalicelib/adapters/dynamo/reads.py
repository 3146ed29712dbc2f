"""Reads: items to domain objects, and every read the services make (switch path and portal)."""
from decimal import Decimal
from typing import Dict, Iterable, List, Optional, Tuple

from chalicelib.domain.accounts import Account, TreeSettings
from chalicelib.domain.authorization import Usage
from chalicelib.domain.counters import CPS, DAY, MONTH, Counter, current
from chalicelib.domain.escrow import Slot, pool_id, pool_of
from chalicelib.domain.money import ZERO
from chalicelib.domain.tariffs import Rate, Tariff, candidate_groups
from chalicelib.services.ports import StoreBusy
from chalicelib.services.records import (CallRecord, DidLookup, KeyCheck, Lookup, Route, Snapshot, call_answer,
                                         call_result)

from .call_codec import decode_charges, decode_levels

from . import cache
from .keys import account_key, call_key, did_key, identity_key, rate_group_key, switch_key_key, tariff_key
from .models import (ESCROW_SLOTS, HELD_SHARDS, AccountItem, CallItem, CoreItem, DidItem, IdentityItem, RateGroupItem,
                     SwitchKeyItem, TariffItem)


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
        path=item.path or "", email=item.email, timezone=item.timezone or "UTC",
        billing_day=int(item.billing_day or 1), low_balance=item.low_balance,
        may_create=item.may_create or "nothing", created_at=item.created_at or "", closed_at=item.closed_at,
        escrow=slots_of(item), counters=counters_of(item), cps_lent=int(item.cps_lent or 0),
    )


def counters_of(item: AccountItem) -> tuple:
    """The usage counters an account item carries (domain.counters.Counter)."""
    out = []
    for name in (CPS, DAY, MONTH):
        period = getattr(item, f"{name}_at")
        if period is not None:
            value = getattr(item, "cps_n" if name == CPS else f"{name}_used")
            out.append(Counter(name, period, Decimal(value or 0)))
    return tuple(out)


def slots_of(item: AccountItem) -> tuple:
    """The escrow slots (and refill requests) a client item carries: domain.escrow.Slot."""
    slots = []
    for k in range(1, ESCROW_SLOTS + 1):
        owner, wanted_by = getattr(item, f"e{k}o"), getattr(item, f"e{k}w")
        if owner is None and wanted_by is None:
            continue
        slots.append(Slot(distance=k, owner=owner, available=getattr(item, f"e{k}a") or ZERO,
                          spent=getattr(item, f"e{k}s") or ZERO, need=getattr(item, f"e{k}n") or ZERO,
                          wanted_by=wanted_by, used_at=int(getattr(item, f"e{k}u") or 0),
                          permits=int(getattr(item, f"e{k}c") or 0), share=int(getattr(item, f"e{k}r") or 0),
                          second=int(getattr(item, f"e{k}t") or 0), started=int(getattr(item, f"e{k}q") or 0)))
    return tuple(slots)


def to_tariff(item: TariffItem) -> Tariff:
    return Tariff(id=item.id, owner=item.owner, kind=item.tariff_kind, markup_fixed=item.markup_fixed,
                  markup_percent=item.markup_percent, name=item.name,
                  increments=tuple(int(x) for x in item.increments) if item.increments else None)


def to_call(item: CallItem) -> CallRecord:
    levels = decode_levels(item.levels)
    max_duration = int(item.max_duration)
    result = None
    if item.result:
        billsec, disposition, late, charges = decode_charges(levels, item.result)
        result = call_result(item.call_id, billsec, disposition, max_duration, late, charges)
    return CallRecord(
        call_id=item.call_id, status=item.status, account=item.account, client_id=item.client_id,
        destination=item.destination, number=item.number, caller_id=item.caller_id,
        authorized_at=int(item.authorized_at), max_duration=max_duration,
        expires_at=int(item.expires_at or 0), levels=levels,
        answer=call_answer(item.call_id, item.number, max_duration, levels[0].rate, item.direction, item.client_id),
        result=result, switch_id=item.switch_id, direction=item.direction,
    )


def key_check(item: Optional[SwitchKeyItem]) -> KeyCheck:
    if item is None:
        return KeyCheck(active=False)
    return KeyCheck(active=item.status == "active", switch_id=item.key_id)


class DynamoReads:
    """The read half of services.ports.Directory (and the portal's account reads)."""

    # --- the switch path --------------------------------------------------------------------------

    def lookup(self, account_ref: str, key_hash: str) -> Lookup:
        """Round trip 1, skipped in a warm Lambda while both the caller's route and the key are cached
        (cache.py): only a found identity and an active key are remembered, so a new SIP user works at
        once, and a route rewritten by a refresh is dropped (writes.place_holds)."""
        ttl = cache.seconds()
        if ttl:
            route, key = cache.SWITCH_CACHE.get(("identity", account_ref)), cache.SWITCH_CACHE.get(("key", key_hash))
            if route is not None and key is not None:
                return Lookup(key=key, route=route, identity=account_ref)
        items = list(CoreItem.batch_get([identity_key(account_ref), switch_key_key(key_hash)]))
        key = next((i for i in items if isinstance(i, SwitchKeyItem)), None)
        ident = next((i for i in items if isinstance(i, IdentityItem)), None)
        route = Route.from_dict(ident.client_id, ident.route) if ident else None
        found = Lookup(key=key_check(key), route=route, identity=account_ref)
        if ttl and found.key.active:
            cache.SWITCH_CACHE.put(("key", key_hash), found.key, ttl)
            if route is not None:
                cache.SWITCH_CACHE.put(("identity", account_ref), route, ttl)
        return found

    def lookup_did(self, number: str, key_hash: str) -> DidLookup:
        """An inbound authorize's round trip 1: the DID and the key, skipped like ``lookup`` while both
        are cached. Round trip 2 reads the DID again (``load``): a cached one only says whose accounts
        to read, never what to charge."""
        from .did_store import to_did
        ttl = cache.seconds()
        if ttl:
            did, key = cache.SWITCH_CACHE.get(("did", number)), cache.SWITCH_CACHE.get(("key", key_hash))
            if did is not None and key is not None:
                return DidLookup(key=key, did=did)
        items = list(CoreItem.batch_get([did_key(number), switch_key_key(key_hash)]))
        key = key_check(next((i for i in items if isinstance(i, SwitchKeyItem)), None))
        item = next((i for i in items if isinstance(i, DidItem)), None)
        did = to_did(item) if item is not None else None
        if ttl and key.active:
            cache.SWITCH_CACHE.put(("key", key_hash), key, ttl)
            self.remember_did(did)
        return DidLookup(key=key, did=did)

    @staticmethod
    def remember_did(did) -> None:
        """Only an active DID is remembered: a closed or unknown one is read again on the next call, so
        a number created or reopened works at once."""
        ttl = cache.seconds()
        if ttl and did is not None and did.status == "active":
            cache.SWITCH_CACHE.put(("did", did.number), did, ttl)

    @staticmethod
    def forget_did(number: str) -> None:
        cache.SWITCH_CACHE.drop(("did", number))

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

    def load(self, route: Route, number: str, call_id: str, now: int, did: Optional[str] = None) -> Snapshot:
        """Round trip 2: the chain's accounts, their tariffs' headers and candidate rate groups (cached),
        the call, the client's pool; with ``did`` (an inbound call) that DID instead of any tariff."""
        from .did_store import to_did
        tariff_ids = list(dict.fromkeys(h.tariff_id for h in route.hops if h.tariff_id))
        keys = [account_key(h.account_id) for h in route.hops]
        if did is not None:
            keys.append(did_key(did))
        tariff_keys = [tariff_key(t) for t in tariff_ids]
        tariff_keys += [rate_group_key(t, g) for t in tariff_ids for g in candidate_groups(number)]
        keys += tariff_keys
        keys.append(call_key(call_id))
        if len(route.hops) >= 3:     # the top reseller's pool for this client (domain.escrow.pool_level)
            keys.append(account_key(pool_id(route.hops[-2].account_id, pool_of(route.client_id))))
        accounts, tariffs, call, found_did = {}, {}, None, None
        books: Dict[str, Dict[str, list]] = {t: {} for t in tariff_ids}
        ttl = cache.seconds()
        cacheable = set(tariff_keys) if ttl else set()
        remembered = []
        for k in list(cacheable):
            hit = cache.SWITCH_CACHE.get(("item", k))
            if hit is not None:
                cacheable.discard(k)
                keys.remove(k)
                if hit is not cache.MISSING:
                    remembered.append(hit)
        fetched = list(CoreItem.batch_get(keys))
        if cacheable:
            seen = {(i.pk, i.sk) for i in fetched}
            for item in fetched:
                if (item.pk, item.sk) in cacheable:
                    cache.SWITCH_CACHE.put(("item", (item.pk, item.sk)), item, ttl)
            for k in cacheable - seen:
                cache.SWITCH_CACHE.put(("item", k), cache.MISSING, ttl)
        for item in fetched + remembered:
            if isinstance(item, AccountItem):
                accounts[item.id] = to_account(item)
            elif isinstance(item, TariffItem):
                tariffs[item.id] = to_tariff(item)
            elif isinstance(item, RateGroupItem):
                for prefix, versions in item.rates.items():
                    books[item.tariff_id][prefix] = [Rate.from_dict(v) for v in versions]
            elif isinstance(item, CallItem):
                call = to_call(item)
            elif isinstance(item, DidItem):
                found_did = to_did(item)
        usage = {a.id: Usage(day_used=current(a.counters, DAY, now), month_used=current(a.counters, MONTH, now),
                             calls_this_second=int(current(a.counters, CPS, now)))
                 for a in accounts.values() if a.counters}
        return Snapshot(accounts=accounts, tariffs=tariffs, books=books, usage=usage, call=call, did=found_did)

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
                AccountItem.batch_get([account_key(a) for a in dict.fromkeys(account_ids)], consistent_read=True)}

    def account(self, account_id: str) -> Optional[Account]:
        try:
            return to_account(AccountItem.get(*account_key(account_id), consistent_read=True))
        except AccountItem.DoesNotExist:
            return None

    def tariff(self, tariff_id: str) -> Optional[Tariff]:
        try:
            return to_tariff(TariffItem.get(*tariff_key(tariff_id)))
        except TariffItem.DoesNotExist:
            return None

    def expired_calls(self, now: int) -> Iterable[CallRecord]:
        """The index holds keys only: the expired calls are read back, strongly consistent, 100 at a time."""
        for shard in range(HELD_SHARDS):
            keys = [(i.pk, i.sk) for i in CallItem.held_index.query(f"HELD#{shard}", CallItem.expires_at <= now)]
            for start in range(0, len(keys), 100):
                for item in CallItem.batch_get(keys[start:start + 100], consistent_read=True):
                    if item.status == "held":
                        yield to_call(item)
