"""The switch HTTP contract end to end: idempotency, request validation, every refusal reason, and the
dedicated Lambda function URL handler answering like the routes.

Prices (demo/seed.json, prefix 1555, 1 s / 1 s): acme/shortly pay cumulus 2.00/min, cumulus pays
borealis 1.44/min (1.20 + 20 %), borealis pays atlas 1.20/min, atlas pays admin 0.60/min.
"""
import base64
import json
from decimal import Decimal as D
from urllib.parse import quote

import pytest

from tests.conftest import DEMO_KEY, demo_seed, load
from tests.integration.helpers import (ALL_DEMO, DEMO_CHAIN, account, assert_ledger_invariant, body_of,
                                       call_entries, call_item, cdrs, client, headers,  # noqa: F401
                                       money_snapshot, post_authorize, post_complete, seed_account, seed_rate)

NUMBER = "15551230001"


def refused(response, status, reason):
    assert response.status_code == status, response.body
    assert body_of(response) == {"authorized": False, "reason": reason}


def assert_no_call(call_id):
    from chalicelib.adapters.dynamo.models import CallItem
    with pytest.raises(CallItem.DoesNotExist):
        call_item(call_id)


# --- 2. idempotency ------------------------------------------------------------------------------------

def test_same_call_id_authorized_twice_answers_the_same_and_holds_once(client):
    # GIVEN the demo seed and a first authorization
    load(demo_seed())
    first = post_authorize(client, "1001", NUMBER, "dup-1")
    assert first.status_code == 200

    # WHEN the switch retries the same call id
    second = post_authorize(client, "1001", NUMBER, "dup-1")

    # THEN the answer is the first one, and every level holds once: cumulus 1.44 x 600/60 = 14.40, not 28.80
    assert second.status_code == 200
    assert body_of(second) == body_of(first)
    assert account("cumulus").held == D("14.40")
    assert account("acme").held == D("20.00")
    for name in DEMO_CHAIN[:-1]:
        assert account(name).active_calls == 1, name

    # WHEN it is completed twice
    done1 = post_complete(client, "dup-1", 60, "ANSWERED")
    done2 = post_complete(client, "dup-1", 60, "ANSWERED")

    # THEN the second returns the first result and nothing is debited twice: acme 20 - 2.00 = 18.00
    assert done1.status_code == done2.status_code == 200
    assert body_of(done2) == body_of(done1)
    assert account("acme").balance == D("18.00")
    assert account("cumulus").balance == D("198.56")
    for name in DEMO_CHAIN[:-1]:
        assert len(call_entries(name)) == 1, name
        assert account(name).active_calls == 0 and account(name).held == 0, name
    for name in DEMO_CHAIN:
        assert len(cdrs(name)) == 1, name

    # AND a completion with different numbers is a conflict: 409 carrying the result that stands
    done3 = post_complete(client, "dup-1", 600, "ANSWERED")
    assert done3.status_code == 409
    assert body_of(done3)["error"] == "completion_conflict" and body_of(done3)["applied"] == body_of(done1)
    assert account("acme").balance == D("18.00")

    assert_ledger_invariant(ALL_DEMO)


def test_complete_for_an_unknown_call_is_404(client):
    load(demo_seed())
    r = post_complete(client, "never-authorized", 60, "ANSWERED")
    assert r.status_code == 404
    assert body_of(r)["error"] == "unknown_call"
    assert_ledger_invariant(ALL_DEMO)


# --- 3. authentication and validation -------------------------------------------------------------------

@pytest.mark.parametrize("key", [None, "", "csk_wrong"])
def test_authorize_without_a_valid_key_is_401_and_holds_nothing(client, key):
    load(demo_seed())
    before = money_snapshot(ALL_DEMO)
    r = post_authorize(client, "1001", NUMBER, "nokey-1", key=key)
    assert r.status_code == 401
    assert body_of(r)["error"] == "unauthorized"
    assert money_snapshot(ALL_DEMO) == before
    assert_no_call("nokey-1")


