"""Real SIP calls through the shipped Kamailio configuration (integrations/kamailio/cascade.cfg).

sipp calls Kamailio, Kamailio asks Cascade (the `make run` stack, seeded with switch_seed.json) through a
relay that can make Cascade slow or hang, and sends authorized calls to a sipp callee. After each call
the money is read back from the stack's own DynamoDB: balances, holds and per-level CDRs at every level.

The call id Kamailio sends is Call-ID;From-tag;CSeq (hashed when over 256 bytes): every sipp caller
gets a known From tag and CSeq 1, and Outcome keys its calls by that Cascade id (tests.e2e.sip.cascade_id).

Needs kamailio (with http_client, jansson, htable, sqlops, db_sqlite) and sipp. Without them the tests
skip, unless CASCADE_REQUIRE_SWITCH_TOOLS=1 (CI and `make e2e` set it), where a missing tool fails.
"""
import os
import pathlib
import time
import uuid
from decimal import Decimal

import pytest

from chalicelib.adapters.dynamo.store import call_key
from tests.e2e.gate import FLAKY_FAILURES, SLOW_SECONDS, Gate
from tests.e2e.sip import CARRIER_IP, FROM_TAG_SUFFIX, Switch, cascade_id, missing_tools
from tests.e2e.stack import LocalStack

SEED = pathlib.Path(__file__).with_name("switch_seed.json")
KEY = "csk_e2e_kamailio_test_key"
TIMEOUT_S = 4                       # CASCADE_TIMEOUT given to Kamailio (generous: a loaded CI box is slow)
RATED = "15551230001"
BUSY = "15551230486"                # the callee answers 486 to numbers ending in 486
NO_RATE = "33142270000"             # France: no tariff in the seed has a 33 prefix
CROWD = [(f"crowd-{i}", str(2000 + i)) for i in range(1, 11)]   # (account, SIP user), 1.00 each

# Per-minute prices along each chain, client first; the operator's is its carrier cost.
ALICE_CHAIN = [("alice", "2.40"), ("retail", "1.20"), ("wholesale", "0.60"), ("admin", "0.30")]
SHORTY_CHAIN = [("shorty", "2.40"), ("retail", "1.20"), ("wholesale", "0.60"), ("admin", "0.30")]
# The seed's DID, handed down wholesale -> retail -> alice; per-second increments, so cost() prices it.
DID = "15559870100"
ALICE_INBOUND = [("alice", "0.24"), ("retail", "0.12"), ("wholesale", "0.06"), ("admin", "0.03")]
TWIN_CHAINS = {a: [(a, "2.40"), ("tight", "1.80"), ("retail", "1.20"), ("wholesale", "0.60"), ("admin", "0.30")]
               for a in ("twin-a", "twin-b")}
OPENING = {"wholesale": "100.00", "retail": "50.00", "alice": "10.00", "shorty": "0.20", "broke": "0.01",
           "tight": "0.30", "twin-a": "10.00", "twin-b": "10.00", "admin": "0", **{a: "1.00" for a, _ in CROWD}}

MISSING = missing_tools()
REQUIRED = os.environ.get("CASCADE_REQUIRE_SWITCH_TOOLS") == "1"
pytestmark = pytest.mark.skipif(bool(MISSING) and not REQUIRED,
                                reason=f"not installed: {', '.join(MISSING)} (scripts/install_switch_tools.sh: "
                                       "kamailio kamailio-utils-modules kamailio-extra-modules "
                                       "kamailio-sqlite-modules sip-tester)")


def cost(price_per_minute: str, seconds: int) -> Decimal:
    return (Decimal(price_per_minute) * seconds / 60).quantize(Decimal("0.000001"))


