"""Who pays what for a finished call: the worked examples run end to end through
price_chain -> decide -> settle, plus the conservation of money across the chain."""
from decimal import Decimal as D

import pytest
from hypothesis import given, settings, strategies as st

from chalicelib.domain.accounts import ADMIN, CLIENT, COMMISSION, RESELLER, Account, TreeSettings
from chalicelib.domain.authorization import Grant, Level, decide, price_chain
from chalicelib.domain.rating import call_cost
from chalicelib.domain.settlement import ANSWERED, BUSY, FAILED, NO_ANSWER, settle
from chalicelib.domain.tariffs import Rate, Tariff

NOW = "2025-06-15T12:00:00Z"
UK_LONDON = "442079460958"


def table(tariff_id, owner, price, initial=60, subsequent=60, minimum=0, connect_fee="0", prefix="44"):
    """A one-rate table tariff and its rate book."""
    rate = Rate(prefix=prefix, price=D(price), initial=initial, subsequent=subsequent, minimum=minimum,
                connect_fee=D(connect_fee))
    return Tariff(id=tariff_id, owner=owner), {prefix: [rate]}


def tree(*specs):
    """specs: (tariff_id, owner, price, ...) for every level, the client's first and the root's last."""
    tariffs, books = {}, {}
    for spec in specs:
        tariff, book = table(*spec[:3], **(spec[3] if len(spec) > 3 else {}))
        tariffs[tariff.id], books[tariff.id] = tariff, book
    return tariffs, books


def authorize(chain, tariffs, books, number=UK_LONDON, settings=TreeSettings()) -> Grant:
    rates = price_chain(chain, tariffs, books, number, NOW)
    decision = decide(chain, rates, {}, settings)
    assert isinstance(decision, Grant), decision
    return decision


def by_id(charges):
    return {c.account_id: c for c in charges}


# --------------------------------------------------------------------------- MOR's worked example

def mor_chain():
    return [Account("client", CLIENT, "reseller", "t_client", balance=D("10")),
            Account("reseller", RESELLER, "admin", "t_reseller", balance=D("100")),
            Account("admin", ADMIN, None, "provider")]


MOR_TARIFFS = tree(("t_client", "reseller", "2.0"), ("t_reseller", "admin", "1.2"), ("provider", "admin", "0.3"))


def test_mor_worked_example_one_answered_minute():
    """GIVEN provider cost 0.3, the reseller pays 1.2 and the client pays 2.0 per minute
    WHEN the client makes a 60 s answered call
    THEN the client pays 2.0, the reseller pays 1.2 and makes 0.8, the operator (root) makes 0.9."""
    grant = authorize(mor_chain(), *MOR_TARIFFS)
    assert grant.max_duration == 300                   # the client's 10.00 at 2.0/min
    charges = by_id(settle(grant.levels, 60, ANSWERED))

    assert charges["client"].net == D("2.0") and charges["client"].profit is None
    assert charges["reseller"].sell == D("2.0")
    assert charges["reseller"].net == D("1.2")
    assert charges["reseller"].profit == D("0.8")
    assert charges["admin"].sell == D("1.2")
    assert charges["admin"].cost == D("0.3")
    assert charges["admin"].net == D("0")              # the carrier bills the operator outside Cascade
    assert charges["admin"].profit == D("0.9")


def test_mor_example_releases_the_holds_placed_at_authorization():
    grant = authorize(mor_chain(), *MOR_TARIFFS)
    charges = settle(grant.levels, 60, ANSWERED)
    assert [c.hold for c in charges] == [D("10.0"), D("6.0"), D("0")]
    assert [c.hold for c in settle(grant.levels, 60, ANSWERED, hold_released=False)] == [D("0")] * 3


