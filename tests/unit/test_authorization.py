"""May this caller dial this number, and for how long? (decide, check_chain, billing modes)

Unless a test says otherwise the tree is client -> reseller -> admin with per-minute (60/60) rates:
the client pays 1.00/min, the reseller 0.50/min and the operator's provider cost is 0.20/min.
"""
from decimal import Decimal as D

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from chalicelib.domain.accounts import (ADMIN, CLIENT, CLOSED, COMMISSION, EARLY, LATE, POSTPAID, PREPAID,
                                        PREPAID_SOFT, RESELLER, SUSPENDED, Account, InvalidTree, TreeSettings,
                                        billing_modes, check_chain, effective_tariff_ids)
from chalicelib.domain.authorization import (ACCOUNT_CLOSED, ACCOUNT_SUSPENDED, CONCURRENT_CALLS_LIMIT,
                                             CPS_LIMIT, DAILY_LIMIT, INSUFFICIENT_FUNDS, LOSS_ROUTE,
                                             MONTHLY_LIMIT, NO_RATE, Denial, Grant, Level, Usage, decide)
from chalicelib.domain.tariffs import Rate

SETTINGS = TreeSettings()            # max_duration 3 h = 10800 s


def rate(price, initial=60, subsequent=60, minimum=0, connect_fee="0"):
    return Rate(prefix="44", price=D(price), initial=initial, subsequent=subsequent, minimum=minimum,
                connect_fee=D(connect_fee))


def admin(**kw):
    return Account("admin", ADMIN, None, "provider", **kw)


def reseller(id="reseller", parent="admin", **kw):
    kw.setdefault("balance", D("100"))
    return Account(id, RESELLER, parent, f"t_{id}", **kw)


def client(parent="reseller", **kw):
    kw.setdefault("balance", D("10"))
    return Account("client", CLIENT, parent, "t_client", **kw)


RATES = [rate("1.00"), rate("0.50"), rate("0.20")]


def chain_of(c=None, r=None, a=None):
    return [c or client(), r or reseller(), a or admin()]


def grant(chain, rates=RATES, usage=None, settings=SETTINGS) -> Grant:
    decision = decide(chain, rates, usage or {}, settings)
    assert isinstance(decision, Grant), decision
    return decision


# --------------------------------------------------------------------------- the happy path

def test_grant_is_limited_by_the_poorest_level_and_holds_each_level_at_its_own_price():
    """GIVEN the client has 10.00 at 1.00/min and the reseller 100.00 at 0.50/min
    WHEN the client dials THEN 600 s are granted (the client's 10 minutes), limited by the client,
    and 10.00 is held on the client, 5.00 on the reseller and nothing on the root."""
    g = grant(chain_of())
    assert g.max_duration == 600
    assert g.limited_by == "client"
    assert [(l.account_id, l.hold) for l in g.levels] == [
        ("client", D("10.00")), ("reseller", D("5.00")), ("admin", D("0"))]
    assert [l.charged for l in g.levels] == [True, True, False]
    assert g.client_rate == RATES[0]


def test_reseller_funds_can_limit_the_call():
    """GIVEN the reseller has only 2.00 at 0.50/min THEN the call is limited to its 4 minutes."""
    g = grant(chain_of(r=reseller(balance=D("2.00"))))
    assert (g.max_duration, g.limited_by) == (240, "reseller")
    assert [l.hold for l in g.levels] == [D("4.00"), D("2.00"), D("0")]


def test_per_second_rates_grant_an_exact_number_of_seconds():
    """GIVEN 0.60/min billed 1/1 with a 0.10 connect fee and 1.00 of funds
    THEN 90 s (0.10 + 0.90) are granted and exactly 1.00 is held."""
    rates = [rate("0.60", 1, 1, connect_fee="0.10"), rate("0.10", 1, 1), rate("0.01", 1, 1)]
    g = grant(chain_of(c=client(balance=D("1.00"))), rates)
    assert g.max_duration == 90
    assert g.levels[0].hold == D("1.00")


