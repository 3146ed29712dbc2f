"""bench/simulate.py: the load simulation drives the real authorize/complete/rebalance code through its own
simulated DynamoDB. Small trees and few calls, so the whole file runs in seconds; the full table is
``python bench/simulate.py``."""
import random
from decimal import Decimal

import pytest

from bench.simulate import HOLD, T0, Sim, SimStore, run, warm_slots
from chalicelib.adapters.dynamo.keys import cdr_trees
from chalicelib.adapters.dynamo.models import HELD_SHARDS
from chalicelib.domain.escrow import IDLE_AFTER
from chalicelib.services.rebalance import rebalance

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
    # with escrow the busiest key is a shard of an index every call writes, not an account item
    assert escrow["hottest_key"].split("#")[0] in ("HELD", "WANT") or escrow["hottest_key"].startswith("tree_calls:")
    assert escrow["hottest_key_wcu_per_s"] < 1000 and escrow["throttled_keys"] == []


def test_given_completed_calls_then_the_call_record_is_listed_in_the_cdr_indexes_and_no_cdr_item_is_written():
    result = run("escrow", rate=2000, window_ms=5, calls=300, **SMALL)
    _clean(result)
    busiest = result["max_wcu_by_family"]
    assert busiest["CT"][0].split(":", 1)[1] in cdr_trees("admin")        # <root>#<shard>, CDR_SHARDS of them
    assert busiest["CC"][0].startswith("client_calls:c")
    assert int(busiest["HELD"][0].split("#")[1]) < HELD_SHARDS
    assert not any(name.startswith(("cdrs:", "cdr:")) for name, _ in result["top_keys"])


def test_given_the_idle_pass_then_a_slot_used_since_its_refill_is_re_dated_and_an_unused_one_is_recalled():
    sim = Sim("escrow", 1000, 5, 60, 3, 2000, 20, None, False, True, None)
    sim.setup()
    sim.sched.heap.clear()                  # no calls: the real rebalancer is driven by hand
    db = sim.db
    warm = sorted(c for c, item in db.items.items()
                  if item["slots"].get(2, {}).get("o") == "top" and item["slots"][2]["a"] > 0)
    busy, idle = warm[:2]
    now = T0 + 1000
    for c, used in ((busy, now - 10), (idle, now - IDLE_AFTER - 50)):
        db.registry["top"][c] = (2, now - IDLE_AFTER - 100)      # last refilled long ago
        db.items[c]["slots"][2]["u"] = used
        db.items[c]["_acc"] = None
    busy_money, idle_money = db.items[busy]["slots"][2]["a"], db.items[idle]["slots"][2]["a"]
    top_before = db.items["top"]["available"]
    report = rebalance(sim.store, now, idle=True)
    assert db.registry["top"][busy] == (2, now - 10)                # re-dated to its last use, kept
    assert db.items[busy]["slots"][2]["a"] == busy_money
    assert db.items[idle]["slots"][2]["a"] == 0                     # recalled
    assert db.items["top"]["available"] >= top_before + idle_money
    assert report.recalled >= 1 and sim.store.touched >= 1
    assert sim.conservation() == [] and db.overdrafts == []


def test_given_an_owner_that_cannot_refill_from_plenty_then_the_pre_history_gives_its_slots_nothing():
    callers = [(f"c{i:03d}", f"s{i % 2}") for i in range(60)]
    funds = {"top": HOLD["top"] * 3, "s0": Decimal(1000), "s1": Decimal(1000)}
    slots, stats = warm_slots(random.Random(1), 5000, 200_000, callers, -30.0, 0.5, funds)
    assert stats["dry_ticks"] > 0
    assert all(slots[c][2][0] == 0 for c, _ in callers)              # the dry top recalled and refilled none
    assert any(slots[c][1][0] > 0 for c, _ in callers)               # the funded subs refilled theirs


def test_given_a_dry_top_reseller_funded_for_n_holds_when_twice_as_many_calls_come_then_its_pools_pay_them_all():
    result = run("escrow", rate=2000, window_ms=5, calls=300, dry=True, **SMALL)
    _clean(result)          # never overdrawn: every hold is covered by the pool or item it was taken from
    assert result["payable"] == 150
    assert result["payable_share_granted"] >= 0.95          # the bar, from the top's pools
    assert result["busy_503"] <= 3


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