@pytest.mark.parametrize("disposition", [BUSY, NO_ANSWER, FAILED])
def test_unanswered_calls_cost_nothing_at_any_level(disposition):
    """GIVEN the MOR chain, with connect fees and a minimum WHEN the call ends BUSY / NO ANSWER / FAILED
    (even with a billsec reported) THEN nobody pays, nobody profits, nothing is billed, and the hold is released."""
    tariffs, books = tree(("t_client", "reseller", "2.0", dict(connect_fee="0.5", minimum=30)),
                          ("t_reseller", "admin", "1.2", dict(connect_fee="0.2")), ("provider", "admin", "0.3"))
    grant = authorize(mor_chain(), tariffs, books)
    charges = settle(grant.levels, 42, disposition)
    assert [(c.cost, c.net, c.commission, c.billed_seconds) for c in charges] == [(D("0"), D("0"), D("0"), 0)] * 3
    assert [c.profit for c in charges] == [None, D("0"), D("0")]
    assert charges[0].hold == grant.levels[0].hold > 0


# --------------------------------------------------------------------------- increments through settle

@pytest.mark.parametrize("initial, subsequent, minimum, connect_fee, billsec, billed, cost", [
    (1, 1, 0, "0", 61, 61, "0.61"),          # per second at 0.60/min
    (30, 6, 0, "0", 31, 36, "0.36"),         # 30/6 bills 36 s for 31
    (60, 60, 0, "0", 61, 120, "1.20"),       # per minute bills two minutes for 61 s
    (1, 1, 30, "0", 5, 30, "0.30"),          # a 30 s minimum
    (1, 1, 30, "0.10", 5, 30, "0.40"),       # ... plus a connect fee
    (60, 60, 0, "0.10", 1, 60, "0.70"),
])
def test_client_is_billed_by_its_rate_increments(initial, subsequent, minimum, connect_fee, billsec, billed, cost):
    """GIVEN the client pays 0.60/min with these increments, the reseller 0.30/min per second
    WHEN the answered call lasts billsec THEN the client is billed `billed` seconds for `cost`,
    and the reseller is billed at its own (per-second) rate."""
    tariffs, books = tree(
        ("t_client", "reseller", "0.60", dict(initial=initial, subsequent=subsequent, minimum=minimum,
                                              connect_fee=connect_fee)),
        ("t_reseller", "admin", "0.30", dict(initial=1, subsequent=1)),
        ("provider", "admin", "0.06", dict(initial=1, subsequent=1)))
    grant = authorize(mor_chain(), tariffs, books)
    client, reseller, admin = settle(grant.levels, billsec, ANSWERED)
    assert (client.billed_seconds, client.cost, client.net) == (billed, D(cost), D(cost))
    assert reseller.billed_seconds == billsec
    assert reseller.cost == call_cost(grant.levels[1].rate, billsec) == D("0.30") * billsec / 60
    assert reseller.profit == D(cost) - reseller.cost


# --------------------------------------------------------------------------- three reseller levels

def three_level_chain():
    return [Account("client", CLIENT, "r1", "t_client", balance=D("10")),
            Account("r1", RESELLER, "r2", "t_r1", balance=D("2")),
            Account("r2", RESELLER, "r3", "t_r2", balance=D("100")),
            Account("r3", RESELLER, "admin", "t_r3", balance=D("100")),
            Account("admin", ADMIN, None, "provider")]


