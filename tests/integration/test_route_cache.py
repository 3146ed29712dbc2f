"""The identity's cached route is an optimisation, never the truth: when the tree or a tariff
assignment changes, authorize notices, prices from the accounts it read, and repairs the cache."""
from decimal import Decimal

from chalicelib.adapters.dynamo.models import AccountItem, CallItem, IdentityItem
from chalicelib.adapters.dynamo.store import DynamoStore, call_key, to_call
from chalicelib.adapters.dynamo.writer import tariff_items
from chalicelib.domain.tariffs import Rate, Tariff
from chalicelib.services.authorize_call import AuthorizeRequest
from tests.integration.helpers import authorize_http as authorize_call
from chalicelib.services.complete_call import complete_call
from chalicelib.services.switch_keys import key_hash
from tests.conftest import DEMO_KEY


def authorize(call_id, account="1001"):
    return authorize_call(DynamoStore(), AuthorizeRequest(account, "15551230001", call_id), key_hash(DEMO_KEY))


def hold_of(call_id, account_id):
    levels = to_call(CallItem.get(*call_key(call_id))).levels
    return next(l.hold for l in levels if l.account_id == account_id)


def test_given_a_reassigned_tariff_when_authorizing_then_the_new_price_is_held_and_the_route_repaired(demo):
    # GIVEN borealis moves cumulus from its 20% package to a flat 1.50/min tariff
    for item in tariff_items(Tariff("cumulus-flat", owner="borealis"),
                             [Rate("1555", Decimal("1.50"), initial=1, subsequent=1)]):
        item.save()
    cumulus = AccountItem.get("ACC#cumulus", "#")
    cumulus.update(actions=[AccountItem.tariff_id.set("cumulus-flat")])

    # WHEN 1001 (acme, under cumulus) dials
    answer = authorize("after-change@x")

    # THEN cumulus is held at 1.50/min (acme's 20.00 at 2.00/min gives 600 s -> 15.00), not 1.44/min
    assert answer.status == 200 and answer.body["max_duration"] == 600
    assert hold_of("after-change@x", "cumulus") == Decimal("15.00")
    route = IdentityItem.get("ID#1001", "#").route
    assert ["cumulus", "cumulus-flat"] in route["chain"]
    # AND once that call ends unanswered, the repaired cache serves the next one at the same price
    complete_call(DynamoStore(), "after-change@x", 0, "NO ANSWER", key_hash(DEMO_KEY))
    assert authorize("next@x").status == 200 and hold_of("next@x", "cumulus") == Decimal("15.00")


def test_given_a_client_moved_to_another_reseller_when_authorizing_then_the_new_chain_is_held(demo):
    # GIVEN acme is moved from cumulus to borealis directly, on borealis' own retail price list
    for item in tariff_items(Tariff("borealis-retail", owner="borealis"),
                             [Rate("1", Decimal("2.50"), initial=1, subsequent=1)]):
        item.save()
    AccountItem.get("ACC#acme", "#").update(actions=[AccountItem.parent_id.set("borealis"),
                                                      AccountItem.tariff_id.set("borealis-retail")])
    before = AccountItem.get("ACC#cumulus", "#")

    answer = authorize("moved@x")

    # THEN the call is held at acme and borealis, and cumulus no longer takes part
    assert answer.status == 200 and answer.body["rate"] == "2.500000"
    levels = [l.account_id for l in to_call(CallItem.get(*call_key("moved@x"))).levels]
    assert levels == ["acme", "borealis", "atlas", "admin"]
    after = AccountItem.get("ACC#cumulus", "#")
    assert after.held == before.held and after.active_calls == before.active_calls


def test_given_the_client_is_deleted_when_authorizing_then_account_unknown(demo):
    AccountItem.get("ACC#acme", "#").delete()
    answer = authorize("gone@x")
    assert answer.status == 403 and answer.body == {"authorized": False, "reason": "account_unknown"}


def test_given_a_client_moved_under_a_new_parent_on_the_same_tariff_when_authorizing_then_it_is_rerouted(demo):
    # GIVEN shortly is moved from cumulus to a new reseller 'zeta' under borealis; zeta assigns shortly
    # the same tariff id, so only the parent link tells the cached route is stale
    from chalicelib.adapters.dynamo.writer import account_item
    from chalicelib.domain.accounts import Account
    account_item(Account("zeta", "reseller", "borealis", "cumulus-package", balance=Decimal("50"))).save()
    AccountItem.get("ACC#shortly", "#").update(actions=[AccountItem.parent_id.set("zeta")])
    # cumulus-retail is owned by cumulus, so zeta re-prices it at its own list
    for item in tariff_items(Tariff("cumulus-retail", owner="zeta"),
                             [Rate("1555", Decimal("2.0"), initial=1, subsequent=1)]):
        item.save()

    answer = authorize("moved-shortly@x", account="1002")

    assert answer.status == 200, answer.body
    levels = [l.account_id for l in to_call(CallItem.get(*call_key("moved-shortly@x"))).levels]
    assert levels == ["shortly", "zeta", "borealis", "atlas", "admin"]


def test_a_region_too_large_for_one_item_is_split_and_still_rates_calls(demo):
    # GIVEN borealis charges cumulus by a deck of 6,000 prefixes under 1555 (about 900 KB: three items' worth)
    from chalicelib.adapters.dynamo.models import RateGroupItem
    rates = [Rate(f"1555{i:04d}", Decimal("1.50"), name="x" * 40, initial=1, subsequent=1) for i in range(6000)]
    for item in tariff_items(Tariff("cumulus-deck", owner="borealis"), rates):
        item.save()
    groups = sorted(i.sk for i in RateGroupItem.query("TRF#cumulus-deck", RateGroupItem.sk.startswith("G#")))
    # THEN it is stored split by the fifth digit, one item per 1,000 prefixes
    assert groups == [f"G#1555{d}" for d in range(6)]
    AccountItem.get("ACC#cumulus", "#").update(actions=[AccountItem.tariff_id.set("cumulus-deck")])
    # WHEN 1001 dials 1555 123 0001 (prefix 15551230, in group 15551)
    answer = authorize("split-deck@x")
    # THEN cumulus is held at 1.50/min, as with a deck of one item
    assert answer.status == 200 and answer.body["max_duration"] == 600
    assert hold_of("split-deck@x", "cumulus") == Decimal("15.00")


def test_a_group_that_cannot_split_further_is_refused_by_name():
    import pytest
    from chalicelib.adapters.dynamo.writer import RateGroupTooLarge
    rates = [Rate(f"442000{i:06d}", Decimal("0.01"), name="x" * 40) for i in range(4000)]
    with pytest.raises(RateGroupTooLarge, match="442000"):
        tariff_items(Tariff("huge", owner="admin"), rates)