def test_max_duration_is_capped_by_the_tree_setting():
    """GIVEN everyone is rich and the tree caps calls at 600 s THEN 600 s, limited by nobody."""
    settings = TreeSettings(max_duration=600)
    g = grant(chain_of(c=client(balance=D("1000000"))), settings=settings)
    assert (g.max_duration, g.limited_by) == (600, None)
    assert g.levels[0].hold == D("10.00")


def test_default_cap_is_three_hours():
    g = grant(chain_of(c=client(balance=D("1000000")), r=reseller(balance=D("1000000"))))
    assert (g.max_duration, g.limited_by) == (10800, None)


# --------------------------------------------------------------------------- account status

@pytest.mark.parametrize("who", ["client", "reseller", "admin"])
@pytest.mark.parametrize("status, reason", [(SUSPENDED, ACCOUNT_SUSPENDED), (CLOSED, ACCOUNT_CLOSED)])
def test_a_suspended_or_closed_account_anywhere_in_the_chain_denies(who, status, reason):
    chain = chain_of(c=client(status=status) if who == "client" else None,
                     r=reseller(status=status) if who == "reseller" else None,
                     a=admin(status=status) if who == "admin" else None)
    assert decide(chain, RATES, {}, SETTINGS) == Denial(reason, who)


# --------------------------------------------------------------------------- rates

@pytest.mark.parametrize("missing, who", [(0, "client"), (1, "reseller"), (2, "admin")])
def test_a_level_without_a_rate_denies_no_rate_naming_that_account(missing, who):
    rates = list(RATES)
    rates[missing] = None
    assert decide(chain_of(), rates, {}, SETTINGS) == Denial(NO_RATE, who)


def test_reseller_selling_below_its_cost_is_a_loss_route():
    """GIVEN the reseller pays 0.50/min but sells at 0.40/min THEN loss_route, naming the reseller."""
    rates = [rate("0.40"), rate("0.50"), rate("0.20")]
    assert decide(chain_of(), rates, {}, SETTINGS) == Denial(LOSS_ROUTE, "reseller")


def test_loss_route_is_allowed_when_the_seller_allows_loss():
    rates = [rate("0.40"), rate("0.50"), rate("0.20")]
    g = grant(chain_of(r=reseller(allow_loss=True)), rates)
    assert g.max_duration == 1500   # 10.00 / 0.40 per minute = 25 minutes


def test_operator_selling_below_provider_cost_is_a_loss_route_naming_the_root():
    rates = [rate("1.00"), rate("0.15"), rate("0.20")]
    assert decide(chain_of(), rates, {}, SETTINGS) == Denial(LOSS_ROUTE, "admin")


def test_loss_route_counts_the_connect_fee_of_a_one_minute_call():
    """GIVEN the reseller sells at 0.60/min but pays 0.50/min + 0.15 connect THEN loss (0.60 < 0.65)."""
    rates = [rate("0.60"), rate("0.50", connect_fee="0.15"), rate("0.20")]
    assert decide(chain_of(), rates, {}, SETTINGS) == Denial(LOSS_ROUTE, "reseller")


def test_selling_at_cost_is_not_a_loss():
    rates = [rate("0.50"), rate("0.50"), rate("0.50")]
    assert isinstance(decide(chain_of(), rates, {}, SETTINGS), Grant)


def test_the_loss_probe_is_a_single_one_minute_call():
    """Documented limit of the probe: the reseller sells 1/1 at 0.60/min and pays 60/60 at 0.50/min.
    A one-minute call is profitable (0.60 > 0.50) so the route is allowed, although a 1 s call sells for
    0.01 and costs 0.50."""
    rates = [rate("0.60", 1, 1), rate("0.50", 60, 60), rate("0.20")]
    g = grant(chain_of(), rates)
    assert g.levels[0].cost(1) == D("0.01") and g.levels[1].cost(1) == D("0.50")


