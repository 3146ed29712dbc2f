"""Regression tests for the switch path's hardening (issue "a reused call id must never buy a free call,
and no input may strand a hold"). Each section names the defect it pins down; every test here failed on
the code before the fix.

Prices (demo/seed.json, prefix 1555, 1 s / 1 s): acme/shortly pay cumulus 2.00/min, cumulus pays borealis
1.44/min, borealis pays atlas 1.20/min, atlas pays admin 0.60/min. acme (SIP 1001) has 20.00, shortly
(SIP 1002) 0.20, echo (SIP 2001, under the commission reseller delta) 10.00.
"""
import base64
import io
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal as D
from urllib.parse import quote

import pytest

from tests.conftest import DEMO_KEY, demo_seed, load
from tests.integration.helpers import (ALL_DEMO, DEMO_CHAIN, account, assert_ledger_invariant, body_of,
                                       call_entries, call_item, cdrs, client, headers,  # noqa: F401
                                       ledger, money_snapshot, post_authorize, post_complete, seed_account)
from tests.integration.test_switch_api import invoke, url_event

NUMBER = "15551230001"
OTHER_NUMBER = "15551239999"
OTHER_SWITCH_KEY = "csk_other_switch_in_another_city"
ROTATED_KEY = "csk_demo_switch_rotated_key"


def seed_with(**balances) -> dict:
    seed = demo_seed()
    for account_id, balance in balances.items():
        seed_account(seed, account_id)["balance"] = balance
    # A second switch, and a second (rotated) key for the demo switch: same id, another secret.
    seed["switch_keys"] += [{"id": "other-switch", "key": OTHER_SWITCH_KEY},
                            {"id": "demo-switch", "key": ROTATED_KEY}]
    return seed


def sweep(at):
    from chalicelib.adapters.dynamo.store import DynamoStore
    from chalicelib.services.sweep_holds import sweep_expired_holds
    return sweep_expired_holds(DynamoStore(), clock=lambda: at)


def call_snapshot(call_id):
    call = call_item(call_id)
    return call.client_id, call.number, call.status, call.answer, call.result


def events(caplog, name):
    return [r for r in caplog.records if getattr(r, "event", None) == name]


# --- 1. a reused call id ---------------------------------------------------------------------------------

@pytest.mark.parametrize("account_ref, destination, how", [
    ("1002", OTHER_NUMBER, "a broke account dialling another number"),
    ("1002", NUMBER, "another account dialling the same number"),
    ("1001", OTHER_NUMBER, "the same account dialling another number"),
    ("2001", NUMBER, "an account under another reseller"),
])
def test_a_used_call_id_sent_by_another_request_is_409_and_writes_nothing(client, account_ref, destination, how):
    # GIVEN acme's call "X" is held, and shortly has nothing
    load(seed_with(shortly="0"))
    first = post_authorize(client, "1001", NUMBER, "X")
    assert first.status_code == 200
    before, call_before = money_snapshot(ALL_DEMO), call_snapshot("X")

    # WHEN another request arrives with the same call id
    r = post_authorize(client, account_ref, destination, "X")

    # THEN it is refused as such, not granted on acme's hold, and nothing is written
    assert (r.status_code, body_of(r)) == (409, {"authorized": False, "reason": "call_id_in_use"}), how
    assert money_snapshot(ALL_DEMO) == before and call_snapshot("X") == call_before
    # AND acme's own retry is still a repeat
    assert body_of(post_authorize(client, "1001", NUMBER, "X")) == body_of(first)


def test_a_suspended_account_cannot_ride_on_a_used_call_id(client):
    seed = seed_with()
    seed_account(seed, "shortly")["status"] = "suspended"
    load(seed)
    assert post_authorize(client, "1001", NUMBER, "X").status_code == 200
    r = post_authorize(client, "1002", NUMBER, "X")
    assert (r.status_code, body_of(r)["reason"]) == (409, "call_id_in_use")
    assert account("shortly").held == 0 and account("shortly").active_calls == 0


