"""May this caller dial this number, and for how long?

Each level of the chain is quoted at its own rate. The call is granted the largest whole number of
seconds that every level can pay for (connect fee and increments included), capped by the tree's
maximum and by each level's remaining daily and monthly spend. Soft-prepaid levels do not limit.
With early billing (the default) that many seconds' charge is held at each level; with late billing
the level is only checked, and debited after the call. A level with a daily or monthly limit also
reserves that charge against the limit, whatever its billing mode, so calls in flight count.
"""
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import List, Mapping, Optional, Sequence, Union

from . import escrow as escrow_rules
from .accounts import (ACTIVE, CLOSED, EARLY, PREPAID_SOFT, Chain, TreeSettings,
                       billing_modes, effective_tariff_ids)
from .money import ZERO, money, quantize
from .rating import affordable_seconds, call_cost
from .tariffs import Rate, RateBook, Tariff

# Denial reasons (the switch API returns them verbatim).
ACCOUNT_UNKNOWN = "account_unknown"
ACCOUNT_SUSPENDED = "account_suspended"
ACCOUNT_CLOSED = "account_closed"
NO_RATE = "no_rate"
LOSS_ROUTE = "loss_route"
CONCURRENT_CALLS_LIMIT = "concurrent_calls_limit"
CPS_LIMIT = "cps_limit"
INSUFFICIENT_FUNDS = "insufficient_funds"
DAILY_LIMIT = "daily_limit"
MONTHLY_LIMIT = "monthly_limit"
INVALID_DESTINATION = "invalid_destination"

LOSS_PROBE_SECONDS = 60   # a level sells at a loss when a one-minute call costs its child less than it


@dataclass(frozen=True)
class Usage:
    """Counters read with the chain: money used this UTC day and month (spent by finished calls plus
    reserved by calls in progress), and calls started this second."""
    day_used: Decimal = ZERO
    month_used: Decimal = ZERO
    calls_this_second: int = 0


