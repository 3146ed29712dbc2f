"""The portal's wall, route by route: every route declared with ``@portal_route``
(``chalicelib.entrypoints.portal.ROUTES``, so a new route is in this matrix automatically, and the matrix
fails until it has a sample request for it), driven by every kind of caller against three targets:

    targets     acme (a client under cumulus), cumulus (a reseller), atlas (a top reseller)
    callers     admin, atlas, borealis, cumulus, acme, delta (another top reseller), echo (delta's client),
                anonymous (no credentials) and a bogus token

Expected, for each answer:
  - anonymous or bogus: 401 on every route;
  - a caller outside the target's subtree (delta/echo on acme, acme on cumulus, cumulus on atlas...): 404
    with exactly the body a nonexistent id gets from the same route;
  - the account itself: reads 200, changes 403 (except what an account does to itself: create below
    itself, manage its own API keys);
  - an ancestor: success, or a business 4xx that is never 401 or 404 (only the account itself manages its
    API keys: 403);
and after every answer that is not a success, the core, journal and cdrs tables are exactly as before.

One fresh demo world per (route, target); within it the callers run in an order where no success
changes what a later caller is judged on (outsiders and the account itself first, then ancestors
bottom-up).
"""
import itertools
from decimal import Decimal
import re
from typing import Callable, Dict, Optional, Tuple

import pytest

from tests.conftest import demo_seed, load
from tests.integration.helpers import client  # noqa: F401
from tests.integration.portal_helpers import (JSON, Portal, api, key, snapshot_diff, table_snapshot)

PATHS = {"admin": "admin", "atlas": "admin/atlas", "borealis": "admin/atlas/borealis",
         "cumulus": "admin/atlas/borealis/cumulus", "acme": "admin/atlas/borealis/cumulus/acme",
         "delta": "admin/delta", "echo": "admin/delta/echo"}
ROLES = {"admin": "admin", "atlas": "reseller", "borealis": "reseller", "cumulus": "reseller", "acme": "client",
         "delta": "reseller", "echo": "client"}
TARGETS = ("acme", "cumulus", "atlas")
ANONYMOUS, BOGUS = "anonymous", "bogus-token"
CALLERS = ("admin", "atlas", "borealis", "cumulus", "acme", "delta", "echo", ANONYMOUS, BOGUS)
NOT_FOUND = {"error": "not_found", "message": "no such account"}
_names = itertools.count(1)


def route_key(route: dict) -> str:
    return f"{route['method'].upper()} {route['path']}"


def all_routes():
    from chalicelib.entrypoints.portal import ROUTES
    return list(ROUTES)


# --- sample requests: route -> a fresh body for each request (None: no body) -----------------------------

def _money(amount="0.01"):
    return lambda target: {"amount": amount, "idempotency_key": key("matrix")}