def test_after_completion_a_call_id_is_never_a_grant_again(client):
    # GIVEN acme's call "X", completed (60 s: acme 20.00 -> 18.00)
    load(seed_with(shortly="0"))
    assert post_authorize(client, "1001", NUMBER, "X").status_code == 200
    done = body_of(post_complete(client, "X", 60, "ANSWERED"))
    before = money_snapshot(ALL_DEMO)

    # WHEN the very same request is sent again THEN it is refused: the call is over
    r = post_authorize(client, "1001", NUMBER, "X")
    assert (r.status_code, body_of(r)) == (409, {"authorized": False, "reason": "call_ended"})
    # AND from a broke account it is refused as someone else's id
    r = post_authorize(client, "1002", OTHER_NUMBER, "X")
    assert (r.status_code, body_of(r)["reason"]) == (409, "call_id_in_use")
    # AND nothing moved, and the completion still answers with the first result
    assert money_snapshot(ALL_DEMO) == before
    assert body_of(post_complete(client, "X", 60, "ANSWERED")) == done
    assert account("acme").balance == D("18.00") and len(call_entries("acme")) == 1
    assert_ledger_invariant(ALL_DEMO)


def test_after_the_sweep_a_call_id_is_never_a_grant_again(client):
    load(seed_with())
    assert post_authorize(client, "1001", NUMBER, "X").status_code == 200
    assert sweep(int(call_item("X").expires_at) + 1) == 1
    r = post_authorize(client, "1001", NUMBER, "X")
    assert (r.status_code, body_of(r)["reason"]) == (409, "call_ended")
    assert account("acme").held == 0 and account("acme").active_calls == 0


def test_concurrent_authorizations_of_one_id_for_different_numbers_never_share_an_answer(aws):
    # GIVEN 20 requests with one call id at once: 10 from acme for NUMBER, 10 from echo for OTHER_NUMBER
    from chalicelib.adapters.dynamo.store import DynamoStore
    from chalicelib.services.authorize_call import AuthorizeRequest, CallIdInUse
    from chalicelib.services.switch_keys import key_hash
    from tests.integration.helpers import authorize_http as authorize_call
    load(seed_with())
    store, digest = DynamoStore(), key_hash(DEMO_KEY)
    requests = [("1001", NUMBER) if i % 2 else ("2001", OTHER_NUMBER) for i in range(20)]
    barrier = threading.Barrier(len(requests))

    def go(request):
        barrier.wait()
        try:
            return request, authorize_call(store, AuthorizeRequest(request[0], request[1], "same"), digest)
        except CallIdInUse as exc:
            return request, exc.reason
    with ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(go, requests))

    # THEN the call belongs to one of them; its requests all got its answer, the others a 409
    winner = call_item("same")
    winning = ("1001", NUMBER) if winner.client_id == "acme" else ("2001", OTHER_NUMBER)
    for request, outcome in results:
        if request == winning:
            assert outcome.status == 200 and outcome.body == winner.answer
            assert outcome.body["number"] == request[1]
        else:
            assert outcome == "call_id_in_use"
    # AND exactly one call is held
    held = {a: account(a).active_calls for a in ("acme", "echo")}
    assert sorted(held.values()) == [0, 1]
    assert_ledger_invariant(ALL_DEMO)


def test_switches_see_only_their_own_calls_and_a_rotated_key_completes_them(client):
    load(seed_with())
    assert post_authorize(client, "1001", NUMBER, "X").status_code == 200
    before = money_snapshot(ALL_DEMO)
    # WHEN another switch sends the same call id THEN it is refused, and cannot complete the call
    r = post_authorize(client, "1001", NUMBER, "X", key=OTHER_SWITCH_KEY)
    assert (r.status_code, body_of(r)["reason"]) == (409, "call_id_in_use")
    r = post_complete(client, "X", 0, "FAILED", key=OTHER_SWITCH_KEY)
    assert (r.status_code, body_of(r)["error"]) == (404, "unknown_call")
    assert money_snapshot(ALL_DEMO) == before and call_item("X").status == "held"
    # WHEN the demo switch's key is rotated mid-call THEN the new key (same switch id) completes it
    r = post_complete(client, "X", 30, "ANSWERED", key=ROTATED_KEY)
    assert r.status_code == 200 and D(body_of(r)["charged"]) == D("1.00")
    assert post_complete(client, "X", 30, "ANSWERED").status_code == 200     # and the old key repeats it
    assert_ledger_invariant(ALL_DEMO)


