"""The portal's account routes end to end: chalice.test.Client -> portal service -> DynamoDB in moto,
over the demo tree (demo/seed.json):

    admin -> atlas (reseller) -> borealis (postpaid, credit 100) -> cumulus -> acme (SIP 1001), shortly (1002)
    admin -> delta (commission reseller) -> echo (SIP 2001)

Every test states what it starts from, what it does and what must follow, both in the answer and in
what is stored. Money is Decimal only.
"""
import json
from decimal import Decimal

import pytest

from tests.conftest import demo_seed, load
from tests.integration.helpers import (ALL_DEMO, assert_ledger_invariant, body_of,  # noqa: F401
                                       client, post_authorize, post_complete)
from tests.integration.portal_helpers import (D, Portal, all_account_ids, email_of, ensure_login, key, sign_in,
                                              snapshot_diff, stored, table_snapshot)

NUMBER = "15551230001"          # USA demo exchange: acme pays cumulus 2.00/min, billed per second
PASSWORD = "a-long-enough-password"


@pytest.fixture
def portal(client):
    """The demo tree loaded, and a portal client with cached sessions."""
    load(demo_seed())
    return Portal(client)


def refused(answer, status, error, field=None):
    got, body = answer
    assert got == status, body
    assert body["error"] == error, body
    if field is not None:
        assert body.get("field") == field, body


def new_client(portal, who="cumulus", parent="cumulus", **fields) -> dict:
    body = {"role": "client", "name": fields.pop("name", "New client"), **fields}
    return portal.ok(who, "POST", f"/accounts/{parent}/children", body, status=201)


# --- GET /me and GET /accounts/{id} ------------------------------------------------------------------

def test_me_is_the_signed_in_account_with_its_path_starting_at_itself(portal):
    # GIVEN cumulus signed in
    # WHEN it reads /me
    me = portal.ok("cumulus", "GET", "/me")
    # THEN it gets its own account, money exact, and a path that starts at itself
    assert me["id"] == "cumulus" and me["role"] == "reseller" and me["status"] == "active"
    assert me["path"] == "cumulus"
    assert D(me["balance"]) == Decimal("200") and D(me["available"]) == Decimal("200") and D(me["held"]) == 0
    assert me["max_calls"] == 50 and me["cps_limit"] == 10 and me["currency"] == "USD"
    # AND the admin's /me shows the root
    root = portal.ok("admin", "GET", "/me")
    assert root["id"] == "admin" and root["path"] == "admin" and root["parent_id"] is None


def test_an_accounts_own_view_names_no_account_above_it(portal):
    # GIVEN cumulus (below borealis) signed in
    # WHEN it reads itself
    me = portal.ok("cumulus", "GET", "/me")
    # THEN nothing names an account above it: not the path, not parent_id
    assert me["path"] == "cumulus"
    assert me["parent_id"] is None


def test_get_account_shows_a_descendant_with_its_path_from_the_caller_down(portal):
    # GIVEN borealis, an ancestor of acme
    # WHEN it reads acme
    acme = portal.ok("borealis", "GET", "/accounts/acme")
    # THEN acme's fields are as seeded and the path starts at borealis
    assert acme["path"] == "borealis/cumulus/acme" and acme["parent_id"] == "cumulus"
    assert acme["role"] == "client" and acme["tariff_id"] == "cumulus-retail"
    assert D(acme["balance"]) == Decimal("20") and D(acme["daily_limit"]) == Decimal("50")
    # AND the admin sees the whole path; acme sees itself
    assert portal.ok("admin", "GET", "/accounts/acme")["path"] == "admin/atlas/borealis/cumulus/acme"
    assert portal.ok("acme", "GET", "/accounts/acme")["path"] == "acme"


def test_a_client_reads_itself_but_nothing_else(portal):
    # GIVEN acme signed in
    # WHEN it reads its parent, its sibling, and an id that does not exist
    # THEN all three are the same 404
    missing = portal("acme", "GET", "/accounts/no-such-account")
    assert missing == (404, {"error": "not_found", "message": "no such account"})
    assert portal("acme", "GET", "/accounts/cumulus") == missing
    assert portal("acme", "GET", "/accounts/shortly") == missing


# --- PATCH /accounts/{id} -----------------------------------------------------------------------------

EDITS = [
    # (editor, target, field, value sent, value stored)
    ("cumulus", "acme", "name", "Acme Dental & Co", "Acme Dental & Co"),
    ("cumulus", "acme", "billing_mode", "late", "late"),
    ("cumulus", "acme", "billing_mode", None, None),
    ("cumulus", "acme", "max_calls", 7, 7),
    ("cumulus", "acme", "max_calls", None, None),
    ("cumulus", "acme", "cps_limit", 3, 3),
    ("cumulus", "acme", "daily_limit", "12.345", Decimal("12.345")),
    ("cumulus", "acme", "daily_limit", None, None),
    ("cumulus", "acme", "monthly_limit", 300, Decimal("300")),
    ("cumulus", "acme", "low_balance", "5.5", Decimal("5.5")),
    ("cumulus", "acme", "tariff_id", None, None),
    ("cumulus", "acme", "timezone", "Europe/Paris", "Europe/Paris"),
    ("cumulus", "acme", "billing_day", 28, 28),
    ("cumulus", "acme", "allow_loss", True, True),
    ("cumulus", "acme", "billing_type", "prepaid_soft", "prepaid_soft"),
    ("borealis", "cumulus", "reseller_model", "commission", "commission"),
    ("borealis", "cumulus", "commission_percent", "12.5", Decimal("12.5")),
    ("borealis", "cumulus", "may_create", "clients", "clients"),
    ("atlas", "borealis", "tariff_id", "borealis-buys", "borealis-buys"),
]


