"""Hierarchical escrow over moto (with the one-lock atomicity of tests/conftest.py): a call holds an
ancestor's money from the slot on its client's item, the rebalancer refills, recalls and sweeps, and no
level is ever overdrawn, through races and a suspension mid-burst."""
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from chalicelib.adapters.dynamo.models import AccountItem
from chalicelib.adapters.dynamo.store import DynamoStore
from chalicelib.domain.escrow import REFILL_PERMITS, SHARE
from chalicelib.services.authorize_call import AuthorizeRequest, authorize_call, Authorized, Denied
from chalicelib.services.complete_call import complete_call
from chalicelib.services.rebalance import rebalance
from chalicelib.services.switch_keys import key_hash
from tests.conftest import DEMO_KEY, load
from tests.integration.test_concurrency import race, race_seed as concurrency_seed
from tests.integration.helpers import (ALL_DEMO, account, assert_ledger_invariant, escrow_slots,
                                       money_snapshot)

NOW = 1_780_000_000


def clock(t=NOW):
    return lambda: t


def dial(store, sip, call_id, number="15551230001", key=DEMO_KEY, at=NOW):
    return authorize_call(store, AuthorizeRequest(sip, number, call_id), key_hash(key), clock(at))


def test_slots_carry_every_reseller_so_a_steady_call_writes_only_the_client_item(demo):
    store = DynamoStore()
    first = dial(store, "1001", "e-1")
    assert isinstance(first, Authorized)
    levels = {l.account_id: l for l in store.find_call("e-1", None)[0].levels}
    # A client's first call: no slot yet, every reseller holds on its own item and asks for escrow
    # (cumulus too: its concurrent-call and CPS limits are escrowed as permits and a share)
    assert [levels[a].escrow for a in ("acme", "cumulus", "borealis", "atlas")] == [0, 0, 0, 0]
    acme = account("acme")
    assert acme.want is not None and (acme.e1w, acme.e2w, acme.e3w) == ("cumulus", "borealis", "atlas")
    assert acme.e2n == levels["borealis"].hold and acme.e3n == levels["atlas"].hold

    report = rebalance(store, NOW)
    assert report.refilled == 3 and report.dry == []
    acme = account("acme")
    assert acme.want is None and acme.e2w is None
    assert acme.e1o == "cumulus" and acme.e1a == 4 * levels["cumulus"].hold
    assert (acme.e1c, acme.e1r) == (REFILL_PERMITS, SHARE)          # 2 call permits, 1 call a second
    cumulus = account("cumulus")
    assert cumulus.active_calls == 1 + REFILL_PERMITS and cumulus.cps_lent == SHARE   # e-1 + what is lent
    assert acme.e2o == "borealis" and acme.e2a == 4 * levels["borealis"].hold
    assert acme.e3o == "atlas" and acme.e3a == 4 * levels["atlas"].hold
    assert account("borealis").held == 5 * levels["borealis"].hold      # its own hold + the slot

    complete_call(store, "e-1", 60, "ANSWERED", key_hash(DEMO_KEY), clock(NOW + 61))
    upper = money_snapshot(["cumulus", "borealis", "atlas"])
    upper_items = {a: account(a).attribute_values for a in ("cumulus", "borealis", "atlas")}
    second = dial(store, "1001", "e-2", at=NOW + 100)
    assert isinstance(second, Authorized)
    placed = {l.account_id: l.escrow for l in store.find_call("e-2", None)[0].levels}
    assert placed == {"acme": 0, "cumulus": 1, "borealis": 2, "atlas": 3, "admin": 0}
    acme = account("acme")
    assert acme.e1c == REFILL_PERMITS - 1 and (acme.e1t, acme.e1q) == (str(NOW + 100), 1)
    result = complete_call(store, "e-2", 90, "ANSWERED", key_hash(DEMO_KEY), clock(NOW + 200))
    assert money_snapshot(["cumulus", "borealis", "atlas"]) == upper
    assert {a: account(a).attribute_values for a in upper_items} == upper_items    # no reseller item written
    charged = {l["account_id"]: Decimal(l["charged"]) for l in result["levels"]}
    acme = account("acme")
    assert acme.e1c == REFILL_PERMITS                                 # the permit came back
    assert acme.e2s == charged["borealis"] and acme.e3s == charged["atlas"]
    assert acme.e2a == 4 * levels["borealis"].hold - charged["borealis"]
    assert_ledger_invariant(ALL_DEMO)        # counts the unswept spent against each owner

    # A slot in use is not idle, however old its last refill: the idle pass re-dates its registry entry
    assert account("acme").e2u == NOW + 100
    report = rebalance(store, NOW + 350, idle=True)
    assert report.recalled == 0 and account("acme").e2a == 4 * levels["borealis"].hold - charged["borealis"]
    # Idle: IDLE_AFTER after their last use the slots give their money, permits and share back and the
    # spent money is swept
    report = rebalance(store, NOW + 10_000, idle=True)
    assert report.recalled == 3 and report.swept == 3
    acme = account("acme")
    assert (acme.e2a, acme.e2s, acme.e3a, acme.e3s, acme.e1c, acme.e1r) == (0, 0, 0, 0, 0, 0)
    assert escrow_slots("borealis") == [("acme", 2)]       # kept: a call held from it may still complete
    assert_ledger_invariant(ALL_DEMO)
    rebalance(store, NOW + 200_000, idle=True)              # empty for longer than REGISTRY_KEEP: forgotten
    assert escrow_slots("borealis") == [] and escrow_slots("atlas") == [] and escrow_slots("cumulus") == []
    for a in ("cumulus", "borealis", "atlas"):
        item = account(a)
        assert item.held == 0 and item.active_calls == 0 and not item.cps_lent