@pytest.mark.parametrize("billsec, disposition", [(61, "ANSWERED"), (60, "FAILED"), (0, "BUSY")])
def test_a_completion_that_differs_from_the_applied_one_is_a_409_carrying_it(client, caplog, billsec, disposition):
    load(seed_with())
    assert post_authorize(client, "1001", NUMBER, "X").status_code == 200
    applied = body_of(post_complete(client, "X", 60, "ANSWERED"))
    before = money_snapshot(ALL_DEMO)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cascade"):
        r = post_complete(client, "X", billsec, disposition)
    assert r.status_code == 409
    assert body_of(r)["error"] == "completion_conflict" and body_of(r)["applied"] == applied
    assert money_snapshot(ALL_DEMO) == before
    conflicts = events(caplog, "completion_conflict")
    assert len(conflicts) == 1 and conflicts[0].billsec == billsec and conflicts[0].applied_billsec == 60
    # AND the true repeat is still a plain 200
    assert (post_complete(client, "X", 60, "ANSWERED").status_code, len(call_entries("acme"))) == (200, 1)


def test_racing_completions_with_different_billsec_bill_one_and_the_rest_see_it(aws):
    from chalicelib.adapters.dynamo.store import DynamoStore
    from chalicelib.services.authorize_call import AuthorizeRequest
    from tests.integration.helpers import authorize_http as authorize_call
    from chalicelib.services.complete_call import CompletionConflict, complete_call
    from chalicelib.services.switch_keys import key_hash
    load(seed_with())
    store, digest = DynamoStore(), key_hash(DEMO_KEY)
    assert authorize_call(store, AuthorizeRequest("1001", NUMBER, "X"), digest).status == 200
    barrier = threading.Barrier(10)

    def go(billsec):
        barrier.wait()
        try:
            return billsec, complete_call(store, "X", billsec, "ANSWERED", digest)
        except CompletionConflict as exc:
            return billsec, exc.applied
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(go, [30 + i for i in range(10)]))
    applied = call_item("X").result
    assert all(outcome == applied for _, outcome in results)
    assert account("acme").balance == D("20.00") - D(applied["charged"]) and 30 <= applied["billsec"] < 40
    assert len(call_entries("acme")) == 1
    assert_ledger_invariant(ALL_DEMO)


# --- 2. a late completion below the floor -----------------------------------------------------------------

def test_a_late_completion_is_billed_ledgered_as_late_counted_and_the_debt_blocks_calls(client, caplog):
    # GIVEN shortly (prepaid, 0.20 = 6 s at 2.00/min): call A granted 6 s and swept after its grace
    load(seed_with())
    assert body_of(post_authorize(client, "1002", NUMBER, "A"))["max_duration"] == 6
    assert sweep(int(call_item("A").expires_at) + 1) == 1
    # AND call B granted on the released funds
    assert body_of(post_authorize(client, "1002", NUMBER, "B"))["max_duration"] == 6

    # WHEN A completes late (6 s: 0.20) and then B (6 s: 0.20)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cascade"):
        late = post_complete(client, "A", 6, "ANSWERED")
    assert late.status_code == 200 and body_of(late)["late"] is True
    assert post_complete(client, "B", 6, "ANSWERED").status_code == 200

    # THEN both calls happened and are billed: shortly owes 0.20
    shortly = account("shortly")
    assert (shortly.balance, shortly.held, shortly.available) == (D("-0.20"), 0, D("-0.20"))
    # AND A's debit is ledgered (and its CDRs marked) as a late bill, B's as an ordinary one
    entries = {e.description: e for e in call_entries("shortly")}
    assert entries["late call to 15551230001"].late is True and entries["late call to 15551230001"].amount == D("-0.20")
    assert entries["call to 15551230001"].late is False
    assert {c.call_id: c.late for c in cdrs("shortly")} == {"A": True, "B": None}
    # AND the late completion is counted with the money it took below the floor
    reported = events(caplog, "late_completion")
    assert len(reported) == 1 and reported[0].call_id == "A"
    assert D(reported[0].below_floor) == D("0.20") and reported[0].below_floor_micros == 200_000
    assert {a: D(v) for a, v in reported[0].below_floor_accounts.items()} == {"shortly": D("0.20")}
    # AND the negative prepaid balance refuses further calls until it is paid
    r = post_authorize(client, "1002", NUMBER, "C")
    assert (r.status_code, body_of(r)["reason"]) == (402, "insufficient_funds")
    assert_ledger_invariant(ALL_DEMO)


