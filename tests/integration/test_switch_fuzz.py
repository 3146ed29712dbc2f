"""Fuzzing the switch API from the outside: whatever body, path or headers a switch (or an attacker
posing as one) sends to either endpoint, through the Chalice routes or the function URL handler,
the answer is never a 5xx (a 5xx tells a switch to retry), and a 4xx never changes any table.

Bodies mix well-formed requests (so grants, repeats, completions and reused ids happen) with
hostile values: lone surrogates, control characters, 5,000-digit integers, NaN, deep nesting,
duplicate keys, bytes that are not UTF-8.
"""
import base64
import json
from urllib.parse import quote

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import DEMO_KEY, demo_seed, load
from tests.integration.helpers import client, headers  # noqa: F401
from tests.integration.test_switch_api import invoke, url_event

NASTY = ["\ud800", "\udfff", "\x00", "\x1f", "\x7f", "\u2028", " ", "\t", "\U0001F600", "%", "%40", "%ZZ",
         "/", "\\", '"', "\u00e9", "9" * 5000, "x" * 300]
texts = st.one_of(
    st.sampled_from(["1001", "1002", "2001", "9999", "15551230001", "5551230001", "881612345678", "f-1", "f-2"]),
    st.text(max_size=40),
    st.lists(st.sampled_from(NASTY) | st.text(max_size=5), max_size=4).map("".join),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10 ** 6), st.integers(min_value=10 ** 70),
                    st.floats(allow_nan=False, allow_infinity=False), texts)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                      max_leaves=8)
FIELDS = ["account", "destination", "call_id", "caller_id", "billsec", "disposition"]
objects = st.dictionaries(st.sampled_from(FIELDS) | texts, values | st.sampled_from(
    ["ANSWERED", "BUSY", "NO ANSWER", "FAILED", 0, 30, 600]), max_size=6)


IDS = st.sampled_from(["f-1", "f-2", "f-3", " f-1 ", "f-1\t"])
ACCOUNTS = st.sampled_from(["1001", "1002", "2001", "acme", 1001, "9999"])
NUMBERS = st.sampled_from(["15551230001", "5551230001", "+1 (555) 123-0001", "881612345678", "15551239999", "x"])
authorize_bodies = st.fixed_dictionaries(
    {"account": ACCOUNTS | texts, "destination": NUMBERS | texts, "call_id": IDS | texts},
    optional={"caller_id": texts | st.integers()})
complete_bodies = st.fixed_dictionaries(
    {"billsec": st.integers(0, 700) | values, "disposition": st.sampled_from(["ANSWERED", "BUSY", "NO ANSWER", "FAILED"]) | values})


@st.composite
def raw_bodies(draw):
    kind = draw(st.sampled_from(["request", "request", "request", "object", "bytes", "deep", "text", "mangled"]))
    if kind == "request":     # well-formed, mostly: grants, repeats, reused ids, completions, conflicts
        return json.dumps(draw(authorize_bodies | complete_bodies)).encode()
    if kind == "object":
        return json.dumps(draw(objects)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "deep":
        depth = draw(st.sampled_from([10, 999, 1001, 5_000, 20_000]))
        return ("[" * depth + "]" * depth).encode()
    if kind == "text":
        return json.dumps(draw(texts)).encode()
    body = json.dumps(draw(objects))      # a well-formed body with one hostile edit
    edit = draw(st.sampled_from(['"account": "1001", "account": "1002"', "NaN", "1e400", "-Infinity",
                                 "9" * 5000, '"\\ud800"']))
    return (body[:-1] + (", " if len(body) > 2 else "") + f'"x": {edit}' + "}").encode() if "account" not in edit \
        else ("{" + edit + "}").encode()


requests = st.tuples(
    st.sampled_from(["route", "function_url"]),
    st.sampled_from(["authorize", "complete"]),
    IDS | IDS | texts,                                          # the call id in a completion's path
    raw_bodies(),
    st.sampled_from([DEMO_KEY, DEMO_KEY, DEMO_KEY, None, "", "csk_wrong", "\U0001F600" * 100]),
)


def tables_snapshot():
    from chalicelib.adapters.dynamo.models import ALL_MODELS
    return {model.Meta.table_name: sorted(json.dumps(i.serialize(), sort_keys=True) for i in model.scan(consistent_read=True))
            for model in ALL_MODELS}


def send(client, via, endpoint, call_id, body, key):
    path = "/authorize" if endpoint == "authorize" else f"/calls/{quote(call_id, safe='', errors='surrogatepass')}/complete"
    if via == "function_url":
        event = url_event(path, "", key=None)
        event["body"] = base64.b64encode(body).decode()
        event["isBase64Encoded"] = True
        if key is not None:
            event["headers"]["x-api-key"] = key
        return invoke(event)[0]
    hdrs = headers(key=key) if key else headers(key=None)
    return client.http.post(path, headers=hdrs, body=body).status_code


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(request=requests)
def test_no_body_path_or_key_gets_a_5xx_and_no_4xx_changes_anything(client, request):
    if not getattr(client, "seeded", False):
        load(demo_seed())
        client.seeded = True
    via, endpoint, call_id, body, key = request
    if via == "route" and endpoint == "complete" and ("/" in call_id or not call_id.strip()):
        call_id = "f-1"     # a raw '/' or an empty segment is another route (Chalice's own 403/404)
    before = tables_snapshot()
    status = send(client, via, endpoint, call_id, body, key)
    event(f"{endpoint} {status}")
    assert status < 500, (via, endpoint, call_id[:80], body[:200], status)
    if 400 <= status < 500:
        assert tables_snapshot() == before, (via, endpoint, call_id[:80], body[:200], status)