@pytest.mark.parametrize("editor,target,field,value,expected", EDITS,
                         ids=[f"{e[2]}={e[3]!r}" for e in EDITS])
def test_patch_sets_each_editable_field(portal, editor, target, field, value, expected):
    # GIVEN an ancestor of the target
    before = stored(target)
    # WHEN it sets one field
    answer = portal.ok(editor, "PATCH", f"/accounts/{target}", {field: value}, status=200)
    # THEN the answer and the stored item carry the new value, and no money moved
    item = stored(target)
    assert getattr(item, field) == expected
    shown = answer[field]
    assert (D(shown) if isinstance(expected, Decimal) else shown) == expected
    assert (item.balance, item.held, item.credit_limit) == (before.balance, before.held, before.credit_limit)
    assert_ledger_invariant(ALL_DEMO)


@pytest.mark.parametrize("body,field,status", [
    ({"billing_day": 32}, "billing_day", 400),
    ({"max_calls": -1}, "max_calls", 400),
    ({"max_calls": True}, "max_calls", 400),
    ({"daily_limit": "-1"}, "daily_limit", 400),
    ({"commission_percent": "100"}, "commission_percent", 400),
    ({"may_create": "clients"}, "may_create", 400),           # a client creates nothing
    ({"billing_type": "credit"}, "billing_type", 400),
    ({"tariff_id": "atlas-buys"}, "tariff_id", 400),          # not a tariff of acme's parent (cumulus)
    ({"tariff_id": "no-such-tariff"}, "tariff_id", 400),
    ({"email": "x@example.test"}, "email", 400),              # not editable here
    ({"balance": "1000"}, "balance", 400),                    # money moves through the ledger only
    ({}, "body", 400),
])
def test_patch_refuses_invalid_edits_naming_the_field_and_changes_nothing(portal, body, field, status):
    # GIVEN acme and its parent's session
    portal.headers("cumulus")
    before = table_snapshot()
    # WHEN the parent sends an invalid edit
    refused(portal("cumulus", "PATCH", "/accounts/acme", body), status, "invalid_request", field)
    # THEN nothing is stored
    assert table_snapshot() == before


def test_billing_type_prepaid_to_postpaid_adds_the_credit_limit_to_available_and_back(portal):
    # GIVEN acme, prepaid with 20.00, given a credit limit of 30 (prepaid: available stays 20)
    limit = portal.ok("cumulus", "PUT", "/accounts/acme/credit-limit",
                      {"credit_limit": "30", "idempotency_key": key()})
    assert D(limit["available"]) == Decimal("20") and D(limit["credit_limit"]) == Decimal("30")
    # WHEN it becomes postpaid
    answer = portal.ok("cumulus", "PATCH", "/accounts/acme", {"billing_type": "postpaid"})
    # THEN available grows by the credit limit, the balance does not
    assert D(answer["available"]) == Decimal("50") and D(answer["balance"]) == Decimal("20")
    item = stored("acme")
    assert item.billing_type == "postpaid" and item.available == Decimal("50") and item.balance == Decimal("20")
    # WHEN it goes back to prepaid
    back = portal.ok("cumulus", "PATCH", "/accounts/acme", {"billing_type": "prepaid"})
    # THEN the credit no longer counts
    assert D(back["available"]) == Decimal("20") and stored("acme").available == Decimal("20")
    assert_ledger_invariant(ALL_DEMO)


def test_a_billing_type_change_that_would_leave_available_negative_is_refused(portal):
    # GIVEN borealis postpaid (500 + credit 100), charged 550: balance -50, available 50
    status, _ = portal.money("atlas", "charge", "borealis", "550")
    assert status == 201
    assert stored("borealis").balance == Decimal("-50") and stored("borealis").available == Decimal("50")
    before = table_snapshot()
    # WHEN atlas makes it prepaid (available would be -50)
    status, body = portal("atlas", "PATCH", "/accounts/borealis", {"billing_type": "prepaid"})
    # THEN 409 and nothing changed
    assert status == 409 and body["error"] == "insufficient_funds", body
    assert table_snapshot() == before
    item = stored("borealis")
    assert item.billing_type == "postpaid" and item.available == Decimal("50")
    assert_ledger_invariant(ALL_DEMO)


def test_only_ancestors_edit_and_a_closed_account_cannot_be_edited(portal):
    # GIVEN acme
    before = table_snapshot()
    # WHEN acme edits itself, a sibling subtree edits it, THEN 403 / 404 and nothing changed
    refused(portal("acme", "PATCH", "/accounts/acme", {"name": "mine"}), 403, "forbidden")
    refused(portal("delta", "PATCH", "/accounts/acme", {"name": "theirs"}), 404, "not_found")
    refused(portal("cumulus", "PATCH", "/accounts/cumulus", {"max_calls": 1000}), 403, "forbidden")
    assert table_snapshot() == before
    # WHEN shortly is closed and then edited
    portal.ok("cumulus", "POST", "/accounts/shortly/close")
    refused(portal("cumulus", "PATCH", "/accounts/shortly", {"name": "again"}), 409, "account_closed")
    assert stored("shortly").name.startswith("Shortly")


