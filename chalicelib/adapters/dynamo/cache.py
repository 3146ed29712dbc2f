"""What a warm switch Lambda remembers between requests, for at most ``CASCADE_SWITCH_CACHE_SECONDS``
(default 30; 0 turns it off): a caller's lookup (its identity's cached route and the switch key's
status) and tariff items (headers and rate groups, including the groups that do not exist).

The staleness each keeps, stated once:
- a route is never trusted: authorize checks it against the accounts it reads on every call, so a stale
  route costs a re-read, never a wrong answer;
- a switch key revoked in the portal keeps working in a warm Lambda for at most the cache time;
- a tariff's rates (a price change, a new prefix) take effect within the cache time; an account's
  tariff *assignment*, its status, balance and limits are read on every call.
Nothing that moves money is cached: balances, holds, slots and counters are read every time.
"""
import os
import threading
import time
from typing import Dict, Hashable, Optional, Tuple

MISSING = object()     # a key looked up and found absent (remembered too: rate groups mostly do not exist)


def seconds() -> int:
    return int(os.environ.get("CASCADE_SWITCH_CACHE_SECONDS", "30"))


class TtlCache:
    def __init__(self, clock=time.monotonic, max_entries: int = 200_000):
        self._items: Dict[Hashable, Tuple[float, object]] = {}
        self._lock = threading.Lock()
        self.clock, self.max_entries = clock, max_entries

    def get(self, key: Hashable) -> Optional[object]:
        """The value, MISSING for a remembered absence, or None when unknown or expired."""
        entry = self._items.get(key)
        if entry is None:
            return None
        if entry[0] < self.clock():
            self._items.pop(key, None)
            return None
        return entry[1]

    def put(self, key: Hashable, value: object, ttl: float) -> None:
        with self._lock:
            if len(self._items) >= self.max_entries:
                self._items.clear()      # crude bound on a Lambda's memory; refilled on the next calls
            self._items[key] = (self.clock() + ttl, value)

    def drop(self, key: Hashable) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()


SWITCH_CACHE = TtlCache()
