"""The concurrency races again, over HTTP against `make run`'s stack, with 240 clients at once: the
local API server must take a switch lab's burst without dropping a connection (chalice local's
backlog of 5 reset about 50 concurrent clients), and the money must come out exact."""
import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from urllib.parse import quote, urlsplit

import pytest

from tests.e2e.stack import LocalStack
from tests.integration.test_concurrency import HOLD, race_seed

KEY = "csk_http_race_key"
CLIENTS = 240
K = 37                      # the reseller's funds cover exactly K holds


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    seed = race_seed(clients=CLIENTS, holds=K, key=KEY)
    path = tmp_path_factory.mktemp("seed") / "race_seed.json"
    path.write_text(json.dumps(seed))
    # Exact counts at the HTTP level need every hold on the reseller's own item, so this stack runs no
    # rebalancer; races with escrow refills and recalls are tests/integration/test_escrow.py's (never
    # more than the funds cover; exactly that after a recall).
    running = LocalStack(seed=path, table_prefix="cascade-race-", escrow=False)
    yield running
    running.stop()


def post(base: str, path: str, body: dict):
    """One request on its own connection, as many switches would open them."""
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    try:
        connection.request("POST", path, body=json.dumps(body),
                           headers={"Content-Type": "application/json", "X-Api-Key": KEY})
        response = connection.getresponse()
        return response.status, json.loads(response.read(), parse_float=Decimal)
    finally:
        connection.close()


def burst(fn, n):
    """n requests released at once; a connection error is returned, not raised, so it is counted."""
    barrier = threading.Barrier(n)

    def go(i):
        barrier.wait()
        try:
            return fn(i)
        except OSError as exc:     # reset, refused, timed out
            return "connection error", repr(exc)
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(go, range(n)))


def item(stack, pk, sk="#"):
    return stack.table("core").get_item(Key={"pk": pk, "sk": sk}, ConsistentRead=True)["Item"]


def ledger_sum(stack, account_id):
    return stack.wallet_sum(account_id)


def test_240_clients_at_once_over_http_get_exactly_the_holds_the_funds_cover(stack):
    # WHEN 240 clients under one reseller (funded for 37 holds) dial at the same instant
    answers = burst(lambda i: post(stack.base, "/authorize", {
        "account": f"s{i}", "destination": "15551230001", "call_id": f"race-{i}@lab"}), CLIENTS)

    # THEN no connection was dropped, and exactly 37 were granted
    assert [a for a in answers if a[0] == "connection error"] == []
    granted = [body for status, body in answers if status == 200]
    assert len(granted) == K and all(b["max_duration"] == 600 for b in granted)
    assert {(s, b["reason"]) for s, b in answers if s != 200} == {(402, "insufficient_funds")}
    reseller = item(stack, "ACC#r")
    assert (reseller["held"], reseller["available"], reseller["active_calls"]) == (HOLD * K, 0, K)

    # WHEN every granted call completes at once (30 s, billed 60 s: client 2.00, reseller 1.00)
    done = burst(lambda i: post(stack.base, f"/calls/{quote(granted[i]['call_id'], safe='')}/complete",
                                {"billsec": 30, "disposition": "ANSWERED"}), K)

    # THEN each is billed once and every balance equals its ledger
    assert [d for d in done if d[0] != 200] == []
    assert {d[1]["charged"] for d in done} == {"2.000000"}
    reseller = item(stack, "ACC#r")
    assert reseller["balance"] == HOLD * K - K and reseller["held"] == 0 and reseller["active_calls"] == 0
    sums = stack.wallet_sums()          # one scan, not one per account
    assert reseller["balance"] == sums["wallet:r"]
    for i in range(CLIENTS):
        client = item(stack, f"ACC#c{i}")
        assert client["held"] == 0 and client["active_calls"] == 0
        assert client["balance"] == sums.get(f"wallet:c{i}", 0)


def test_one_call_id_authorized_and_completed_200_times_at_once_is_held_and_billed_once(stack):
    # GIVEN the reseller has 333.00 left after the previous test: room for 33 more holds
    before = item(stack, "ACC#c7")["balance"]
    answers = burst(lambda i: post(stack.base, "/authorize", {
        "account": "s7", "destination": "15551230001", "call_id": "same@lab"}), 200)
    assert [a for a in answers if a[0] == "connection error"] == []
    assert {s for s, _ in answers} == {200}
    assert len({json.dumps(b, sort_keys=True) for _, b in answers}) == 1
    assert item(stack, "ACC#c7")["active_calls"] == 1 and item(stack, "ACC#r")["held"] == HOLD

    results = burst(lambda i: post(stack.base, "/calls/same%40lab/complete",
                                   {"billsec": 90, "disposition": "ANSWERED"}), 200)
    assert {s for s, _ in results} == {200}
    assert len({json.dumps(b, sort_keys=True) for _, b in results}) == 1
    # 90 s billed as 120 s (60/60): 4.00 once
    client = item(stack, "ACC#c7")
    assert client["balance"] == before - Decimal("4.00") == ledger_sum(stack, "c7")
    assert client["held"] == 0 and item(stack, "ACC#r")["held"] == 0


def test_a_replayed_call_id_from_200_other_clients_at_once_gets_nothing(stack):
    # GIVEN a call held for s1 (funds back after the completions above: 37 x 1.00 were spent of 370)
    status, first = post(stack.base, "/authorize", {"account": "s1", "destination": "15551230001",
                                                    "call_id": "victim@lab"})
    assert status == 200, first
    held = item(stack, "ACC#r")["held"]
    # WHEN 200 other clients replay its call id at once
    answers = burst(lambda i: post(stack.base, "/authorize", {
        "account": f"s{i + 2}", "destination": "15551230001", "call_id": "victim@lab"}), 200)
    # THEN every one is refused, and nothing more is held anywhere
    assert {(s, b.get("reason")) for s, b in answers} == {(409, "call_id_in_use")}
    assert item(stack, "ACC#r")["held"] == held
    assert sum(item(stack, f"ACC#c{i + 2}")["active_calls"] for i in range(200)) == 0