# --------------------------------------------------------------------------- concurrency and rate of calls

def test_concurrent_calls_limit_denies_when_reached():
    """GIVEN the reseller allows 2 concurrent calls and has 2 active WHEN another call comes THEN denied."""
    chain = chain_of(r=reseller(max_calls=2, active_calls=2))
    assert decide(chain, RATES, {}, SETTINGS) == Denial(CONCURRENT_CALLS_LIMIT, "reseller")


def test_concurrent_calls_below_the_limit_are_granted_and_the_limit_is_recorded():
    g = grant(chain_of(c=client(max_calls=2, active_calls=1)))
    assert g.levels[0].max_calls == 2


def test_cps_limit_denies_when_this_second_is_full():
    """GIVEN the client may place 5 calls a second and 5 were placed this second THEN cps_limit."""
    chain = chain_of(c=client(cps_limit=5))
    assert decide(chain, RATES, {"client": Usage(calls_this_second=5)}, SETTINGS) == Denial(CPS_LIMIT, "client")
    g = grant(chain, usage={"client": Usage(calls_this_second=4)})
    assert g.levels[0].cps_limit == 5


def test_the_roots_own_limits_are_not_applied():
    """The root is not charged (the carrier bills it outside Cascade): its counters do not deny calls."""
    chain = chain_of(a=admin(max_calls=1, active_calls=5, cps_limit=1))
    g = grant(chain, usage={"admin": Usage(calls_this_second=9)})
    assert g.levels[2].cps_limit is None and g.levels[2].max_calls is None


# --------------------------------------------------------------------------- funds

def test_insufficient_funds_when_the_first_billable_unit_is_unaffordable():
    """GIVEN the client has 0.99 and the first minute costs 1.00 THEN insufficient_funds for the client."""
    chain = chain_of(c=client(balance=D("0.99")))
    assert decide(chain, RATES, {}, SETTINGS) == Denial(INSUFFICIENT_FUNDS, "client")


def test_insufficient_funds_counts_the_connect_fee_and_minimum():
    """GIVEN 0.60/min 1/1 with a 30 s minimum and 0.05 connect: the first unit costs 0.35."""
    rates = [rate("0.60", 1, 1, minimum=30, connect_fee="0.05"), rate("0.10"), rate("0.01")]
    assert decide(chain_of(c=client(balance=D("0.34"))), rates, {}, SETTINGS) == Denial(INSUFFICIENT_FUNDS, "client")
    assert grant(chain_of(c=client(balance=D("0.35"))), rates).max_duration == 30


def test_insufficient_funds_at_a_reseller():
    chain = chain_of(r=reseller(balance=D("0.49")))
    assert decide(chain, RATES, {}, SETTINGS) == Denial(INSUFFICIENT_FUNDS, "reseller")


def test_money_held_for_calls_in_progress_is_not_available():
    """GIVEN a balance of 5.00 with 3.00 held THEN only 2 minutes are granted."""
    assert grant(chain_of(c=client(balance=D("5.00"), held=D("3.00")))).max_duration == 120
    chain = chain_of(c=client(balance=D("5.00"), held=D("4.50")))
    assert decide(chain, RATES, {}, SETTINGS) == Denial(INSUFFICIENT_FUNDS, "client")


def test_negative_prepaid_balance_denies_even_a_free_call():
    rates = [rate("0"), rate("0"), rate("0")]
    chain = chain_of(c=client(balance=D("-0.01")))
    assert decide(chain, rates, {}, SETTINGS) == Denial(INSUFFICIENT_FUNDS, "client")


def test_soft_prepaid_level_does_not_limit_max_duration():
    """GIVEN a soft-prepaid client with no money at all THEN the call is granted the full cap: it may go
    negative. Its hold is still placed (early billing) but not guarded by the store."""
    g = grant(chain_of(c=client(billing_type=PREPAID_SOFT, balance=D("-50"))))
    assert (g.max_duration, g.limited_by) == (10800, None)
    assert g.levels[0].guarded is False and g.levels[1].guarded is True
    assert g.levels[0].hold == D("180.00")