class World:
    def __init__(self, stack: LocalStack, gate: Gate, switch: Switch):
        self.stack, self.gate, self.switch = stack, gate, switch
        self.core = stack.table("core")
        self.charged = {a: Decimal(0) for a in OPENING}     # what the calls so far should have cost each level

    def account(self, account_id: str) -> dict:
        return self.core.get_item(Key={"pk": "ACC#" + account_id, "sk": "#"})["Item"]

    def call(self, call_id: str):
        pk, sk = call_key(call_id)
        return self.core.get_item(Key={"pk": pk, "sk": sk}).get("Item")

    def cdrs_of(self, call_id: str) -> dict:
        """Each level's view of the billed call (its CDR: the call record, services.records.level_view)."""
        from boto3.dynamodb.types import TypeSerializer
        from chalicelib.adapters.dynamo.models import CallItem
        from chalicelib.adapters.dynamo.reads import to_call
        from chalicelib.services.records import level_view
        raw = self.call(call_id)
        if not raw or raw.get("status") != "done":
            return {}
        serializer = TypeSerializer()
        call = to_call(CallItem.from_raw_data({k: serializer.serialize(v) for k, v in raw.items()}))
        rows = {}
        for account_id in OPENING:
            view = level_view(call, account_id, raw["cdr_at"])
            if view is not None:
                rows[account_id] = {"billsec": view.billsec, "disposition": view.disposition, "buy": view.buy,
                                    "sell": view.sell, "over_max": view.over_max}
        return rows

    def escrow_out(self, owner: str):
        """(available, spent) of the escrow slots ``owner`` keeps on its clients' items (domain.escrow):
        with no call in flight, its item's held is exactly their sum, and its balance is ahead of its
        journal by the spent money the rebalancer has not swept yet."""
        available = spent = Decimal(0)
        for item in self.stack.scan("core"):
            if item.get("kind") != "account":
                continue
            for k in range(1, 9):
                if item.get(f"e{k}o") == owner:
                    available += item.get(f"e{k}a", Decimal(0))
                    spent += item.get(f"e{k}s", Decimal(0))
        return available, spent

    def wait_done(self, call_id: str, seconds: float = 20) -> dict:
        """The switch posts completions from a queue: wait for Cascade to have settled the call."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            item = self.call(call_id)
            if item and item["status"] == "done":
                return item
            time.sleep(0.2)
        raise AssertionError(f"{call_id} not settled: {self.call(call_id)}\n{self.switch.log()[-3000:]}")

    def wait_held(self, call_id: str, seconds: float = 20) -> dict:
        """Wait until Cascade has authorized the call (it is in progress)."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            item = self.call(call_id)
            if item:
                return item
            time.sleep(0.1)
        raise AssertionError(f"{call_id} never authorized\n{self.switch.log()[-3000:]}")

    def wait_posted(self, call_id: str, seconds: float = 20) -> None:
        """Wait until Kamailio has heard Cascade's 200 to the completion (so the id left its spool and guard)."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            if f"completion of {call_id} posted" in self.switch.log():
                return
            time.sleep(0.1)
        raise AssertionError(f"completion of {call_id} not posted\n{self.switch.log()[-3000:]}")

    def assert_billed(self, call_id: str, chain, billsec: int, disposition: str = "ANSWERED") -> None:
        """A CDR at every level at its own price; balances follow (the operator is not charged)."""
        self.assert_cdrs(call_id, chain, billsec, disposition)
        for account_id, _ in chain:
            self.assert_money(account_id)

    def assert_cdrs(self, call_id: str, chain, billsec: int, disposition: str = "ANSWERED") -> None:
        """A CDR at every level at its own price, counted in what each level should have paid."""
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

    def assert_money(self, account_id: str) -> None:
        item = self.account(account_id)
        escrowed, unswept = self.escrow_out(account_id)
        booked = item["balance"] - unswept
        assert booked == Decimal(OPENING[account_id]) - self.charged[account_id], (account_id, item, unswept)
        assert booked == self.stack.wallet_sum(account_id), account_id
        assert item["held"] == escrowed + unswept and item["active_calls"] == 0, (account_id, item, escrowed)
        assert item["available"] == item["balance"] - item["held"], (account_id, item)


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
    assert call["levels"] and call["max_duration"] == 250        # 10.00 at 2.40/min
    billsec = int(world.cdrs_of(call_id)["alice"]["billsec"])
    # The proxy measures answer -> BYE; sipp paused 2 s between its ACK and its BYE.
    assert billsec in (2, 3), billsec
    world.assert_billed(call_id, ALICE_CHAIN, billsec)
    assert world.switch.callee_saw_bye(call_id)


def test_a_carriers_call_to_a_did_rings_its_client_and_bills_every_holder(world):
    # The carrier (CARRIER_IP) sends the DID as E.164 with a +, the caller's number as From user
    available = world.account("alice")["available"]
    outcome = world.switch.call("uac_call.xml", "442071234567", "+" + DID, "inbound", pause_ms=2000,
                                source_ip=CARRIER_IP)
    call_id, status, _ = outcome.only()
    assert outcome.returncode == 0 and status == "200", outcome.errors[-2000:]
    call = world.wait_done(call_id)
    assert call["direction"] == "inbound" and call["client_id"] == "alice" and call["number"] == DID
    assert call["max_duration"] == int(available * 60 / Decimal("0.24"))     # alice's money at 0.24/min
    assert world.switch.callee_saw_client(call_id) == "alice"   # the PBX is told whom to ring
    billsec = int(world.cdrs_of(call_id)["alice"]["billsec"])
    assert billsec in (2, 3), billsec
    world.assert_billed(call_id, ALICE_INBOUND, billsec)


def test_a_carriers_call_to_an_unknown_did_gets_403_and_a_clients_call_to_a_did_stays_outbound(world):
    outcome = world.switch.call("uac_refused.xml", "442071234567", "15559870199", "nodid", source_ip=CARRIER_IP)
    call_id, status, reason = outcome.only()
    assert (status, reason) == ("403", "did_unknown") and outcome.returncode == 0
    assert world.call(call_id) is None
    # From the clients' network the DID is just a destination (outbound): priced by alice's tariff
    outcome = world.switch.call("uac_call.xml", "1001", DID, "to-did", pause_ms=500)
    call_id, status, _ = outcome.only()
    assert status == "200", outcome.errors[-2000:]
    call = world.wait_done(call_id)
    assert call.get("direction") is None and world.switch.callee_saw_client(call_id) == ""
    world.assert_billed(call_id, ALICE_CHAIN, int(world.cdrs_of(call_id)["alice"]["billsec"]))


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


def start_alice_call(world, label: str):
    """alice (1001) talks 6 s with a Call-ID and From tag of our choosing; returns once it is held."""
    sip_id, from_tag = f"{label}-{uuid.uuid4().hex}@127.0.0.1", f"ft-{uuid.uuid4().hex[:12]}"
    call_id = cascade_id(sip_id, from_tag + FROM_TAG_SUFFIX)
    handle = world.switch.start_call("uac_call.xml", "1001", RATED, label, pause_ms=6000,
                                     call_id=sip_id, from_tag=from_tag)
    world.wait_held(call_id)
    return sip_id, from_tag, call_id, handle


def finish_alice_call(world, handle, call_id: str) -> int:
    """Waits for alice's call to end and be settled and posted; returns its billsec."""
    outcome = world.switch.finish(handle)
    assert outcome.only()[1] == "200" and outcome.returncode == 0, outcome.errors[-2000:]
    world.wait_done(call_id)
    world.wait_posted(call_id)
    billsec = int(world.cdrs_of(call_id)["alice"]["billsec"])
    assert billsec in (6, 7), billsec
    return billsec


