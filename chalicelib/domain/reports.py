"""Reports: what each level made and spent in a month, kept as running totals so no report reads CDRs.

A finished call adds, at every level above the client (each *seller*, the admin included), to three
kinds of row of that level's month:

    ``#``            the level's own totals
    ``C#<child>``    the calls that came through that child (the sub-accounts report; a client's own
                     totals are its parent's row for it, shown at the client's price only)
    ``D#<number>``   inbound calls to that DID (the DID report; the client holding it has one too, with
                     only what it paid)

each with calls, answered calls, seconds (billsec), revenue (what the child paid: its net charge),
cost (what the level paid its own parent, or the carrier cost for the admin) and commission; profit is
revenue - cost + commission, as on a CDR (services.records.CallView). The month is the UTC month the call
was billed in, as in the ledger.

Rows are written by the stream consumer (services.reporting) in small batches; a batch spreads the
rows of hot accounts over ``ROW_SHARDS`` copies, which a report adds up.
"""
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .money import ZERO

TOTAL = "#"
ROW_SHARDS = 4
CHILD, DID = "C#", "D#"


def month_of(iso: str) -> str:
    """'2026-12-01T10:00:00.000Z' -> '2026-12'."""
    return iso[:7]


@dataclass
class Totals:
    calls: int = 0
    answered: int = 0
    seconds: int = 0
    revenue: Decimal = ZERO
    cost: Decimal = ZERO
    commission: Decimal = ZERO

    def add(self, other: "Totals") -> "Totals":
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def profit(self) -> Decimal:
        return self.revenue - self.cost + self.commission

    @property
    def empty(self) -> bool:
        return not self.calls

    def to_dict(self) -> dict:
        return {"calls": self.calls, "answered": self.answered, "seconds": self.seconds,
                "minutes": (Decimal(self.seconds) / 60).quantize(Decimal("0.01")),
                "revenue": self.revenue, "cost": self.cost, "commission": self.commission, "profit": self.profit}

    def as_client(self) -> dict:
        """A client's own row (its DIDs'): what it paid."""
        return {"calls": self.calls, "answered": self.answered, "seconds": self.seconds,
                "minutes": (Decimal(self.seconds) / 60).quantize(Decimal("0.01")), "cost": self.cost}

    def as_buyer(self) -> dict:
        """A row seen by the child it is about: what the child paid (the row's revenue), never the
        level's own cost."""
        return {"calls": self.calls, "answered": self.answered, "seconds": self.seconds,
                "minutes": (Decimal(self.seconds) / 60).quantize(Decimal("0.01")), "cost": self.revenue}


@dataclass(frozen=True)
class LevelCharge:
    """One level of a billed call, as the stream sees it: who, and what it paid (net of commission)."""
    account_id: str
    cost: Decimal
    commission: Decimal


@dataclass(frozen=True)
class BilledCall:
    call_id: str
    billed_at: str                      # ISO, UTC
    billsec: int
    answered: bool
    levels: Tuple[LevelCharge, ...]     # client first, the admin last
    did: Optional[str] = None           # inbound: the DID called


Key = Tuple[str, str, str]              # (account, month, row)


def contributions(call: BilledCall) -> Dict[Key, Totals]:
    """What one call adds to the rows of every seller on its chain."""
    month = month_of(call.billed_at)
    out: Dict[Key, Totals] = {}
    for i in range(1, len(call.levels)):
        seller, child = call.levels[i], call.levels[i - 1]
        delta = Totals(calls=1, answered=int(call.answered), seconds=call.billsec,
                       revenue=child.cost - child.commission, cost=seller.cost, commission=seller.commission)
        rows = [TOTAL, CHILD + child.account_id] + ([DID + call.did] if call.did else [])
        for row in rows:
            out.setdefault((seller.account_id, month, row), Totals()).add(delta)
    if call.did and call.levels:     # the client's own row for its DID: what it paid (it sells nothing)
        client = call.levels[0]
        out[(client.account_id, month, DID + call.did)] = Totals(
            calls=1, answered=int(call.answered), seconds=call.billsec, cost=client.cost, commission=client.commission)
    return out


def leaf_key(call: BilledCall) -> Optional[Key]:
    """The row only this call's client adds to: its parent's row about it."""
    if len(call.levels) < 2:
        return None
    return call.levels[1].account_id, month_of(call.billed_at), CHILD + call.levels[0].account_id


def add_up(items: Iterable[Tuple[str, Totals]]) -> Dict[str, Totals]:
    """Rows read back (row name, totals of one shard) -> one total per row name."""
    out: Dict[str, Totals] = {}
    for row, totals in items:
        out.setdefault(row, Totals()).add(totals)
    return out


@dataclass
class Money:
    """A month's movements of an account's wallet other than calls, by journal entry kind."""
    by_kind: Dict[str, Decimal] = field(default_factory=dict)

    def to_dict(self) -> dict:
        get = lambda k: self.by_kind.get(k, ZERO)  # noqa: E731
        return {"payments": get("payment"), "charges": -get("charge"), "transfers": get("transfer"),
                "other": sum((v for k, v in self.by_kind.items() if k not in ("payment", "charge", "transfer")), ZERO)}


def batches(records: Sequence, keys_of, limit: int) -> List[Tuple[int, int]]:
    """Split records, in order, into runs whose distinct keys number at most ``limit`` (one transaction
    each). A record with more keys than the limit is a run of its own. Returns (start, end) index pairs."""
    out, start, seen = [], 0, set()
    for i, record in enumerate(records):
        keys = set(keys_of(record))
        if seen and len(seen | keys) > limit:
            out.append((start, i))
            start, seen = i, set()
        seen |= keys
    if start < len(records):
        out.append((start, len(records)))
    return out
