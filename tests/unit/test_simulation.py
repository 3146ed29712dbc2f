"""bench/simulate.py: the load simulation drives the real authorize/complete/rebalance code through its own
simulated DynamoDB. Small trees and few calls, so the whole file runs in seconds; the full table is
``python bench/simulate.py``."""
import pytest

from bench.simulate import HOLD, SimStore, run

SMALL = dict(clients=2000, subs=20, seed=3)


def _clean(result):
    assert result["errors"] == [], result["errors"]
    assert result["overdrafts"] == 0, result["overdraft_examples"]
    assert result["conservation"] == "ok", result["conservation_problems"]


@pytest.mark.parametrize("design", ["current", "escrow"])
def test_given_a_burst_when_calls_race_for_the_same_funds_then_no_level_is_overdrawn_and_money_is_conserved(design):
    result = run(design, rate=2000, window_ms=5, calls=300, **SMALL)
    _clean(result)
    assert result["granted"] > 0 and result["completed"] > 0


def test_given_5000_calls_per_s_then_today_the_top_reseller_is_the_hot_item_and_escrow_takes_most_calls_off_it():
    current = run("current", rate=5000, window_ms=5, calls=200, **SMALL)
    escrow = run("escrow", rate=5000, window_ms=5, calls=200, **SMALL)
    _clean(current)
    _clean(escrow)
    assert current["hottest_item"] == "ACC#top"
    assert current["conflicts"] > 3 * escrow["conflicts"]
    assert escrow["granted"] > current["granted"]
    assert escrow["top_item_wcu_per_s"] < current["top_item_wcu_per_s"]


def test_given_a_top_reseller_funded_for_n_holds_when_twice_as_many_calls_come_then_never_more_than_n_are_held():
    result = run("escrow", rate=2000, window_ms=5, calls=300, dry=True, **SMALL)
    _clean(result)
    assert result["payable"] == 150
    assert 0 < result["granted"] <= result["payable"]
    assert 0 < result["payable_share_granted"] <= 1


class SkipsTheFundsGuard(SimStore):
    """A broken adapter: holds no longer require ``available >= hold`` on the account item."""
    def guard_available(self, item, change):
        return True


def test_given_an_adapter_that_skips_the_funds_guard_then_the_simulation_reports_the_overdraft():
    args = dict(design="current", rate=2000, window_ms=2, calls=200, clients=200, subs=4, seed=3,
                top_funds=HOLD["top"] * 20)
    honest = run(**args)
    _clean(honest)
    assert honest["denials"].get("insufficient_funds", 0) > 0      # the funds really ran out
    broken = run(store_class=SkipsTheFundsGuard, **args)
    assert broken["overdrafts"] > 0          # stale reads let holds past what the top reseller had
    assert "top available -" in broken["overdraft_examples"][0]


def test_a_run_is_a_function_of_its_seed():
    first = run("escrow", rate=1000, window_ms=5, calls=150, **SMALL)
    again = run("escrow", rate=1000, window_ms=5, calls=150, **SMALL)
    first.pop("wall_s"), again.pop("wall_s")
    assert first == again
