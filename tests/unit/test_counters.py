"""Usage counters on the account item (domain.counters): which period a call counts in, when it starts a
new one, the guard the store checks, and how completion and the sweeper adjust the spend."""
from decimal import Decimal as D

from chalicelib.domain import ledger
from chalicelib.domain.authorization import decide
from chalicelib.domain.counters import CPS, DAY, MONTH, Counter, CounterChange, current, released, reserved, settled
from tests.unit.test_authorization import RATES, SETTINGS, admin, chain_of, client, reseller

NOON = 1_795_000_000                 # 2026-11-18 11:06:40 UTC
TOMORROW = NOON + 86_400


def granted(chain, usage=None):
    return decide(chain, RATES, usage or {}, SETTINGS)


def test_a_counter_counts_only_in_its_own_period():
    counters = (Counter(DAY, "2026-11-18", D("3")), Counter(CPS, str(NOON), D("2")))
    assert current(counters, DAY, NOON) == D("3")
    assert current(counters, DAY, TOMORROW) == D("0")          # yesterday's spend does not count today
    assert current(counters, CPS, NOON) == D("2")
    assert current(counters, CPS, NOON + 1) == D("0")
    assert current(counters, MONTH, NOON) == D("0")             # never started


def test_authorize_adds_to_the_current_period_guarded_by_the_limit_less_this_call():
    # GIVEN the client may spend 50 a day and 5 calls a second, and has used 10 today and 2 this second
    acct = client(daily_limit=D("50"), cps_limit=5,
                  counters=(Counter(DAY, "2026-11-18", D("10")), Counter(CPS, str(NOON), D("2"))))
    chain = chain_of(c=acct)
    grant = granted(chain)
    changes = dict((c.name, (who, c)) for who, c in reserved(grant.levels, chain, NOON, grant.max_duration))
    # THEN the second counts one more call, allowed only while at most 4 were placed before it
    assert changes[CPS] == ("client", CounterChange(CPS, str(NOON), D("1"), at_most=D("4")))
    # AND the day reserves the call's charge for the whole granted time, guarded by 50 less that charge
    hold = grant.levels[0].charge(grant.max_duration)
    assert changes[DAY] == ("client", CounterChange(DAY, "2026-11-18", hold, at_most=D("50") - hold))


def test_a_new_period_is_started_not_added_to():
    # GIVEN yesterday's counters on the item (and no month yet)
    acct = client(daily_limit=D("50"), monthly_limit=D("500"), cps_limit=5,
                  counters=(Counter(DAY, "2026-11-17", D("49")), Counter(CPS, str(NOON - 1), D("5"))))
    chain = chain_of(c=acct)
    grant = granted(chain)
    changes = {c.name: c for _, c in reserved(grant.levels, chain, NOON, grant.max_duration)}
    hold = grant.levels[0].charge(grant.max_duration)
    assert changes[DAY] == CounterChange(DAY, "2026-11-18", hold, start=True)
    assert changes[MONTH] == CounterChange(MONTH, "2026-11", hold, start=True)
    assert changes[CPS] == CounterChange(CPS, str(NOON), D("1"), start=True)


def test_only_levels_with_limits_count_and_never_the_root():
    chain = [client(), reseller(cps_limit=3), admin(cps_limit=1, daily_limit=D("1"))]
    grant = granted(chain)
    assert [(who, c.name) for who, c in reserved(grant.levels, chain, NOON, grant.max_duration)] == \
        [("reseller", CPS)]


def test_completion_turns_the_reservation_into_the_spend_of_the_same_day_only():
    chain = chain_of(c=client(daily_limit=D("50"), monthly_limit=D("500")))
    grant = granted(chain)
    hold = grant.levels[0].charge(grant.max_duration)
    nets = [D("1.40"), D("0.70"), D("0")]
    same_day = settled(grant.levels, nets, NOON, grant.max_duration, NOON + 100, was_held=True)
    assert same_day == [("client", CounterChange(DAY, "2026-11-18", D("1.40") - hold)),
                        ("client", CounterChange(MONTH, "2026-11", D("1.40") - hold))]
    # A call that ends on the next day (same month) leaves the new day's counter alone
    assert settled(grant.levels, nets, NOON, grant.max_duration, TOMORROW, was_held=True) == \
        [("client", CounterChange(MONTH, "2026-11", D("1.40") - hold))]
    # A late completion (the sweeper already released the reservation) adds the spend only
    assert settled(grant.levels, nets, NOON, grant.max_duration, NOON + 100, was_held=False)[0][1].delta == D("1.40")
    assert released(grant.levels, NOON, grant.max_duration, NOON + 100)[0][1].delta == -hold


def test_counter_changes_ride_on_their_accounts_item_change():
    # One action per item per transaction: the client's counters join its hold, a limited reseller's its own.
    chain = chain_of(c=client(cps_limit=5), r=reseller(cps_limit=2))
    grant = granted(chain)
    counted = reserved(grant.levels, chain, NOON, grant.max_duration)
    changes = ledger.holds(grant.levels, (), NOON, counted)
    assert [c.account_id for c in changes] == ["client", "reseller"]
    assert [[x.name for x in c.counters] for c in changes] == [[CPS], [CPS]]
