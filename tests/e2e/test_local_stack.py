"""`make run`'s stack for real: moto server behind its lock, chalice local, HTTP from outside."""
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.stack import LocalStack

KEY = "csk_demo_local_only_not_for_production"


@pytest.fixture(scope="module")
def stack():
    running = LocalStack()
    yield running.base, running.lines
    running.stop()


def post(base, path, body, key=KEY):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **({"X-Api-Key": key} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_banner_gives_the_url_the_key_and_a_curl_line(stack):
    base, lines = stack
    banner = "".join(lines)
    assert base in banner and KEY in banner and "curl -s -X POST " + base + "/authorize" in banner


def test_a_demo_call_is_authorized_and_billed_over_http(stack):
    base, _ = stack
    status, body = post(base, "/authorize", {"account": "1001", "destination": "15551230001", "call_id": "e2e-1@host"})
    assert status == 200 and body["max_duration"] == 600
    status, body = post(base, "/calls/e2e-1%40host/complete", {"billsec": 42, "disposition": "ANSWERED"})
    assert status == 200 and body["charged"] == "1.400000"      # 42 s at 2.00/min, 1/1
    status, again = post(base, "/calls/e2e-1%40host/complete", {"billsec": 42, "disposition": "ANSWERED"})
    assert status == 200 and again == body


def test_refusals_over_http(stack):
    base, _ = stack
    assert post(base, "/authorize", {"account": "1001", "destination": "1555", "call_id": "k"}, key="wrong")[0] == 401
    assert post(base, "/authorize", {"account": "1001", "call_id": "k"}) == \
        (400, {"error": "invalid_request", "field": "destination",
               "message": "destination is required and must be a non-empty string"})
    assert post(base, "/authorize", {"account": "1001", "destination": "881612345678", "call_id": "sat"}) == \
        (403, {"authorized": False, "reason": "no_rate"})
    assert post(base, "/calls/nope/complete", {"billsec": 1, "disposition": "ANSWERED"})[0] == 404


def test_concurrent_calls_over_http_on_funds_for_one(stack):
    base, _ = stack
    # 'shortly' (SIP 1002) has 0.20: at 2.00/min, 1/1, that is 6 s, held whole by the first granted call
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda i: post(base, "/authorize", {
            "account": "1002", "destination": "15551230001", "call_id": f"race-{i}@host"}), range(12)))
    granted = [b for s, b in results if s == 200]
    assert len(granted) == 1 and granted[0]["max_duration"] == 6
    assert sorted({s for s, _ in results}) == [200, 402]