def test_a_late_completion_that_stays_above_the_floor_is_counted_with_nothing_below(client, caplog):
    load(seed_with())
    assert post_authorize(client, "1001", NUMBER, "A").status_code == 200
    assert sweep(int(call_item("A").expires_at) + 1) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cascade"):
        assert post_complete(client, "A", 60, "ANSWERED").status_code == 200
    reported = events(caplog, "late_completion")
    assert len(reported) == 1 and reported[0].below_floor_micros == 0 and reported[0].below_floor_accounts == {}


# --- 3. call ids measured in bytes -------------------------------------------------------------------------

EMOJI = "\U0001F600"     # 4 bytes in UTF-8


@pytest.mark.parametrize("call_id", [
    "x" * 256,                       # the byte limit, ASCII
    EMOJI * 64,                      # the byte limit, 4-byte characters
    "161058" + EMOJI * 62 + "ab",    # 256 bytes, mixed
    "\u00e9" * 128,                  # 2-byte characters
])
def test_a_call_id_at_the_byte_limit_is_authorized_and_billed(client, call_id):
    load(seed_with())
    assert post_authorize(client, "1001", NUMBER, call_id).status_code == 200
    r = post_complete(client, call_id, 30, "ANSWERED")
    assert r.status_code == 200, r.body
    assert body_of(r)["call_id"] == call_id and D(body_of(r)["charged"]) == D("1.00")
    status, again = invoke(url_event(f"/calls/{quote(call_id, safe='')}/complete",
                                     {"billsec": 30, "disposition": "ANSWERED"}))
    assert (status, again) == (200, body_of(r))
    assert account("acme").held == 0 and account("acme").balance == D("19.00")
    assert_ledger_invariant(ALL_DEMO)


@pytest.mark.parametrize("call_id", [
    "x" * 257,
    EMOJI * 64 + "x",
    "161058" + EMOJI * 250,          # 1,006 bytes: authorized on the old code, never billable
    "\u00e9" * 129,
])
def test_a_call_id_over_the_byte_limit_is_refused_identically_by_both_endpoints(client, call_id):
    load(seed_with())
    before = money_snapshot(ALL_DEMO)
    r = post_authorize(client, "1001", NUMBER, call_id)
    assert (r.status_code, body_of(r)["field"]) == (400, "call_id")
    assert "bytes" in body_of(r)["message"]
    r = post_complete(client, call_id, 30, "ANSWERED")
    assert (r.status_code, body_of(r)["field"]) == (400, "call_id")
    assert money_snapshot(ALL_DEMO) == before


@pytest.mark.parametrize("call_id", ["a\x00b", "tab\there", "new\nline", "del\x7f", "c1\x85", "ls\u2028",
                                     "\x1fus", "nel\x85"])
def test_a_call_id_with_control_characters_is_refused_by_both_endpoints(client, call_id):
    load(seed_with())
    r = post_authorize(client, "1001", NUMBER, call_id)
    assert (r.status_code, body_of(r)["field"]) == (400, "call_id")
    r = post_complete(client, call_id, 30, "ANSWERED")
    assert (r.status_code, body_of(r)["field"]) == (400, "call_id")
    assert account("acme").held == 0