def test_soft_prepaid_reseller_does_not_limit_either():
    g = grant(chain_of(r=reseller(billing_type=PREPAID_SOFT, balance=D("0"))))
    assert (g.max_duration, g.limited_by) == (600, "client")


def test_postpaid_level_can_spend_down_to_minus_its_credit_limit():
    """GIVEN a postpaid client with balance 0 and credit limit 5.00 THEN 5 minutes;
    at -3.00 two minutes remain; at -5.00 nothing."""
    assert grant(chain_of(c=client(billing_type=POSTPAID, balance=D("0"), credit_limit=D("5")))).max_duration == 300
    assert grant(chain_of(c=client(billing_type=POSTPAID, balance=D("-3"), credit_limit=D("5")))).max_duration == 120
    chain = chain_of(c=client(billing_type=POSTPAID, balance=D("-5"), credit_limit=D("5")))
    assert decide(chain, RATES, {}, SETTINGS) == Denial(INSUFFICIENT_FUNDS, "client")


def test_credit_limit_of_a_prepaid_account_is_not_spendable():
    chain = chain_of(c=client(billing_type=PREPAID, balance=D("0"), credit_limit=D("5")))
    assert decide(chain, RATES, {}, SETTINGS) == Denial(INSUFFICIENT_FUNDS, "client")


def test_account_available_and_floor():
    assert client(billing_type=PREPAID, balance=D("5"), credit_limit=D("3"), held=D("1")).available == D("4")
    assert client(billing_type=POSTPAID, balance=D("5"), credit_limit=D("3"), held=D("1")).available == D("7")
    assert client(billing_type=PREPAID_SOFT, balance=D("5"), credit_limit=D("3")).available == D("5")
    assert client(billing_type=PREPAID).floor == D("0")
    assert client(billing_type=POSTPAID, credit_limit=D("3")).floor == D("-3")
    assert client(billing_type=PREPAID_SOFT).floor is None


# --------------------------------------------------------------------------- daily / monthly limits

def test_daily_limit_reached_denies():
    """GIVEN a daily limit of 5.00, all spent today THEN daily_limit."""
    chain = chain_of(c=client(daily_limit=D("5")))
    usage = {"client": Usage(day_used=D("5"))}
    assert decide(chain, RATES, usage, SETTINGS) == Denial(DAILY_LIMIT, "client")


def test_daily_limit_left_limits_max_duration():
    """GIVEN 1.50 of the daily limit left at 1.00/min THEN one minute, limited by the client."""
    chain = chain_of(c=client(daily_limit=D("5")))
    g = grant(chain, usage={"client": Usage(day_used=D("3.50"))})
    assert (g.max_duration, g.limited_by) == (60, "client")
    assert g.levels[0].limits_daily is True and g.levels[0].limits_monthly is False


def test_monthly_limit_reached_denies():
    chain = chain_of(r=reseller(monthly_limit=D("100")))
    usage = {"reseller": Usage(month_used=D("99.99"))}
    assert decide(chain, RATES, usage, SETTINGS) == Denial(MONTHLY_LIMIT, "reseller")


def test_monthly_limit_left_limits_max_duration():
    chain = chain_of(r=reseller(monthly_limit=D("100")))
    g = grant(chain, usage={"reseller": Usage(month_used=D("99"))})
    assert (g.max_duration, g.limited_by) == (120, "reseller")
    assert g.levels[1].limits_monthly is True


def test_daily_limit_applies_to_a_soft_prepaid_account_too():
    chain = chain_of(c=client(billing_type=PREPAID_SOFT, balance=D("0"), daily_limit=D("2")))
    assert grant(chain).max_duration == 120


