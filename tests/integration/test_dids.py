"""DIDs from the outside: the admin creates them, each level assigns them down the tree at its own prices,
an inbound call to one is billed at every level like an outbound call, and each level sees only its own
part of the DID and of its history."""
import json
from decimal import Decimal

import pytest

from chalicelib.adapters.dynamo.store import DynamoStore
from chalicelib.services.authorize_call import AuthorizeRequest
from chalicelib.services.switch_keys import key_hash
from tests.conftest import DEMO_KEY
from tests.integration.helpers import (account, assert_ledger_invariant, authorize_http, body_of,  # noqa: F401
                                       call_item, calls, client, headers, post_complete)
from tests.integration.portal_helpers import Portal, table_snapshot

CHAIN = ["admin", "atlas", "borealis", "cumulus", "acme"]
DID = "15550001234"


def inbound(client, destination, call_id, key=DEMO_KEY, **extra):
    body = {"direction": "inbound", "destination": destination, "call_id": call_id, **extra}
    response = client.http.post("/authorize", headers=headers(key), body=json.dumps(body))
    return response.status_code, body_of(response)


def create(portal, number=DID, **fields):
    body = {"number": number, "country": "US", "cost": {"monthly": "0.50", "per_minute": "0.002"},
            "setup": "1.00", "monthly": "1.50", "per_minute": "0.004", **fields}
    return portal("admin", "POST", "/accounts/admin/dids", body)


def hand_down(portal, number=DID, prices=("0.004", "0.006", "0.008", "0.012")):
    """admin -> atlas -> borealis -> cumulus -> acme, each at the next per-minute price."""
    for giver, to, price in zip(CHAIN, CHAIN[1:], prices):
        portal.ok(giver, "POST", f"/accounts/{giver}/dids/{number}/assign",
                  {"to": to, "per_minute": price, "monthly": "2.00"})


@pytest.fixture
def portal(client, demo, monkeypatch):
    monkeypatch.setenv("CASCADE_SWITCH_CACHE_SECONDS", "0")
    return Portal(client)


def test_a_did_handed_down_the_tree_bills_an_inbound_call_at_every_level(portal, client):
    # GIVEN the admin creates a DID and it is handed down to acme, each level at its own price
    status, created = create(portal, number="+1 (555) 000-1234")
    assert status == 201, created
    assert created["number"] == DID and created["cost"]["per_minute"] == "0.002000"
    assert created["offer"] == {"setup": "1.000000", "monthly": "1.500000", "per_minute": "0.004000"}
    hand_down(portal)
    before = {a: account(a).balance for a in CHAIN}
    # WHEN a caller dials the DID and talks 90 s (billed per minute: 120 s)
    status, answer = inbound(client, "+15550001234", "in-1", caller_id="+442071234567")
    assert status == 200, answer
    assert answer["direction"] == "inbound" and answer["client_id"] == "acme" and answer["number"] == DID
    assert answer["rate"] == "0.012000" and answer["increments"] == [60, 60]
    assert post_complete(client, "in-1", 90, "ANSWERED").status_code == 200
    # THEN every level paid its parent two minutes at its own price; the admin's cost is not charged
    paid = {a: before[a] - account(a).balance for a in CHAIN}
    assert paid == {"admin": Decimal(0), "atlas": Decimal("0.008"), "borealis": Decimal("0.012"),
                    "cumulus": Decimal("0.016"), "acme": Decimal("0.024")}
    record = call_item("in-1")
    assert record.direction == "inbound" and record.client_id == "acme"
    assert [(l.account_id, l.rate.price) for l in record.levels] == [
        ("acme", Decimal("0.012")), ("cumulus", Decimal("0.008")), ("borealis", Decimal("0.006")),
        ("atlas", Decimal("0.004")), ("admin", Decimal("0.002"))]
    assert_ledger_invariant(CHAIN)
    # AND the repeat of the authorize answers the same bytes, and nothing is held twice
    status, again = inbound(client, "15550001234", "in-1")
    assert status == 409 and again["reason"] == "call_ended"