@pytest.mark.parametrize("key", [None, "", "csk_wrong"])
def test_complete_without_a_valid_key_is_401_and_bills_nothing(client, key):
    # GIVEN an authorized call
    load(demo_seed())
    assert post_authorize(client, "1001", NUMBER, "nokey-2").status_code == 200
    before = money_snapshot(ALL_DEMO)
    # WHEN it is completed without the key THEN 401, and the call is still held, unbilled
    r = post_complete(client, "nokey-2", 60, "ANSWERED", key=key)
    assert r.status_code == 401
    assert body_of(r)["error"] == "unauthorized"
    assert money_snapshot(ALL_DEMO) == before
    assert call_item("nokey-2").status == "held"
    # AND an unknown call with a bad key is 401 too, not 404 (no probing call ids without a key)
    assert post_complete(client, "no-such-call", 60, "ANSWERED", key=key).status_code == 401
    assert_ledger_invariant(ALL_DEMO)


@pytest.mark.parametrize("payload, field", [
    ({"destination": NUMBER, "call_id": "v-1"}, "account"),
    ({"account": "", "destination": NUMBER, "call_id": "v-1"}, "account"),
    ({"account": "1001", "call_id": "v-1"}, "destination"),
    ({"account": "1001", "destination": None, "call_id": "v-1"}, "destination"),
    ({"account": "1001", "destination": NUMBER}, "call_id"),
    ({"account": "1001", "destination": NUMBER, "call_id": "   "}, "call_id"),
    ({"account": "1001", "destination": NUMBER, "call_id": "x" * 257}, "call_id"),
    ({"account": ["1001"], "destination": NUMBER, "call_id": "v-1"}, "account"),
])
def test_authorize_with_a_bad_field_is_400_naming_it(client, payload, field):
    load(demo_seed())
    r = client.http.post("/authorize", headers=headers(), body=json.dumps(payload))
    assert r.status_code == 400, r.body
    answer = body_of(r)
    assert answer["error"] == "invalid_request" and answer["field"] == field
    assert field in answer["message"]
    assert account("acme").held == 0 and account("acme").active_calls == 0


@pytest.mark.parametrize("raw", ["not json", "", "[1, 2]", '"1001"'])
def test_authorize_with_a_body_that_is_no_json_object_is_400(client, raw):
    load(demo_seed())
    r = client.http.post("/authorize", headers=headers(), body=raw)
    assert r.status_code == 400, r.body
    assert body_of(r)["field"] == "body"


def test_numeric_account_and_destination_are_accepted(client):
    # switches often send digits as JSON numbers
    load(demo_seed())
    r = client.http.post("/authorize", headers=headers(),
                         body=json.dumps({"account": 1001, "destination": 15551230001, "call_id": "num-1"}))
    assert r.status_code == 200, r.body
    assert body_of(r)["max_duration"] == 600


@pytest.mark.parametrize("payload, field", [
    ({"billsec": -1, "disposition": "ANSWERED"}, "billsec"),
    ({"billsec": "60", "disposition": "ANSWERED"}, "billsec"),
    ({"billsec": 60.5, "disposition": "ANSWERED"}, "billsec"),
    ({"billsec": True, "disposition": "ANSWERED"}, "billsec"),
    ({"disposition": "ANSWERED"}, "billsec"),
    ({"billsec": 60, "disposition": "HANGUP"}, "disposition"),
    ({"billsec": 60, "disposition": "answered"}, "disposition"),
    ({"billsec": 60}, "disposition"),
])
def test_complete_with_a_bad_field_is_400_naming_it_and_bills_nothing(client, payload, field):
    # GIVEN an authorized call
    load(demo_seed())
    assert post_authorize(client, "1001", NUMBER, "bad-1").status_code == 200
    before = money_snapshot(ALL_DEMO)
    # WHEN its completion is malformed THEN 400 naming the field, nothing billed, the call still held
    r = client.http.post("/calls/bad-1/complete", headers=headers(), body=json.dumps(payload))
    assert r.status_code == 400, r.body
    answer = body_of(r)
    assert answer["error"] == "invalid_request" and answer["field"] == field
    assert field in answer["message"]
    assert money_snapshot(ALL_DEMO) == before
    assert call_item("bad-1").status == "held"
    assert_ledger_invariant(ALL_DEMO)