# --- races: the rebalancer refilling and recalling while calls hold -------------------------------

KEY = "csk_escrow_race"
CLIENTS = 60
K = 60                      # funds for one hold per client: every denial is money stranded somewhere
WARM = 5                    # clients holding escrow before the burst (4 holds each: the owner keeps as much)
HOLD = Decimal("10")        # r's hold: 600 s at 1.00/min
REFILL_HOLDS_OF_R = 4 * HOLD   # a first refill of a slot of r: escrow.REFILL_HOLDS x the hold that asked


def race_seed(holds=K, clients=CLIENTS):
    """Root -> r (funded for exactly ``holds`` holds, no per-call limits: escrowable) -> clients."""
    return concurrency_seed(clients=clients, holds=holds, key=KEY)


class Rebalancer:
    """The rebalancer ticking in a thread of its own, as deployed, racing the calls."""
    def __init__(self, store, every=0.002):
        self.store, self.every, self.stop, self.ticks = store, every, threading.Event(), 0

    def __enter__(self):
        def loop():
            while not self.stop.wait(self.every):
                rebalance(self.store, NOW)
                self.ticks += 1
        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def held_from_r(store, call_ids):
    return sum((l.hold for cid in call_ids for l in store.find_call(cid, None)[0].levels if l.account_id == "r"),
               Decimal(0))


def r_money_is_conserved(store, granted_ids):
    """r's held is exactly the holds on its own item plus what its slots have out; nothing overdrawn."""
    r = account("r")
    assert r.available >= 0 and r.held >= 0, (r.available, r.held)
    own = sum((l.hold for cid in granted_ids for l in store.find_call(cid, None)[0].levels
               if l.account_id == "r" and not l.escrow), Decimal(0))
    slots = [s for c in range(CLIENTS) for s in store.accounts([f"c{c}"])[f"c{c}"].escrow if s.owner == "r"]
    slots += [s for s in pools_of("r").values() if s is not None]       # a dry top reseller's pools
    in_flight = sum((l.hold for cid in granted_ids for l in store.find_call(cid, None)[0].levels
                     if l.account_id == "r" and (l.escrow or l.pool)), Decimal(0))
    assert all(s.available >= 0 for s in slots)
    assert r.held == own + in_flight + sum((s.available + s.spent for s in slots), Decimal(0))
    assert r.balance + 0 == HOLD * K     # nothing billed yet
    return sum((s.available for s in slots), Decimal(0))


