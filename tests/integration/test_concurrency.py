"""Races against moto wrapped in one global lock (tests/conftest.py), which behaves like DynamoDB's
per-request atomicity. Without the lock moto overdraws; with it, the conditions must hold exactly."""
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from chalicelib.adapters.dynamo.models import AccountItem
from chalicelib.adapters.dynamo.store import DynamoStore
from chalicelib.services.authorize_call import AuthorizeRequest
from tests.integration.helpers import authorize_http as authorize_call
from chalicelib.services.complete_call import complete_call
from chalicelib.services.switch_keys import key_hash
from tests.conftest import load
from tests.integration.helpers import ledger

KEY = "csk_race"
CLIENTS = 100
K = 25                      # the reseller's funds cover exactly K holds
HOLD = Decimal("10")        # 600 s cap at 1.00/min


def race_seed(clients: int = CLIENTS, holds: int = K, key: str = KEY) -> dict:
    """One reseller funded for exactly ``holds`` holds of HOLD, with ``clients`` clients (SIP s<i>)."""
    accounts = [{"id": f"c{i}", "role": "client", "parent": "r", "tariff": "retail", "balance": "100",
                 "sip_users": [f"s{i}"]} for i in range(clients)]
    return {
        "settings": {"max_duration": 600},
        "tariffs": [
            {"id": "cost", "owner": "admin", "rates": [{"prefix": "1", "price": "0.5"}]},
            {"id": "wholesale", "owner": "admin", "rates": [{"prefix": "1", "price": "1.00"}]},
            {"id": "retail", "owner": "r", "rates": [{"prefix": "1", "price": "2.00"}]},
        ],
        "accounts": [{"id": "admin", "role": "admin", "tariff": "cost"},
                     {"id": "r", "role": "reseller", "parent": "admin", "tariff": "wholesale",
                      "balance": str(HOLD * holds)}] + accounts,
        "switch_keys": [{"id": "race", "key": key}],
    }


def balances(ids):
    return {i: AccountItem.get(f"ACC#{i}", "#") for i in ids}


def ledger_sum(account_id):
    return sum((e.amount for e in ledger(account_id)), Decimal(0))


def race(fn, n):
    barrier = threading.Barrier(n)

    def go(i):
        barrier.wait()
        return fn(i)
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(go, range(n)))


def test_given_funds_for_k_holds_when_100_clients_dial_at_once_then_exactly_k_succeed(aws):
    load(race_seed())
    store, digest = DynamoStore(), key_hash(KEY)

    answers = race(lambda i: authorize_call(
        store, AuthorizeRequest(f"s{i}", "15551230001", f"call-{i}@race"), digest), CLIENTS)

    granted = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status != 200]
    assert len(granted) == K
    assert all(a.body["max_duration"] == 600 for a in granted)
    assert {a.status for a in refused} == {402} and {a.body["reason"] for a in refused} == {"insufficient_funds"}
    reseller = AccountItem.get("ACC#r", "#")
    assert reseller.held == HOLD * K and reseller.available == 0 and reseller.balance == HOLD * K
    assert reseller.active_calls == K
    clients = balances([f"c{i}" for i in range(CLIENTS)])
    assert sum(c.held for c in clients.values()) == Decimal("20") * K   # 600 s at 2.00/min each
    assert sum(c.active_calls for c in clients.values()) == K

    # WHEN every granted call completes after 30 s, concurrently
    done = race(lambda i: complete_call(store, granted[i].body["call_id"], 30, "ANSWERED", digest), K)

    # 30 s answered, 60/60 increments -> 60 s billed: client 2.00, reseller 1.00 each
    assert all(r["charged"] == "2.000000" for r in done)
    reseller = AccountItem.get("ACC#r", "#")
    assert reseller.balance == HOLD * K - Decimal("1.00") * K
    assert reseller.held == 0 and reseller.active_calls == 0
    assert reseller.available == reseller.balance
    for account_id, item in balances(["r"] + [f"c{i}" for i in range(CLIENTS)]).items():
        assert item.balance == ledger_sum(account_id), account_id
        assert item.available == item.balance - item.held, account_id


def test_given_one_call_when_20_completions_race_then_it_is_billed_once(aws):
    load(race_seed())
    store, digest = DynamoStore(), key_hash(KEY)
    answer = authorize_call(store, AuthorizeRequest("s1", "15551230001", "dup@race"), digest)
    assert answer.status == 200

    results = race(lambda i: complete_call(store, "dup@race", 90, "ANSWERED", digest), 20)

    # 90 s -> 120 s billed: client 4.00, reseller 2.00
    assert len({r["charged"] for r in results}) == 1 and results[0]["charged"] == "4.000000"
    client, reseller = AccountItem.get("ACC#c1", "#"), AccountItem.get("ACC#r", "#")
    assert client.balance == Decimal("96") and client.held == 0 and client.active_calls == 0
    assert reseller.balance == HOLD * K - Decimal("2") and reseller.held == 0
    assert len(ledger("c1")) == 2      # opening + one call
    assert client.balance == ledger_sum("c1") and reseller.balance == ledger_sum("r")


def test_given_one_call_id_when_authorized_20_times_at_once_then_held_once(aws):
    load(race_seed())
    store, digest = DynamoStore(), key_hash(KEY)

    answers = race(lambda i: authorize_call(
        store, AuthorizeRequest("s7", "15551230001", "same@race"), digest), 20)

    assert all(a.status == 200 for a in answers)
    assert len({a.body["max_duration"] for a in answers}) == 1
    client, reseller = AccountItem.get("ACC#c7", "#"), AccountItem.get("ACC#r", "#")
    assert client.held == Decimal("20") and client.active_calls == 1
    assert reseller.held == HOLD and reseller.active_calls == 1
