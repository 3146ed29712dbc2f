"""The call record's compact form: a call item written at authorize and rewritten at completion stays
under 1 KB for the demo chain (1 write unit each, 2 inside a transaction, instead of 3 and 4 for the
JSON of dicts it replaced).

What is stored is what cannot be recomputed: each level's frozen terms (account, role, flags, hold,
commission, limits, escrow slot, rate) and, once billed, each level's charge (cost, commission, billed
seconds) with billsec, disposition and lateness. The switch's answer and the completion's result are
rebuilt from them exactly as the services first built them (``records.call_answer``/``call_result``),
so a repeated request gets the same bytes back. Amounts are kept as the strings ``str(Decimal)`` gave,
so they round-trip exactly.
"""
import json
from decimal import Decimal
from typing import List, Optional

from chalicelib.domain.authorization import Level
from chalicelib.domain.settlement import LevelCharge
from chalicelib.domain.tariffs import EPOCH, Rate

ROLES = {"client": "c", "reseller": "r", "admin": "a"}
ROLE_OF = {v: k for k, v in ROLES.items()}


def _text(d: Optional[Decimal]):
    return None if d is None else str(d)


def _dec(s) -> Optional[Decimal]:
    return None if s is None else Decimal(s)


def encode_levels(levels: List[Level]) -> str:
    rows = []
    for i, l in enumerate(levels):
        r = l.rate
        flags = ("c" if l.charged else "") + ("g" if l.guarded else "") + ("l" if l.mode == "late" else "")
        limits = [_text(l.daily_limit), _text(l.monthly_limit), l.cps_limit, l.max_calls]
        row = [l.account_id, ROLES.get(l.role, l.role), flags, str(l.hold), str(l.commission_percent),
               [r.prefix, str(r.price), str(r.connect_fee), r.minimum, r.initial, r.subsequent,
                "" if r.effective_from == EPOCH else r.effective_from,
                "" if i and r.name == levels[0].rate.name else r.name]]
        if any(x is not None for x in limits) or l.escrow or l.pool:
            row.append(limits)
        if l.escrow or l.pool:
            row.append(l.escrow)
        if l.pool:
            row.append(l.pool)
        rows.append(row)
    return json.dumps(rows, separators=(",", ":"))


def decode_levels(text: str) -> List[Level]:
    rows = json.loads(text)
    levels, first_name = [], None
    for i, row in enumerate(rows):
        account_id, role, flags, hold, commission, rate = row[:6]
        limits = row[6] if len(row) > 6 else [None, None, None, None]
        escrow = row[7] if len(row) > 7 else 0
        pool = row[8] if len(row) > 8 else 0
        prefix, price, connect_fee, minimum, initial, subsequent, effective_from, name = rate
        if i == 0:
            first_name = name
        rate = Rate(prefix=prefix, price=Decimal(price), connect_fee=Decimal(connect_fee), minimum=minimum,
                    initial=initial, subsequent=subsequent, effective_from=effective_from or EPOCH,
                    name=name if (i == 0 or name) else first_name)
        levels.append(Level(account_id=account_id, role=ROLE_OF.get(role, role), rate=rate, charged="c" in flags,
                            mode="late" if "l" in flags else "early", commission_percent=Decimal(commission),
                            hold=Decimal(hold), guarded="g" in flags, daily_limit=_dec(limits[0]),
                            monthly_limit=_dec(limits[1]), cps_limit=limits[2], max_calls=limits[3], escrow=escrow,
                            pool=pool))
    return levels


def encode_result(billsec: int, disposition: str, late: bool, charges: List[LevelCharge]) -> str:
    return json.dumps([billsec, disposition, 1 if late else 0,
                       [[str(c.cost), str(c.commission), c.billed_seconds] for c in charges]],
                      separators=(",", ":"))


def decode_charges(levels: List[Level], text: str):
    """(billsec, disposition, late, charges) of a billed call."""
    billsec, disposition, late, rows = json.loads(text)
    charges: List[LevelCharge] = []
    for i, (level, (cost, commission, billed)) in enumerate(zip(levels, rows)):
        cost, commission = Decimal(cost), Decimal(commission)
        sell = charges[i - 1].cost - charges[i - 1].commission if i > 0 else None
        charges.append(LevelCharge(
            account_id=level.account_id, role=level.role, charged=level.charged, cost=cost, commission=commission,
            net=cost - commission if level.charged else Decimal(0), hold=Decimal(0), sell=sell,
            profit=None if sell is None else sell - cost + commission, billed_seconds=billed))
    return billsec, disposition, bool(late), charges