def test_complete_with_a_non_json_body_is_400(client):
    load(demo_seed())
    assert post_authorize(client, "1001", NUMBER, "bad-2").status_code == 200
    r = client.http.post("/calls/bad-2/complete", headers=headers(), body="billsec=60")
    assert r.status_code == 400 and body_of(r)["field"] == "body"
    assert call_item("bad-2").status == "held"


# --- 3. refusals -----------------------------------------------------------------------------------------

def test_unknown_account_is_403_account_unknown(client):
    load(demo_seed())
    refused(post_authorize(client, "9999", NUMBER, "unk-1"), 403, "account_unknown")
    assert_no_call("unk-1")


def test_destination_without_a_rate_is_403_no_rate(client):
    # 881612345678 (Iridium, +8816) is priced by no tariff in the seed
    load(demo_seed())
    before = money_snapshot(ALL_DEMO)
    refused(post_authorize(client, "1001", "881612345678", "norate-1"), 403, "no_rate")
    assert money_snapshot(ALL_DEMO) == before
    assert_no_call("norate-1")


def test_client_with_a_few_cents_gets_a_few_seconds(client):
    # shortly: 0.20 at 2.00/min with 1 s increments: 0.20 / (2.00/60) = 6 s exactly (2.00 x 6/60 = 0.20)
    load(demo_seed())
    r = post_authorize(client, "1002", NUMBER, "short-1")
    assert r.status_code == 200
    assert body_of(r)["max_duration"] == 6
    assert account("shortly").held == D("0.20") and account("shortly").available == 0
    assert_ledger_invariant(ALL_DEMO)


def test_client_with_no_balance_is_402_and_nothing_is_held_anywhere(client):
    # GIVEN shortly with balance 0 (prepaid)
    seed = demo_seed()
    seed_account(seed, "shortly")["balance"] = "0"
    load(seed)
    before = money_snapshot(ALL_DEMO)
    # WHEN it dials THEN 402 insufficient_funds, no hold, no call counted, no call record
    refused(post_authorize(client, "1002", NUMBER, "broke-1"), 402, "insufficient_funds")
    assert money_snapshot(ALL_DEMO) == before
    for name in ("shortly", "cumulus", "borealis", "atlas"):
        assert account(name).held == 0 and account(name).active_calls == 0, name
    assert_no_call("broke-1")
    assert_ledger_invariant(ALL_DEMO)


def test_suspended_reseller_in_the_chain_is_403_account_suspended(client):
    seed = demo_seed()
    seed_account(seed, "borealis")["status"] = "suspended"
    load(seed)
    before = money_snapshot(ALL_DEMO)
    refused(post_authorize(client, "1001", NUMBER, "susp-1"), 403, "account_suspended")
    assert money_snapshot(ALL_DEMO) == before
    assert_no_call("susp-1")


def loss_seed(allow_loss: bool) -> dict:
    # cumulus sells 1555 to its clients at 1.00/min while it pays borealis 1.44/min
    seed = demo_seed()
    seed_rate(seed, "cumulus-retail", "1555")["price"] = "1.00"
    seed_account(seed, "cumulus")["allow_loss"] = allow_loss
    return seed


def test_reseller_selling_below_cost_is_403_loss_route(client):
    load(loss_seed(allow_loss=False))
    refused(post_authorize(client, "1001", NUMBER, "loss-1"), 403, "loss_route")
    assert account("cumulus").held == 0
    assert_no_call("loss-1")