def test_given_funds_for_k_holds_when_clients_burst_while_the_rebalancer_refills_then_never_more_money_is_held_and_a_recall_strands_nothing(aws):
    load(race_seed())
    store, digest = DynamoStore(), key_hash(KEY)
    # Warm the slots: a first round of short calls (each a master-path hold asking for a refill)
    for i in range(WARM):
        assert isinstance(authorize_call(store, AuthorizeRequest(f"s{i}", "15551230001", f"warm-{i}"), digest,
                                         clock()), Authorized)
        complete_call(store, f"warm-{i}", 0, "NO ANSWER", digest, clock(NOW + 1))
    assert rebalance(store, NOW).refilled == WARM

    with Rebalancer(store) as rebalancer:
        answers = race(lambda i: authorize_call(
            store, AuthorizeRequest(f"s{i}", "15551230001", f"burst-{i}"), digest, clock()), CLIENTS)
    assert rebalancer.ticks > 0
    granted = [f"burst-{i}" for i, a in enumerate(answers) if isinstance(a, Authorized)]
    denied = [i for i, a in enumerate(answers) if isinstance(a, Denied)]
    assert {a.reason for a in answers if isinstance(a, Denied)} <= {"insufficient_funds"}
    # r runs dry in the burst: its last money goes to its pools, whose remainders pay shorter calls
    assert all(a.answer["max_duration"] <= 600 for a in answers if isinstance(a, Authorized))
    assert held_from_r(store, granted) <= K * HOLD
    stranded = r_money_is_conserved(store, granted)

    # WHEN the owner's escrow is recalled (slots and pools), the denied clients get what was stranded,
    # down to less than one minute (1.00) of r's money
    store.request_recall("r", NOW)
    rebalance(store, NOW)
    free = account("r").available
    assert free >= stranded and free == K * HOLD - held_from_r(store, granted)
    assert sum((s.available for c in range(CLIENTS) for s in store.accounts([f"c{c}"])[f"c{c}"].escrow
                if s.owner == "r"), Decimal(0)) == 0
    assert all(s is None or s.available == 0 for s in pools_of("r").values())
    retried = race(lambda j: authorize_call(
        store, AuthorizeRequest(f"s{denied[j]}", "15551230001", f"retry-{denied[j]}"), digest, clock()), len(denied))
    again = [f"retry-{denied[j]}" for j, a in enumerate(retried) if isinstance(a, Authorized)]
    assert held_from_r(store, again) == free - account("r").available
    assert account("r").available < Decimal("1.00") or len(again) == len(denied)
    r_money_is_conserved(store, granted + again)

    # Every call completes (concurrently with the rebalancer again): every level billed once, the
    # ledger balances once the slots are swept
    done = granted + again
    with Rebalancer(store):
        race(lambda i: complete_call(store, done[i], 60, "ANSWERED", digest, clock(NOW + 70)), len(done))
    rebalance(store, NOW + 10_000, idle=True)
    r = account("r")
    assert r.held == 0 and r.balance == HOLD * K - len(done) * Decimal("1.00")     # 60 s at 1.00/min each
    assert_ledger_invariant(["r", "admin"] + [f"c{i}" for i in range(CLIENTS)])


def test_a_suspension_mid_burst_stops_grants_through_escrow_and_brings_the_escrow_back_in_one_pass(aws):
    from chalicelib.domain.access import Principal
    from chalicelib.services.portal import Portal
    load(race_seed(holds=CLIENTS * 4 * 2 + 100))     # plenty: every client gets escrow
    store, digest = DynamoStore(), key_hash(KEY)
    for i in range(CLIENTS):
        authorize_call(store, AuthorizeRequest(f"s{i}", "15551230001", f"warm-{i}"), digest, clock())
        complete_call(store, f"warm-{i}", 0, "NO ANSWER", digest, clock(NOW + 1))
    assert rebalance(store, NOW).refilled == CLIENTS
    suspended_at = []

    def call(i):
        if i == CLIENTS // 2:
            Portal(store, clock=clock()).set_status(Principal("admin", "admin", "admin"), "r", "suspend")
            suspended_at.append(True)
            return None
        started_after = bool(suspended_at)
        return started_after, authorize_call(store, AuthorizeRequest(f"s{i}", "15551230001", f"b-{i}"), digest,
                                             clock())

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [r for r in pool.map(call, range(CLIENTS)) if r is not None]
    after = [a for started_after, a in results if started_after]
    assert after and all(isinstance(a, Denied) and a.reason == "account_suspended" for a in after)

    rebalance(store, NOW + 2)          # one pass serves the recall request
    slots = [s for c in range(CLIENTS) for s in store.accounts([f"c{c}"])[f"c{c}"].escrow if s.owner == "r"]
    assert sum((s.available for s in slots), Decimal(0)) == 0
    granted = [a.answer["call_id"] for _, a in results if isinstance(a, Authorized)]
    assert granted, "the burst started before the suspension"
    r = account("r")
    assert r.available >= 0
    for cid in granted:      # calls granted before the suspension still complete and are billed once
        complete_call(store, cid, 30, "ANSWERED", digest, clock(NOW + 40))
    rebalance(store, NOW + 10_000, idle=True)
    assert account("r").held == 0
    assert_ledger_invariant(["r", "admin"] + [f"c{i}" for i in range(CLIENTS)])