# --- POST /accounts/{id}/children ---------------------------------------------------------------------

def test_a_reseller_creates_a_client_below_itself(portal):
    # GIVEN cumulus (may create clients and resellers)
    # WHEN it creates a client with a tariff it owns, a credit limit and limits
    child = new_client(portal, name="Bistro", tariff_id="cumulus-retail", max_calls=2, daily_limit="10.5",
                       credit_limit="5", billing_type="postpaid")
    # THEN the account is stored below cumulus with its path, in cumulus's currency, with no money
    assert child["id"].startswith("c_") and child["parent_id"] == "cumulus"
    assert child["path"] == f"cumulus/{child['id']}" and child["may_create"] == "nothing"
    item = stored(child["id"])
    assert item.path == f"admin/atlas/borealis/cumulus/{child['id']}" and item.tree == "admin"
    assert item.role == "client" and item.currency == "USD" and item.status == "active"
    assert item.balance == 0 and item.held == 0 and item.credit_limit == Decimal("5")
    assert item.available == Decimal("5")               # postpaid: the credit counts
    assert item.max_calls == 2 and item.daily_limit == Decimal("10.5") and item.tariff_id == "cumulus-retail"
    # AND its own id is a switch identity (the client id itself)
    from chalicelib.adapters.dynamo.models import IdentityItem
    assert IdentityItem.get(f"ID#{child['id']}", "#").client_id == child["id"]
    # AND its parent lists it
    ids = [a["id"] for a in portal.ok("cumulus", "GET", "/accounts/cumulus/children")["items"]]
    assert child["id"] in ids
    assert_ledger_invariant(list(ALL_DEMO) + [child["id"]])


def test_a_reseller_creates_a_reseller_that_may_create_clients_by_default(portal):
    # GIVEN borealis
    # WHEN it creates a reseller below itself
    child = portal.ok("borealis", "POST", "/accounts/borealis/children",
                      {"role": "reseller", "name": "Nimbus", "tariff_id": "cumulus-package"}, status=201)
    # THEN it is a reseller that may create clients only
    assert child["id"].startswith("r_") and child["may_create"] == "clients"
    assert stored(child["id"]).path == f"admin/atlas/borealis/{child['id']}"


def test_a_created_account_with_email_and_password_signs_in(portal):
    # GIVEN cumulus creates a client with an e-mail and a password
    child = new_client(portal, name="Signs In", email="owner@example.test", password=PASSWORD)
    assert child["email"] == "owner@example.test" and "invitation_sent_to" not in child
    # WHEN that person signs in
    status, session = sign_in(portal.client, "owner@example.test", PASSWORD)
    # THEN the session is the new account's
    assert status == 200 and session["account"] == {"id": child["id"], "role": "client"}
    from tests.integration.portal_helpers import api, bearer
    assert api(portal.client, "GET", "/me", bearer(session["access_token"]))[1]["id"] == child["id"]


def test_a_created_accounts_email_is_stored_as_it_signs_in(portal):
    # GIVEN cumulus creates a client with a mixed-case e-mail
    child = new_client(portal, name="Mixed", email="Owner@Example.test", password=PASSWORD)
    # THEN the account shows (and stores) the sign-in name, lower case
    assert child["email"] == "owner@example.test"
    assert stored(child["id"]).email == "owner@example.test"


def test_may_create_clients_forbids_creating_resellers_there(portal):
    # GIVEN borealis restricts cumulus to creating clients
    portal.ok("borealis", "PATCH", "/accounts/cumulus", {"may_create": "clients"})
    before = table_snapshot()
    # WHEN cumulus (or atlas, an ancestor but not the admin) creates a reseller under cumulus
    # THEN 403 not_allowed_to_create and nothing is stored
    body = {"role": "reseller", "name": "Sub"}
    refused(portal("cumulus", "POST", "/accounts/cumulus/children", body), 403, "not_allowed_to_create")
    refused(portal("atlas", "POST", "/accounts/cumulus/children", body), 403, "not_allowed_to_create")
    assert table_snapshot() == before
    # AND a client may still be created there
    new_client(portal)


def test_a_reseller_cannot_grant_rights_it_does_not_have(portal):
    # GIVEN atlas restricts borealis to creating clients
    portal.ok("atlas", "PATCH", "/accounts/borealis", {"may_create": "clients"})
    portal.ok("borealis", "PATCH", "/accounts/cumulus", {"may_create": "clients"})
    before = table_snapshot()
    # WHEN borealis gives its reseller cumulus the right to create resellers
    status, body = portal("borealis", "PATCH", "/accounts/cumulus", {"may_create": "clients_and_resellers"})
    # THEN it is refused and cumulus keeps what it had
    assert status in (400, 403), body
    assert table_snapshot() == before and stored("cumulus").may_create == "clients"


def test_a_reseller_restricted_to_clients_creates_no_reseller_anywhere_below_it(portal):
    # GIVEN atlas restricts borealis to clients; cumulus (below borealis) may still create resellers
    portal.ok("atlas", "PATCH", "/accounts/borealis", {"may_create": "clients"})
    assert stored("cumulus").may_create == "clients_and_resellers"
    refused(portal("borealis", "POST", "/accounts/borealis/children", {"role": "reseller", "name": "x"}), 403,
            "not_allowed_to_create")
    before = table_snapshot()
    # WHEN borealis creates the reseller under cumulus instead
    status, body = portal("borealis", "POST", "/accounts/cumulus/children", {"role": "reseller", "name": "Sneaky"})
    # THEN it is refused as well
    assert status == 403 and body["error"] == "not_allowed_to_create", body
    assert table_snapshot() == before


