"""The portal's OpenAPI document stays valid and true to the app: every portal and sign-in route of the
Chalice app is documented with its method, every documented operation is served, request bodies and
query parameters match the routes' own schemas (and, for the sign-in routes, what their handlers
read), and real answers match the component schemas."""
import ast
import inspect
import json
import re
from decimal import Decimal

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import OpenAPIV30SpecValidator

from chalicelib.entrypoints import openapi, portal_auth
from chalicelib.entrypoints.portal import ROUTES

# Served by the same app but not part of the portal API: the switch's API (docs/switch-api.md) and the
# load balancer's health check.
NOT_PORTAL = {("/authorize", "post"), ("/calls/{call_id}/complete", "post"), ("/health", "get")}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def doc():
    return openapi.document(ROUTES)


def operations(doc):
    return {(path, method) for path, item in doc["paths"].items() for method in item if method in METHODS}


def app_routes():
    from app import app
    return {(path, method.lower()) for path, methods in app.routes.items() for method in methods}


def walk(node, where="#"):
    """Every (json pointer, dict) in the document."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{where}/{i}")


# --- the document --------------------------------------------------------------------------------

def test_document_is_valid_openapi_3_0_3(doc):
    assert doc["openapi"] == "3.0.3"
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in OpenAPIV30SpecValidator(doc).iter_errors()]
    assert errors == []


def test_document_uses_only_openapi_3_0_schema_keywords(doc):
    """3.0 has no type lists and no "null" type; our own x-money keyword never leaks out."""
    for where, node in walk(doc):
        assert not isinstance(node.get("type"), list), where
        assert node.get("type") != "null", where
        assert "x-money" not in node, where
        if "enum" in node and None in node["enum"]:
            assert node.get("nullable") is True, where


def test_security_schemes(doc):
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == dict(schemes["bearerAuth"], type="http", scheme="bearer", bearerFormat="JWT")
    assert schemes["portalKey"] == dict(schemes["portalKey"], type="apiKey", name="X-Portal-Key")
    assert schemes["portalKey"]["in"] == "header"
    assert doc["servers"] == [{"url": "/"}]
    for route in ROUTES:
        security = doc["paths"][route["path"]][route["method"]]["security"]
        assert security == ([{"bearerAuth": []}, {"portalKey": []}] if route["auth"] else []), route["path"]
    assert doc["paths"]["/auth/sign-in"]["post"]["security"] == []
    assert doc["paths"]["/openapi.json"]["get"]["security"] == []


def test_operation_ids_are_unique(doc):
    ids = [op["operationId"] for path, item in doc["paths"].items() for m, op in item.items() if m in METHODS]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_served_at_openapi_json(aws, doc):
    from chalice.test import Client

    from app import app
    with Client(app) as client:
        response = client.http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body) == json.loads(json.dumps(doc))


# --- both directions: the document and the app's routes --------------------------------------------

def test_every_portal_route_of_the_app_is_documented(doc):
    missing = app_routes() - NOT_PORTAL - operations(doc)
    assert not missing, f"served but not in /openapi.json: {sorted(missing)}"


def test_every_documented_operation_is_served(doc):
    ghosts = operations(doc) - app_routes()
    assert not ghosts, f"documented but not served: {sorted(ghosts)}"
    assert not operations(doc) & NOT_PORTAL


def test_documented_statuses_include_the_routes_success(doc):
    for route in ROUTES:
        responses = doc["paths"][route["path"]][route["method"]]["responses"]
        assert str(route["ok"]) in responses, (route["method"], route["path"])
        assert "503" in responses
        if route["auth"]:
            assert {"401", "403"} <= set(responses)
        if "{account_id}" in route["path"]:
            assert "404" in responses
        if route["body"] is not None:
            assert {"400", "413"} <= set(responses)


def test_every_portal_route_answers_a_named_schema(doc):
    """A new route needs its answer described: add it to openapi.RESPONSES."""
    for route in ROUTES:
        if route["ok"] == 204:
            continue
        content = doc["paths"][route["path"]][route["method"]]["responses"][str(route["ok"])]["content"]
        if route["csv_out"]:          # a CSV answer: a string whose header row the document names
            assert list(content) == ["text/csv"] and "prefix" in content["text/csv"]["schema"]["description"]
            continue
        assert "$ref" in content["application/json"]["schema"], (route["method"], route["path"])
    assert set(openapi.RESPONSES) <= {(r["method"], r["path"]) for r in ROUTES}


# --- request bodies and query parameters -----------------------------------------------------------

def body_schema(doc, path, method):
    body = doc["paths"][path][method].get("requestBody")
    return None if body is None else body["content"].get("application/json", {}).get("schema")


def test_portal_request_bodies_match_the_routes_schemas(doc):
    for route in ROUTES:
        schema = body_schema(doc, route["path"], route["method"])
        where = (route["method"], route["path"])
        if route["body"] is None:
            assert schema is None, where
            if route["csv_in"]:       # a CSV deck, as text
                body = doc["paths"][route["path"]][route["method"]]["requestBody"]
                assert body["required"] is True and list(body["content"]) == ["text/csv"], where
            continue
        assert doc["paths"][route["path"]][route["method"]]["requestBody"]["required"] is True
        assert sorted(schema.get("required", [])) == sorted(route["body"].get("required", [])), where
        assert set(schema["properties"]) == set(route["body"]["properties"]), where
        assert schema.get("additionalProperties") is False, where
        assert schema.get("minProperties") == route["body"].get("minProperties"), where


def test_portal_query_parameters_match_the_routes_specs(doc):
    for route in ROUTES:
        op = doc["paths"][route["path"]][route["method"]]
        query = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
        path = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
        assert set(query) == set(route["query"] or {}), (route["method"], route["path"])
        assert path == re.findall(r"{([^}]+)}", route["path"])
        assert all(p["required"] for p in op.get("parameters", []) if p["in"] == "path")
        for name, rule in (route["query"] or {}).items():
            assert query[name]["required"] is False
            for keyword in ("minimum", "maximum", "maxLength", "pattern", "enum", "default"):
                assert query[name]["schema"].get(keyword) == rule.get(keyword), (route["path"], name, keyword)


def auth_routes_in_code():
    """{(path, method): required fields or None} read from portal_auth's source: each route's
    ``_handle(..., required=(...))``."""
    tree = ast.parse(inspect.getsource(portal_auth))
    found = {}
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        for deco in fn.decorator_list:
            if isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "route":
                path = ast.literal_eval(deco.args[0])
                methods = next((ast.literal_eval(k.value) for k in deco.keywords if k.arg == "methods"), ["GET"])
                calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "_handle"]
                assert len(calls) == 1, fn.name
                required = next(ast.literal_eval(k.value) for k in calls[0].keywords if k.arg == "required")
                for method in methods:
                    found[(path, method.lower())] = required
    return found


def test_sign_in_routes_match_what_their_handlers_read(doc):
    code = auth_routes_in_code()
    assert len(code) == 7
    for (path, method), required in code.items():
        schema = body_schema(doc, path, method)
        if required is None:
            assert schema is None, path
            continue
        assert schema["required"] == list(required), path
        assert set(schema["properties"]) == set(required), path
        assert schema["additionalProperties"] is False
        for name in required:      # parse_body: each a non-empty string
            assert schema["properties"][name]["type"] == "string"
            assert schema["properties"][name]["minLength"] >= 1


# --- JSON Schema -> OpenAPI 3.0 ---------------------------------------------------------------------

def test_type_lists_become_nullable_or_one_of():
    assert openapi.to_openapi({"type": ["string", "null"], "maxLength": 64}) == \
        {"type": "string", "nullable": True, "maxLength": 64}
    assert openapi.to_openapi({"type": ["integer", "null"], "minimum": 0}) == \
        {"type": "integer", "nullable": True, "minimum": 0}
    assert openapi.to_openapi({"type": ["string", "number"]}) == {"oneOf": [{"type": "string"}, {"type": "number"}]}
    assert openapi.to_openapi({"enum": ["early", "late", None]}) == \
        {"enum": ["early", "late", None], "type": "string", "nullable": True}
    assert openapi.to_openapi({"enum": ["a", "b"]}) == {"enum": ["a", "b"], "type": "string"}


def test_money_is_a_decimal_string_or_a_number(doc):
    amount = body_schema(doc, "/accounts/{account_id}/payments", "post")["properties"]["amount"]
    text, number = amount["oneOf"]
    assert number == {"type": "number"}
    assert text["type"] == "string" and not text.get("nullable")
    pattern = re.compile(text["pattern"])
    for good in ("12.50", "0.000001", "999999999999", "-3"):
        assert pattern.match(good), good
    for bad in ("1e3", "12.5000001", "1000000000000", "", " 1", "NaN"):
        assert not pattern.match(bad), bad
    limit = body_schema(doc, "/accounts/{account_id}", "patch")["properties"]["daily_limit"]
    validator = OAS30Validator(limit)
    for ok in (None, "50.00", 50):
        assert validator.is_valid(ok), ok
    assert not validator.is_valid("fifty")


# --- real answers against the component schemas -----------------------------------------------------

def sign_in(client, account_id):
    from chalicelib.bootstrap import container
    email = f"{account_id}@demo.cascade.local"
    container().store.update_account(account_id, {"email": email}, search=(account_id, email))
    container().identity.create_login(account_id, email, PASSWORD)
    response = client.http.post("/auth/sign-in", headers={"Content-Type": "application/json"},
                                body=json.dumps({"email": email, "password": PASSWORD}))
    assert response.status_code == 200, response.body
    return json.loads(response.body)


def conforms(doc, component, instance):
    validator = OAS30Validator({"$ref": f"#/components/schemas/{component}", "components": doc["components"]})
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]
    assert errors == [], (component, instance)


def test_answers_match_the_component_schemas(demo, doc, monkeypatch):
    monkeypatch.setenv("CASCADE_MAIL_VERIFY_SENDER", "1")
    from chalice.test import Client

    from app import app
    with Client(app) as client:
        session = sign_in(client, "atlas")
        conforms(doc, "Session", session)
        h = {"Content-Type": "application/json", "Authorization": "Bearer " + session["access_token"]}

        def call(method, path, body=None, status=200):
            r = client.http.request(method, path, headers=h, body=json.dumps(body).encode() if body else b"")
            assert r.status_code == status, (method, path, r.body)
            return json.loads(r.body, parse_float=Decimal) if r.body else None

        me = call("GET", "/me")
        conforms(doc, "Account", me)
        assert set(me) == set(doc["components"]["schemas"]["Account"]["properties"])
        conforms(doc, "Principal", call("GET", "/auth/me"))
        child = call("POST", "/accounts/atlas/children", {"role": "client", "name": "Zed", "may_create": "nothing",
                                                         "max_calls": 2, "daily_limit": "5"}, 201)
        conforms(doc, "CreatedAccount", child)
        conforms(doc, "AccountPage", call("GET", "/accounts/atlas/children?limit=1"))
        conforms(doc, "AccountPage", call("GET", "/accounts/atlas/descendants?role=client"))
        conforms(doc, "Movement", call("POST", f"/accounts/{child['id']}/payments",
                                       {"amount": "30", "idempotency_key": "p-1"}, 201))
        conforms(doc, "Movement", call("POST", f"/accounts/{child['id']}/transfers",
                                       {"amount": 2.5, "idempotency_key": "t-1"}, 201))
        conforms(doc, "CreditLimitChange", call("PUT", f"/accounts/{child['id']}/credit-limit",
                                                {"credit_limit": "10", "idempotency_key": "c-1"}))
        conforms(doc, "Balance", call("GET", f"/accounts/{child['id']}/balance"))
        ledger = call("GET", f"/accounts/{child['id']}/ledger")
        conforms(doc, "EntryPage", ledger)
        assert [e["kind"] for e in ledger["items"]] == ["credit_limit", "transfer", "payment"]
        conforms(doc, "NewSipUser", call("POST", f"/accounts/{child['id']}/sip-users", {"username": "zed-1"}, 201))
        conforms(doc, "SipUserList", call("GET", f"/accounts/{child['id']}/sip-users"))
        conforms(doc, "NewApiKey", call("POST", "/accounts/atlas/api-keys", {"name": "billing robot"}, 201))
        conforms(doc, "ApiKeyList", call("GET", "/accounts/atlas/api-keys"))
        conforms(doc, "Account", call("POST", f"/accounts/{child['id']}/suspend"))
        conforms(doc, "Error", call("GET", "/accounts/delta", status=404))
        conforms(doc, "Error", call("POST", f"/accounts/{child['id']}/charges", {"amount": "1e3"}, 400))
