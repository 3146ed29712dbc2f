"""Bill a finished call at every level, exactly once."""
import logging
import time
from typing import Callable, Dict, List

from chalicelib.domain.money import ZERO
from chalicelib.domain.settlement import LevelCharge, settle

from .authorize_call import Unauthorized
from .ports import AlreadySettled, StoreBusy, SwitchStore
from .records import DONE, EXPIRED, HELD, CallRecord, call_result

log = logging.getLogger("cascade.complete")

MICROS = 1_000_000


class UnknownCall(Exception):
    pass


class CompletionConflict(Exception):
    """The call was already billed with another billsec or disposition; ``applied`` is what stands."""
    def __init__(self, applied: dict):
        super().__init__("completion differs from the one applied")
        self.applied = applied


def complete_call(store: SwitchStore, call_id: str, billsec: int, disposition: str,
                  key_hash: str, clock: Callable[[], float] = time.time) -> dict:
    call, key = store.find_call(call_id, key_hash)
    if not key.active:
        raise Unauthorized()
    if call is None or not call.visible_to(key.switch_id):
        raise UnknownCall(call_id)
    # At most two rounds: a completion can lose only one race, to the sweeper expiring the call
    # between our read and our write; it is then billed as a late completion.
    for _ in range(2):
        if call.status == DONE:
            return _already_applied(call, billsec, disposition)
        try:
            return _bill(store, call, billsec, disposition, int(clock()))
        except AlreadySettled:
            call, _ = store.find_call(call_id, None)
    if call.status == DONE:
        return _already_applied(call, billsec, disposition)
    raise StoreBusy(f"call {call_id} kept changing state")


def _already_applied(call: CallRecord, billsec: int, disposition: str) -> dict:
    """A true repeat gets the stored result; a different report of the same call is a conflict."""
    if call.applied == (billsec, disposition):
        return call.result
    applied_billsec, applied_disposition = call.applied
    log.warning("call %s: completion %d s %s differs from the applied %d s %s", call.call_id, billsec,
                disposition, applied_billsec, applied_disposition,
                extra={"event": "completion_conflict", "call_id": call.call_id, "billsec": billsec,
                       "disposition": disposition, "applied_billsec": applied_billsec,
                       "applied_disposition": applied_disposition})
    raise CompletionConflict(call.result)


def _bill(store: SwitchStore, call: CallRecord, billsec: int, disposition: str, now: int) -> dict:
    call_id = call.call_id
    late = call.status == EXPIRED
    charges = settle(call.levels, billsec, disposition, hold_released=call.status == HELD)
    over_max = billsec > call.max_duration
    if over_max:
        log.warning("call %s: billsec %d over the granted %d", call_id, billsec, call.max_duration)
    result = call_result(call_id, billsec, disposition, call.max_duration, late, charges)
    store.settle(call, charges, billsec, disposition, result, now)
    if late:
        _report_late(store, call, charges, now)
    return result


def _report_late(store: SwitchStore, call: CallRecord, charges: List[LevelCharge], now: int) -> None:
    """A completion after the sweep released the holds: the debit is applied regardless (the call
    happened), and may take a level below its floor. Count it and how much went below, for the
    LateCompletions / LateBelowFloor metrics and alarms. Best effort: the bill already stands."""
    debited = {c.account_id: c.net for c in charges if c.charged and c.net}
    below: Dict[str, object] = {}
    try:
        for account_id, account in store.accounts(list(debited)).items():
            taken = min(debited[account_id], account.shortfall)
            if taken > 0:
                below[account_id] = taken
    except Exception:   # noqa: BLE001 - a failed read must not turn a billed call into a 5xx
        log.exception("call %s: late completion billed, but balances could not be read", call.call_id)
    total = sum(below.values(), ZERO)
    log.warning("call %s: late completion, %ds after its hold expired; %s taken below floors",
                call.call_id, now - call.expires_at, total,
                extra={"event": "late_completion", "call_id": call.call_id,
                       "late_by_s": now - call.expires_at, "below_floor": str(total),
                       "below_floor_micros": _micros(total),
                       "below_floor_accounts": {a: str(v) for a, v in below.items()}})


def _micros(amount) -> int:
    """Money as a whole number of millionths, for a metric value (CloudWatch reads numbers, and a
    float is never used for money)."""
    return int((amount * MICROS).to_integral_value())