def test_insufficient_funds_is_reported_before_a_limit_also_exhausted():
    chain = chain_of(c=client(balance=D("0"), daily_limit=D("5")))
    assert decide(chain, RATES, {"client": Usage(day_used=D("5"))}, SETTINGS) == Denial(INSUFFICIENT_FUNDS, "client")


# --------------------------------------------------------------------------- billing modes

def test_late_billing_on_the_account_holds_nothing_but_still_limits_max_duration():
    """GIVEN a late-billed client with 10.00 at 1.00/min THEN 600 s, and its hold is 0 (it will be debited
    after the call); the early-billed reseller is still held."""
    g = grant(chain_of(c=client(billing_mode=LATE)))
    assert (g.max_duration, g.limited_by) == (600, "client")
    assert [l.mode for l in g.levels] == [LATE, EARLY, EARLY]
    assert [l.hold for l in g.levels] == [D("0"), D("5.00"), D("0")]


def test_late_billing_is_inherited_from_an_ancestor():
    g = grant(chain_of(r=reseller(billing_mode=LATE)))
    assert [l.mode for l in g.levels] == [LATE, LATE, EARLY]
    assert [l.hold for l in g.levels] == [D("0"), D("0"), D("0")]
    assert g.max_duration == 600


def test_late_billing_from_the_tree_settings_and_an_account_override():
    settings = TreeSettings(billing_mode=LATE)
    g = grant(chain_of(c=client(billing_mode=EARLY)), settings=settings)
    assert [l.mode for l in g.levels] == [EARLY, LATE, LATE]
    assert [l.hold for l in g.levels] == [D("10.00"), D("0"), D("0")]
    assert g.max_duration == 600


def test_late_billed_account_without_funds_is_still_denied():
    chain = chain_of(c=client(billing_mode=LATE, balance=D("0.50")))
    assert decide(chain, RATES, {}, SETTINGS) == Denial(INSUFFICIENT_FUNDS, "client")


def test_billing_modes_nearest_setting_wins():
    chain = [client(parent="r1"), reseller("r1", parent="r2"), reseller("r2", billing_mode=LATE),
             admin(billing_mode=EARLY)]
    assert billing_modes(chain, TreeSettings()) == [LATE, LATE, LATE, EARLY]


# --------------------------------------------------------------------------- commission resellers

def test_commission_reseller_level_is_held_at_cost_less_commission():
    """GIVEN a 10% commission reseller paying 1.20/min with exactly 1.08 THEN one minute is affordable
    (1.20 - 0.12), and the hold is 1.08."""
    chain = [client(parent="c", balance=D("10")),
             Account("c", RESELLER, "admin", "t_c", reseller_model=COMMISSION,
                     commission_percent=D("10"), balance=D("1.08")),
             admin()]
    rates = [rate("1.20"), rate("1.20"), rate("0.30")]
    g = grant(chain, rates)
    assert (g.max_duration, g.limited_by) == (60, "c")
    assert g.levels[1].commission_percent == D("10")
    assert g.levels[1].hold == D("1.08")
    assert g.levels[0].commission_percent == D("0")


def test_commission_percent_of_a_margin_reseller_is_ignored():
    chain = chain_of(r=reseller(commission_percent=D("10")))
    assert grant(chain).levels[1].commission_percent == D("0")


def test_effective_tariffs_under_a_commission_reseller_are_the_resellers_own():
    chain = [client(parent="c"),
             Account("c", RESELLER, "r", "t_c", reseller_model=COMMISSION, commission_percent=D("10")),
             reseller("r"), admin()]
    assert effective_tariff_ids(chain) == ["t_c", "t_c", "t_r", "provider"]


def test_effective_tariffs_through_two_commission_resellers():
    chain = [client(parent="c1"),
             Account("c1", RESELLER, "c2", "t_c1", reseller_model=COMMISSION),
             Account("c2", RESELLER, "admin", "t_c2", reseller_model=COMMISSION),
             admin()]
    assert effective_tariff_ids(chain) == ["t_c2", "t_c2", "t_c2", "provider"]