# --- limits escrowed: call permits and CPS shares racing the calls -------------------------------

def limited_seed(**limits):
    seed = race_seed(holds=CLIENTS * 10)           # money is plenty: only the limit refuses
    r = next(a for a in seed["accounts"] if a["id"] == "r")
    r.update(limits)
    return seed


def slots_of_r(store):
    return [s for c in range(CLIENTS) for s in store.accounts([f"c{c}"])[f"c{c}"].escrow if s.owner == "r"]


def burst_with_escrowed_limit(store, digest):
    # Two clients hold escrow (money, 2 permits and a CPS share each) before the burst
    for i in range(2):
        assert isinstance(authorize_call(store, AuthorizeRequest(f"s{i}", "15551230001", f"warm-{i}"), digest,
                                         clock(NOW - 10)), Authorized)
        complete_call(store, f"warm-{i}", 0, "NO ANSWER", digest, clock(NOW - 9))
    assert rebalance(store, NOW - 9).refilled == 2
    assert all(s.permits == REFILL_PERMITS or s.share == SHARE for s in slots_of_r(store))
    with Rebalancer(store) as rebalancer:
        answers = race(lambda i: authorize_call(
            store, AuthorizeRequest(f"s{i}", "15551230001", f"burst-{i}"), digest, clock()), CLIENTS)
    assert rebalancer.ticks > 0
    return answers


def test_a_concurrent_call_limit_escrowed_as_permits_is_never_exceeded_under_a_burst(aws):
    load(limited_seed(max_calls=12))
    store, digest = DynamoStore(), key_hash(KEY)
    answers = burst_with_escrowed_limit(store, digest)
    granted = [a for a in answers if isinstance(a, Authorized)]
    assert {a.reason for a in answers if isinstance(a, Denied)} == {"concurrent_calls_limit"}
    # r's active_calls = its own calls in flight + every slot's free permits + the calls held from slots
    free = sum(s.permits for s in slots_of_r(store))
    assert account("r").active_calls == len(granted) + free <= 12
    # A call may have been refused while permits sat in slots the rebalancer then took back (the limit
    # is conservative, never exceeded). Once they are back, the refused clients get exactly the rest.
    store.request_recall("r", NOW)
    rebalance(store, NOW)
    assert account("r").active_calls == len(granted) and sum(s.permits for s in slots_of_r(store)) == 0
    denied = [i for i, a in enumerate(answers) if isinstance(a, Denied)]
    retried = race(lambda j: authorize_call(
        store, AuthorizeRequest(f"s{denied[j]}", "15551230001", f"retry-{denied[j]}"), digest, clock(NOW + 1)),
        len(denied))
    assert len(granted) + sum(isinstance(a, Authorized) for a in retried) == 12


def test_a_cps_limit_escrowed_as_shares_is_never_exceeded_in_a_second(aws):
    load(limited_seed(cps_limit=8))
    store, digest = DynamoStore(), key_hash(KEY)
    answers = burst_with_escrowed_limit(store, digest)
    granted = [a for a in answers if isinstance(a, Authorized)]
    assert {a.reason for a in answers if isinstance(a, Denied)} == {"cps_limit"}
    r = account("r")
    own = int(r.cps_n) if r.cps_at == str(NOW) else 0
    from_slots = sum(s.started for s in slots_of_r(store) if s.second == NOW)
    assert len(granted) == own + from_slots <= 8
    assert own <= 8 - int(r.cps_lent or 0)          # the item starts only what it did not lend


# --- a dry top reseller's last money in pools ---------------------------------------------------------

def pools_of(owner):
    from chalicelib.domain.escrow import POOLS, pool_id
    items = DynamoStore().accounts([pool_id(owner, k) for k in range(POOLS)])
    return {pid: next((s for s in a.escrow if s.owner == owner), None) for pid, a in items.items()}