SAMPLES: Dict[str, Callable[[str], Optional[dict]]] = {
    "GET /me": lambda target: None,
    "GET /accounts/{account_id}": lambda target: None,
    "PATCH /accounts/{account_id}": lambda target: {"name": f"Renamed {next(_names)}"},
    "POST /accounts/{account_id}/children": lambda target: {"role": "client", "name": f"Matrix {next(_names)}"},
    "GET /accounts/{account_id}/children": lambda target: None,
    "GET /accounts/{account_id}/descendants": lambda target: None,
    "POST /accounts/{account_id}/suspend": lambda target: None,
    "POST /accounts/{account_id}/resume": lambda target: None,
    "POST /accounts/{account_id}/close": lambda target: None,
    "POST /accounts/{account_id}/sip-users": lambda target: {"username": f"matrix{next(_names)}"},
    "GET /accounts/{account_id}/sip-users": lambda target: None,
    "DELETE /accounts/{account_id}/sip-users/{username}": lambda target: None,
    "POST /accounts/{account_id}/payments": _money(),
    "POST /accounts/{account_id}/charges": _money(),
    "POST /accounts/{account_id}/transfers": _money(),
    "PUT /accounts/{account_id}/credit-limit": lambda target: {"credit_limit": "1", "idempotency_key": key("matrix")},
    "GET /accounts/{account_id}/balance": lambda target: None,
    "GET /accounts/{account_id}/ledger": lambda target: None,
    "POST /accounts/{account_id}/api-keys": lambda target: {"name": "matrix key"},
    "GET /accounts/{account_id}/api-keys": lambda target: None,
    "DELETE /accounts/{account_id}/api-keys/{ref}": lambda target: None,
    "GET /accounts/{account_id}/tariffs": lambda target: None,
    "GET /accounts/{account_id}/tariffs/{tariff_id}": lambda target: None,
    "POST /accounts/{account_id}/tariffs": lambda target: {"name": f"Matrix {next(_names)}"},
    "PATCH /accounts/{account_id}/tariffs/{tariff_id}": lambda target: {"name": f"Renamed {next(_names)}"},
    "DELETE /accounts/{account_id}/tariffs/{tariff_id}": lambda target: None,
    "POST /accounts/{account_id}/tariffs/{tariff_id}/rates": lambda target: {"prefix": "99", "price": "0.5"},
    "POST /accounts/{account_id}/tariffs/{tariff_id}/rates/{prefix}/end": lambda target: {},
    "PUT /accounts/{account_id}/tariffs/{tariff_id}/deck": lambda target: "prefix,price\n1,0.5\n99,0.5\n",
    "GET /accounts/{account_id}/tariffs/{tariff_id}/deck": lambda target: None,
    "GET /accounts/{account_id}/price-list": lambda target: None,
    "POST /accounts/{account_id}/tariffs/{tariff_id}/imports": lambda target: {"mode": "merge"},
    "POST /accounts/{account_id}/tariffs/{tariff_id}/imports/{import_id}/start": lambda target: None,
    "GET /accounts/{account_id}/tariffs/{tariff_id}/imports/{import_id}": lambda target: None,
    "POST /accounts/{account_id}/dids": lambda target: {"number": f"1556{next(_names):07d}", "country": "US"},
    "GET /accounts/{account_id}/dids": lambda target: None,
    "GET /accounts/{account_id}/dids/{number}": lambda target: None,
    "POST /accounts/{account_id}/dids/{number}/assign": lambda target: {"to": CHILD.get(target, "acme")},
    "POST /accounts/{account_id}/dids/{number}/unassign": lambda target: None,
    "DELETE /accounts/{account_id}/dids/{number}": lambda target: None,
    "GET /accounts/{account_id}/dids/{number}/history": lambda target: None,
    "GET /accounts/{account_id}/cdrs": lambda target: None,
    "GET /accounts/{account_id}/cdrs/export": lambda target: None,
    "POST /accounts/{account_id}/cdrs/exports": lambda target: {"direction": "outbound"},
    "GET /accounts/{account_id}/cdrs/exports/{export_id}": lambda target: None,
    "GET /accounts/{account_id}/reports/monthly": lambda target: None,
    "GET /accounts/{account_id}/reports/sub-accounts": lambda target: None,
    "GET /accounts/{account_id}/reports/dids": lambda target: None,
}
CHILD = {"acme": "acme", "cumulus": "acme", "atlas": "borealis"}   # whom a target may hand a DID to
# A tariff each target owns (acme, a client, sells to nobody: the matrix gives it one)
OWNED_TARIFF = {"acme": "acme-own", "cumulus": "cumulus-retail", "atlas": "borealis-buys"}

# Routes an account uses on itself: creating below itself, its own API keys, its own price lists.
SELF_SERVICE = {"POST /accounts/{account_id}/children", "POST /accounts/{account_id}/api-keys",
                "DELETE /accounts/{account_id}/api-keys/{ref}", "POST /accounts/{account_id}/tariffs",
                "PATCH /accounts/{account_id}/tariffs/{tariff_id}", "DELETE /accounts/{account_id}/tariffs/{tariff_id}",
                "POST /accounts/{account_id}/tariffs/{tariff_id}/rates",
                "POST /accounts/{account_id}/tariffs/{tariff_id}/rates/{prefix}/end",
                "PUT /accounts/{account_id}/tariffs/{tariff_id}/deck",
                "POST /accounts/{account_id}/tariffs/{tariff_id}/imports",
                "POST /accounts/{account_id}/tariffs/{tariff_id}/imports/{import_id}/start",
                "POST /accounts/{account_id}/dids/{number}/assign", "POST /accounts/{account_id}/dids/{number}/unassign"}
# POST routes that only read: every account may run them on itself, a client included.
READS_BY_POST = {"POST /accounts/{account_id}/cdrs/exports"}
OWN_KEYS = {"POST /accounts/{account_id}/api-keys", "GET /accounts/{account_id}/api-keys",
            "DELETE /accounts/{account_id}/api-keys/{ref}"}
DELETE_SIP = "DELETE /accounts/{account_id}/sip-users/{username}"


def relation(caller: str, target: str) -> str:
    if caller in (ANONYMOUS, BOGUS):
        return "anonymous"
    if caller == target:
        return "self"
    if ROLES[caller] != "client" and PATHS[target].startswith(PATHS[caller] + "/"):
        return "ancestor"
    return "outsider"


def caller_order(target: str):
    """Anonymous, outsiders and the account itself first; then ancestors from the nearest up."""
    rank = {"anonymous": 0, "outsider": 1, "self": 2}
    return sorted(CALLERS, key=lambda c: (rank.get(relation(c, target), 3),
                                          -PATHS.get(c, "").count("/")))


def is_read(route: dict) -> bool:
    return route["method"] == "get"