def test_each_level_sees_its_own_prices_and_never_those_above_it(portal):
    assert create(portal)[0] == 201
    hand_down(portal)
    atlas = portal.ok("atlas", "GET", f"/accounts/atlas/dids/{DID}")
    assert atlas["buy"]["per_minute"] == "0.004000" and atlas["sell"]["per_minute"] == "0.006000"
    assert atlas["assigned_to"] == "borealis" and atlas["holder"] == "acme"
    assert "cost" not in atlas and "offer" not in atlas
    acme = portal.ok("acme", "GET", f"/accounts/acme/dids/{DID}")
    assert acme["buy"]["per_minute"] == "0.012000" and acme["assigned_to"] is None and acme["sell"] is None
    assert "0.008000" not in json.dumps(acme)
    # a reseller reads its client's DID at the client's level, which is its own sell price
    assert portal.ok("cumulus", "GET", f"/accounts/acme/dids/{DID}")["buy"]["per_minute"] == "0.012000"
    # lists: the DID (with the demo's 15550100100) in every holder's list, none in a stranger's
    for holder in CHAIN:
        assert [d["number"] for d in portal.ok(holder, "GET", f"/accounts/{holder}/dids")["items"]] == \
            ["15550001234", "15550100100"]
    assert portal.ok("admin", "GET", "/accounts/delta/dids")["items"] == []
    assert portal("delta", "GET", f"/accounts/delta/dids/{DID}")[0] == 404
    assert portal("delta", "GET", "/accounts/acme/dids")[0] == 404          # the wall
    # history: acme sees its own assignment; cumulus sees it too, with acme's price, and nothing above
    acme_events = portal.ok("acme", "GET", f"/accounts/acme/dids/{DID}/history")["items"]
    assert [(e["event"], e["account_id"], e["prices"]["per_minute"], e["by"]) for e in acme_events] == [
        ("assigned", "acme", "0.012000", None)]                # cumulus assigned it: above acme's wall
    assert portal.ok("cumulus", "GET", f"/accounts/acme/dids/{DID}/history")["items"][0]["by"] == "cumulus"
    cumulus_events = portal.ok("cumulus", "GET", f"/accounts/cumulus/dids/{DID}/history")["items"]
    assert [e["account_id"] for e in cumulus_events] == ["cumulus", "acme"]
    admin_events = portal.ok("admin", "GET", f"/accounts/admin/dids/{DID}/history")["items"]
    assert [e["event"] for e in admin_events] == ["created"] + ["assigned"] * 4
    assert portal("delta", "GET", f"/accounts/delta/dids/{DID}/history")[0] == 404


def test_assigning_to_a_client_deeper_down_has_the_levels_between_pass_it_on(portal, client):
    assert create(portal)[0] == 201
    # the admin gives it straight to acme, four levels down: atlas, borealis and cumulus hold it at 0.004
    portal.ok("admin", "POST", f"/accounts/admin/dids/{DID}/assign", {"to": "acme"})
    for holder in ("atlas", "borealis", "cumulus"):
        view = portal.ok(holder, "GET", f"/accounts/{holder}/dids/{DID}")
        assert view["buy"] == view["sell"] and view["buy"]["per_minute"] == "0.004000"
    status, answer = inbound(client, DID, "deep-1")
    assert status == 200 and answer["rate"] == "0.004000" and answer["client_id"] == "acme"


def test_unassign_returns_the_did_to_the_pool_and_calls_to_it_are_refused(portal, client):
    assert create(portal)[0] == 201
    hand_down(portal)
    # cumulus takes it back from acme: acme's holding ends, calls find no client
    view = portal.ok("cumulus", "POST", f"/accounts/cumulus/dids/{DID}/unassign")
    assert view["assigned_to"] is None
    assert portal("acme", "GET", f"/accounts/acme/dids/{DID}")[0] == 404
    assert DID not in [d["number"] for d in portal.ok("acme", "GET", "/accounts/acme/dids")["items"]]
    status, answer = inbound(client, DID, "un-1")
    assert (status, answer["reason"]) == (403, "did_unassigned")
    # a second unassign has nothing to take back
    status, body = portal("cumulus", "POST", f"/accounts/cumulus/dids/{DID}/unassign")
    assert (status, body["error"]) == (409, "not_assigned")
    # the admin takes it back from everyone below it at once
    portal.ok("admin", "POST", f"/accounts/admin/dids/{DID}/unassign")
    for holder in CHAIN[1:]:
        assert DID not in [d["number"] for d in portal.ok(holder, "GET", f"/accounts/{holder}/dids")["items"]]
    events = portal.ok("admin", "GET", f"/accounts/admin/dids/{DID}/history")["items"]
    assert [e["event"] for e in events][-2:] == ["unassigned", "unassigned"]
    # cumulus still sees the history of its own time with the DID
    assert [e["event"] for e in portal.ok("cumulus", "GET", f"/accounts/cumulus/dids/{DID}/history")["items"]] \
        == ["assigned", "assigned", "unassigned", "unassigned"]