def test_reseller_selling_below_cost_is_allowed_with_allow_loss_and_books_the_loss(client):
    # GIVEN cumulus allowed to sell at a loss
    load(loss_seed(allow_loss=True))
    # WHEN acme dials THEN granted: 20.00 / (1.00/60) = 1200 s (cumulus: 200 / (1.44/60) = 8333 s)
    r = post_authorize(client, "1001", NUMBER, "loss-2")
    assert r.status_code == 200, r.body
    assert body_of(r)["max_duration"] == 1200
    # WHEN 60 s THEN acme pays 1.00, cumulus 1.44: cumulus's profit 1.00 - 1.44 = -0.44
    assert post_complete(client, "loss-2", 60, "ANSWERED").status_code == 200
    assert account("acme").balance == D("19.00")
    (row,) = cdrs("cumulus")
    assert (row.buy, row.sell, row.profit) == (D("1.44"), D("1.00"), D("-0.44"))
    assert_ledger_invariant(ALL_DEMO)


def roomy_seed(**acme) -> dict:
    """acme with money to spare (1000.00, no daily limit) and calls capped at 600 s, so that funds never
    refuse first: each call holds acme 2.00 x 10 = 20.00, cumulus 14.40, borealis 12.00, atlas 6.00."""
    seed = demo_seed()
    seed["settings"]["max_duration"] = 600
    entry = seed_account(seed, "acme")
    entry.update(balance="1000.00", **acme)
    entry.pop("daily_limit", None)
    return seed


def test_client_at_max_calls_is_403_concurrent_calls_limit(client):
    # GIVEN acme limited to 2 simultaneous calls
    load(roomy_seed(max_calls=2))
    # WHEN it holds 2 calls THEN a third is refused
    assert post_authorize(client, "1001", NUMBER, "cc-1").status_code == 200
    assert post_authorize(client, "1001", NUMBER, "cc-2").status_code == 200
    assert account("acme").active_calls == 2 and account("acme").held == D("40.00")
    refused(post_authorize(client, "1001", NUMBER, "cc-3"), 403, "concurrent_calls_limit")
    assert account("acme").active_calls == 2 and account("cumulus").held == D("28.80")   # 2 x 14.40
    assert_no_call("cc-3")
    # AND once one ends, a new call is granted again
    assert post_complete(client, "cc-1", 60, "ANSWERED").status_code == 200
    assert post_authorize(client, "1001", NUMBER, "cc-4").status_code == 200
    assert account("acme").active_calls == 2
    assert_ledger_invariant(ALL_DEMO)


def test_cps_limit_refuses_the_second_call_in_the_same_second(client):
    """authorize_call's clock defaults to time.time bound at definition, so the service is called
    directly with a fixed clock (the HTTP layer adds nothing to this decision)."""
    from chalicelib.adapters.dynamo.store import DynamoStore
    from chalicelib.services.authorize_call import AuthorizeRequest
    from tests.integration.helpers import authorize_http as authorize_call
    from chalicelib.services.switch_keys import key_hash

    # GIVEN acme limited to 1 call per second
    load(roomy_seed(cps_limit=1))
    store, digest, t = DynamoStore(), key_hash(DEMO_KEY), 1_700_000_000

    def dial(call_id, at):
        return authorize_call(store, AuthorizeRequest("1001", NUMBER, call_id), digest, clock=lambda: at)

    # WHEN two calls start in the same second THEN the second is refused
    first = dial("cps-1", t)
    assert first.status == 200, first.body
    second = dial("cps-2", t)
    assert (second.status, second.body) == (403, {"authorized": False, "reason": "cps_limit"})
    assert account("acme").active_calls == 1 and account("acme").held == D("20.00")
    assert_no_call("cps-2")
    # AND the next second is a new budget
    third = dial("cps-3", t + 1)
    assert third.status == 200, third.body
    assert account("acme").active_calls == 2
    assert_ledger_invariant(ALL_DEMO)