def test_a_call_id_replayed_by_another_account_gets_403_and_bills_nothing_for_it(world):
    # alice's call is in progress; shorty sends an INVITE with its Call-ID, From tag and CSeq.
    sip_id, from_tag, call_id, first = start_alice_call(world, "replayed")
    second = world.switch.call("uac_refused.xml", "1002", RATED, "replayer", call_id=sip_id, from_tag=from_tag)
    assert second.only() == (call_id, "403", "call_id_in_use") and second.returncode == 0, second.errors[-2000:]
    assert world.call(call_id)["status"] == "held"                  # alice's call was still going on
    billsec = finish_alice_call(world, first, call_id)
    # Cascade was asked (and answered 409); only alice's call was ever reported.
    assert world.gate.statuses(call_id, "authorize") == [200, 409]
    assert world.gate.statuses(call_id, "complete") == [200]
    world.assert_billed(call_id, ALICE_CHAIN, billsec)
    world.assert_money("shorty")


def test_a_merged_request_gets_482_and_the_call_is_billed_once(world):
    sip_id, from_tag, call_id, first = start_alice_call(world, "merged")
    # The same request (account, number, Call-ID, From tag, CSeq) in another transaction: RFC 3261 8.2.2.2.
    second = world.switch.call("uac_refused.xml", "1001", RATED, "merged", call_id=sip_id, from_tag=from_tag)
    assert second.only() == (call_id, "482", "merged_request") and second.returncode == 0, second.errors[-2000:]
    assert world.call(call_id)["status"] == "held"
    billsec = finish_alice_call(world, first, call_id)
    assert world.gate.statuses(call_id, "authorize") == [200]      # Kamailio answered 482 itself
    assert world.gate.statuses(call_id, "complete") == [200]
    world.assert_billed(call_id, ALICE_CHAIN, billsec)

    # Once the completion is settled the id leaves the guard; the same request again is Cascade's
    # 409 call_ended: refused, and nothing more is posted for the id.
    third = world.switch.call("uac_refused.xml", "1001", RATED, "merged", call_id=sip_id, from_tag=from_tag)
    assert third.only() == (call_id, "403", "call_ended") and third.returncode == 0, third.errors[-2000:]
    time.sleep(1.5)                                                  # a completion would be posted within 0.1 s
    assert world.gate.statuses(call_id, "authorize") == [200, 409]
    assert world.gate.statuses(call_id, "complete") == [200]
    assert {a: r["billsec"] for a, r in world.cdrs_of(call_id).items()} == {a: billsec for a, _ in ALICE_CHAIN}
    for account_id, _ in ALICE_CHAIN:
        world.assert_money(account_id)