def test_a_dry_top_reseller_spreads_its_last_money_over_pools_that_calls_hold_from(aws):
    from chalicelib.domain.escrow import POOLS
    load(race_seed(holds=40))                 # r (a top reseller) can pay for exactly 40 holds
    store, digest = DynamoStore(), key_hash(KEY)
    # GIVEN every client's first call is held on r's item and asks for escrow: r cannot give from plenty
    first = race(lambda i: authorize_call(store, AuthorizeRequest(f"s{i}", "15551230001", f"a-{i}"), digest,
                                          clock()), 20)
    assert all(isinstance(a, Authorized) for a in first)
    assert account("r").available == 20 * HOLD
    report = rebalance(store, NOW)
    # THEN r is dry and its item keeps nothing back: its last 200.00 are spread over its pools
    assert report.dry == ["r"] and report.pooled == POOLS
    pools = pools_of("r")
    assert len(pools) == POOLS and account("r").available == 20 * HOLD - sum(s.available for s in pools.values())
    assert all(s.available == (20 * HOLD / POOLS).quantize(Decimal("0.000001")) for s in pools.values())
    assert_ledger_invariant(["r", "admin"] + [f"c{i}" for i in range(CLIENTS)])

    # WHEN the other 40 clients call at once, each holds from its pool (6.25: a shorter call than 600 s)
    r_before = account("r").attribute_values
    second = race(lambda i: authorize_call(store, AuthorizeRequest(f"s{20 + i}", "15551230001", f"b-{i}"),
                                           digest, clock()), 40)
    granted = [a.answer["call_id"] for a in second if isinstance(a, Authorized)]
    placed = [l for cid in granted for l in store.find_call(cid, None)[0].levels if l.account_id == "r"]
    assert placed and all(l.pool for l in placed)               # none on r's own item...
    assert account("r").attribute_values == r_before            # ...which was not written at all
    assert {a.reason for a in second if isinstance(a, Denied)} <= {"insufficient_funds"}
    # every pool that some client maps to paid one call; never overdrawn; r's held = its own holds +
    # what its pools hold, in flight or not
    assert len(granted) == len({l.pool for l in placed})
    pools = pools_of("r")
    assert all(s.available >= 0 for s in pools.values())
    in_pools = sum((s.available + s.spent for s in pools.values()), Decimal(0))
    assert account("r").held == 20 * HOLD + sum(l.hold for l in placed) + in_pools


def test_pools_pay_out_the_last_money_of_a_dry_top_reseller_to_whoever_calls(aws):
    from chalicelib.domain.escrow import POOLS
    load(race_seed(holds=20 + 4 * POOLS))     # after 20 first calls: 4 holds for each pool
    store, digest = DynamoStore(), key_hash(KEY)
    assert all(isinstance(authorize_call(store, AuthorizeRequest(f"s{i}", "15551230001", f"a-{i}"), digest,
                                         clock()), Authorized) for i in range(20))
    assert rebalance(store, NOW).dry == ["r"]
    assert sum(s.available for s in pools_of("r").values()) == 4 * POOLS * HOLD
    assert account("r").available == 0
    # WHEN clients call, each from its own pool, until the pools are empty
    answers = []
    for wave in range(3):
        answers += race(lambda i: authorize_call(
            store, AuthorizeRequest(f"s{20 + (i % 40)}", "15551230001", f"w{wave}-{i}"), digest, clock()), 60)
    granted = [a.answer["call_id"] for a in answers if isinstance(a, Authorized)]
    # THEN every hold is from a pool; what is left is less than a hold in each pool used
    assert all(l.pool for cid in granted for l in store.find_call(cid, None)[0].levels if l.account_id == "r")
    left = {pid: s.available for pid, s in pools_of("r").items()}
    assert len(granted) * HOLD + sum(left.values()) == 4 * POOLS * HOLD
    assert account("r").held == 20 * HOLD + 4 * POOLS * HOLD and account("r").available == 0
    # every call completes and r's books balance once the pools are swept (idle: recalled)
    for cid in [f"a-{i}" for i in range(20)] + granted:
        complete_call(store, cid, 60, "ANSWERED", digest, clock(NOW + 70))
    rebalance(store, NOW + 10_000, idle=True)
    assert all(s.available == 0 and s.spent == 0 for s in pools_of("r").values())
    assert account("r").held == 0
    assert_ledger_invariant(["r", "admin"] + [f"c{i}" for i in range(CLIENTS)])