def test_exhausted_daily_limit_is_403_daily_limit(client):
    # GIVEN acme with 100.00 but a daily limit of 2.00
    seed = demo_seed()
    seed_account(seed, "acme").update(balance="100.00", daily_limit="2.00")
    load(seed)
    # WHEN it dials THEN the daily budget sets max_duration: 2.00 / (2.00/60) = 60 s
    r = post_authorize(client, "1001", NUMBER, "day-1")
    assert r.status_code == 200 and body_of(r)["max_duration"] == 60
    # WHEN that minute is spent
    assert post_complete(client, "day-1", 60, "ANSWERED").status_code == 200
    assert account("acme").balance == D("98.00")
    # THEN the day's spend (2.00) reaches the limit and the next call is refused for it, not for funds
    refused(post_authorize(client, "1001", NUMBER, "day-2"), 403, "daily_limit")
    assert account("acme").held == 0
    assert_ledger_invariant(ALL_DEMO)


# --- 12. the Lambda function URL handler ----------------------------------------------------------------

def url_event(path, body, key=DEMO_KEY, method="POST", b64=False) -> dict:
    raw = json.dumps(body) if not isinstance(body, str) else body
    hdrs = {"content-type": "application/json"}
    if key is not None:
        hdrs["x-api-key"] = key
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": hdrs,
        "requestContext": {"http": {"method": method, "path": path}},
        "body": base64.b64encode(raw.encode()).decode() if b64 else raw,
        "isBase64Encoded": b64,
    }


class FakeLambdaContext:
    """What the Lambda runtime passes (powertools' inject_lambda_context reads these)."""
    function_name = "cascade-dev-switch"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:cascade-dev-switch"
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/cascade-dev-switch"
    log_stream_name = "stream"

    @staticmethod
    def get_remaining_time_in_millis():
        return 30_000