def test_a_call_id_too_long_for_cascade_is_sent_hashed_and_billed(world):
    sip_id = f"longid-{uuid.uuid4().hex}-" + "x" * 260 + "@127.0.0.1"
    assert len(sip_id) > 300
    outcome = world.switch.call("uac_call.xml", "1001", RATED, "longid", pause_ms=1000, call_id=sip_id)
    call_id, status, _ = outcome.only()
    assert status == "200" and outcome.returncode == 0, outcome.errors[-2000:]
    assert call_id.startswith("sha256:") and len(call_id) == 71 and outcome.sip_call_ids[call_id] == sip_id
    world.wait_done(call_id)
    assert world.gate.statuses(call_id, "authorize") == [200]      # Kamailio hashed exactly as cascade_id()
    billsec = int(world.cdrs_of(call_id)["alice"]["billsec"])
    assert billsec in (1, 2), billsec
    world.assert_billed(call_id, ALICE_CHAIN, billsec)
    assert world.switch.callee_saw_bye(call_id)


def test_a_spooled_completion_survives_a_kamailio_restart(world):
    # Cascade refuses this call's completion (503) until the test lets it through. The Call-ID holds the
    # characters SQL and JSON quote (' " \) to show the spool keeps it byte for byte.
    sip_id = f"stuck-{uuid.uuid4().hex[:8]}-it's-\"q\"-\\@127.0.0.1"
    world.gate.stuck.set()
    try:
        outcome = world.switch.call("uac_call.xml", "1001", RATED, "stuck", pause_ms=1000, call_id=sip_id)
        call_id, status, _ = outcome.only()
        assert status == "200" and outcome.returncode == 0, outcome.errors[-2000:]
        deadline = time.time() + 20
        while not world.gate.statuses(call_id, "complete") and time.time() < deadline:
            time.sleep(0.1)
        assert world.gate.statuses(call_id, "complete")[:1] == [503]
        rows = [r for r in world.switch.spool_rows() if r["call_id"] == call_id]
        assert len(rows) == 1 and rows[0]["disposition"] == "ANSWERED" and rows[0]["attempt"] >= 1, rows
        billsec = rows[0]["billsec"]
        assert billsec in (1, 2), rows

        world.switch.stop_kamailio()                 # SIGTERM while the completion waits in the spool
        assert world.call(call_id)["status"] == "held"
        assert [r["call_id"] for r in world.switch.spool_rows()].count(call_id) == 1
        refused = len(world.gate.statuses(call_id, "complete"))
    finally:
        world.gate.stuck.clear()
    world.switch.start_kamailio()                    # same runtime directory, so the same spool
    world.wait_done(call_id, 40)
    world.wait_posted(call_id, 40)
    assert world.gate.statuses(call_id, "complete") == [503] * refused + [200]
    world.assert_billed(call_id, ALICE_CHAIN, billsec)
    deadline = time.time() + 10
    while any(r["call_id"] == call_id for r in world.switch.spool_rows()) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(r["call_id"] == call_id for r in world.switch.spool_rows())
    assert "completion(s) waiting" in world.switch.log()
    # The restarted Kamailio still connects and bills calls.
    again = world.switch.call("uac_call.xml", "1001", RATED, "restarted", pause_ms=1000)
    again_id, status, _ = again.only()
    assert status == "200" and again.returncode == 0, again.errors[-2000:]
    world.wait_done(again_id)
    world.assert_billed(again_id, ALICE_CHAIN, int(world.cdrs_of(again_id)["alice"]["billsec"]))