def test_a_client_cannot_create_accounts_and_nothing_is_created_below_a_client(portal):
    before = table_snapshot()
    # WHEN acme creates a child of itself; the admin creates one below acme
    refused(portal("acme", "POST", "/accounts/acme/children", {"role": "client", "name": "x"}), 403, "forbidden")
    refused(portal("admin", "POST", "/accounts/acme/children", {"role": "client", "name": "x"}), 400,
            "invalid_request", "parent")
    # THEN nothing is stored
    assert table_snapshot() == before


def test_the_admin_creates_anywhere_whatever_may_create_says(portal):
    # GIVEN cumulus (acme's reseller) may create nothing
    portal.ok("borealis", "PATCH", "/accounts/cumulus", {"may_create": "nothing"})
    refused(portal("cumulus", "POST", "/accounts/cumulus/children", {"role": "client", "name": "x"}), 403,
            "not_allowed_to_create")
    # WHEN the admin creates a reseller and a client directly under cumulus
    reseller = portal.ok("admin", "POST", "/accounts/cumulus/children", {"role": "reseller", "name": "R"}, status=201)
    client_ = portal.ok("admin", "POST", "/accounts/cumulus/children", {"role": "client", "name": "C"}, status=201)
    # THEN both exist below cumulus
    assert stored(reseller["id"]).parent_id == "cumulus" and stored(client_["id"]).parent_id == "cumulus"
    assert reseller["path"] == f"admin/atlas/borealis/cumulus/{reseller['id']}"


def test_the_trees_max_depth_bounds_reseller_levels(portal):
    # GIVEN the demo tree (max_depth 5) and cumulus at reseller level 3; the admin adds levels 4 and 5
    level4 = portal.ok("admin", "POST", "/accounts/cumulus/children", {"role": "reseller", "name": "L4"}, status=201)
    level5 = portal.ok("admin", "POST", f"/accounts/{level4['id']}/children", {"role": "reseller", "name": "L5"},
                       status=201)
    before = table_snapshot()
    # WHEN a sixth reseller level is created
    # THEN 400 naming the field, nothing stored
    refused(portal("admin", "POST", f"/accounts/{level5['id']}/children", {"role": "reseller", "name": "L6"}),
            400, "invalid_request", "role")
    assert table_snapshot() == before
    # AND a client below the fifth level is fine
    leaf = portal.ok("admin", "POST", f"/accounts/{level5['id']}/children", {"role": "client", "name": "Leaf"},
                     status=201)
    assert stored(leaf["id"]).path.count("/") == 6


@pytest.mark.parametrize("body,field", [
    ({"role": "client", "name": "x", "currency": "EUR"}, "currency"),
    ({"role": "client", "name": "x", "colour": "blue"}, "colour"),
    ({"role": "client", "name": "x", "tariff_id": "atlas-buys"}, "tariff_id"),      # admin's, not cumulus's
    ({"role": "client", "name": "x", "tariff_id": "nope"}, "tariff_id"),
    ({"role": "admin", "name": "x"}, "role"),
    ({"name": "x"}, "role"),
    ({"role": "client"}, "name"),
    ({"role": "client", "name": "x", "credit_limit": "-1"}, "credit_limit"),
    ({"role": "client", "name": "x", "credit_limit": "0.0000001"}, "credit_limit"),
    ({"role": "client", "name": "x", "may_create": "clients"}, "may_create"),
    ({"role": "client", "name": "x", "email": "a@example.test", "password": "short"}, "password"),
])
def test_create_child_refuses_bad_fields_naming_them_and_leaves_nothing(portal, body, field):
    portal.headers("cumulus")
    before = table_snapshot()
    # WHEN cumulus sends a creation the rules refuse
    status, answer = portal("cumulus", "POST", "/accounts/cumulus/children", body)
    # THEN 400 naming the field, and nothing is stored
    assert status == 400 and answer["field"] == field, answer
    assert answer["error"] in ("invalid_request", "weak_password")
    assert table_snapshot() == before


def test_the_trees_currency_is_accepted_when_named(portal):
    child = new_client(portal, currency="USD")
    assert child["currency"] == "USD"


def test_an_email_already_signing_in_is_refused_409_and_no_account_is_left_behind(portal):
    # GIVEN acme has a login (acme@example.test)
    ensure_login("acme")
    portal.headers("cumulus")
    accounts, before = all_account_ids(), table_snapshot(include_logins=True)
    # WHEN cumulus creates a client with that e-mail (with or without a password, in any case)
    refused(portal("cumulus", "POST", "/accounts/cumulus/children",
                   {"role": "client", "name": "Dup", "email": email_of("acme"), "password": PASSWORD}),
            409, "email_taken")
    refused(portal("cumulus", "POST", "/accounts/cumulus/children",
                   {"role": "client", "name": "Dup", "email": email_of("ACME")}), 409, "email_taken")
    # THEN no account, identity, login or journal item was left behind, and acme's login is untouched
    assert all_account_ids() == accounts
    after = table_snapshot(include_logins=True)
    assert after == before, snapshot_diff(before, after)
    ids = [a["id"] for a in portal.ok("cumulus", "GET", "/accounts/cumulus/children")["items"]]
    assert sorted(ids) == ["acme", "shortly"]
    assert sign_in(portal.client, email_of("acme"))[0] == 200


