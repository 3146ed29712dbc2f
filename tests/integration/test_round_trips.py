"""The switch path's DynamoDB budget: authorize 3 calls (one of them the transaction), complete 2.
Counted at PynamoDB's single exit to botocore, so every request is seen."""

from chalicelib.adapters.dynamo.models import IdentityItem
from chalicelib.adapters.dynamo.store import DynamoStore
from chalicelib.services.authorize_call import AuthorizeRequest
from tests.integration.helpers import authorize_http as authorize_call
from tests.integration.helpers import calls  # noqa: F401 (fixture)
from chalicelib.services.complete_call import complete_call
from chalicelib.services.switch_keys import key_hash
from tests.conftest import DEMO_KEY


def test_authorize_takes_three_round_trips_and_complete_two(demo, calls):
    store, digest = DynamoStore(), key_hash(DEMO_KEY)
    assert authorize_call(store, AuthorizeRequest("1001", "15551230001", "rt@x"), digest).status == 200
    assert calls == ["BatchGetItem", "BatchGetItem", "TransactWriteItems"]
    calls.clear()
    complete_call(store, "rt@x", 30, "ANSWERED", digest)
    assert calls == ["BatchGetItem", "TransactWriteItems"]


def test_a_stale_route_costs_extra_reads_once_then_the_budget_is_back(demo, calls):
    store, digest = DynamoStore(), key_hash(DEMO_KEY)
    # The route cached on the caller's identity names a tariff cumulus no longer has (as after a change)
    identity = IdentityItem.get("ID#1001", "#")
    route = identity.route
    route["chain"][1][1] = "a-tariff-since-replaced"
    identity.update(actions=[IdentityItem.route.set(route)])
    calls.clear()
    assert authorize_call(store, AuthorizeRequest("1001", "15551230001", "s1@x"), digest).status == 200
    assert len(calls) > 3 and calls[-1] == "TransactWriteItems"   # walked the tree, then repaired the cache
    complete_call(store, "s1@x", 0, "BUSY", digest)
    calls.clear()
    assert authorize_call(store, AuthorizeRequest("1001", "15551230001", "s2@x"), digest).status == 200
    assert calls == ["BatchGetItem", "BatchGetItem", "TransactWriteItems"]