def invoke(event):
    from chalicelib.entrypoints.switch import switch_function
    response = switch_function(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"], parse_float=D)


def test_function_url_handler_answers_like_the_routes(client):
    load(demo_seed())

    # GIVEN shortly (6 s of credit) authorized via the route, then released (BUSY: nothing charged)
    via_route = body_of(post_authorize(client, "1002", NUMBER, "route@host"))
    assert post_complete(client, "route@host", 0, "BUSY").status_code == 200
    # WHEN the same request arrives through the function URL (payload 2.0) under another call id
    status, via_url = invoke(url_event("/authorize", {"account": "1002", "destination": NUMBER,
                                                      "call_id": "abc@host"}))
    # THEN the answer is the route's, call id aside
    assert status == 200, via_url
    assert via_url["call_id"] == "abc@host" and via_url["max_duration"] == 6
    assert {**via_url, "call_id": "route@host"} == via_route
    # AND a retry through the route is deduplicated against it
    assert body_of(post_authorize(client, "1002", NUMBER, "abc@host")) == via_url
    assert account("shortly").held == D("0.20")

    # WHEN the call is completed through the function URL with a url-encoded call id (and a base64 body)
    status, result = invoke(url_event("/calls/abc%40host/complete", {"billsec": 6, "disposition": "ANSWERED"},
                                      b64=True))
    # THEN it is billed: 2.00 x 6/60 = 0.20
    assert status == 200, result
    assert result["call_id"] == "abc@host" and D(result["charged"]) == D("0.20")
    assert account("shortly").balance == 0 and account("shortly").held == 0

    # AND a retry of the completion through the route returns the same recorded result
    assert body_of(post_complete(client, "abc@host", 6, "ANSWERED")) == result
    assert len(call_entries("shortly")) == 1

    # AND errors map the same way
    assert invoke(url_event("/authorize", {"account": "1001", "destination": NUMBER, "call_id": "x"},
                            key=None))[0] == 401
    assert invoke(url_event("/calls/nope/complete", {"billsec": 1, "disposition": "ANSWERED"}))[0] == 404
    status, answer = invoke(url_event("/authorize", "not json"))
    assert status == 400 and answer["field"] == "body"
    status, answer = invoke(url_event("/authorize", {"account": "9999", "destination": NUMBER, "call_id": "y"}))
    assert (status, answer) == (403, {"authorized": False, "reason": "account_unknown"})
    assert invoke(url_event("/authorize", {}, method="GET"))[0] == 405
    assert invoke(url_event("/elsewhere", {}))[0] == 404

    assert_ledger_invariant(ALL_DEMO)


@pytest.mark.parametrize("call_id", ["a%40b", "x/y", "sp ace", "plus+1", "\u00e9t\u00e9@h\u00f4te"])
def test_odd_call_ids_round_trip_through_the_route_and_the_function_url(client, call_id):
    # a call id is opaque: whatever the switch sends, url-encoded once in the path, finds its call
    load(demo_seed())
    assert post_authorize(client, "1002", NUMBER, call_id).status_code == 200
    r = post_complete(client, call_id, 0, "BUSY")
    assert r.status_code == 200, r.body
    assert body_of(r)["call_id"] == call_id
    status, result = invoke(url_event(f"/calls/{quote(call_id, safe='')}/complete",
                                      {"billsec": 0, "disposition": "BUSY"}))
    assert (status, result["call_id"]) == (200, call_id)
    assert account("shortly").held == 0 and account("shortly").active_calls == 0


def test_concurrent_calls_cannot_together_exceed_the_daily_limit(client):
    # GIVEN acme with 100.00 but a daily limit of 2.00 (= 60 s at 2.00/min)
    seed = demo_seed()
    seed_account(seed, "acme").update(balance="100.00", daily_limit="2.00")
    load(seed)
    # WHEN three calls are authorized before any completes, and each uses all it was granted
    granted = {}
    for call_id in ("day-a", "day-b", "day-c"):
        r = post_authorize(client, "1001", NUMBER, call_id)
        if r.status_code == 200:
            granted[call_id] = body_of(r)["max_duration"]
        else:
            assert body_of(r)["reason"] == "daily_limit"
    for call_id, seconds in granted.items():
        assert post_complete(client, call_id, seconds, "ANSWERED").status_code == 200
    # THEN the day's spend stays within the limit: 100.00 - balance <= 2.00
    assert D("100.00") - account("acme").balance <= D("2.00"), granted
    assert_ledger_invariant(ALL_DEMO)


def test_absurd_billsec_is_a_400_not_a_500(client):
    load(demo_seed())
    assert post_authorize(client, "1001", NUMBER, "huge-1").status_code == 200
    r = post_complete(client, "huge-1", 10**30, "ANSWERED")
    assert call_item("huge-1").status == "held" and account("acme").balance == D("20.00")   # nothing written
    assert r.status_code == 400, r.body
    assert body_of(r)["field"] == "billsec"


def test_grants_denials_and_hold_retries_are_counted_as_emf_metrics(client, capsys, monkeypatch):
    # GIVEN the demo tree and the stage's metrics namespace
    monkeypatch.setenv("CASCADE_METRICS_NAMESPACE", "Cascade/test")
    load(demo_seed())
    capsys.readouterr()
    # WHEN one call is granted and one refused for an unknown account
    assert post_authorize(client, "1001", NUMBER, "m-1").status_code == 200
    assert post_authorize(client, "nobody", NUMBER, "m-2").status_code == 403
    # THEN one EMF line says Grants and one says Denials with the reason as a dimension
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    seen = [(m["_aws"]["CloudWatchMetrics"][0]["Namespace"], m["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
             m.get("reason")) for m in lines]
    assert seen == [("Cascade/test", "Grants", None), ("Cascade/test", "Denials", "account_unknown")]