# --- the world --------------------------------------------------------------------------------------------

class World:
    def __init__(self, client):
        load(demo_seed())
        self.portal = Portal(client)
        self.client = client
        for who in PATHS:
            self.portal.headers(who)

    def headers(self, caller: str) -> dict:
        if caller == ANONYMOUS:
            return {"Content-Type": JSON}
        if caller == BOGUS:
            return {"Content-Type": JSON, "Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.not-a-signature"}
        return self.portal.headers(caller)

    def path_params(self, route: dict, target: str) -> Dict[str, str]:
        """Values for the path's other parameters, set up so an allowed caller succeeds."""
        params = {}
        if "{username}" in route["path"]:
            params["username"] = "no-such-user"
            if target == "acme":                      # a fresh SIP user of acme's, for each request
                name = f"del{next(_names)}"
                self.portal.ok("admin", "POST", "/accounts/acme/sip-users", {"username": name}, status=201)
                params["username"] = name
        if "{tariff_id}" in route["path"]:
            params["tariff_id"] = OWNED_TARIFF[target]
            from chalicelib.adapters.dynamo.writer import tariff_items
            from chalicelib.domain.tariffs import Rate, Tariff
            if route["method"] == "delete":           # a fresh tariff nobody is charged by, for each request
                params["tariff_id"] = f"matrix-{next(_names)}"
            if target == "acme" or route["method"] == "delete":
                for item in tariff_items(Tariff(params["tariff_id"], owner=target), [Rate("1", Decimal("1"))]):
                    item.save()
        if "{import_id}" in route["path"]:              # a fresh import of the target's tariff, its deck uploaded
            params["import_id"] = self.uploaded_import(target, params["tariff_id"])
        if "{prefix}" in route["path"]:
            params["prefix"] = "1"                    # every target's tariff has a rate for 1
        if "{number}" in route["path"]:                # a fresh DID the target holds (unassign: assigned on)
            onward = route["path"].endswith("/unassign") and ROLES[target] != "client"
            params["number"] = self.held_did(target, onward)
        if "{export_id}" in route["path"]:            # an export of the target's, asked by the admin
            params["export_id"] = self.queued_export(target)
        if "{ref}" in route["path"]:
            params["ref"] = "000000000000"
            if ROLES[target] != "client":             # a fresh API key of the target's, for each request
                from chalicelib.bootstrap import container
                plain = container().identity.create_api_key(target, "to revoke")
                params["ref"] = re.match(r"cpk_([0-9a-f]+)_", plain).group(1)
        return params

    @staticmethod
    def queued_export(target: str) -> str:
        import time
        from chalicelib.bootstrap import container
        from chalicelib.services.ports import CdrExport
        job = CdrExport(id=f"exp_{next(_names):024x}", account_id=target, by="admin", filters={}, status="queued",
                        created_at="2026-01-01T00:00:00Z")
        container().store.create_export(job, time.time())
        return job.id

    @staticmethod
    def held_did(target: str, onward: bool) -> str:
        from chalicelib.bootstrap import container
        from chalicelib.domain import dids
        now = "2026-01-01T00:00:00Z"
        did = dids.create(f"1555{next(_names):07d}", "US", "admin", dids.Prices(), dids.Prices(), now)
        path = PATHS[target].split("/")[1:] + ([CHILD[target]] if onward else [])
        events = [dids.DidEvent(dids.CREATED, "admin", "admin", now)]
        if path:
            did = dids.assign(did, "admin", path, dids.Prices(), now)
            events.append(dids.DidEvent(dids.ASSIGNED, path[-1], PATHS[path[-1]], now, "admin", dids.Prices(), 1))
        container().store.save_did(None, did, did.holders, (), events)
        return did.number

    def uploaded_import(self, target: str, tariff_id: str) -> str:
        import time
        from chalicelib.adapters import decks
        from chalicelib.bootstrap import container
        from chalicelib.services.ports import ImportJob
        job = ImportJob(id=f"imp_matrix{next(_names)}", account_id=target, tariff_id=tariff_id, by="admin",
                        mode="merge", effective_from=None, dry_run=False, status="awaiting_upload",
                        created_at="2026-01-01T00:00:00Z")
        container().store.create_import(job, time.time())
        decks._s3().put_object(Bucket=decks.bucket(), Key=decks.import_key(job.id), Body=b"prefix,price\n99,0.5\n")
        return job.id

    def request(self, route: dict, caller: str, account_id: str, params: Dict[str, str]) -> Tuple[int, dict]:
        path = route["path"].replace("{account_id}", account_id)
        for name, value in params.items():
            path = path.replace("{" + name + "}", value)
        body = SAMPLES[route_key(route)](account_id)
        headers = self.headers(caller)
        if route.get("csv_in"):
            headers = dict(headers, **{"Content-Type": "text/csv"})
        return api(self.client, route["method"].upper(), path, headers, body)