def test_three_level_reseller_chain_each_level_billed_at_its_own_price():
    """GIVEN client -> R1 -> R2 -> R3 -> admin paying 0.5, 0.4, 0.3, 0.2 per minute, provider 0.1
    WHEN authorized THEN R1's 2.00 limits the call to 5 minutes and every level holds 5 minutes at its price;
    AND WHEN a 60 s call is settled THEN each level pays its own price and every seller makes 0.1."""
    tariffs, books = tree(("t_client", "r1", "0.5"), ("t_r1", "r2", "0.4"), ("t_r2", "r3", "0.3"),
                          ("t_r3", "admin", "0.2"), ("provider", "admin", "0.1"))
    grant = authorize(three_level_chain(), tariffs, books)
    assert (grant.max_duration, grant.limited_by) == (300, "r1")
    assert [l.hold for l in grant.levels] == [D("2.5"), D("2.0"), D("1.5"), D("1.0"), D("0")]

    charges = settle(grant.levels, 60, ANSWERED)
    assert [c.account_id for c in charges] == ["client", "r1", "r2", "r3", "admin"]
    assert [c.cost for c in charges] == [D("0.5"), D("0.4"), D("0.3"), D("0.2"), D("0.1")]
    assert [c.net for c in charges] == [D("0.5"), D("0.4"), D("0.3"), D("0.2"), D("0")]
    assert [c.profit for c in charges] == [None, D("0.1"), D("0.1"), D("0.1"), D("0.1")]


def test_three_level_chain_with_each_level_on_its_own_increments():
    """GIVEN the same chain where the client is billed 1/1, R1 6/6, R2 30/6, R3 60/60 and the provider 1/1
    WHEN a 61 s call is settled THEN the client is billed 61 s (0.508333), R1 66 s (0.44), R2 66 s (0.33),
    R3 120 s (0.40) and the provider 61 s (0.101667).
    Note R3 loses 0.07 on this call although a one-minute call (the loss probe) is profitable for it."""
    tariffs, books = tree(("t_client", "r1", "0.5", dict(initial=1, subsequent=1)),
                          ("t_r1", "r2", "0.4", dict(initial=6, subsequent=6)),
                          ("t_r2", "r3", "0.3", dict(initial=30, subsequent=6)),
                          ("t_r3", "admin", "0.2"),
                          ("provider", "admin", "0.1", dict(initial=1, subsequent=1)))
    grant = authorize(three_level_chain(), tariffs, books)
    charges = settle(grant.levels, 61, ANSWERED)
    assert [c.billed_seconds for c in charges] == [61, 66, 66, 120, 61]
    assert [c.cost for c in charges] == [D("0.508333"), D("0.44"), D("0.33"), D("0.40"), D("0.101667")]
    assert [c.profit for c in charges] == [None, D("0.068333"), D("0.11"), D("-0.07"), D("0.298333")]


# --------------------------------------------------------------------------- commission resellers

def commission_chain():
    return [Account("client", CLIENT, "agent", "t_client_own", balance=D("10")),
            Account("agent", RESELLER, "admin", "t_agent", balance=D("100"), reseller_model=COMMISSION,
                    commission_percent=D("10")),
            Account("admin", ADMIN, None, "provider")]


COMMISSION_TARIFFS = tree(("t_client_own", "agent", "5.0"), ("t_agent", "admin", "1.2"), ("provider", "admin", "0.3"))


def test_client_under_a_commission_reseller_pays_the_resellers_own_tariff():
    """GIVEN a 10% commission agent on a 1.2/min tariff (its client's own 5.0 tariff is ignored)
    WHEN the client makes a 60 s call THEN the client pays 1.2; the agent's cost is 1.2, it is credited
    0.12 so its net charge is 1.08, and its profit equals the commission, 0.12."""
    grant = authorize(commission_chain(), *COMMISSION_TARIFFS)
    assert grant.levels[0].rate.price == D("1.2")
    charges = by_id(settle(grant.levels, 60, ANSWERED))
    assert charges["client"].net == D("1.2")
    agent = charges["agent"]
    assert (agent.sell, agent.cost, agent.commission, agent.net) == (D("1.2"), D("1.2"), D("0.12"), D("1.08"))
    assert agent.profit == agent.commission == D("0.12")


