"""Release holds whose completion never came (the switch crashed, the post was lost...).

The call is marked expired, its holds and call counters released. If the completion arrives later
after all, it is still billed (complete_call accepts an expired call), so nothing is lost either way.
"""
import logging
import time
from typing import Callable

from .ports import SwitchStore

log = logging.getLogger("cascade.sweeper")


def sweep_expired_holds(store: SwitchStore, clock: Callable[[], float] = time.time) -> int:
    now = int(clock())
    released = 0
    for call in store.expired_calls(now):
        if store.release(call, now):
            released += 1
            log.warning("released expired hold of call %s (granted %ds at %d)",
                        call.call_id, call.max_duration, call.authorized_at)
    return released
