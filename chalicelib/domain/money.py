"""Money is Decimal, never float.

Every amount Cascade stores or returns is quantized to ``QUANTUM`` (six decimal places: enough for
sub-cent per-minute prices such as 0.012/min billed per second) with ROUND_HALF_UP. Costs are computed
at full precision and quantized once per level and call, so a call's charge is the same wherever it is
recomputed.
"""
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

QUANTUM = Decimal("0.000001")
ZERO = Decimal("0")


class NotMoney(ValueError):
    """A value that cannot be an amount of money (a float, text that is no number, NaN...)."""


def money(value) -> Decimal:
    """Parse an amount. Floats are refused: they have already lost the cents."""
    if isinstance(value, bool) or isinstance(value, float):
        raise NotMoney(f"refusing {type(value).__name__} {value!r} as money")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
        if not amount.is_finite():
            raise NotMoney(f"{value!r} is not a finite amount")
        return quantize(amount)
    except (InvalidOperation, ValueError) as exc:
        if isinstance(exc, NotMoney):
            raise
        raise NotMoney(f"{value!r} is not an amount (or too large)") from exc


def quantize(amount: Decimal) -> Decimal:
    return amount.quantize(QUANTUM, rounding=ROUND_HALF_UP)
