"""Real SIP calls through the shipped Kamailio configuration (integrations/kamailio/cascade.cfg).

sipp calls Kamailio, Kamailio asks Cascade (the `make run` stack, seeded with switch_seed.json) through a
relay that can make Cascade slow or hang, and sends authorized calls to a sipp callee. After each call
the money is read back from the stack's own DynamoDB: balances, holds and per-level CDRs at every level.

Needs kamailio (with http_client, jansson) and sipp. Without them the tests skip, unless
CASCADE_REQUIRE_SWITCH_TOOLS=1 (CI and `make e2e` set it), where a missing tool fails.
"""
import os
import pathlib
import time
from decimal import Decimal

import pytest

from chalicelib.adapters.dynamo.store import call_key
from tests.e2e.gate import FLAKY_FAILURES, SLOW_SECONDS, Gate
from tests.e2e.sip import Switch, missing_tools
from tests.e2e.stack import LocalStack

SEED = pathlib.Path(__file__).with_name("switch_seed.json")
KEY = "csk_e2e_kamailio_test_key"
TIMEOUT_S = 2                       # CASCADE_TIMEOUT given to Kamailio
RATED = "15551230001"
BUSY = "15551230486"                # the callee answers 486 to numbers ending in 486
NO_RATE = "33142270000"             # France: no tariff in the seed has a 33 prefix

# Per-minute prices along each chain, client first; the operator's is its carrier cost.
ALICE_CHAIN = [("alice", "2.40"), ("retail", "1.20"), ("wholesale", "0.60"), ("admin", "0.30")]
SHORTY_CHAIN = [("shorty", "2.40"), ("retail", "1.20"), ("wholesale", "0.60"), ("admin", "0.30")]
TWIN_CHAINS = {a: [(a, "2.40"), ("tight", "1.80"), ("retail", "1.20"), ("wholesale", "0.60"), ("admin", "0.30")]
               for a in ("twin-a", "twin-b")}
OPENING = {"wholesale": "100.00", "retail": "50.00", "alice": "10.00", "shorty": "0.20", "broke": "0.01",
           "tight": "0.30", "twin-a": "10.00", "twin-b": "10.00", "admin": "0"}

MISSING = missing_tools()
REQUIRED = os.environ.get("CASCADE_REQUIRE_SWITCH_TOOLS") == "1"
pytestmark = pytest.mark.skipif(bool(MISSING) and not REQUIRED,
                                reason=f"not installed: {', '.join(MISSING)} (apt-get install kamailio "
                                       "kamailio-utils-modules kamailio-extra-modules sip-tester)")


def cost(price_per_minute: str, seconds: int) -> Decimal:
    return (Decimal(price_per_minute) * seconds / 60).quantize(Decimal("0.000001"))


