"""The warm-Lambda cache (adapters/dynamo/cache.py): a warm authorize takes 2 round trips, and each
cached thing is stale for at most the cache time, no longer (the clock is the cache's own)."""
from decimal import Decimal

import pytest

from chalicelib.adapters.dynamo import cache
from chalicelib.adapters.dynamo.models import RateGroupItem, SwitchKeyItem
from chalicelib.adapters.dynamo.store import DynamoStore
from chalicelib.services.authorize_call import AuthorizeRequest, Authorized, Unauthorized, authorize_call
from chalicelib.services.complete_call import complete_call
from chalicelib.services.switch_keys import key_hash
from tests.conftest import DEMO_KEY
from tests.integration.test_round_trips import calls  # noqa: F401 (the round-trip counting fixture)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def warm(monkeypatch):
    monkeypatch.setenv("CASCADE_SWITCH_CACHE_SECONDS", "30")
    clock = Clock()
    monkeypatch.setattr(cache, "SWITCH_CACHE", cache.TtlCache(clock=clock))
    return clock


def dial(store, call_id, number="15551230001"):
    """Authorize, then hang up at once (acme's first hold takes all it has)."""
    answer = authorize_call(store, AuthorizeRequest("1001", number, call_id), key_hash(DEMO_KEY))
    if isinstance(answer, Authorized):
        complete_call(store, call_id, 0, "NO ANSWER", key_hash(DEMO_KEY))
    return answer


def test_a_warm_authorize_takes_two_round_trips_and_reads_no_tariff_item(demo, warm, calls):
    store = DynamoStore()
    assert isinstance(dial(store, "w-1"), Authorized)
    assert calls[:3] == ["BatchGetItem", "BatchGetItem", "TransactWriteItems"]
    calls.clear()
    assert isinstance(dial(store, "w-2"), Authorized)
    assert calls[:2] == ["BatchGetItem", "TransactWriteItems"]        # then the completion's two


def test_a_price_change_takes_effect_within_the_cache_time(demo, warm):
    store = DynamoStore()
    before = dial(store, "p-1").answer["rate"]
    for group in RateGroupItem.query("TRF#cumulus-retail"):
        rates = {p: [dict(v, price="3.0") for v in versions] for p, versions in group.rates.items()}
        group.update(actions=[RateGroupItem.rates.set(rates)])
    assert dial(store, "p-2").answer["rate"] == before            # within the cache time: the old price
    warm.now += 31
    assert Decimal(dial(store, "p-3").answer["rate"]) == Decimal("3.0")


def test_a_revoked_key_stops_working_within_the_cache_time(demo, warm):
    store = DynamoStore()
    assert isinstance(dial(store, "k-1"), Authorized)
    item = SwitchKeyItem.get(f"KEY#{key_hash(DEMO_KEY)}", "#")
    item.update(actions=[SwitchKeyItem.status.set("revoked")])
    warm.now += 31
    with pytest.raises(Unauthorized):
        dial(store, "k-2")


def test_money_is_never_cached_a_balance_change_counts_on_the_next_call(demo, warm):
    from chalicelib.adapters.dynamo.models import AccountItem
    store = DynamoStore()
    assert isinstance(dial(store, "m-1"), Authorized)
    AccountItem.get("ACC#acme", "#").update(actions=[AccountItem.status.set("suspended")])
    denied = dial(store, "m-2")
    assert denied.reason == "account_suspended"
