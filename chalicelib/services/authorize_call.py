"""Authorize a call: one read of the caller, one of its whole chain, one transaction of holds."""
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional, Union

from chalicelib.domain import authorization as authz
from chalicelib.domain import dids
from chalicelib.domain.accounts import CLIENT, InvalidTree, check_chain
from chalicelib.domain.authorization import Denial, Grant, decide, price_chain
from chalicelib.domain.counters import reserved
from chalicelib.domain.escrow import pool_for
from chalicelib.domain.numbers import DialPlan, InvalidNumber, normalize

from .ports import DuplicateCall, Refused, StoreBusy, SwitchStore
from .records import HELD, INBOUND, CallRecord, Route, RouteHop, call_answer

log = logging.getLogger("cascade.authorize")

MAX_ATTEMPTS = 4     # a refused hold is re-read and re-decided at most this often


class Unauthorized(Exception):
    """Missing, unknown or revoked switch key."""


CALL_ID_IN_USE = "call_id_in_use"   # another request (switch, account or number) already has this id
CALL_ENDED = "call_ended"           # this very call was already completed or expired: never granted again


class CallIdInUse(Exception):
    """The call id is taken and this request may not reuse it; nothing was written."""
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AuthorizeRequest:
    account: Optional[str]              # the caller (SIP user or client id); inbound: optional, unused
    destination: str                    # the number dialled; inbound: the DID called
    call_id: str
    caller_id: Optional[str] = None
    direction: str = dids.OUTBOUND


@dataclass(frozen=True)
class Authorized:
    """Granted: ``answer`` is what the switch is told (max_duration, the client's rate...); ``retries``:
    holds the store refused (funds or limits moved since the read) before this one was placed."""
    answer: dict
    retries: int = 0


@dataclass(frozen=True)
class Denied:
    """Refused by the rules (domain.authorization's reasons); nothing was written."""
    reason: str
    account_id: Optional[str] = None
    retries: int = 0


Result = Union[Authorized, Denied]


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def deny(reason: str, account_id: Optional[str] = None) -> Denied:
    return Denied(reason, account_id)


def authorize_call(store: SwitchStore, request: AuthorizeRequest, key_hash: str,
                   clock: Callable[[], float] = time.time) -> Result:
    if request.direction == dids.INBOUND:
        return authorize_inbound(store, request, key_hash, clock)
    found = store.lookup(request.account, key_hash)
    if not found.key.active:
        raise Unauthorized()
    switch_id = found.key.switch_id
    if found.route is None:
        return deny(authz.ACCOUNT_UNKNOWN)
    route, refreshed = found.route, False
    for attempt in range(MAX_ATTEMPTS):
        now = int(clock())
        try:
            number = normalize(request.destination, DialPlan.from_dict(route.dial_plan))
        except InvalidNumber:
            return deny(authz.INVALID_DESTINATION)
        snap = store.load(route, number, request.call_id, now)
        if snap.call is not None:
            return _repeat(snap.call, switch_id, route.client_id, number)
        if not route.matches(snap.accounts):
            if refreshed:
                raise StoreBusy("the account tree changed while authorizing")
            fresh = store.resolve_route(route.client_id)
            if fresh is None:
                return deny(authz.ACCOUNT_UNKNOWN)
            route, refreshed = fresh, True
            continue
        chain = [snap.accounts[h.account_id] for h in route.hops]
        try:
            settings = check_chain(chain)
        except InvalidTree as exc:
            log.error("call %s: broken account tree: %s", request.call_id, exc)
            return deny(authz.ACCOUNT_UNKNOWN)
        rates = price_chain(chain, snap.tariffs, snap.books, number, iso(now))
        pool_item = pool_for(chain)
        pool = snap.accounts.get(pool_item) if pool_item else None
        decision = decide(chain, rates, snap.usage, settings, now, pool)
        if isinstance(decision, Denial):
            log.info("call %s denied: %s at %s", request.call_id, decision.reason, decision.account_id)
            return Denied(decision.reason, decision.account_id, retries=attempt - (1 if refreshed else 0))
        call = _call_record(request, route, number, decision, now, settings.hold_grace, switch_id, chain)
        result = _hold(store, call, switch_id, attempt - (1 if refreshed else 0), attempt,
                       (found.identity, route) if refreshed else None)
        if result is not None:
            return result
    raise StoreBusy(f"holds for call {request.call_id} kept being refused")


