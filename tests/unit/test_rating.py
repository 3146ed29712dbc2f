"""Rating one call at one rate: billed seconds, cost, and the largest affordable duration.

Worked examples first (each one a billing rule written out with its numbers), then the properties the
authorization relies on (monotonic cost, exact binary search).
"""
from decimal import Decimal as D

import pytest
from hypothesis import given, settings, strategies as st

from chalicelib.domain.money import ZERO
from chalicelib.domain.rating import affordable_seconds, billed_seconds, call_cost
from chalicelib.domain.tariffs import Rate


def rate(price="0.60", initial=60, subsequent=60, minimum=0, connect_fee="0", prefix="1"):
    return Rate(prefix=prefix, price=D(price), initial=initial, subsequent=subsequent,
                minimum=minimum, connect_fee=D(connect_fee))


# --------------------------------------------------------------------------- billed seconds: examples

@pytest.mark.parametrize("initial, subsequent, minimum, billsec, billed", [
    # 60/60: every started minute is a minute
    (60, 60, 0, 1, 60),
    (60, 60, 0, 60, 60),
    (60, 60, 0, 61, 120),
    (60, 60, 0, 121, 180),
    # 30/6: a 30 s first block, then 6 s steps
    (30, 6, 0, 1, 30),
    (30, 6, 0, 30, 30),
    (30, 6, 0, 31, 36),
    (30, 6, 0, 36, 36),
    (30, 6, 0, 37, 42),
    # 1/1: per second
    (1, 1, 0, 1, 1),
    (1, 1, 0, 61, 61),
    # a minimum is billed at least, then the increments apply on top of it
    (1, 1, 30, 5, 30),
    (1, 1, 30, 31, 31),
    (6, 6, 30, 5, 30),
    (60, 60, 90, 5, 120),
])
def test_answered_call_is_billed_by_initial_then_subsequent_increments(initial, subsequent, minimum, billsec, billed):
    """GIVEN a rate with these increments and minimum WHEN an answered call lasts billsec THEN it bills `billed`."""
    assert billed_seconds(rate(initial=initial, subsequent=subsequent, minimum=minimum), billsec) == billed


@pytest.mark.parametrize("billsec", [0, -1, -60])
def test_a_call_of_no_seconds_bills_nothing_even_with_a_minimum(billsec):
    """GIVEN a rate with a 30 s minimum and a connect fee WHEN the call had 0 billsec (not answered)
    THEN nothing is billed: neither the minimum nor the connect fee."""
    r = rate(initial=60, subsequent=60, minimum=30, connect_fee="0.25")
    assert billed_seconds(r, billsec) == 0
    assert call_cost(r, billsec) == ZERO


# --------------------------------------------------------------------------- cost: examples

def test_per_second_billing_at_60_cents_a_minute_charges_61_cents_for_61_seconds():
    """GIVEN 0.60/min billed 1/1 WHEN the call lasts 61 s THEN it costs 0.61."""
    assert call_cost(rate("0.60", 1, 1), 61) == D("0.61")


def test_per_minute_billing_charges_two_minutes_for_61_seconds():
    """GIVEN 0.60/min billed 60/60 WHEN the call lasts 61 s THEN 120 s are billed: 1.20."""
    assert call_cost(rate("0.60", 60, 60), 61) == D("1.20")


def test_thirty_six_billing_charges_36_seconds_for_31():
    """GIVEN 0.60/min billed 30/6 WHEN the call lasts 31 s THEN 36 s are billed: 0.36."""
    assert call_cost(rate("0.60", 30, 6), 31) == D("0.36")


def test_minimum_duration_is_charged_for_a_short_call():
    """GIVEN 0.60/min billed 1/1 with a 30 s minimum WHEN the call lasts 5 s THEN 30 s are billed: 0.30."""
    assert call_cost(rate("0.60", 1, 1, minimum=30), 5) == D("0.30")


def test_connect_fee_is_added_once_to_an_answered_call():
    """GIVEN 0.60/min 1/1 with a 0.15 connect fee WHEN the call lasts 61 s THEN 0.15 + 0.61 = 0.76."""
    assert call_cost(rate("0.60", 1, 1, connect_fee="0.15"), 61) == D("0.76")


def test_connect_fee_alone_for_a_free_destination():
    """GIVEN a free destination with a 0.05 connect fee WHEN answered for 1 s THEN the charge is 0.05."""
    assert call_cost(rate("0", 60, 60, connect_fee="0.05"), 1) == D("0.05")


def test_sub_cent_price_is_kept_to_six_places_rounding_half_up():
    """GIVEN 0.012/min per second WHEN the call lasts 1 s THEN 0.0002 (exact); 7 s -> 0.0014;
    and 0.01/min for 1 s -> 0.000166666... quantized half-up to 0.000167."""
    assert call_cost(rate("0.012", 1, 1), 1) == D("0.000200")
    assert call_cost(rate("0.012", 1, 1), 7) == D("0.001400")
    assert call_cost(rate("0.01", 1, 1), 1) == D("0.000167")
    assert call_cost(rate("0.01", 1, 1), 1).as_tuple().exponent == -6