def test_keys_embedding_a_call_id_have_a_fixed_size():
    from chalicelib.adapters.dynamo.store import call_key, text_key
    for call_id in ("a", "x" * 256, EMOJI * 64):
        assert len(call_key(call_id)[0]) == len("CALL#") + 32 and len(text_key(call_id)) == 32
    assert text_key("a") != text_key("b")


# --- 4. whitespace and encoding ----------------------------------------------------------------------------

@pytest.mark.parametrize("sent_path", [" padded -161058", "padded -161058", "\tpadded -161058 "])
def test_a_padded_call_id_is_the_same_call_at_authorize_and_at_completion(client, sent_path):
    load(seed_with())
    assert post_authorize(client, "1001", NUMBER, " padded -161058").status_code == 200
    r = post_complete(client, sent_path, 30, "ANSWERED")
    assert r.status_code == 200, r.body
    assert body_of(r)["call_id"] == "padded -161058"
    status, _ = invoke(url_event(f"/calls/{quote(sent_path, safe='')}/complete", {"billsec": 30, "disposition": "ANSWERED"}))
    assert status == 200
    assert account("acme").held == 0 and len(call_entries("acme")) == 1


# --- 5. pathological bodies ---------------------------------------------------------------------------------

def authorize_raw(client, raw):
    return client.http.post("/authorize", headers=headers(), body=raw)


def huge(field):
    body = {"account": "1001", "destination": NUMBER, "call_id": "p-1", "caller_id": "15550001111"}
    raw = json.dumps(body)
    return raw.replace(json.dumps(body[field]), "9" * 5000) if field in body else raw


@pytest.mark.parametrize("raw, status, field", [
    ("[" * 5_000 + "]" * 5_000, 400, "body"),                    # RecursionError in the parser
    ("[" * 100_000 + "]" * 100_000, 413, "body"),                # over the size cap: not even parsed
    (huge("account"), 400, "account"),
    (huge("call_id"), 400, "call_id"),
    (huge("caller_id"), 400, "caller_id"),
    ('{"account": "1001", "destination": "%s", "call_id": "\\ud800"}' % NUMBER, 400, "call_id"),
    ('{"account": "\\udfff", "destination": "%s", "call_id": "s-1"}' % NUMBER, 400, "account"),
    ('{"account": "1001", "destination": NaN, "call_id": "n-1"}', 400, "body"),
    ('{"account": "1001", "account": "1002", "destination": "%s", "call_id": "d-1"}' % NUMBER, 400, "account"),
    (b'{"account": "10\xff01", "destination": "1", "call_id": "u-1"}', 400, "body"),
])
def test_pathological_authorize_bodies_are_4xx_naming_the_field_on_every_entrypoint(client, raw, status, field):
    load(seed_with())
    before = money_snapshot(ALL_DEMO)
    r = authorize_raw(client, raw)
    assert (r.status_code, body_of(r)["field"]) == (status, field), r.body
    encoded = {"body": raw} if isinstance(raw, str) else {"body": base64.b64encode(raw).decode(), "isBase64Encoded": True}
    via_url = invoke({**url_event("/authorize", ""), **encoded})
    assert via_url[0] // 100 == 4 and via_url[1]["field"] in (field, "body"), via_url
    assert money_snapshot(ALL_DEMO) == before


@pytest.mark.parametrize("raw", ['{"billsec": %s, "disposition": "ANSWERED"}' % ("9" * 5000),
                                 '{"billsec": 1e400, "disposition": "ANSWERED"}',
                                 '{"billsec": 30, "disposition": "ANSWERED", "billsec": 0}',
                                 '{"billsec": 30, "disposition": ["ANSWERED"]}'])