@dataclass(frozen=True)
class Level:
    """One account's part in a call, frozen at authorization and used unchanged at completion."""
    account_id: str
    role: str
    rate: Rate
    charged: bool = True                # False for the root: the carrier bills the operator outside Cascade
    mode: str = EARLY
    commission_percent: Decimal = ZERO
    hold: Decimal = ZERO
    guarded: bool = True                # the store must refuse the hold below the level's floor
    daily_limit: Optional[Decimal] = None
    monthly_limit: Optional[Decimal] = None
    cps_limit: Optional[int] = None
    max_calls: Optional[int] = None
    escrow: int = 0                     # held from the slot at this distance on the client's item; 0: its own item
    pool: int = 0                       # else held from this pool of a top reseller, plus 1 (domain.escrow)

    @property
    def limits_daily(self) -> bool:
        return self.daily_limit is not None

    @property
    def limits_monthly(self) -> bool:
        return self.monthly_limit is not None

    def cost(self, billsec: int) -> Decimal:
        return call_cost(self.rate, billsec)

    def commission(self, cost: Decimal) -> Decimal:
        return quantize(cost * self.commission_percent / 100) if self.commission_percent else ZERO

    def charge(self, billsec: int) -> Decimal:
        """What this account's balance loses for the call: its cost less any commission credited."""
        cost = self.cost(billsec)
        return cost - self.commission(cost)

    def to_dict(self) -> dict:
        return {
            "account_id": self.account_id, "role": self.role, "rate": self.rate.to_dict(),
            "charged": self.charged, "mode": self.mode, "commission_percent": str(self.commission_percent),
            "hold": str(self.hold), "guarded": self.guarded,
            "daily_limit": _text(self.daily_limit), "monthly_limit": _text(self.monthly_limit), "cps_limit": self.cps_limit, "max_calls": self.max_calls,
            **({"escrow": self.escrow} if self.escrow else {}),
            **({"pool": self.pool} if self.pool else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "Level":
        return cls(
            account_id=d["account_id"], role=d["role"], rate=Rate.from_dict(d["rate"]),
            charged=bool(d["charged"]), mode=d["mode"], commission_percent=money(d["commission_percent"]),
            hold=money(d["hold"]), guarded=bool(d["guarded"]),
            daily_limit=_amount(d.get("daily_limit")), monthly_limit=_amount(d.get("monthly_limit")), cps_limit=d.get("cps_limit"), max_calls=d.get("max_calls"),
            escrow=int(d.get("escrow", 0)), pool=int(d.get("pool", 0)),
        )


def _text(amount: Optional[Decimal]) -> Optional[str]:
    return None if amount is None else str(amount)


def _amount(text) -> Optional[Decimal]:
    return None if text is None else money(text)


@dataclass(frozen=True)
class Grant:
    max_duration: int
    levels: List[Level]
    limited_by: Optional[str] = None    # account whose funds or limits set max_duration (None: the cap)
    wants: tuple = ()                   # escrow refill requests (distance, owner, need): domain.escrow.place
    fresh: tuple = ()                   # slots whose CPS counter this call starts afresh (their distances)

    @property
    def client_rate(self) -> Rate:
        return self.levels[0].rate


@dataclass(frozen=True)
class Denial:
    reason: str
    account_id: Optional[str] = None


Decision = Union[Grant, Denial]


def price_chain(chain: Chain, tariffs: Mapping[str, Tariff], books: Mapping[str, RateBook],
                number: str, now_iso: str) -> List[Optional[Rate]]:
    """Each level's rate for ``number``, from the root down (a markup tariff prices from its owner's)."""
    tariff_ids = effective_tariff_ids(chain)
    index = {a.id: i for i, a in enumerate(chain)}
    rates: List[Optional[Rate]] = [None] * len(chain)
    for i in range(len(chain) - 1, -1, -1):
        tariff = tariffs.get(tariff_ids[i] or "")
        if tariff is None:
            continue
        owner = index.get(tariff.owner)
        owner_rate = rates[owner] if owner is not None and owner > i else None
        rates[i] = tariff.price(books.get(tariff.id, {}), number, now_iso, owner_rate)
    return rates


def decide(chain: Chain, rates: Sequence[Optional[Rate]], usage: Mapping[str, Usage],
           settings: TreeSettings, now: int = 0, pool=None) -> Decision:
    """``now`` (epoch s) is the second escrow slots' CPS shares count in; ``pool``: the top reseller's
    pool item read for this client, if any (domain.escrow)."""
    for account in chain:
        if account.status != ACTIVE:
            reason = ACCOUNT_CLOSED if account.status == CLOSED else ACCOUNT_SUSPENDED
            return Denial(reason, account.id)
    for account, rate in zip(chain, rates):
        if rate is None:
            return Denial(NO_RATE, account.id)
    for i in range(1, len(chain)):
        seller = chain[i]
        if seller.allow_loss or seller.is_commission_reseller:
            continue
        if call_cost(rates[i - 1], LOSS_PROBE_SECONDS) < call_cost(rates[i], LOSS_PROBE_SECONDS):
            return Denial(LOSS_ROUTE, seller.id)

    modes = billing_modes(chain, settings)
    levels: List[Level] = []
    for i, (account, rate) in enumerate(zip(chain, rates)):
        charged = i < len(chain) - 1
        levels.append(Level(
            account_id=account.id, role=account.role, rate=rate, charged=charged, mode=modes[i],
            commission_percent=account.commission_percent if account.is_commission_reseller else ZERO,
            guarded=account.billing_type != PREPAID_SOFT,
            daily_limit=account.daily_limit if charged else None,
            monthly_limit=account.monthly_limit if charged else None,
            cps_limit=account.cps_limit if charged else None,
            max_calls=account.max_calls if charged else None,
        ))

    # A level's own item takes the call only below its limits; an escrow slot with a free permit and a
    # CPS start left may take it instead (domain.escrow).
    direct = [None] * len(chain)
    for i, (account, level) in enumerate(zip(chain, levels)):
        if not level.charged:
            continue
        direct[i] = _own_limit(account, usage.get(account.id, Usage()))
        if direct[i] is not None and escrow_rules.usable(chain, i, level, now) is None:
            return Denial(direct[i], account.id)

    max_duration, limited_by, reason = settings.max_duration, None, None
    for i, (account, level) in enumerate(zip(chain, levels)):
        if not level.charged:
            continue
        used = usage.get(account.id, Usage())
        budgets = []
        if level.guarded:
            budgets.append((escrow_rules.funds(chain, i, level, now, direct=direct[i] is None, pool=pool),
                            INSUFFICIENT_FUNDS))
        if account.daily_limit is not None:
            budgets.append((account.daily_limit - used.day_used, DAILY_LIMIT))
        if account.monthly_limit is not None:
            budgets.append((account.monthly_limit - used.month_used, MONTHLY_LIMIT))
        for funds, why in budgets:
            seconds = affordable_seconds(level.charge, funds, max_duration)
            if seconds < max_duration:
                max_duration, limited_by, reason = seconds, account.id, why
    if max_duration <= 0:
        return Denial(reason or INSUFFICIENT_FUNDS, limited_by)

    held = [replace(l, hold=l.charge(max_duration) if l.charged and l.mode == EARLY else ZERO) for l in levels]
    placed, wants, fresh = escrow_rules.place(chain, held, now, pool)
    return Grant(max_duration=max_duration, levels=placed, limited_by=limited_by, wants=wants, fresh=fresh)


def _own_limit(account, used: Usage) -> Optional[str]:
    """Why the level's own item cannot take one more call (None: it can). CPS shares lent to escrow are
    not the item's to use."""
    if account.max_calls is not None and account.active_calls >= account.max_calls:
        return CONCURRENT_CALLS_LIMIT
    if account.cps_limit is not None and used.calls_this_second >= account.cps_limit - account.cps_lent:
        return CPS_LIMIT
    return None