def test_closed_unknown_and_badly_written_dids_are_refused(portal, client):
    status, answer = inbound(client, "15559999999", "x-1")
    assert (status, answer["reason"]) == (403, "did_unknown")
    status, answer = inbound(client, "not a number", "x-2")
    assert (status, answer["reason"]) == (403, "invalid_destination")
    assert create(portal)[0] == 201
    hand_down(portal)
    status, body = portal("admin", "DELETE", f"/accounts/admin/dids/{DID}")
    assert (status, body["error"]) == (409, "did_assigned")
    portal.ok("admin", "POST", f"/accounts/admin/dids/{DID}/unassign")
    assert portal("admin", "DELETE", f"/accounts/admin/dids/{DID}")[0] == 204
    status, answer = inbound(client, DID, "x-3")
    assert (status, answer["reason"]) == (403, "did_closed")
    assert [d["number"] for d in portal.ok("admin", "GET", "/accounts/admin/dids")["items"]] == ["15550100100"]
    # the number can be created again, with its history kept
    assert create(portal, per_minute="0.005")[0] == 201
    events = portal.ok("admin", "GET", f"/accounts/admin/dids/{DID}/history")["items"]
    assert [e["event"] for e in events][0] == "created" and events[-1]["event"] == "created"
    assert "closed" in [e["event"] for e in events]


def test_a_suspended_client_or_one_without_money_gets_no_inbound_call(portal, client):
    assert create(portal)[0] == 201
    hand_down(portal)
    # shortly (0.20 of credit) gets a DID priced at 1.00 a minute: refused for funds, 402
    assert create(portal, number="15550002222", per_minute="0.5")[0] == 201
    portal.ok("admin", "POST", "/accounts/admin/dids/15550002222/assign", {"to": "cumulus"})
    portal.ok("cumulus", "POST", "/accounts/cumulus/dids/15550002222/assign", {"to": "shortly", "per_minute": "1.00"})
    status, answer = inbound(client, "15550002222", "poor-1")
    assert (status, answer["reason"]) == (402, "insufficient_funds")
    # a suspended client is refused like on outbound calls
    portal.ok("cumulus", "POST", "/accounts/acme/suspend")
    status, answer = inbound(client, DID, "susp-1")
    assert (status, answer["reason"]) == (403, "account_suspended")


def test_the_demo_seed_hands_a_did_down_to_acme(portal, client):
    view = portal.ok("cumulus", "GET", "/accounts/cumulus/dids/15550100100")
    assert (view["buy"]["per_minute"], view["sell"]["per_minute"], view["assigned_to"]) == \
        ("0.008000", "0.012000", "acme")
    events = portal.ok("admin", "GET", "/accounts/admin/dids/15550100100/history")["items"]
    assert [(e["event"], e["account_id"]) for e in events] == [
        ("created", "admin"), ("assigned", "atlas"), ("assigned", "borealis"), ("assigned", "cumulus"),
        ("assigned", "acme")]
    status, answer = inbound(client, "+1 555 010 0100", "demo-in-1")
    assert status == 200 and answer["client_id"] == "acme" and answer["rate"] == "0.012000"


