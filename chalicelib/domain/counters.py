"""A level's usage counters, kept on its own account item: calls started this second (CPS) and money used
this UTC day and month (daily and monthly spend limits).

They used to be items of their own (``CPS#<id>/<second>``, ``SPEND#<id>/D#<day>``), one more transactional
write each per call (2 WRU) and one more read. A level with a spend limit writes its own account item
with every call anyway (it is not escrowed: domain.escrow), and so does the client; a level whose CPS
limit is escrowed counts most calls on its clients' slots instead (the share), and the rest here. The
counters ride on writes the call makes anyway.

Each counter is a period and a value (``Counter``). DynamoDB conditions cannot add, and an update cannot
choose between "add to this period" and "start a new one", so the choice is made from the item as read:

* the item's period is the call's: ADD to the value, guarded by ``period = :p`` and ``value <= at_most``
  (the limit less what this call adds, computed here);
* the item's period is older (or absent): SET the period and the value, guarded by ``period < :p``, so
  of two calls that both saw yesterday only one starts today; the other is refused and re-reads.

Completion and the sweeper adjust the spend of the call's own period only while it is still the current
one (``settled``, ``released``): a call that crosses midnight reserved against the day it started, and
that day's counter is over. The adjustment is unconditional (a completion never fails on a counter), so
a clock skew of a few milliseconds between two Lambdas across midnight could apply it to the new day.
"""
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import List, Optional, Sequence, Tuple

from .accounts import RESELLER
from .money import ZERO

CPS, DAY, MONTH = "cps", "day", "month"


@dataclass(frozen=True)
class Counter:
    """One counter as read from an account item."""
    name: str
    period: str
    value: Decimal


@dataclass(frozen=True)
class CounterChange:
    """What a call does to one counter of one account item (the store applies it, with its guard)."""
    name: str
    period: str
    delta: Decimal
    start: bool = False                 # the item's period is older: SET period and value instead of ADD
    at_most: Optional[Decimal] = None   # guard: the value before the ADD may not exceed this
    lent_at_most: Optional[int] = None  # CPS: guard: the item's CPS shares lent to escrow (cps_lent) may
                                        # not have grown since the read (at_most was computed from it)


def periods(epoch: int) -> dict:
    day = datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d")
    return {CPS: str(int(epoch)), DAY: day, MONTH: day[:7]}


def current(counters: Sequence[Counter], name: str, epoch: int) -> Decimal:
    """The counter's value in the period ``epoch`` falls in (0 when the item's period is another)."""
    period = periods(epoch)[name]
    return next((c.value for c in counters if c.name == name and c.period == period), ZERO)


def _count(counters: Sequence[Counter], name: str, period: str, delta: Decimal,
           limit: Optional[Decimal], lent: Optional[int] = None) -> CounterChange:
    if any(c.name == name and c.period == period for c in counters):
        return CounterChange(name, period, delta, at_most=None if limit is None else limit - delta,
                             lent_at_most=lent)
    return CounterChange(name, period, delta, start=True, lent_at_most=lent)


def reserved(levels: Sequence, accounts: Sequence, epoch: int, max_duration: int) -> List[Tuple[str, CounterChange]]:
    """Authorize: each charged level with a CPS limit counts the call in this second, each with a spend
    limit reserves its charge for the granted time (whatever its billing mode, so calls in flight count).
    ``accounts`` are the levels' items as read. A level held from an escrow slot starts the call on the
    slot's CPS share instead (domain.escrow); its own item may start cps_limit - cps_lent a second."""
    now = periods(epoch)
    out: List[Tuple[str, CounterChange]] = []
    for level, account in zip(levels, accounts):
        if not level.charged:
            continue
        if level.cps_limit is not None and not level.escrow:
            lent = account.cps_lent if account.role == RESELLER else None    # only a reseller lends
            out.append((level.account_id, _count(account.counters, CPS, now[CPS], Decimal(1),
                                                 Decimal(level.cps_limit - (lent or 0)), lent)))
        for name, limit in ((DAY, level.daily_limit), (MONTH, level.monthly_limit)):
            if limit is not None:
                out.append((level.account_id, _count(account.counters, name, now[name],
                                                     level.charge(max_duration), limit)))
    return out


def settled(levels: Sequence, nets: Sequence[Decimal], authorized_at: int, max_duration: int, epoch: int,
            was_held: bool) -> List[Tuple[str, CounterChange]]:
    """Completion: the reservation becomes the real spend (an expired call's was already released), in
    the call's own day and month while they are still current."""
    return _adjust(levels, [n - (l.charge(max_duration) if was_held else ZERO) for l, n in zip(levels, nets)],
                   authorized_at, epoch)


def released(levels: Sequence, authorized_at: int, max_duration: int, epoch: int) -> List[Tuple[str, CounterChange]]:
    """The sweeper: an expired call gives its reservation back."""
    return _adjust(levels, [-l.charge(max_duration) for l in levels], authorized_at, epoch)


def _adjust(levels: Sequence, deltas: Sequence[Decimal], authorized_at: int,
            epoch: int) -> List[Tuple[str, CounterChange]]:
    then, now = periods(authorized_at), periods(epoch)
    out: List[Tuple[str, CounterChange]] = []
    for level, delta in zip(levels, deltas):
        if not level.charged or not delta:
            continue
        for name, limit in ((DAY, level.daily_limit), (MONTH, level.monthly_limit)):
            if limit is not None and then[name] == now[name]:
                out.append((level.account_id, CounterChange(name, then[name], delta)))
    return out
