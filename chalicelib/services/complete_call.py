"""Bill a finished call at every level, exactly once."""
import logging
import time
from typing import Callable

from chalicelib.domain.settlement import settle

from .authorize_call import Unauthorized
from .ports import AlreadySettled, StoreBusy, SwitchStore
from .records import DONE, HELD, CallRecord

log = logging.getLogger("cascade.complete")


class UnknownCall(Exception):
    pass


def complete_call(store: SwitchStore, call_id: str, billsec: int, disposition: str,
                  key_hash: str, clock: Callable[[], float] = time.time) -> dict:
    call, key_active = store.find_call(call_id, key_hash)
    if not key_active:
        raise Unauthorized()
    if call is None:
        raise UnknownCall(call_id)
    # At most two rounds: a completion can lose only one race, to the sweeper expiring the call
    # between our read and our write; it is then billed as a late completion.
    for _ in range(2):
        if call.status == DONE:
            return call.result
        try:
            return _bill(store, call, billsec, disposition, int(clock()))
        except AlreadySettled:
            call, _ = store.find_call(call_id, None)
    if call.status == DONE:
        return call.result
    raise StoreBusy(f"call {call_id} kept changing state")


def _bill(store: SwitchStore, call: CallRecord, billsec: int, disposition: str, now: int) -> dict:
    call_id = call.call_id
    charges = settle(call.levels, billsec, disposition, hold_released=call.status == HELD)
    over_max = billsec > call.max_duration
    if over_max:
        log.warning("call %s: billsec %d over the granted %d", call_id, billsec, call.max_duration)
    result = {
        "call_id": call_id, "billsec": billsec, "disposition": disposition,
        "charged": str(charges[0].cost), "over_max": over_max,
        "late": call.status != HELD,
        "levels": [c.to_dict() for c in charges],
    }
    store.settle(call, charges, billsec, disposition, result, now)
    return result