# --------------------------------------------------------------------------- level serialisation

def test_levels_round_trip_through_their_dict():
    chain = chain_of(c=client(cps_limit=3, max_calls=2, daily_limit=D("5"), billing_mode=LATE))
    rates = [rate("0.6", 30, 6, minimum=10, connect_fee="0.01"), rate("0.5"), rate("0.2")]
    for level in grant(chain, rates).levels:
        assert Level.from_dict(level.to_dict()) == level


# --------------------------------------------------------------------------- check_chain

def deep_chain(resellers):
    ids = [f"r{i}" for i in range(1, resellers + 1)]
    accounts = [Account("client", CLIENT, ids[0] if ids else "admin", "t_client")]
    for i, rid in enumerate(ids):
        accounts.append(Account(rid, RESELLER, ids[i + 1] if i + 1 < len(ids) else "admin", f"t_{rid}"))
    accounts.append(admin(settings=TreeSettings(max_depth=3, max_duration=900)))
    return accounts


def test_check_chain_returns_the_root_settings():
    assert check_chain(deep_chain(3)) == TreeSettings(max_depth=3, max_duration=900)
    assert check_chain(chain_of()) == TreeSettings()


def test_check_chain_accepts_a_client_directly_under_the_root():
    assert check_chain(deep_chain(0)).max_depth == 3


def test_check_chain_rejects_a_chain_deeper_than_max_depth():
    with pytest.raises(InvalidTree, match="max depth 3"):
        check_chain(deep_chain(4))


def test_check_chain_rejects_a_broken_parent_link():
    chain = deep_chain(2)
    chain[1] = Account("r1", RESELLER, "elsewhere", "t_r1")
    with pytest.raises(InvalidTree, match="r1 is not a child of r2"):
        check_chain(chain)


@pytest.mark.parametrize("chain", [
    [admin()],
    [client(parent="admin"), Account("admin", RESELLER, None, "provider")],               # root not admin
    [client(parent="admin"), Account("admin", ADMIN, "top", "provider")],                # root has a parent
    [reseller("x", parent="admin"), admin()],                                            # no client first
    [client(parent="c2"), Account("c2", CLIENT, "admin", "t"), admin()],                 # client in the middle
])
def test_check_chain_rejects_malformed_trees(chain):
    with pytest.raises(InvalidTree):
        check_chain(chain)


# --------------------------------------------------------------------------- property: no grant breaks a floor

def places_st(low, high):
    return st.integers(2, 6).flatmap(lambda p: st.decimals(min_value=low, max_value=high, places=p))


# mostly solvent levels (so that long chains are still granted often), some poor or in debt
@st.composite
def money_st(draw):
    return draw(places_st(-5, 5) if draw(st.integers(0, 5)) == 0 else places_st(5, 60))


@st.composite
def limit_st(draw):
    return draw(places_st(0, 60)) if draw(st.integers(0, 7)) == 0 else None
margin_st = st.one_of(st.just(D("0")), places_st(0, 1))
INCREMENT_PAIRS = [(60, 60), (30, 6), (1, 1), (6, 6), (30, 30)]


@st.composite
def chain_rates_st(draw, n):
    """Rates from the root down. Mostly each level pays its parent's price plus a margin (a one-minute
    call never sells at a loss, whatever the increments: every pulse here bills 60 s for 60 s); sometimes
    a level is priced at random, so loss routes and allow_loss are exercised too."""
    rates = []
    price, fee = draw(places_st(0, 1)), draw(st.one_of(st.just(D("0")), places_st(0, D("0.2"))))
    for _ in range(n):
        if rates and draw(st.integers(0, 9)) == 0:
            price, fee = draw(places_st(0, 3)), draw(st.one_of(st.just(D("0")), places_st(0, 1)))
        elif rates:
            price, fee = price + draw(margin_st), fee + draw(st.one_of(st.just(D("0")), places_st(0, D("0.1"))))
        initial, subsequent = draw(st.sampled_from(INCREMENT_PAIRS))
        rates.append(Rate(prefix="44", price=price, connect_fee=fee, initial=initial, subsequent=subsequent,
                          minimum=draw(st.sampled_from([0, 0, 10, 30, 60]))))
    return list(reversed(rates))