def test_who_may_create_assign_and_close(portal):
    status, body = portal("atlas", "POST", "/accounts/atlas/dids", {"number": "15550003333", "country": "US"})
    assert (status, body["error"]) == (403, "admin_only")
    status, body = create(portal, number="12")
    assert (status, body.get("field")) == (400, "number")
    status, body = create(portal, country="USA")
    assert (status, body.get("field")) == (400, "country")
    assert create(portal)[0] == 201
    status, body = create(portal)
    assert (status, body["error"]) == (409, "already_exists")
    # atlas holds nothing yet: the DID is not found at its level
    assert portal("atlas", "POST", f"/accounts/atlas/dids/{DID}/assign", {"to": "borealis"})[0] == 404
    portal.ok("admin", "POST", f"/accounts/admin/dids/{DID}/assign", {"to": "atlas", "per_minute": "0.004"})
    # selling below what it pays is refused unless the account allows losses
    status, body = portal("atlas", "POST", f"/accounts/atlas/dids/{DID}/assign", {"to": "borealis", "per_minute": "0.001"})
    assert (status, body["error"]) == (409, "below_cost")
    # not to an account outside its subtree, nor to itself
    for to in ("delta", "atlas", "nobody"):
        status, body = portal("atlas", "POST", f"/accounts/atlas/dids/{DID}/assign", {"to": to})
        assert (status, body.get("field")) == (400, "to"), to
    # a client sells nothing
    portal.ok("atlas", "POST", f"/accounts/atlas/dids/{DID}/assign", {"to": "acme"})
    status, body = portal("acme", "POST", f"/accounts/acme/dids/{DID}/unassign")
    assert (status, body["error"]) == (403, "clients_sell_nothing")
    # an assigned DID cannot be assigned again before it is taken back
    status, body = portal("atlas", "POST", f"/accounts/atlas/dids/{DID}/assign", {"to": "borealis"})
    assert (status, body["error"]) == (409, "did_assigned")
    # nothing was written by the refusals: the store holds exactly what the successes wrote
    before = table_snapshot()
    portal("atlas", "POST", f"/accounts/atlas/dids/{DID}/assign", {"to": "borealis", "per_minute": "-1"})
    assert table_snapshot() == before


def test_inbound_direction_is_checked_and_outbound_still_needs_its_account(client, demo):
    response = client.http.post("/authorize", headers=headers(), body=json.dumps(
        {"direction": "sideways", "destination": DID, "call_id": "d-1"}))
    assert response.status_code == 400 and body_of(response)["field"] == "direction"
    response = client.http.post("/authorize", headers=headers(), body=json.dumps(
        {"destination": "15551230001", "call_id": "d-2"}))
    assert response.status_code == 400 and body_of(response)["field"] == "account"
    response = client.http.post("/authorize", headers=headers("wrong-key"), body=json.dumps(
        {"direction": "inbound", "destination": "junk", "call_id": "d-3"}))
    assert response.status_code == 401


def test_inbound_authorize_takes_the_outbound_round_trips(portal, calls, monkeypatch):
    assert create(portal)[0] == 201
    hand_down(portal)
    store, digest = DynamoStore(), key_hash(DEMO_KEY)
    calls.clear()
    request = AuthorizeRequest(None, DID, "rt-in-1", direction="inbound")
    assert authorize_http(store, request, digest).status == 200
    assert calls == ["BatchGetItem", "BatchGetItem", "TransactWriteItems"]
    # warm: the DID and the key are remembered, the DID is read again with the accounts
    monkeypatch.setenv("CASCADE_SWITCH_CACHE_SECONDS", "30")
    assert authorize_http(store, AuthorizeRequest(None, DID, "rt-in-2", direction="inbound"), digest).status == 200
    calls.clear()
    assert authorize_http(store, AuthorizeRequest(None, DID, "rt-in-3", direction="inbound"), digest).status == 200
    assert calls == ["BatchGetItem", "TransactWriteItems"]
    # a cached DID gone stale (unassigned meanwhile) is caught by the read with the accounts
    portal.ok("cumulus", "POST", f"/accounts/cumulus/dids/{DID}/unassign")
    answer = authorize_http(store, AuthorizeRequest(None, DID, "rt-in-4", direction="inbound"), digest)
    assert (answer.status, answer.body["reason"]) == (403, "did_unassigned")