def _invite_while_mail_fails(portal, monkeypatch):
    """cumulus invites invited@example.test (no password: a mail goes out) while SES refuses to send
    (the tests' sender is verified only with CASCADE_MAIL_VERIFY_SENDER=1)."""
    monkeypatch.delenv("CASCADE_MAIL_VERIFY_SENDER", raising=False)
    portal.headers("cumulus")
    return portal("cumulus", "POST", "/accounts/cumulus/children",
                  {"role": "client", "name": "Invited", "email": "invited@example.test"})


def test_a_failed_invitation_mail_leaves_no_account_and_the_email_free(portal, monkeypatch):
    accounts = all_account_ids()
    # WHEN cumulus invites a new client and the mail cannot be sent
    status, body = _invite_while_mail_fails(portal, monkeypatch)
    # THEN the creation fails as a whole (a JSON error, no stack trace) ...
    assert status >= 500 and body["error"] in ("internal", "busy"), body
    assert all_account_ids() == accounts
    from chalicelib.adapters.dynamo.identity_models import LoginItem
    with pytest.raises(LoginItem.DoesNotExist):
        LoginItem.get("LOGIN#invited@example.test", "#")
    # ... and the e-mail can be used again (here with a password: no mail needed)
    status, body = portal("cumulus", "POST", "/accounts/cumulus/children",
                          {"role": "client", "name": "Invited", "email": "invited@example.test",
                           "password": PASSWORD})
    assert status == 201, body
    assert sign_in(portal.client, "invited@example.test", PASSWORD)[0] == 200


def test_a_failed_invitation_mail_leaves_nothing_behind(portal, monkeypatch):
    portal.headers("cumulus")
    before = table_snapshot(include_logins=True)
    status, _ = _invite_while_mail_fails(portal, monkeypatch)
    assert status >= 500
    after = table_snapshot(include_logins=True)
    assert after == before, snapshot_diff(before, after)


def test_creating_under_a_suspended_parent_is_refused(portal):
    portal.ok("borealis", "POST", "/accounts/cumulus/suspend")
    refused(portal("borealis", "POST", "/accounts/cumulus/children", {"role": "client", "name": "x"}), 409,
            "parent_not_active")


# --- GET /accounts/{id}/children and /descendants -------------------------------------------------------

def collect(portal, who, path, limit, **query):
    """Every page of a list: (pages' sizes, ids in order)."""
    sizes, ids, cursor = [], [], None
    for _ in range(50):
        params = dict(query, limit=limit, **({"cursor": cursor} if cursor else {}))
        qs = "&".join(f"{k}={v}" for k, v in params.items())
        page = portal.ok(who, "GET", f"{path}?{qs}")
        sizes.append(len(page["items"]))
        ids += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            return sizes, ids
    raise AssertionError("pagination does not end")


def test_children_are_paged_with_a_cursor(portal):
    # GIVEN a new reseller under atlas with 7 clients
    parent = portal.ok("atlas", "POST", "/accounts/atlas/children", {"role": "reseller", "name": "Pager"},
                       status=201)["id"]
    made = {portal.ok("atlas", "POST", f"/accounts/{parent}/children", {"role": "client", "name": f"P{i}"},
                      status=201)["id"] for i in range(7)}
    # WHEN atlas pages through its children 3 at a time
    sizes, ids = collect(portal, "atlas", f"/accounts/{parent}/children", 3)
    # THEN 3 + 3 + 1, each child exactly once
    assert sizes == [3, 3, 1]
    assert len(ids) == len(set(ids)) == 7 and set(ids) == made
    # AND a client's children list is empty; a bad cursor or limit is a 400
    assert portal.ok("cumulus", "GET", "/accounts/acme/children") == {"items": [], "next_cursor": None}
    refused(portal("atlas", "GET", f"/accounts/{parent}/children?limit=0"), 400, "invalid_request", "limit")
    refused(portal("atlas", "GET", f"/accounts/{parent}/children?limit=101"), 400, "invalid_request", "limit")
    refused(portal("atlas", "GET", f"/accounts/{parent}/children?sort=id"), 400, "invalid_request", "sort")


def _cursor(data) -> str:
    import base64
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", ["/accounts/cumulus/children", "/accounts/cumulus/descendants",
                                  "/accounts/acme/ledger"])
@pytest.mark.parametrize("cursor", ["%21%21not-a-cursor", _cursor([1]), _cursor({"a": 1})])
def test_a_malformed_cursor_is_a_400_naming_it(portal, path, cursor):
    status, body = portal("cumulus", "GET", f"{path}?cursor={cursor}")
    assert status == 400 and body["field"] == "cursor", body