@st.composite
def accounts_st(draw, id, role, parent):
    billing_type = draw(st.sampled_from([PREPAID, PREPAID_SOFT, POSTPAID]))
    commission = role == RESELLER and draw(st.integers(0, 3)) == 0
    return Account(
        id=id, role=role, parent_id=parent, tariff_id=f"t_{id}",
        billing_type=billing_type,
        billing_mode=draw(st.sampled_from([None, None, EARLY, LATE])),
        balance=draw(money_st()),
        credit_limit=draw(st.sampled_from([D("0"), D("5"), D("20.5")])),
        held=draw(st.sampled_from([D("0"), D("0"), D("0"), D("0.5"), D("3.123456")])),
        daily_limit=draw(limit_st()),
        monthly_limit=draw(limit_st()),
        allow_loss=draw(st.booleans()),
        reseller_model=COMMISSION if commission else "margin",
        commission_percent=draw(st.decimals(min_value=0, max_value=60, places=2)) if commission else D("0"),
    )


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 8))
    ids = ["client"] + [f"r{i}" for i in range(1, n + 1)] + ["admin"]
    chain = [draw(accounts_st(ids[0], CLIENT, ids[1]))]
    chain += [draw(accounts_st(ids[i], RESELLER, ids[i + 1])) for i in range(1, n + 1)]
    settings = TreeSettings(max_depth=8, max_duration=draw(st.integers(1, 4 * 3600) if draw(st.booleans())
                                                      else st.sampled_from([600, 3600, 10800, 14400])),
                            billing_mode=draw(st.sampled_from([EARLY, LATE])))
    chain.append(Account("admin", ADMIN, None, "provider", settings=settings))
    rates = draw(chain_rates_st(len(chain)))
    usage = {a.id: Usage(day_used=draw(st.sampled_from([D("0"), D("0"), D("1.5"), D("30")])),
                         month_used=draw(st.sampled_from([D("0"), D("0"), D("2.25"), D("55")])))
             for a in chain}
    return chain, rates, usage, settings


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_property_no_granted_duration_takes_any_guarded_level_below_its_floor(scenario):
    chain, rates, usage, settings = scenario
    assert check_chain(chain) == settings
    decision = decide(chain, rates, usage, settings)
    if isinstance(decision, Denial):
        assert decision.account_id in {a.id for a in chain}
        return
    assert 0 < decision.max_duration <= settings.max_duration
    assert len(decision.levels) == len(chain)
    for account, level in zip(chain, decision.levels):
        if not level.charged:
            assert level.hold == 0
            continue
        worst = level.charge(decision.max_duration)
        if account.billing_type != PREPAID_SOFT:
            assert level.guarded
            assert level.hold <= account.available
            assert worst <= account.available
        used = usage[account.id]
        if account.daily_limit is not None:
            assert worst <= account.daily_limit - used.day_used
        if account.monthly_limit is not None:
            assert worst <= account.monthly_limit - used.month_used
        assert level.hold == (worst if level.mode == EARLY else 0)
    if decision.limited_by is None:
        assert decision.max_duration == settings.max_duration
    else:
        # maximal: one more second is more than the limiting account may spend
        i = [a.id for a in chain].index(decision.limited_by)
        account, level = chain[i], decision.levels[i]
        budgets = []
        if account.billing_type != PREPAID_SOFT:
            budgets.append(account.available)
        if account.daily_limit is not None:
            budgets.append(account.daily_limit - usage[account.id].day_used)
        if account.monthly_limit is not None:
            budgets.append(account.monthly_limit - usage[account.id].month_used)
        assert level.charge(decision.max_duration + 1) > min(budgets)