def authorize_inbound(store: SwitchStore, request: AuthorizeRequest, key_hash: str,
                      clock: Callable[[], float] = time.time) -> Result:
    """A call to a DID: the client holding it pays per minute, and every level above it pays its parent,
    each at the price of its holding (domain.dids). The same round trips as outbound: the DID and the
    key (skipped while cached), the holders' accounts with the DID again and the call, the holds."""
    try:
        number = dids.did_number(request.destination)
    except dids.InvalidDid:
        found = store.lookup_did("0", key_hash)       # the key is still checked first: 401 before 403
        if not found.key.active:
            raise Unauthorized()
        return deny(authz.INVALID_DESTINATION)
    found = store.lookup_did(number, key_hash)
    if not found.key.active:
        raise Unauthorized()
    switch_id, did = found.key.switch_id, found.did
    for attempt in range(MAX_ATTEMPTS):
        if did is None:
            return deny(dids.DID_UNKNOWN)
        if did.status != dids.ACTIVE:
            return deny(dids.DID_CLOSED)
        holders = did.route()
        route = Route(holders[0], tuple(RouteHop(a, None) for a in holders))
        now = int(clock())
        snap = store.load(route, number, request.call_id, now, did=number)
        if snap.call is not None:
            return _repeat(snap.call, switch_id, route.client_id, number)
        if snap.did is None or snap.did.rev != did.rev:      # the cached DID is stale: go by the one just read
            did = snap.did
            store.forget_did(number)
            store.remember_did(did)
            continue
        chain = [snap.accounts.get(a) for a in holders]
        if any(a is None for a in chain) or any(c.parent_id != p.id for c, p in zip(chain, chain[1:])):
            log.error("call %s: DID %s is held by accounts that are not one chain", request.call_id, number)
            return deny(authz.ACCOUNT_UNKNOWN)
        if chain[0].role != CLIENT:
            return deny(dids.DID_UNASSIGNED, chain[0].id)
        try:
            settings = check_chain(chain)
        except InvalidTree as exc:
            log.error("call %s: broken account tree: %s", request.call_id, exc)
            return deny(authz.ACCOUNT_UNKNOWN)
        rates = dids.inbound_rates(did, holders)
        pool_item = pool_for(chain)
        decision = decide(chain, rates, snap.usage, settings, now, snap.accounts.get(pool_item) if pool_item else None)
        if isinstance(decision, Denial):
            log.info("call %s denied: %s at %s", request.call_id, decision.reason, decision.account_id)
            return Denied(decision.reason, decision.account_id, retries=attempt)
        call = _call_record(request, route, number, decision, now, settings.hold_grace, switch_id, chain, INBOUND)
        result = _hold(store, call, switch_id, attempt, attempt)
        if result is not None:
            return result
    raise StoreBusy(f"holds for call {request.call_id} kept being refused")


def _hold(store: SwitchStore, call: CallRecord, switch_id: Optional[str], retries: int, attempt: int,
          refresh=None) -> Optional[Result]:
    """Place the call's holds: its answer, the first answer if a concurrent request with this id wrote
    first, or None when the store refused (funds or limits moved since the read: decide again)."""
    try:
        store.place_holds(call, refresh)
    except DuplicateCall:
        existing, _ = store.find_call(call.call_id, None)
        return _repeat(existing, switch_id, call.client_id, call.number)
    except Refused as refusal:
        log.info("call %s: %s (attempt %d), re-reading", call.call_id, refusal, attempt + 1)
        return None
    return Authorized(call.answer, retries=retries)


def _repeat(call: CallRecord, switch_id: Optional[str], client_id: str, number: str) -> Authorized:
    """An id seen before. Only the same request (switch, account, number) of a call still in progress
    gets its first answer back; anything else would connect a call that no hold pays for."""
    if not call.same_request(switch_id, client_id, number):
        log.warning("call %s: id reused by another request", call.call_id,
                    extra={"event": "call_id_reused", "call_id": call.call_id})
        raise CallIdInUse(CALL_ID_IN_USE)
    if call.status != HELD:
        log.warning("call %s: authorize repeated after the call ended (%s)", call.call_id, call.status,
                    extra={"event": "call_id_reused", "call_id": call.call_id})
        raise CallIdInUse(CALL_ENDED)
    return Authorized(call.answer)


def _call_record(request: AuthorizeRequest, route: Route, number: str, grant: Grant, now: int,
                 grace: int, switch_id: Optional[str], chain, direction: Optional[str] = None) -> CallRecord:
    answer = call_answer(request.call_id, number, grant.max_duration, grant.client_rate, direction, route.client_id)
    return CallRecord(
        call_id=request.call_id, status=HELD, account=request.account or number, client_id=route.client_id,
        destination=request.destination, number=number, caller_id=request.caller_id, authorized_at=now,
        max_duration=grant.max_duration, expires_at=now + grant.max_duration + grace,
        levels=grant.levels, answer=answer, switch_id=switch_id, wants=grant.wants,
        counters=tuple(reserved(grant.levels, chain, now, grant.max_duration)), fresh=grant.fresh,
        direction=direction,
    )