def test_descendants_search_by_text_role_and_status(portal):
    # GIVEN a client with an e-mail under cumulus, and shortly suspended
    zed = new_client(portal, name="Zed Bakery", email="Zed.Owner@Example.test", password=PASSWORD)["id"]
    portal.ok("cumulus", "POST", "/accounts/shortly/suspend")
    path = "/accounts/atlas/descendants"
    # WHEN atlas searches its subtree
    # THEN q matches names and e-mails case-insensitively
    assert [a["id"] for a in portal.ok("atlas", "GET", f"{path}?q=DENTAL")["items"]] == ["acme"]
    assert [a["id"] for a in portal.ok("atlas", "GET", f"{path}?q=zed.OWNER%40example")["items"]] == [zed]
    assert portal.ok("atlas", "GET", f"{path}?q=no-such-thing")["items"] == []
    # AND role and status filter
    _, clients = collect(portal, "atlas", path, 100, role="client")
    assert sorted(clients) == sorted(["acme", "shortly", zed])
    _, resellers = collect(portal, "atlas", path, 100, role="reseller")
    assert sorted(resellers) == ["borealis", "cumulus"]
    _, suspended = collect(portal, "atlas", path, 100, status="suspended")
    assert suspended == ["shortly"]
    # AND the account itself is not its own descendant; other subtrees never appear
    _, everything = collect(portal, "atlas", path, 100)
    assert sorted(everything) == sorted(["borealis", "cumulus", "acme", "shortly", zed])
    _, admin_view = collect(portal, "admin", "/accounts/admin/descendants", 100)
    assert sorted(admin_view) == sorted(["atlas", "borealis", "cumulus", "acme", "shortly", "delta", "echo", zed])
    refused(portal("atlas", "GET", f"{path}?role=admin"), 400, "invalid_request", "role")


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_descendant_pages_cover_the_subtree_once_with_and_without_filters(portal, limit):
    # GIVEN the admin's tree plus 4 clients under delta
    for i in range(4):
        portal.ok("delta", "POST", "/accounts/delta/children", {"role": "client", "name": f"Delta client {i}"},
                  status=201)
    expected_all = set(all_account_ids()) - {"admin"}
    expected_clients = {a for a in expected_all if stored(a).role == "client"}
    # WHEN the admin pages through everything, and through clients only
    sizes, ids = collect(portal, "admin", "/accounts/admin/descendants", limit)
    _, client_ids = collect(portal, "admin", "/accounts/admin/descendants", limit, role="client")
    # THEN every account appears exactly once and no page is larger than the limit
    assert max(sizes) <= limit
    assert len(ids) == len(set(ids)) and set(ids) == expected_all
    assert len(client_ids) == len(set(client_ids)) and set(client_ids) == expected_clients


# --- suspend / resume / close --------------------------------------------------------------------------

def test_suspend_is_idempotent_and_stops_the_clients_calls_until_resumed(portal):
    # GIVEN acme, active
    # WHEN cumulus suspends it twice
    first = portal.ok("cumulus", "POST", "/accounts/acme/suspend")
    second = portal.ok("cumulus", "POST", "/accounts/acme/suspend")
    # THEN it is suspended, once
    assert first["status"] == second["status"] == "suspended" and stored("acme").status == "suspended"
    # AND its SIP user cannot call
    denied = post_authorize(portal.client, "1001", NUMBER, "susp-1")
    assert denied.status_code == 403 and body_of(denied) == {"authorized": False, "reason": "account_suspended"}
    assert stored("acme").held == 0
    # WHEN it is resumed (twice: idempotent too)
    portal.ok("cumulus", "POST", "/accounts/acme/resume")
    assert portal.ok("cumulus", "POST", "/accounts/acme/resume")["status"] == "active"
    # THEN calls work again
    granted = post_authorize(portal.client, "1001", NUMBER, "susp-2")
    assert granted.status_code == 200, granted.body
    assert stored("acme").held > 0
    assert_ledger_invariant(ALL_DEMO)


def test_suspending_a_reseller_stops_the_calls_of_every_client_below_it(portal):
    portal.ok("borealis", "POST", "/accounts/cumulus/suspend")
    denied = post_authorize(portal.client, "1001", NUMBER, "reseller-susp")
    assert denied.status_code == 403 and body_of(denied)["reason"] == "account_suspended"


def test_a_suspended_account_signs_in_and_reads_but_changes_nothing(portal):
    # GIVEN cumulus signed in, then suspended by borealis (its sessions end)
    portal.headers("cumulus")
    portal.ok("borealis", "POST", "/accounts/cumulus/suspend")
    assert portal("cumulus", "GET", "/me")[0] == 401
    portal.forget("cumulus")
    # WHEN it signs in again
    assert portal.ok("cumulus", "GET", "/me")["status"] == "suspended"
    before = table_snapshot()
    # THEN it may read its accounts but not act on them
    portal.ok("cumulus", "GET", "/accounts/acme")
    refused(portal.money("cumulus", "payment", "acme", "1"), 403, "caller_not_active")
    refused(portal("cumulus", "PATCH", "/accounts/acme", {"name": "x"}), 403, "caller_not_active")
    refused(portal("cumulus", "POST", "/accounts/cumulus/children", {"role": "client", "name": "x"}), 403,
            "caller_not_active")
    assert table_snapshot() == before