def test_commission_is_quantized_to_six_places():
    """1/1 at 1.2/min for 7 s costs 0.14; 10% commission 0.014; net 0.126. For 1 s: 0.02 -> 0.002."""
    tariffs, books = tree(("t_client_own", "agent", "5.0"), ("t_agent", "admin", "1.2", dict(initial=1, subsequent=1)),
                          ("provider", "admin", "0.3"))
    grant = authorize(commission_chain(), tariffs, books)
    agent = settle(grant.levels, 7, ANSWERED)[1]
    assert (agent.cost, agent.commission, agent.net) == (D("0.14"), D("0.014"), D("0.126"))


def test_parent_of_a_commission_reseller_earns_what_the_reseller_actually_paid():
    """GIVEN the commission chain WHEN a 60 s call is settled THEN money is conserved: what the client pays
    equals the carrier's cost plus every level's profit, and the root earns 1.08 - 0.3 = 0.78."""
    grant = authorize(commission_chain(), *COMMISSION_TARIFFS)
    charges = by_id(settle(grant.levels, 60, ANSWERED))
    assert charges["admin"].sell == D("1.08")
    assert charges["admin"].profit == D("0.78")
    assert charges["client"].net == charges["admin"].cost + charges["agent"].profit + charges["admin"].profit


# --------------------------------------------------------------------------- serialisation

def test_level_charge_to_dict_writes_amounts_as_text():
    grant = authorize(mor_chain(), *MOR_TARIFFS)
    reseller = settle(grant.levels, 60, ANSWERED)[1].to_dict()
    assert reseller == {"account_id": "reseller", "role": "reseller", "cost": "1.200000", "commission": "0",
                        "charged": "1.200000", "sell": "2.000000", "profit": "0.800000", "billed_seconds": 60}


def test_settle_uses_the_levels_frozen_at_authorization():
    """Levels serialised at authorization (to_dict) and read back settle to the same charges."""
    grant = authorize(mor_chain(), *MOR_TARIFFS)
    thawed = [Level.from_dict(l.to_dict()) for l in grant.levels]
    assert settle(thawed, 61, ANSWERED) == settle(grant.levels, 61, ANSWERED)


# --------------------------------------------------------------------------- property: money is conserved

@st.composite
def margin_chain_levels(draw):
    """Margin resellers only: 0..6 resellers, each level's price >= its parent's, random increments."""
    n = draw(st.integers(0, 6))
    price = draw(st.decimals(min_value=0, max_value=1, places=4))
    rates = []                                  # from the root down
    for _ in range(n + 2):
        initial, subsequent = draw(st.sampled_from([(60, 60), (30, 6), (1, 1), (6, 6)]))
        rates.append(Rate(prefix="44", price=price, initial=initial, subsequent=subsequent,
                          minimum=draw(st.sampled_from([0, 30, 60])),
                          connect_fee=draw(st.sampled_from([D("0"), D("0.01"), D("0.1")]))))
        price += draw(st.decimals(min_value=0, max_value=1, places=4))
    rates.reverse()                             # client first
    last = len(rates) - 1
    return [Level(account_id=f"a{i}", role=CLIENT if i == 0 else ADMIN if i == last else RESELLER,
                  rate=rate, charged=i < last) for i, rate in enumerate(rates)]


@settings(max_examples=150, deadline=None)
@given(levels=margin_chain_levels(), billsec=st.integers(0, 7200),
       disposition=st.sampled_from([ANSWERED, ANSWERED, BUSY, NO_ANSWER, FAILED]))
def test_property_without_commission_money_is_conserved_across_the_chain(levels, billsec, disposition):
    """The client's charge = the carrier's cost + every seller's profit, and each seller's `sell` is what
    its child was charged."""
    charges = settle(levels, billsec, disposition)
    assert charges[0].net == charges[-1].cost + sum(c.profit for c in charges[1:])
    for child, parent in zip(charges, charges[1:]):
        assert parent.sell == child.net
    assert charges[-1].net == 0
    if disposition != ANSWERED or billsec <= 0:
        assert all(c.cost == 0 and c.billed_seconds == 0 for c in charges)