def test_pathological_completion_bodies_are_400_and_bill_nothing(client, raw):
    load(seed_with())
    assert post_authorize(client, "1001", NUMBER, "p-2").status_code == 200
    before = money_snapshot(ALL_DEMO)
    r = client.http.post("/calls/p-2/complete", headers=headers(), body=raw)
    assert r.status_code == 400, r.body
    assert body_of(r)["field"] in ("billsec", "disposition")
    assert money_snapshot(ALL_DEMO) == before and call_item("p-2").status == "held"


@pytest.mark.parametrize("event", [
    [],
    {"rawPath": "/authorize", "body": {"not": "a string"}},
    {"rawPath": "/authorize", "body": "!!!not base64!!!", "isBase64Encoded": True,
     "headers": {"x-api-key": DEMO_KEY}},
    {"rawPath": 42, "body": "{}"},
    {"rawPath": "/authorize", "body": "{}", "headers": {"x-api-key": "\ud800"}},
    {"rawPath": "/authorize", "body": "{}", "headers": {"x-api-key": "k" * 100_000}},
    {"rawPath": "/authorize", "body": "{}", "headers": "x-api-key"},
    {"rawPath": "/calls/complete", "body": "{}", "headers": {"x-api-key": DEMO_KEY}},
])
def test_a_malformed_function_url_event_is_a_4xx_not_a_crash(aws, event):
    load(seed_with())
    status, body = invoke(event)
    assert 400 <= status < 500, (status, body)


def test_the_late_completion_log_line_carries_what_the_metric_filters_read(client, monkeypatch):
    """infra/stack.py counts LateCompletions and LateBelowFloorMicros with log metric filters on
    `$.event` and `$.below_floor_micros`: the JSON line the switch functions print must have both,
    the amount as a JSON integer."""
    load(seed_with())
    assert post_authorize(client, "1002", NUMBER, "A").status_code == 200
    assert sweep(int(call_item("A").expires_at) + 1) == 1
    assert post_authorize(client, "1002", NUMBER, "B").status_code == 200
    printed = io.StringIO()     # what the powertools handler (set up by the switch module) prints
    handlers = logging.getLogger("cascade").handlers
    assert handlers, "the switch module gives the services' loggers the powertools JSON handler"
    for handler in handlers:
        monkeypatch.setattr(handler, "stream", printed)
    assert post_complete(client, "A", 6, "ANSWERED").status_code == 200
    lines = [json.loads(line) for line in printed.getvalue().splitlines() if line.startswith("{")]
    late = [line for line in lines if line.get("event") == "late_completion"]
    assert len(late) == 1 and late[0]["below_floor_micros"] == 200_000 and late[0]["call_id"] == "A"


@pytest.mark.parametrize("field, limit", [("account", 128), ("destination", 64), ("caller_id", 128), ("call_id", 256)])
@pytest.mark.parametrize("unit", ["a", "\u00e9", EMOJI])
def test_every_text_field_is_bounded_in_bytes_on_both_endpoints(client, field, limit, unit):
    """At the limit a field passes validation (whatever the answer then is); one byte-unit more is a 400
    naming it, through the route and the function URL alike, and nothing is written."""
    load(seed_with())
    size = len(unit.encode("utf-8"))
    body = {"account": "1001", "destination": NUMBER, "call_id": f"lim-{field}-{size}", "caller_id": "15550001111"}
    before = money_snapshot(ALL_DEMO)
    for value, over in ((unit * (limit // size), False), (unit * (limit // size + 1), True)):
        payload = {**body, field: value}
        r = client.http.post("/authorize", headers=headers(), body=json.dumps(payload))
        status, answer = invoke(url_event("/authorize", {**payload, "call_id": payload["call_id"] + "-url"}
                                          if field != "call_id" else payload))
        if over:
            assert (r.status_code, body_of(r)["field"]) == (400, field)
            assert (status, answer["field"]) == (400, field)
        else:
            assert body_of(r).get("field") != field and answer.get("field") != field, (body_of(r), answer)
    # nothing but the at-limit requests that were granted moved money, and those are held, not billed
    after = money_snapshot(ALL_DEMO)
    assert all(after[a][0] == before[a][0] for a in ALL_DEMO)