class World:
    def __init__(self, stack: LocalStack, gate: Gate, switch: Switch):
        self.stack, self.gate, self.switch = stack, gate, switch
        self.core, self.cdrs, self.ledger = stack.table("core"), stack.table("cdrs"), stack.table("ledger")
        self.charged = {a: Decimal(0) for a in OPENING}     # what the calls so far should have cost each level

    def account(self, account_id: str) -> dict:
        return self.core.get_item(Key={"pk": "ACC#" + account_id, "sk": "#"})["Item"]

    def call(self, call_id: str):
        pk, sk = call_key(call_id)
        return self.core.get_item(Key={"pk": pk, "sk": sk}).get("Item")

    def cdrs_of(self, call_id: str) -> dict:
        rows = {}
        for account_id in OPENING:
            for row in self.cdrs.query(KeyConditionExpression="account_id = :a",
                                       ExpressionAttributeValues={":a": account_id})["Items"]:
                if row["call_id"] == call_id:
                    rows[account_id] = row
        return rows

    def wait_done(self, call_id: str, seconds: float = 20) -> dict:
        """The switch posts completions from a queue: wait for Cascade to have settled the call."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            item = self.call(call_id)
            if item and item["status"] == "done":
                return item
            time.sleep(0.2)
        raise AssertionError(f"{call_id} not settled: {self.call(call_id)}\n{self.switch.log()[-3000:]}")

    def assert_billed(self, call_id: str, chain, billsec: int, disposition: str = "ANSWERED") -> None:
        """A CDR at every level at its own price; balances follow (the operator is not charged)."""
        rows = self.cdrs_of(call_id)
        assert set(rows) == {a for a, _ in chain}, rows
        paid = None
        for account_id, price in chain:
            row = rows[account_id]
            expected = cost(price, billsec) if disposition == "ANSWERED" else Decimal(0)
            assert (row["billsec"], row["disposition"], row["buy"]) == (billsec, disposition, expected), row
            assert row.get("sell") == paid and row["over_max"] is False, row
            paid = expected
            if account_id != "admin":
                self.charged[account_id] += expected
        for account_id, _ in chain:
            self.assert_money(account_id)

    def assert_money(self, account_id: str) -> None:
        item = self.account(account_id)
        assert item["balance"] == Decimal(OPENING[account_id]) - self.charged[account_id], (account_id, item)
        entries = self.ledger.query(KeyConditionExpression="account_id = :a",
                                    ExpressionAttributeValues={":a": account_id})["Items"]
        assert item["balance"] == sum((e["amount"] for e in entries), Decimal(0)), account_id
        assert item["held"] == 0 and item["active_calls"] == 0, (account_id, item)
        assert item["available"] == item["balance"], (account_id, item)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    if MISSING:
        pytest.fail(f"CASCADE_REQUIRE_SWITCH_TOOLS=1 but not installed: {', '.join(MISSING)}")
    stack = LocalStack(seed=SEED, table_prefix="cascade-e2e-")
    gate = Gate(stack.base)
    try:
        switch = Switch(tmp_path_factory.mktemp("sip"), gate.url, KEY, timeout_s=TIMEOUT_S)
    except Exception:
        gate.close()
        stack.stop()
        raise
    yield World(stack, gate, switch)
    switch.stop()
    gate.close()
    stack.stop()


def test_an_allowed_call_is_billed_at_every_level_for_its_billsec(world):
    outcome = world.switch.call("uac_call.xml", "1001", RATED, "allowed", pause_ms=2000)
    call_id, status, _ = outcome.only()
    assert outcome.returncode == 0 and status == "200", outcome.errors[-2000:]
    call = world.wait_done(call_id)
    assert call["answer"] and call["max_duration"] == 250        # 10.00 at 2.40/min
    billsec = int(world.cdrs_of(call_id)["alice"]["billsec"])
    # The proxy measures answer -> BYE; sipp paused 2 s between its ACK and its BYE.
    assert billsec in (2, 3), billsec
    world.assert_billed(call_id, ALICE_CHAIN, billsec)
    assert world.switch.callee_saw_bye(call_id)


def test_a_long_call_is_cut_at_max_duration_and_both_legs_get_bye(world):
    # shorty: 0.20 at 2.40/min = 5 s. The caller never hangs up: the proxy must.
    outcome = world.switch.call("uac_held.xml", "1002", RATED, "long", timeout_s=30)
    call_id, status, _ = outcome.only()
    assert outcome.returncode == 0 and status == "200", outcome.errors[-2000:]   # the caller got a BYE
    assert world.switch.callee_saw_bye(call_id)                                  # and so did the callee
    call = world.wait_done(call_id)
    assert call["max_duration"] == 5
    billsec = int(world.cdrs_of(call_id)["shorty"]["billsec"])
    assert billsec in (4, 5), billsec
    assert 4 <= outcome.seconds < 9, outcome.seconds
    world.assert_billed(call_id, SHORTY_CHAIN, billsec)


def test_a_call_refused_for_funds_gets_402_and_holds_nothing(world):
    outcome = world.switch.call("uac_refused.xml", "1003", RATED, "broke")
    call_id, status, reason = outcome.only()
    assert (status, reason) == ("402", "insufficient_funds"), outcome.errors[-2000:]
    assert outcome.returncode == 0
    assert world.call(call_id) is None and world.cdrs_of(call_id) == {}
    world.assert_money("broke")
    world.assert_money("retail")


def test_a_destination_without_a_rate_gets_403(world):
    outcome = world.switch.call("uac_refused.xml", "1001", NO_RATE, "norate")
    call_id, status, reason = outcome.only()
    assert (status, reason) == ("403", "no_rate") and outcome.returncode == 0
    assert world.call(call_id) is None
    world.assert_money("alice")


def test_a_busy_callee_costs_nothing_and_releases_the_hold(world):
    outcome = world.switch.call("uac_refused.xml", "1001", BUSY, "busy")
    call_id, status, _ = outcome.only()
    assert status == "486" and outcome.returncode == 0
    world.wait_done(call_id)
    world.assert_billed(call_id, ALICE_CHAIN, 0, disposition="BUSY")


def test_a_cancel_while_cascade_is_still_deciding_releases_the_hold(world):
    # The relay holds this authorize for SLOW_SECONDS; the caller gives up after 0.3 s.
    assert SLOW_SECONDS < TIMEOUT_S
    outcome = world.switch.call("uac_cancel.xml", "1001", RATED, "slow", pause_ms=300)
    call_id, status, _ = outcome.only()
    assert status == "487" and outcome.returncode == 0, outcome.errors[-2000:]
    assert outcome.seconds < SLOW_SECONDS + 1.5          # the 487 did not wait for Cascade
    call = world.wait_done(call_id)
    left = Decimal(OPENING["alice"]) - world.charged["alice"]
    assert call["max_duration"] == int(left / Decimal("0.04"))   # Cascade did grant (and hold) it ...
    world.assert_billed(call_id, ALICE_CHAIN, 0, disposition="NO ANSWER")   # ... and the hold is back


def test_two_calls_at_once_on_a_reseller_whose_funds_cover_one(world):
    # 'tight' has 0.30 at 1.80/min = 10 s: the first call holds all of it.
    handles = [world.switch.start_call("uac_call.xml", account, RATED, f"twin{account}", pause_ms=1000)
               for account in ("1004", "1005")]
    outcomes = [world.switch.finish(h) for h in handles]
    finals = {cid: sr for o in outcomes for cid, sr in o.finals.items()}
    assert sorted(s for s, _ in finals.values()) == ["200", "402"], finals
    assert all(o.returncode == 0 for o in outcomes), [o.errors[-1500:] for o in outcomes]
    granted = next(cid for cid, (s, _) in finals.items() if s == "200")
    refused = next(cid for cid, (s, r) in finals.items() if s == "402" and r == "insufficient_funds")
    call = world.wait_done(granted)
    assert call["max_duration"] == 10 and world.call(refused) is None
    client = call["client_id"]
    billsec = int(world.cdrs_of(granted)[client]["billsec"])
    assert billsec in (1, 2), billsec
    world.assert_billed(granted, TWIN_CHAINS[client], billsec)
    world.assert_money("twin-b" if client == "twin-a" else "twin-a")


def test_a_completion_that_meets_errors_is_retried_until_it_lands(world):
    # Cascade answers this call's completion with 503 twice: the switch must keep the call and retry.
    outcome = world.switch.call("uac_call.xml", "1001", RATED, "flaky", pause_ms=1000)
    call_id, status, _ = outcome.only()
    assert status == "200" and outcome.returncode == 0
    world.wait_done(call_id)

    def posts():
        return [s for path, cid, s in list(world.gate.seen) if cid == call_id and path.endswith("/complete")]
    deadline = time.time() + 5       # the relay notes the 200 just after Cascade has settled the call
    while len(posts()) <= FLAKY_FAILURES and time.time() < deadline:
        time.sleep(0.1)
    assert posts() == [503] * FLAKY_FAILURES + [200], posts()
    billsec = int(world.cdrs_of(call_id)["alice"]["billsec"])
    assert billsec in (1, 2), billsec
    world.assert_billed(call_id, ALICE_CHAIN, billsec)


def test_a_hung_cascade_gets_503_within_the_timeout(world):
    outcome = world.switch.call("uac_refused.xml", "1001", RATED, "hang")
    call_id, status, reason = outcome.only()
    assert (status, reason) == ("503", "unavailable") and outcome.returncode == 0
    assert TIMEOUT_S - 0.5 <= outcome.seconds < TIMEOUT_S + 2, outcome.seconds
    assert world.call(call_id) is None


def test_every_level_balances_after_all_calls(world):
    for account_id in OPENING:
        world.assert_money(account_id)
    assert world.charged["alice"] > 0 and world.charged["wholesale"] > 0


def test_a_stopped_cascade_gets_503(world):
    world.stack.stop()
    outcome = world.switch.call("uac_refused.xml", "1001", RATED, "stopped")
    _, status, reason = outcome.only()
    assert (status, reason) == ("503", "unavailable") and outcome.returncode == 0
    assert outcome.seconds < TIMEOUT_S + 2
