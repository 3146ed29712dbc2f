"""Who pays what for a finished call.

Every charged level pays its parent the call's cost at its own frozen rate; a commission reseller is
credited its commission on that cost by its parent, so the parent's takings are cost - commission. Its profit is what its child paid it, less what it paid, plus any
commission. The root's cost is the carrier's price, so the operator's profit is known too.

MOR's worked example: provider 0.3, reseller pays 1.2, client pays 2.0 per minute ->
admin earns 0.9, reseller 0.8 on a one-minute call.
"""
from dataclasses import dataclass
from decimal import Decimal
from typing import List, Optional, Sequence

from .authorization import Level
from .money import ZERO
from .rating import billed_seconds

ANSWERED, BUSY, NO_ANSWER, FAILED = "ANSWERED", "BUSY", "NO ANSWER", "FAILED"
DISPOSITIONS = (ANSWERED, BUSY, NO_ANSWER, FAILED)


@dataclass(frozen=True)
class LevelCharge:
    account_id: str
    role: str
    charged: bool
    cost: Decimal            # what this level pays its parent (root: the carrier)
    commission: Decimal      # credited back (commission resellers)
    net: Decimal             # what the balance loses: cost - commission (0 for the root)
    hold: Decimal            # released now
    sell: Optional[Decimal]  # what the child level paid this one (None for the client)
    profit: Optional[Decimal]
    billed_seconds: int

    def to_dict(self) -> dict:
        return {
            "account_id": self.account_id, "role": self.role, "cost": str(self.cost),
            "commission": str(self.commission), "charged": str(self.net),
            "sell": None if self.sell is None else str(self.sell),
            "profit": None if self.profit is None else str(self.profit),
            "billed_seconds": self.billed_seconds,
        }


def charges_from_result(levels: Sequence[dict]) -> List[LevelCharge]:
    """The charges a completion stored in the call's result (``LevelCharge.to_dict``), read back: the
    call record is the call's journal entry, and its postings follow from these."""
    out = []
    for d in levels:
        sell, profit = d.get("sell"), d.get("profit")
        out.append(LevelCharge(
            account_id=d["account_id"], role=d["role"], charged=d["role"] != "admin",
            cost=Decimal(d["cost"]), commission=Decimal(d["commission"]), net=Decimal(d["charged"]),
            hold=ZERO, sell=None if sell is None else Decimal(sell), profit=None if profit is None else Decimal(profit),
            billed_seconds=int(d["billed_seconds"])))
    return out


def settle(levels: Sequence[Level], billsec: int, disposition: str, hold_released: bool = True) -> List[LevelCharge]:
    seconds = billsec if disposition == ANSWERED else 0
    charges: List[LevelCharge] = []
    for i, level in enumerate(levels):
        cost = level.cost(seconds)
        commission = level.commission(cost)
        # What the child paid this level: its cost less the commission this level credited back.
        sell = charges[i - 1].cost - charges[i - 1].commission if i > 0 else None
        charges.append(LevelCharge(
            account_id=level.account_id, role=level.role, charged=level.charged, cost=cost,
            commission=commission, net=cost - commission if level.charged else ZERO,
            hold=level.hold if hold_released else ZERO, sell=sell,
            profit=None if sell is None else sell - cost + commission,
            billed_seconds=billed_seconds(level.rate, seconds),
        ))
    return charges