def test_a_changed_limit_brings_the_permits_and_shares_lent_under_the_old_one_back_within_a_tick(demo):
    from chalicelib.domain.access import Principal
    from chalicelib.services.portal import Portal
    store = DynamoStore()
    assert isinstance(dial(store, "1001", "l-1"), Authorized)
    rebalance(store, NOW)
    assert account("acme").e1r == SHARE and account("cumulus").cps_lent == SHARE
    # WHEN borealis lowers cumulus's CPS limit
    Portal(store, clock=clock()).edit(Principal("borealis", "reseller", "admin/atlas/borealis"), "cumulus",
                                      {"cps_limit": 3})
    rebalance(store, NOW + 1)
    # THEN the next pass takes cumulus's escrow back (money, permits, share); calls ask for it again
    acme, cumulus = account("acme"), account("cumulus")
    assert (acme.e1a, acme.e1c, acme.e1r) == (0, 0, 0) and not cumulus.cps_lent
    assert cumulus.active_calls == 1                                    # only l-1, held on its own item
    complete_call(store, "l-1", 30, "ANSWERED", key_hash(DEMO_KEY), clock(NOW + 31))
    assert isinstance(dial(store, "1001", "l-2", at=NOW + 40), Authorized)
    assert account("acme").e1w == "cumulus"                             # asks for escrow again


def test_a_top_reseller_with_plenty_whose_calls_miss_their_slots_fills_its_pools(aws):
    from chalicelib.domain.escrow import POOL_AFTER, POOL_PASSES
    load(race_seed(holds=1000))
    store, digest = DynamoStore(), key_hash(KEY)
    callers = POOL_AFTER + 8
    for i in range(callers):      # many clients, each one call: every hold on r's item, every one asks
        assert isinstance(authorize_call(store, AuthorizeRequest(f"s{i}", "15551230001", f"p-{i}"), digest,
                                         clock()), Authorized)
    before = account("r").available
    report = rebalance(store, NOW)
    assert report.dry == [] and report.refilled == callers and report.pooled == 32
    in_pools = sum(s.available for s in pools_of("r").values())
    assert in_pools == POOL_PASSES * callers * HOLD                      # two passes' worth of those holds
    assert account("r").available == before - callers * REFILL_HOLDS_OF_R - in_pools
    # the next call that misses its slot holds from its pool, not from r's item
    assert isinstance(authorize_call(store, AuthorizeRequest(f"s{callers}", "15551230001", "p-next"), digest,
                                     clock()), Authorized)
    assert [l.pool > 0 for l in store.find_call("p-next", None)[0].levels if l.account_id == "r"] == [True]
    assert_ledger_invariant(["r", "admin"] + [f"c{i}" for i in range(CLIENTS)])


def test_a_cps_share_is_not_taken_back_in_a_second_a_call_started_from_it(demo):
    store = DynamoStore()
    assert isinstance(dial(store, "1001", "s-1"), Authorized)
    complete_call(store, "s-1", 30, "ANSWERED", key_hash(DEMO_KEY), clock(NOW + 31))
    rebalance(store, NOW + 31)
    assert isinstance(dial(store, "1001", "s-2", at=NOW + 100), Authorized)     # starts from the share
    assert account("acme").e1t == str(NOW + 100)
    store.request_recall("cumulus", NOW + 100)
    rebalance(store, NOW + 100)                  # same second: cumulus's item may not start it yet
    assert account("acme").e1r == SHARE and account("cumulus").cps_lent == SHARE
    rebalance(store, NOW + 101)                  # the recall request stays until served
    assert account("acme").e1r == 0 and not account("cumulus").cps_lent


def test_a_share_is_not_lent_in_a_second_the_owners_item_has_already_used(aws):
    # GIVEN r (CPS limit 8, nothing lent) whose own item started 8 calls in second NOW, and a client
    # whose slot asks r for a refill (money and a CPS share)
    load(limited_seed(cps_limit=8))
    store, digest = DynamoStore(), key_hash(KEY)
    assert isinstance(authorize_call(store, AuthorizeRequest("s0", "15551230001", "warm-0"), digest,
                                     clock(NOW - 10)), Authorized)
    complete_call(store, "warm-0", 0, "NO ANSWER", digest, clock(NOW - 9))
    AccountItem.get("ACC#r", "#").update(actions=[AccountItem.cps_at.set(str(NOW)), AccountItem.cps_n.set(8)])
    # WHEN the rebalancer ticks in that second, THEN it lends nothing (the share could start a 9th call)
    assert rebalance(store, NOW).refilled == 0 and int(account("r").cps_lent or 0) == 0
    # AND in the next second it does
    assert rebalance(store, NOW + 1).refilled == 1 and int(account("r").cps_lent) == 1