def test_cost_is_a_decimal_never_a_float():
    cost = call_cost(rate("0.60", 1, 1), 61)
    assert isinstance(cost, D)


# --------------------------------------------------------------------------- affordable seconds: examples

def test_affordable_seconds_per_minute_rounds_down_to_whole_minutes():
    """GIVEN 1.00/min billed 60/60 and 2.50 of funds WHEN asking how long a call may last
    THEN 120 s (a third minute would cost 3.00)."""
    r = rate("1.00", 60, 60)
    assert affordable_seconds(lambda s: call_cost(r, s), D("2.50"), 10800) == 120


def test_affordable_seconds_per_second_billing():
    """GIVEN 0.60/min billed 1/1 and 0.61 of funds THEN exactly 61 s are affordable."""
    r = rate("0.60", 1, 1)
    assert affordable_seconds(lambda s: call_cost(r, s), D("0.61"), 10800) == 61


def test_affordable_seconds_counts_the_connect_fee():
    """GIVEN 0.60/min 1/1 with a 0.10 connect fee and 0.70 of funds THEN 60 s (0.10 + 0.60)."""
    r = rate("0.60", 1, 1, connect_fee="0.10")
    assert affordable_seconds(lambda s: call_cost(r, s), D("0.70"), 10800) == 60


def test_affordable_seconds_is_zero_when_the_first_unit_does_not_fit():
    """GIVEN 1.00/min 60/60 and 0.99 of funds THEN no second is affordable (the first minute costs 1.00)."""
    r = rate("1.00", 60, 60)
    assert affordable_seconds(lambda s: call_cost(r, s), D("0.99"), 10800) == 0


def test_affordable_seconds_returns_the_cap_when_everything_fits():
    r = rate("1.00", 60, 60)
    assert affordable_seconds(lambda s: call_cost(r, s), D("1000"), 600) == 600


@pytest.mark.parametrize("cap", [0, -5])
def test_affordable_seconds_with_no_cap_left_is_zero(cap):
    r = rate("0", 60, 60)
    assert affordable_seconds(lambda s: call_cost(r, s), D("1000"), cap) == 0


def test_affordable_seconds_of_negative_funds_is_zero_even_for_a_free_call():
    """GIVEN a free rate and funds of -0.01 THEN nothing is affordable (0 > -0.01 still exceeds the funds)."""
    r = rate("0", 1, 1)
    assert affordable_seconds(lambda s: call_cost(r, s), D("-0.01"), 600) == 0


# --------------------------------------------------------------------------- properties

INCREMENTS = st.sampled_from([(60, 60), (30, 6), (1, 1), (6, 6), (30, 30), (1, 60), (60, 1)])


@st.composite
def rates(draw):
    initial, subsequent = draw(INCREMENTS)
    return Rate(
        prefix="1",
        price=draw(st.decimals(min_value=0, max_value=20, places=draw(st.integers(2, 6)))),
        connect_fee=draw(st.decimals(min_value=0, max_value=2, places=draw(st.integers(2, 6)))),
        minimum=draw(st.sampled_from([0, 0, 1, 10, 30, 60, 90])),
        initial=initial, subsequent=subsequent,
    )


@settings(max_examples=200, deadline=None)
@given(r=rates(), a=st.integers(-5, 20000), b=st.integers(-5, 20000))
def test_property_call_cost_is_monotonic_non_decreasing_in_billsec(r, a, b):
    low, high = min(a, b), max(a, b)
    assert call_cost(r, low) <= call_cost(r, high)
    assert billed_seconds(r, low) <= billed_seconds(r, high)


@settings(max_examples=200, deadline=None)
@given(r=rates(), billsec=st.integers(1, 20000))
def test_property_billed_seconds_cover_the_call_the_minimum_and_follow_the_increments(r, billsec):
    billed = billed_seconds(r, billsec)
    assert billed >= billsec
    assert billed >= r.minimum
    assert billed >= r.initial
    if billed > r.initial:
        assert (billed - r.initial) % r.subsequent == 0
        # and no more than one increment is wasted
        assert billed - max(billsec, r.minimum) < r.subsequent
    cost = call_cost(r, billsec)
    assert cost >= r.connect_fee
    assert cost.as_tuple().exponent >= -6


@settings(max_examples=200, deadline=None)
@given(r=rates(), funds=st.decimals(min_value=-5, max_value=200, places=6), cap=st.integers(-1, 14400))
def test_property_affordable_seconds_is_the_largest_duration_that_fits(r, funds, cap):
    charge = lambda s: call_cost(r, s)  # noqa: E731
    d = affordable_seconds(charge, funds, cap)
    assert 0 <= d <= max(cap, 0)
    if d == 0:
        assert cap <= 0 or charge(1) > funds
    else:
        assert charge(d) <= funds
        assert d == cap or charge(d + 1) > funds