def test_close_a_client_it_cannot_sign_in_nor_call(portal):
    # GIVEN acme with a login and a session
    email = ensure_login("acme")
    portal.headers("acme")
    # WHEN cumulus closes it (twice: idempotent)
    closed = portal.ok("cumulus", "POST", "/accounts/acme/close")
    again = portal.ok("cumulus", "POST", "/accounts/acme/close")
    # THEN it is closed with a time, its session is dead, it cannot sign in
    assert closed["status"] == "closed" and closed["closed_at"] and again["closed_at"] == closed["closed_at"]
    item = stored("acme")
    assert item.status == "closed" and item.closed_at == closed["closed_at"]
    assert portal("acme", "GET", "/me")[0] == 401
    status, body = sign_in(portal.client, email)
    assert status == 401 and body["error"] == "invalid_credentials"
    # AND its SIP user cannot call
    denied = post_authorize(portal.client, "1001", NUMBER, "closed-1")
    assert denied.status_code == 403 and body_of(denied) == {"authorized": False, "reason": "account_closed"}
    # AND a closed account cannot be resumed or suspended
    refused(portal("cumulus", "POST", "/accounts/acme/resume"), 409, "cannot_resume")
    refused(portal("cumulus", "POST", "/accounts/acme/suspend"), 409, "cannot_suspend")
    assert_ledger_invariant(ALL_DEMO)


def test_a_reseller_with_open_accounts_cannot_be_closed(portal):
    before = table_snapshot()
    # WHEN borealis closes cumulus (acme and shortly are open)
    status, body = portal("borealis", "POST", "/accounts/cumulus/close")
    # THEN 409 has_open_children, counting them, nothing changed
    assert status == 409 and body["error"] == "has_open_children" and body["open_children"] == 2
    assert table_snapshot() == before
    # WHEN its clients are closed first
    portal.ok("borealis", "POST", "/accounts/acme/close")
    portal.ok("borealis", "POST", "/accounts/shortly/close")
    # THEN it can be closed
    assert portal.ok("borealis", "POST", "/accounts/cumulus/close")["status"] == "closed"


def test_an_account_cannot_change_its_own_status(portal):
    before = table_snapshot()
    for action in ("suspend", "resume", "close"):
        refused(portal("cumulus", "POST", f"/accounts/cumulus/{action}"), 403, "forbidden")
    assert table_snapshot() == before


# --- SIP users ----------------------------------------------------------------------------------------

def test_a_new_funded_client_with_a_new_sip_user_places_a_call(portal):
    # GIVEN cumulus creates a client on its own tariff (cumulus-retail) and pays 10.00 into it
    child = new_client(portal, name="Caller", tariff_id="cumulus-retail")["id"]
    assert portal.money("cumulus", "payment", child, "10.00")[0] == 201
    # WHEN it adds a SIP user
    sip = portal.ok("cumulus", "POST", f"/accounts/{child}/sip-users", {"username": "3001"}, status=201)
    # THEN the answer shows the password once, and the list shows the user without it
    assert sip["username"] == "3001" and sip["account_id"] == child and len(sip["password"]) >= 16
    listed = portal.ok("cumulus", "GET", f"/accounts/{child}/sip-users")["items"]
    assert listed == [{"username": "3001", "account_id": child, "status": "active"}]
    assert portal.ok(child, "GET", f"/accounts/{child}/sip-users")["items"] == listed
    # AND the switch authorizes a call from it, holding money at the client
    granted = post_authorize(portal.client, "3001", NUMBER, "new-sip-1")
    assert granted.status_code == 200, granted.body
    assert D(body_of(granted)["rate"]) == Decimal("2.0")
    assert stored(child).held > 0 and stored(child).active_calls == 1
    # WHEN it completes after 30 s
    done = post_complete(portal.client, "new-sip-1", 30, "ANSWERED")
    assert done.status_code == 200, done.body
    # THEN the client paid 30 s at 2.00/min = 1.00
    item = stored(child)
    assert item.balance == Decimal("9") and item.held == 0 and item.active_calls == 0
    assert_ledger_invariant(list(ALL_DEMO) + [child])


@pytest.mark.parametrize("who,target,username", [("cumulus", "shortly", "1001"), ("delta", "echo", "1001"),
                                                 ("cumulus", "shortly", "acme")])
def test_a_sip_username_taken_anywhere_in_the_tree_is_a_409(portal, who, target, username):
    # GIVEN 1001 belongs to acme (and "acme" is acme's own switch identity)
    portal.headers(who)
    before = table_snapshot()
    # WHEN another client gets that name
    # THEN 409 already_exists naming the field, nothing changed
    refused(portal(who, "POST", f"/accounts/{target}/sip-users", {"username": username}), 409, "already_exists",
            "username")
    assert table_snapshot() == before


@pytest.mark.parametrize("target,username", [("acme", "1009"), ("shortly", "1001")])
def test_removing_a_sip_user_the_client_does_not_have_is_a_404(portal, target, username):
    portal.headers("cumulus")
    before = table_snapshot()
    refused(portal("cumulus", "DELETE", f"/accounts/{target}/sip-users/{username}"), 404, "not_found")
    assert table_snapshot() == before
    assert post_authorize(portal.client, "1001", NUMBER, "still-1").status_code == 200


def test_a_removed_sip_user_cannot_call_and_its_name_is_free_again(portal):
    # GIVEN 1001 belongs to acme
    # WHEN cumulus removes it
    assert portal("cumulus", "DELETE", "/accounts/acme/sip-users/1001") == (204, None)
    # THEN it is gone from the list and cannot call
    assert portal.ok("cumulus", "GET", "/accounts/acme/sip-users")["items"] == []
    denied = post_authorize(portal.client, "1001", NUMBER, "gone-1")
    assert denied.status_code == 403 and body_of(denied)["reason"] == "account_unknown"
    from chalicelib.adapters.dynamo.models import IdentityItem
    with pytest.raises(IdentityItem.DoesNotExist):
        IdentityItem.get("ID#1001", "#")
    # AND the name is free again for another client, which then calls with it
    portal.ok("cumulus", "POST", "/accounts/shortly/sip-users", {"username": "1001"}, status=201)
    assert portal.ok("cumulus", "GET", "/accounts/shortly/sip-users")["items"][0]["username"] == "1001"
    granted = post_authorize(portal.client, "1001", NUMBER, "moved-1")
    assert granted.status_code == 200
    assert stored("shortly").held > 0 and stored("acme").held == 0