def test_calls_ending_together_are_all_spooled_and_billed_once(world):
    # Ten clients (early billing holds a client's whole balance per call, so one call each) hang up at
    # about the same moment: SIP workers insert into the spool while the posting processes read and
    # delete. SQLite's busy timeout makes them wait for each other; no completion is lost or posted twice.
    # The calls start one after another (a burst of authorizations would only test the local stack) and
    # each caller pauses so that all of them hang up at end_at.
    end_at = time.monotonic() + 12
    calls = []
    for account_id, user in CROWD:
        sip_id, from_tag = f"together-{uuid.uuid4().hex}@127.0.0.1", f"ft-{uuid.uuid4().hex[:12]}"
        call_id = cascade_id(sip_id, from_tag + FROM_TAG_SUFFIX)
        pause_ms = max(1000, int((end_at - time.monotonic()) * 1000))
        handle = world.switch.start_call("uac_call.xml", user, RATED, "together", pause_ms=pause_ms,
                                         call_id=sip_id, from_tag=from_tag)
        world.wait_held(call_id)
        calls.append((account_id, call_id, pause_ms, handle))
    for account_id, call_id, pause_ms, handle in calls:
        outcome = world.switch.finish(handle)
        assert outcome.returncode == 0 and outcome.only() == (call_id, "200", ""), outcome.errors[-1000:]
    for account_id, call_id, pause_ms, _ in calls:
        world.wait_done(call_id, 60)
        world.wait_posted(call_id, 30)
        assert world.gate.statuses(call_id, "complete") == [200]
        billsec = int(world.cdrs_of(call_id)[account_id]["billsec"])
        assert pause_ms // 1000 <= billsec <= pause_ms // 1000 + 1, (billsec, pause_ms)
        world.assert_cdrs(call_id, [(account_id, "2.40")] + ALICE_CHAIN[1:], billsec)
    for account_id in [a for a, _ in CROWD] + ["retail", "wholesale", "admin"]:
        world.assert_money(account_id)
    assert world.switch.spool_rows() == []
    assert "COULD NOT SPOOL" not in world.switch.log() and "cascade: cannot" not in world.switch.log()


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