def check(route: dict, target: str, caller: str, status: int, body) -> Optional[str]:
    """Why this answer is wrong, or None."""
    rk, rel = route_key(route), relation(caller, target)
    if rel == "anonymous":
        ok = status == 401 and body.get("error") == "invalid_token"
    elif rel == "outsider":
        ok = status == 404 and body == NOT_FOUND
    elif rel == "self":
        if is_read(route) or rk in READS_BY_POST:
            ok = status == 200 or (rk in READS_BY_POST and status == 202)
        elif rk in SELF_SERVICE:
            ok = (200 <= status < 300) if ROLES[target] != "client" else status in (403, 404)
        else:
            ok = status == 403
    else:  # ancestor
        if rk in OWN_KEYS:
            ok = status == 403 and body.get("error") == "forbidden"
        elif rk == DELETE_SIP and target != "acme":
            ok = status == 404 and body == NOT_FOUND          # a reseller has no SIP users to remove
        else:
            ok = (200 <= status < 300) or (400 <= status < 500 and status not in (401, 404))
    return None if ok else f"{rk} on {target} by {caller} ({rel}): {status} {body}"


# --- the matrix ----------------------------------------------------------------------------------------

def test_every_portal_route_has_a_sample_request():
    # GIVEN the routes the portal declares
    declared = {route_key(r) for r in all_routes()}
    # THEN the matrix covers each of them, and nothing that no longer exists
    assert declared == set(SAMPLES), {"missing": declared - set(SAMPLES), "stale": set(SAMPLES) - declared}
    assert "GET /me" in declared and len(declared) == len(all_routes())   # no route declared twice


ACCOUNT_ROUTES = [r for r in all_routes() if "{account_id}" in r["path"]]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("route", ACCOUNT_ROUTES, ids=[route_key(r) for r in ACCOUNT_ROUTES])
def test_the_wall(client, route, target):
    assert route_key(route) in SAMPLES, f"no sample request for {route_key(route)}"
    # GIVEN the demo world with a session for every account
    world = World(client)
    problems = []
    for caller in caller_order(target):
        # WHEN the caller sends the route a valid request about the target
        params = world.path_params(route, target)
        before = table_snapshot()
        status, body = world.request(route, caller, target, params)
        # THEN the answer is what its relation to the target allows
        problem = check(route, target, caller, status, body or {})
        if problem:
            problems.append(problem)
        # AND an answer that is not a success changed nothing
        if not 200 <= status < 300:
            after = table_snapshot()
            if after != before:
                problems.append(f"{route_key(route)} on {target} by {caller}: {status} but the tables changed: "
                                f"{snapshot_diff(before, after)}")
        # AND an outsider's 404 is byte for byte the answer for an id that does not exist
        if relation(caller, target) == "outsider":
            before = table_snapshot()
            missing = world.request(route, caller, f"does-not-exist-{next(_names)}", params)
            if (status, body) != missing:
                problems.append(f"{route_key(route)} on {target} by {caller}: {status} {body} differs from a "
                                f"nonexistent id's {missing}")
            if table_snapshot() != before:
                problems.append(f"{route_key(route)} on a nonexistent id by {caller} changed the tables")
    assert not problems, "\n".join(problems)


def test_me_answers_every_signed_in_caller_with_itself_and_nobody_else(client):
    world = World(client)
    before = table_snapshot()
    for caller in CALLERS:
        status, body = api(client, "GET", "/me", world.headers(caller))
        if caller in (ANONYMOUS, BOGUS):
            assert status == 401 and body["error"] == "invalid_token", (caller, body)
        else:
            assert status == 200 and body["id"] == caller and body["path"] == caller, body
    assert table_snapshot() == before


def test_a_closed_or_suspended_callers_old_token_is_refused_everywhere(client):
    # GIVEN cumulus signed in, then closed (after its clients) by borealis
    world = World(client)
    old = world.headers("cumulus")
    world.portal.ok("borealis", "POST", "/accounts/acme/close")
    world.portal.ok("borealis", "POST", "/accounts/shortly/close")
    world.portal.ok("borealis", "POST", "/accounts/cumulus/close")
    before = table_snapshot()
    # WHEN its old token is used on every route
    for route in all_routes():
        path = route["path"].replace("{account_id}", "cumulus").replace("{username}", "x").replace("{ref}", "x")
        body = SAMPLES[route_key(route)]("cumulus")
        headers = dict(old, **{"Content-Type": "text/csv"}) if route.get("csv_in") else old
        status, answer = api(client, route["method"].upper(), path, headers, body)
        # THEN 401, and nothing changed
        assert status == 401 and answer["error"] == "invalid_token", (route_key(route), status, answer)
    assert table_snapshot() == before