def test_sip_user_rules(portal):
    portal.headers("cumulus")
    before = table_snapshot()
    # a reseller has no SIP users; a client cannot add or remove its own; names are checked
    refused(portal("borealis", "POST", "/accounts/cumulus/sip-users", {"username": "9001"}), 409, "not_a_client")
    refused(portal("acme", "POST", "/accounts/acme/sip-users", {"username": "9002"}), 403, "forbidden")
    refused(portal("cumulus", "POST", "/accounts/acme/sip-users", {"username": "ab"}), 400, "invalid_request",
            "username")
    refused(portal("cumulus", "POST", "/accounts/acme/sip-users", {"username": "a b c"}), 400, "invalid_request",
            "username")
    refused(portal("cumulus", "DELETE", "/accounts/acme/sip-users/acme"), 404, "not_found")   # its own id stays
    refused(portal("acme", "DELETE", "/accounts/acme/sip-users/1001"), 403, "forbidden")
    assert table_snapshot() == before
    assert post_authorize(portal.client, "1001", NUMBER, "still-1").status_code == 200


# --- the switch sees edits on the very next call ------------------------------------------------------

def test_max_calls_zero_refuses_the_next_call(portal):
    # GIVEN acme calls fine
    assert post_authorize(portal.client, "1001", NUMBER, "mc-1").status_code == 200
    assert post_complete(portal.client, "mc-1", 10, "ANSWERED").status_code == 200
    # WHEN cumulus sets max_calls 0
    portal.ok("cumulus", "PATCH", "/accounts/acme", {"max_calls": 0})
    # THEN the very next call is refused
    denied = post_authorize(portal.client, "1001", NUMBER, "mc-2")
    assert denied.status_code == 403 and body_of(denied)["reason"] == "concurrent_calls_limit"
    # WHEN the limit is removed, THEN calls work again
    portal.ok("cumulus", "PATCH", "/accounts/acme", {"max_calls": None})
    assert post_authorize(portal.client, "1001", NUMBER, "mc-3").status_code == 200
    assert_ledger_invariant(ALL_DEMO)


def test_a_tariff_change_rates_the_very_next_call(client):
    # GIVEN the demo tree plus a second tariff of cumulus's: 1555 at 3.00/min instead of 2.00
    seed = demo_seed()
    seed["tariffs"].append({"id": "cumulus-premium", "owner": "cumulus", "name": "Premium", "rates": [
        {"prefix": "1555", "name": "USA demo exchange", "price": "3.0", "initial": 1, "subsequent": 1}]})
    load(seed)
    portal = Portal(client)
    assert D(body_of(post_authorize(client, "1001", NUMBER, "t-1"))["rate"]) == Decimal("2.0")
    assert post_complete(client, "t-1", 60, "ANSWERED").status_code == 200
    assert stored("acme").balance == Decimal("18")
    # WHEN cumulus moves acme to the premium tariff
    portal.ok("cumulus", "PATCH", "/accounts/acme", {"tariff_id": "cumulus-premium"})
    # THEN the next call is rated and billed at 3.00/min
    granted = post_authorize(client, "1001", NUMBER, "t-2")
    assert granted.status_code == 200 and D(body_of(granted)["rate"]) == Decimal("3.0")
    assert post_complete(client, "t-2", 60, "ANSWERED").status_code == 200
    assert stored("acme").balance == Decimal("15")
    # AND removing the tariff leaves acme without rates
    portal.ok("cumulus", "PATCH", "/accounts/acme", {"tariff_id": None})
    denied = post_authorize(client, "1001", NUMBER, "t-3")
    assert denied.status_code == 403 and body_of(denied)["reason"] == "no_rate"
    assert_ledger_invariant(ALL_DEMO)


def test_a_daily_limit_set_in_the_portal_applies_to_the_next_call(portal):
    # GIVEN shortly (0.20: 6 s at 2.00/min) gets a daily limit of 0.10 from cumulus
    portal.ok("cumulus", "PATCH", "/accounts/shortly", {"daily_limit": "0.10"})
    # WHEN it calls, THEN the limit bounds the grant: 0.10 at 2.00/min = 3 s
    answer = post_authorize(portal.client, "1002", NUMBER, "dl-1")
    assert answer.status_code == 200 and body_of(answer)["max_duration"] == 3, answer.body
    assert post_complete(portal.client, "dl-1", 0, "NO ANSWER").status_code == 200
    # WHEN the limit becomes 0, THEN the next call is refused for it
    portal.ok("cumulus", "PATCH", "/accounts/shortly", {"daily_limit": "0"})
    denied = post_authorize(portal.client, "1002", NUMBER, "dl-2")
    assert denied.status_code == 403 and body_of(denied)["reason"] == "daily_limit"
    assert_ledger_invariant(ALL_DEMO)
