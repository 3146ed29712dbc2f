"""Rating a call at one rate.

unanswered -> 0. answered -> s = max(minimum, billsec), billed = initial if s <= initial, else
initial + ceil((s - initial) / subsequent) * subsequent; cost = connect fee + price x billed / 60,
quantized once (see money.py).
"""
from decimal import Decimal
from typing import Callable

from .money import ZERO, quantize
from .tariffs import Rate


def billed_seconds(rate: Rate, billsec: int) -> int:
    if billsec <= 0:
        return 0
    seconds = max(rate.minimum, billsec)
    if seconds <= rate.initial:
        return rate.initial
    steps = -(-(seconds - rate.initial) // rate.subsequent)
    return rate.initial + steps * rate.subsequent


def call_cost(rate: Rate, billsec: int) -> Decimal:
    billed = billed_seconds(rate, billsec)
    if billed == 0:
        return ZERO
    return quantize(rate.connect_fee + rate.price * billed / 60)


def affordable_seconds(charge: Callable[[int], Decimal], funds: Decimal, cap: int) -> int:
    """Largest billsec <= cap whose charge fits in ``funds`` (0 when even one second does not).

    ``charge`` must be non-decreasing in billsec, which every rated cost is (a property test holds
    it): a binary search is then exact, whatever the increments, minimum or connect fee.
    """
    if cap <= 0 or charge(1) > funds:
        return 0
    if charge(cap) <= funds:
        return cap
    low, high = 1, cap          # charge(low) fits, charge(high) does not
    while high - low > 1:
        mid = (low + high) // 2
        if charge(mid) <= funds:
            low = mid
        else:
            high = mid
    return low
