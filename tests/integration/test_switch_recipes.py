"""The FreeSWITCH and Asterisk recipes (integrations/freeswitch, integrations/asterisk).

FreeSWITCH: cascade.lua runs under plain Lua 5.2 and 5.3 (mod_lua 1.10 is built against one or the
other) inside tests/integration/freeswitch_harness.lua, a stand-in for the mod_lua API. Each mod_curl call is
answered here: either a scripted reply, or the real Cascade app (Chalice test client over moto). The
request is read the way mod_curl 1.10 reads its argument line (at most 10 space-separated tokens, the
post data url-decoded), so a request that real mod_curl would mangle fails here too.

Asterisk: not packaged for Debian, so extensions.conf is only checked for structure.

The Lua interpreters come from Debian's lua5.2 and lua5.3 packages. Missing ones skip the tests,
or fail them when CASCADE_REQUIRE_SWITCH_TOOLS=1 (CI).
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import demo_seed, load
from tests.integration.helpers import account

ROOT = Path(__file__).resolve().parents[2]
LUA_SCRIPT = ROOT / "integrations" / "freeswitch" / "cascade.lua"
DIALPLAN_XML = ROOT / "integrations" / "freeswitch" / "dialplan.xml"
EXTENSIONS_CONF = ROOT / "integrations" / "asterisk" / "extensions.conf"
HARNESS = Path(__file__).with_name("freeswitch_harness.lua")
INTERPRETERS = ("lua5.2", "lua5.3")
BASE = "http://cascade.test"
KEY = "csk_test_key_0123"
CALL_ID = "a84b4c76e66710@pc33.example.com"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    package = name.replace("luac", "lua")     # luac5.3 comes with the lua5.3 package
    message = f"{name} is not installed (apt-get install -y {package})"
    if os.environ.get("CASCADE_REQUIRE_SWITCH_TOOLS") == "1":
        pytest.fail(message + "; CASCADE_REQUIRE_SWITCH_TOOLS=1 requires it")
    pytest.skip(message)


@pytest.fixture(params=INTERPRETERS)
def lua(request) -> str:
    return tool(request.param)


# --------------------------------------------------------------------------- mod_curl, as 1.10 reads it

def url_decode(text: str) -> str:
    """switch_url_decode: %XX -> byte, nothing else ('+' stays '+')."""
    raw = re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), text.encode())
    return raw.decode()


def mod_curl_request(args: str) -> dict:
    """What mod_curl's `curl` API (curl_function, mod_curl.c) makes of its argument line: split on
    spaces into at most 10 tokens, the last keeping the rest; quotes and backslashes are stripped by
    switch_separate_string, so a token holding them would reach libcurl altered."""
    tokens = re.split(r" +", args.strip(" "), maxsplit=9)
    for token in tokens:
        assert "'" not in token and "\\" not in token, f"switch_separate_string would mangle {token!r}"
    request = {"url": tokens[0], "tokens": tokens, "method": "get", "data": "", "json": False,
               "headers": [], "content_type": None, "timeout": None, "connect_timeout": None}
    i = 1
    while i < len(tokens):
        word = tokens[i].lower()
        if word == "json":
            request["json"] = True
        elif word in ("get", "head"):
            request["method"] = word
        elif word in ("post", "patch", "put", "delete"):
            request["method"] = word
            i += 1
            request["data"] = url_decode(tokens[i]) if i < len(tokens) else ""
        elif word in ("content-type", "append_headers", "timeout", "connect-timeout", "proxy"):
            i += 1
            value = tokens[i] if i < len(tokens) else None
            if word == "append_headers":
                request["headers"].append(value)
            else:
                request[word.replace("-", "_")] = value
        i += 1
    return request


def mod_curl_json(status: int, body: str = "", exit_code: int = 0, numeric_status: bool = False) -> str:
    """mod_curl's `json` output: cJSON in 1.10 (status_code a string), json-c before (a number)."""
    reply = {"status_code": status} if numeric_status else {"exit_code": str(exit_code), "status_code": str(status)}
    if body:
        reply["body"] = body
    reply["headers"] = [{"key": "Content-Type", "value": "application/json"}] if status else []
    return json.dumps(reply, separators=(",", ":"), ensure_ascii=False)


def http(status: int, body=None, **kwargs) -> str:
    return mod_curl_json(status, body if isinstance(body, str) else json.dumps(body) if body else "", **kwargs)


TIMEOUT = mod_curl_json(0, exit_code=28)            # CURLE_OPERATION_TIMEDOUT: no status, no body
REFUSED = mod_curl_json(0, exit_code=7)             # CURLE_COULDNT_CONNECT
AUTHORIZED = http(200, {"authorized": True, "max_duration": 600, "call_id": CALL_ID, "number": "15551230001",
                        "prefix": "1555", "destination": "US", "rate": "2.000000", "connect_fee": "0.000000",
                        "increments": [1, 1]})
COMPLETED = http(200, {"call_id": CALL_ID, "billsec": 42, "disposition": "ANSWERED", "charged": "1.400000"})


# --------------------------------------------------------------------------- running the harness

def to_lua(value) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\{b:03d}"
                             for b in value.encode()) + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{to_lua(k)}] = {to_lua(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def utf8(value):
    """The harness writes strings byte by byte; make them text again."""
    if isinstance(value, str):
        return value.encode("latin-1").decode("utf-8")
    if isinstance(value, list):
        return [utf8(v) for v in value]
    if isinstance(value, dict):
        return {utf8(k): utf8(v) for k, v in value.items()}
    return value


class Run:
    def __init__(self, events, requests):
        self.events, self.requests = events, requests
        self.final = events[-1]["vars"] if events and events[-1]["ev"] == "end" else {}
        self.ready = events[-1].get("ready") if events else None

    def of(self, kind):
        return [e for e in self.events if e["ev"] == kind]

    @property
    def executed(self):
        return [(e["app"], e.get("data")) for e in self.of("execute")]

    @property
    def hangups(self):
        return [e.get("cause") for e in self.of("hangup")]

    @property
    def sleeps(self):
        return [e["ms"] for e in self.of("sleep")]

    def logs(self, level=None):
        return [e["msg"] for e in self.of("log") if level is None or e["level"] == level]


def run(lua, replies, *, vars=None, globals=None, complete=False, session=True, env=False, **scenario):
    """Run cascade.lua once. `replies`: a list of mod_curl outputs, or a function(request) -> output."""
    pending = list(replies) if isinstance(replies, (list, tuple)) else None
    requests = []

    def answer(command, args):
        assert command == "curl"
        request = mod_curl_request(args)
        requests.append(request)
        if pending is None:
            return replies(request)
        assert pending, f"unexpected request {request['url']}"
        return pending.pop(0)

    settings = {"cascade_url": BASE, "cascade_api_key": KEY}
    table = {"argv": {0: "cascade.lua", **({1: "complete"} if complete else {})},
             "vars": vars or {}, "globals": {**settings, **(globals or {})},
             "session": session, "env": env, **scenario}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write("return " + to_lua(table) + "\n")
    try:
        proc = subprocess.Popen([lua, str(HARNESS), str(LUA_SCRIPT), handle.name], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        watchdog = threading.Timer(30, proc.kill)
        watchdog.start()
        events = []
        try:
            for line in proc.stdout:
                event = utf8(json.loads(line))
                events.append(event)
                if event["ev"] == "api":
                    reply = answer(event["cmd"], event["args"])
                    proc.stdin.write(reply.encode().hex().encode() + b"\n")
                    proc.stdin.flush()
            proc.wait()
        finally:
            watchdog.cancel()
        stderr = proc.stderr.read().decode()
    finally:
        os.unlink(handle.name)
    assert proc.returncode == 0, stderr
    assert not [e for e in events if e["ev"] == "error"], events
    assert events and events[-1]["ev"] == "end", stderr
    if pending:
        raise AssertionError(f"{len(pending)} scripted replies not used")
    return Run(events, requests)


CALLER = {"sip_auth_username": "1001", "destination_number": "15551230001", "sip_call_id": CALL_ID,
          "caller_id_number": "15550001111", "uuid": "3f2b-uuid"}


def authorized_channel(**ending):
    """The A leg's variables at hangup after an authorized call (what the hook sees)."""
    return {**CALLER, "cascade_call_id": CALL_ID, "cascade_decision": "authorized",
            "cascade_max_duration": "600", "answer_epoch": "0", "billsec": "0", **ending}


def assert_rejected(result, code, reason, phrase):
    assert ("respond", f"{code} {phrase}") in result.executed
    assert result.final["sip_rh_X-Cascade-Reason"] == result.final["sip_ph_X-Cascade-Reason"] == reason
    assert "execute_on_answer" not in result.final
    assert result.ready is False, "the call must not go on to the bridge"


# --------------------------------------------------------------------------- FreeSWITCH: authorize

def test_a_200_arms_sched_hangup_from_answer_and_leaves_the_call_to_the_bridge(lua):
    result = run(lua, [AUTHORIZED], vars=CALLER)

    (request,) = result.requests
    assert request["url"] == BASE + "/authorize"
    assert request["method"] == "post" and request["json"] is True
    assert request["headers"] == ["X-Api-Key:" + KEY]
    assert request["content_type"] == "application/json"
    assert request["timeout"] == "2"
    assert len(request["tokens"]) == 10, "mod_curl keeps at most 10 tokens"
    assert json.loads(request["data"]) == {"account": "1001", "destination": "15551230001", "call_id": CALL_ID,
                                           "caller_id": "15550001111"}
    assert result.final["execute_on_answer"] == "sched_hangup +600 ALLOTTED_TIMEOUT"
    assert result.final["cascade_decision"] == "authorized"
    assert result.final["cascade_max_duration"] == "600"
    assert result.final["api_hangup_hook"] == "lua cascade.lua complete"
    assert result.final["session_in_hangup_hook"] == "true"
    assert result.executed == [] and result.hangups == [] and result.ready is True


def test_channel_variables_override_the_globals_and_odd_characters_survive_the_trip(lua):
    caller = {**CALLER, "cascade_timeout": "5", "cascade_account": "acme main",
              "sip_call_id": "x/y z\"q'\\é@host", "caller_id_number": None}
    result = run(lua, [AUTHORIZED], vars={k: v for k, v in caller.items() if v is not None},
                 globals={"cascade_url": "https://other.test/"})

    (request,) = result.requests
    assert request["url"] == "https://other.test/authorize" and request["timeout"] == "5"
    assert json.loads(request["data"]) == {"account": "acme main", "destination": "15551230001",
                                           "call_id": "x/y z\"q'\\é@host"}


@pytest.mark.parametrize("status, reason, phrase", [
    (402, "insufficient_funds", "Payment Required"),
    (403, "cps_limit", "Forbidden"),
    (403, "account_unknown", "Forbidden"),
])
def test_402_and_403_are_passed_on_with_the_reason(lua, status, reason, phrase):
    result = run(lua, [http(status, {"authorized": False, "reason": reason})], vars=CALLER)

    assert_rejected(result, status, reason, phrase)
    assert result.final["cascade_decision"] == "refused"


@pytest.mark.parametrize("reply", [
    TIMEOUT,
    REFUSED,
    http(500, {"error": "internal", "message": "x"}),
    http(503, {"error": "busy", "message": "try again"}),
    http(503, {"error": "busy"}, numeric_status=True),
    http(401, {"error": "unauthorized", "message": "missing, unknown or revoked X-Api-Key"}),
    http(400, {"error": "invalid_request", "field": "destination", "message": "x"}),
    http(200, "<html>gateway</html>"),
    http(200, {"authorized": True}),
    http(200, {"authorized": True, "max_duration": "600"}),
    http(200, {"authorized": True, "max_duration": 0}),
    http(200, {"authorized": True, "max_duration": 60.5}),
    http(200, {"authorized": True, "max_duration": {"text": "600"}}),
    http(200, {"authorized": False, "max_duration": 600}),
    "-ERR curl Command not found!\n",
    "",
    '{"status_code":"200","body":"{\\"authorized\\": true, \\"max_duration\\": 600}"',
], ids=["timeout", "refused", "500", "503", "503-json-c", "401", "400", "html", "no-max", "max-as-string",
        "max-zero", "max-fraction", "max-object", "not-authorized", "no-mod_curl", "empty", "truncated"])
def test_anything_else_fails_closed_with_503(lua, reply):
    result = run(lua, [reply], vars=CALLER)

    assert_rejected(result, 503, "unavailable", "Service Unavailable")
    assert result.final["cascade_decision"] == "failed"
    # the completion hook stays armed: it reports FAILED, 0 s, releasing any hold Cascade did make
    assert result.final["api_hangup_hook"] == "lua cascade.lua complete"


def test_a_402_with_an_unreadable_body_is_still_a_refusal(lua):
    result = run(lua, [http(402, "not json")], vars=CALLER)
    assert_rejected(result, 402, "refused", "Payment Required")


def test_the_older_json_c_output_with_a_numeric_status_is_understood(lua):
    body = json.dumps({"authorized": True, "max_duration": 90})
    result = run(lua, [http(200, body, numeric_status=True)], vars=CALLER)
    assert result.final["execute_on_answer"] == "sched_hangup +90 ALLOTTED_TIMEOUT"


def test_the_json_reader_copes_with_escapes_nesting_and_numbers_it_does_not_need(lua):
    body = ('{"call_id": "a\\"b\\\\c\\/d\\u00e9\\ud83d\\ude00", "rate": "0.020000", "increments": [1, [2, {}]],'
            ' "x": null, "y": false, "z": -1.5e3, "levels": [{"cost": "1.400000"}], "authorized": true,'
            ' "max_duration" : 61 }')
    result = run(lua, [http(200, body)], vars=CALLER)
    assert result.final["cascade_max_duration"] == "61"


def test_a_switch_without_settings_fails_closed_without_asking(lua):
    result = run(lua, [], vars=CALLER, globals={"cascade_url": None})
    assert result.requests == []
    assert_rejected(result, 503, "unavailable", "Service Unavailable")
    assert "api_hangup_hook" not in result.final


def test_an_api_key_that_mod_curl_would_split_is_refused_locally(lua):
    result = run(lua, [], vars=CALLER, globals={"cascade_api_key": "csk with space"})
    assert result.requests == []
    assert_rejected(result, 503, "unavailable", "Service Unavailable")


def test_a_lua_error_mid_way_still_fails_closed(lua):
    result = run(lua, [], vars=CALLER, api_error=True)
    assert_rejected(result, 503, "unavailable", "Service Unavailable")
    assert any("authorization failed" in m for m in result.logs("ERR"))


def test_the_channel_is_hung_up_with_a_cause_when_respond_does_not_end_it(lua):
    # `respond` is a SIP indication: on a non-SIP channel, or one already answered, the call stays up
    result = run(lua, [TIMEOUT], vars={**CALLER, "sip_call_id": None}, answered=True)
    assert result.hangups == ["NORMAL_TEMPORARY_FAILURE"]
    assert result.final["cascade_call_id"] == "3f2b-uuid"


def test_the_caller_hanging_up_during_the_request_leaves_the_outcome_to_the_hook(lua):
    result = run(lua, [AUTHORIZED], vars=CALLER, hangup_during_api=True)
    assert result.final["cascade_decision"] == "authorized"
    assert result.executed == [] and result.hangups == []
    assert result.final["api_hangup_hook"] == "lua cascade.lua complete"


# --------------------------------------------------------------------------- FreeSWITCH: completion

@pytest.mark.parametrize("ending, billsec, disposition", [
    ({"hangup_cause": "NORMAL_CLEARING", "answer_epoch": "1700000000", "billsec": "42"}, 42, "ANSWERED"),
    ({"hangup_cause": "ALLOTTED_TIMEOUT", "answer_epoch": "1700000000", "billsec": "600"}, 600, "ANSWERED"),
    ({"hangup_cause": "NORMAL_CLEARING", "answer_epoch": "1700000000", "billsec": "0"}, 0, "ANSWERED"),
    ({"hangup_cause": "MEDIA_TIMEOUT", "answer_epoch": "1700000000", "billsec": "17"}, 17, "ANSWERED"),
    ({"hangup_cause": "USER_BUSY"}, 0, "BUSY"),
    ({"hangup_cause": "NO_ANSWER"}, 0, "NO ANSWER"),
    ({"hangup_cause": "NO_USER_RESPONSE"}, 0, "NO ANSWER"),
    ({"hangup_cause": "ORIGINATOR_CANCEL"}, 0, "NO ANSWER"),
    ({"hangup_cause": "NORMAL_CLEARING", "originate_disposition": "USER_BUSY"}, 0, "BUSY"),
    ({"hangup_cause": "NORMAL_CLEARING"}, 0, "FAILED"),
    ({"hangup_cause": "UNALLOCATED_NUMBER"}, 0, "FAILED"),
    ({"hangup_cause": "NORMAL_TEMPORARY_FAILURE"}, 0, "FAILED"),
])
def test_the_hook_posts_billsec_and_the_disposition_of_every_ending(lua, ending, billsec, disposition):
    result = run(lua, [COMPLETED], vars=authorized_channel(**ending), complete=True)

    (request,) = result.requests
    assert request["url"] == BASE + "/calls/a84b4c76e66710%40pc33.example.com/complete"
    assert request["headers"] == ["X-Api-Key:" + KEY] and request["method"] == "post"
    assert json.loads(request["data"]) == {"billsec": billsec, "disposition": disposition}
    assert result.sleeps == []
    assert any("completed" in m for m in result.logs("INFO"))


def test_the_call_id_is_url_encoded_in_the_path(lua):
    channel = authorized_channel(cascade_call_id="a/b c%d@host", hangup_cause="USER_BUSY")
    result = run(lua, [COMPLETED], vars=channel, complete=True)
    assert result.requests[0]["url"] == BASE + "/calls/a%2Fb%20c%25d%40host/complete"


def test_the_hook_works_from_the_event_alone_when_there_is_no_session(lua):
    channel = authorized_channel(hangup_cause="NORMAL_CLEARING", answer_epoch="1700000000", billsec="42")
    result = run(lua, [COMPLETED], vars=channel, complete=True, session=False, env=True)
    assert json.loads(result.requests[0]["data"]) == {"billsec": 42, "disposition": "ANSWERED"}


def test_a_call_that_failed_closed_is_reported_failed_with_zero_seconds(lua):
    channel = authorized_channel(cascade_decision="failed", hangup_cause="NORMAL_TEMPORARY_FAILURE")
    result = run(lua, [http(404, {"error": "unknown_call"})], vars=channel, complete=True)
    assert json.loads(result.requests[0]["data"]) == {"billsec": 0, "disposition": "FAILED"}


@pytest.mark.parametrize("decision", ["refused", None])
def test_nothing_is_posted_for_a_refused_or_never_authorized_call(lua, decision):
    channel = authorized_channel(cascade_decision=decision) if decision else dict(CALLER)
    result = run(lua, [], vars={k: v for k, v in channel.items() if v is not None}, complete=True)
    assert result.requests == []


def test_the_completion_is_retried_on_5xx_and_timeouts_until_it_lands(lua):
    replies = [http(503, {"error": "busy"}), TIMEOUT, COMPLETED]
    result = run(lua, replies, vars=authorized_channel(hangup_cause="USER_BUSY"), complete=True)
    assert len(result.requests) == 3
    assert len({r["data"] for r in result.requests}) == 1, "every attempt posts the same body"
    assert result.sleeps == [500, 1000]


def test_retries_are_bounded_and_the_loss_is_logged(lua):
    replies = [http(500, {"error": "internal"})] * 5
    result = run(lua, replies, vars=authorized_channel(hangup_cause="USER_BUSY"), complete=True,
                 globals={"cascade_retries": "5"})
    assert len(result.requests) == 5 and result.sleeps == [500, 1000, 1500, 2000]
    assert any("not delivered after 5 attempts" in m for m in result.logs("ERR"))


@pytest.mark.parametrize("status", [400, 401, 404])
def test_a_4xx_completion_is_not_retried(lua, status):
    result = run(lua, [http(status, {"error": "x"})], vars=authorized_channel(hangup_cause="USER_BUSY"),
                 complete=True)
    assert len(result.requests) == 1 and result.sleeps == []
    assert any(f"refused with {status}" in m for m in result.logs("ERR"))


# --------------------------------------------------------------------------- FreeSWITCH against Cascade

@pytest.fixture
def cascade_app(aws):
    """The Chalice app over moto (tables created, nothing seeded)."""
    from chalice.test import Client

    from app import app
    with Client(app) as test_client:
        yield test_client


def cascade(client_, seen):
    """Answer mod_curl requests with the real Cascade app, as mod_curl would see the HTTP answer."""
    def reply(request):
        url = urlsplit(request["url"])
        assert url.scheme + "://" + url.netloc == BASE and request["method"] == "post"
        headers = {"Content-Type": request["content_type"]}
        headers.update(h.split(":", 1) for h in request["headers"])
        response = client_.http.post(url.path, headers=headers, body=request["data"])
        body = response.body.decode() if isinstance(response.body, bytes) else response.body
        seen.append((url.path, response.status_code, json.loads(body)))
        return mod_curl_json(response.status_code, body)
    return reply


DEMO_KEY_SETTINGS = {"cascade_api_key": "csk_demo_local_only_not_for_production"}


def test_against_cascade_an_answered_call_is_authorized_limited_and_billed_once(lua, cascade_app):
    load(demo_seed())
    seen = []
    caller = {**CALLER, "sip_call_id": "fs-1/x@pbx.example.com"}
    first = run(lua, cascade(cascade_app, seen), vars=caller, globals=DEMO_KEY_SETTINGS)
    assert seen[0][1] == 200 and first.final["execute_on_answer"] == "sched_hangup +600 ALLOTTED_TIMEOUT"
    assert account("acme").held > 0

    # the callee answers, they talk 42 s, the caller hangs up; the core runs the hook, twice for good measure
    hangup = {**first.final, "hangup_cause": "NORMAL_CLEARING", "answer_epoch": "1700000000", "billsec": "42"}
    for _ in range(2):
        run(lua, cascade(cascade_app, seen), vars=hangup, complete=True, globals=DEMO_KEY_SETTINGS)

    (path, status, body), (_, _, again) = seen[1], seen[2]
    assert path == "/calls/fs-1%2Fx%40pbx.example.com/complete" and status == 200
    assert body["call_id"] == "fs-1/x@pbx.example.com"
    assert body["charged"] == "1.400000" and again == body       # 42 s at 2.00/min, billed once
    assert account("acme").balance == Decimal("18.60")
    assert account("acme").held == 0


@pytest.mark.parametrize("username, status, reason", [
    ("9999", 403, "account_unknown"),
    ("1002", 402, "insufficient_funds"),
])
def test_against_cascade_refusals_reach_the_caller(lua, cascade_app, username, status, reason):
    seed = demo_seed()
    for item in seed["accounts"]:
        if item["id"] == "shortly":
            item["balance"] = "0.00"
    load(seed)
    seen = []
    result = run(lua, cascade(cascade_app, seen), vars={**CALLER, "sip_auth_username": username},
                 globals=DEMO_KEY_SETTINGS)
    assert seen[0][1:] == (status, {"authorized": False, "reason": reason})
    assert_rejected(result, status, reason, "Payment Required" if status == 402 else "Forbidden")

    hook = run(lua, cascade(cascade_app, seen), vars={**result.final, "hangup_cause": "OUTGOING_CALL_BARRED"},
               complete=True, globals=DEMO_KEY_SETTINGS)
    assert hook.requests == []


def test_against_cascade_a_cancelled_call_releases_the_hold_and_costs_nothing(lua, cascade_app):
    load(demo_seed())
    seen = []
    first = run(lua, cascade(cascade_app, seen), vars=CALLER, globals=DEMO_KEY_SETTINGS)
    assert account("acme").held > 0
    run(lua, cascade(cascade_app, seen), vars={**first.final, "hangup_cause": "ORIGINATOR_CANCEL"}, complete=True,
        globals=DEMO_KEY_SETTINGS)
    assert seen[1][1] == 200 and seen[1][2]["disposition"] == "NO ANSWER" and Decimal(seen[1][2]["charged"]) == 0
    assert account("acme").held == 0 and account("acme").active_calls == 0


# --------------------------------------------------------------------------- FreeSWITCH: files

@pytest.mark.parametrize("compiler", ["luac5.2", "luac5.3"])
def test_the_script_and_the_harness_compile(compiler):
    luac = tool(compiler)
    for path in (LUA_SCRIPT, HARNESS):
        out = subprocess.run([luac, "-p", str(path)], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr


def test_the_example_dialplan_is_xml_that_bridges_only_an_authorized_call():
    import xml.etree.ElementTree as ET
    extension = ET.parse(DIALPLAN_XML).getroot().find("extension")
    actions = [(a.get("application"), a.get("data")) for a in extension.iter("action")]
    apps = [app for app, _ in actions]
    assert apps.index("lua") < apps.index("bridge")
    assert ("lua", "cascade.lua") in actions
    assert ("set", "cascade_decision=none") in actions and apps.index("set") < apps.index("lua")
    bridge = dict(actions)["bridge"]
    assert bridge.startswith("${cond(${cascade_decision} == authorized ? ") and " : error/" in bridge


# --------------------------------------------------------------------------- Asterisk: structure

KNOWN_APPS = {"NoOp", "Set", "ExecIf", "GotoIf", "Goto", "Gosub", "Return", "Dial", "Hangup", "PJSIPHangup",
              "Log"}
KNOWN_FUNCTIONS = {"CHANNEL", "FILTER", "CALLERID", "CURLOPT", "CURL", "URIENCODE", "JSON_DECODE", "STRREPLACE",
                   "CUT", "CDR"}
# Set by Asterisk itself, not by the dialplan.
ASTERISK_VARIABLES = {"EXTEN", "UNIQUEID", "GOSUB_RETVAL", "DIALSTATUS", "ANSWEREDTIME", "HANGUPCAUSE"}


def dialplan():
    """{context: [(extension, label or None, application, data)]}, [globals] as a dict."""
    contexts, globals_, context, extension = {}, {}, None, None
    for raw in EXTENSIONS_CONF.read_text().splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            context = line.strip("[]")
            contexts.setdefault(context, [])
            continue
        if context == "globals":
            name, value = line.split("=", 1)
            globals_[name] = value
            continue
        match = re.fullmatch(r"(exten|same)\s*=>\s*(.+)", line)
        assert match, f"not a dialplan line: {raw!r}"
        rest = match.group(2)
        if match.group(1) == "exten":
            extension, rest = rest.split(",", 1)
            priority, rest = rest.split(",", 1)
            assert priority == "1", raw
        else:
            assert extension is not None, raw
            priority, rest = rest.split(",", 1)
        label = re.fullmatch(r"(?:\d+|n)(?:\((\w+)\))?", priority)
        assert label, raw
        app = re.fullmatch(r"(\w+)\((.*)\)", rest)
        assert app, raw
        contexts[context].append((extension, label.group(1), app.group(1), app.group(2)))
    return contexts, globals_


def balanced(text, pairs=(("(", ")"), ("${", "}"), ("$[", "]"))):
    depth = []
    i = 0
    while i < len(text):
        for opening, closing in pairs:
            if text.startswith(opening, i):
                depth.append(closing)
                i += len(opening)
                break
        else:
            if text[i] in ")}]":
                if not depth or depth.pop() != text[i]:
                    return False
            elif text[i] in "{[":
                depth.append("}" if text[i] == "{" else "]")
            i += 1
    return not depth


def test_the_asterisk_dialplan_is_structurally_sound():
    contexts, globals_ = dialplan()
    labels = {name: {label for _, label, _, _ in lines if label} for name, lines in contexts.items()}
    extensions = {name: {ext for ext, _, _, _ in lines} for name, lines in contexts.items()}
    assigned = set(globals_)
    for lines in contexts.values():
        for _, _, app, data in lines:
            for name in re.findall(r"Set\((\w+)=", f"{app}({data})"):
                assigned.add(name)
    gosub_targets = set()

    for name, lines in contexts.items():
        for ext, label, app, data in lines:
            where = f"[{name}] {app}({data})"
            assert app in KNOWN_APPS, where
            assert balanced(data), f"unbalanced brackets in {where}"
            for function in re.findall(r"\$\{([A-Z_]+)\(", data) + re.findall(r"^([A-Z_]+)\(", data):
                assert function in KNOWN_FUNCTIONS, f"unknown function {function} in {where}"
            for nested in re.findall(r"\?(\w+)\(", data) if app == "ExecIf" else []:
                assert nested in KNOWN_APPS, where
            for variable in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)[}:]", data):
                ok = variable in assigned or variable in ASTERISK_VARIABLES or re.fullmatch(r"ARG\d", variable)
                assert ok, f"${{{variable}}} is never set ({where})"
            # jumps: GotoIf(cond?a[:b]), Goto(label|ext,label|context,ext,label), Gosub(context,ext,1(args))
            targets = []
            if app == "GotoIf":
                targets = re.split(r":", data.rsplit("?", 1)[1])
            elif app == "Goto":
                targets = [data]
            elif app == "Gosub" or "hangup_handler_push" in data:
                target = re.sub(r"\(.*\)$", "", data.split("=", 1)[-1])
                context, ext, priority = target.split(",")
                assert context in contexts and ext in extensions[context] and priority == "1", where
                gosub_targets.add(context)
            for target in targets:
                parts = target.split(",")
                if len(parts) == 1:
                    assert parts[0] in labels[name], f"no label {parts[0]!r} for {where}"
                else:
                    context, ext, _ = parts
                    dynamic = ext.startswith("${") and any(e.startswith("_") for e in extensions[context])
                    assert ext in extensions[context] or dynamic, where

    # every subroutine ends by returning or hanging up, never by running off its end
    for context in gosub_targets:
        assert contexts[context][-1][2] in ("Return", "Hangup"), context
    assert {"cascade-json", "cascade-reject", "cascade-complete"} <= gosub_targets
    for setting in ("CASCADE_URL", "CASCADE_KEY", "CASCADE_TIMEOUT", "CASCADE_CONNECT_TIMEOUT", "CASCADE_RETRIES"):
        assert globals_.get(setting), setting


def test_the_asterisk_recipe_bounds_every_request_and_limits_from_answer():
    text = EXTENSIONS_CONF.read_text()
    sets = re.findall(r"Set\(CURLOPT\((\w+)\)=", text)
    assert sorted(sets) == ["conntimeout", "httpheader", "httpheader", "httptimeout"], \
        "set once per channel: a second httpheader Set() duplicates the header"
    contexts, _ = dialplan()
    (dial,) = [data for lines in contexts.values() for _, _, app, data in lines if app == "Dial"]
    assert dial.endswith(",S(${CASCADE_MAX})"), "S() counts from the callee's answer, in seconds"
    assert "/calls/${URIENCODE(${CASCADE_CALL_ID})}/complete" in text
    assert "Set(CHANNEL(hangup_handler_push)=cascade-complete,s,1)" in text
    # pushed before the request is sent, so an ending during the request is reported too
    assert text.index("hangup_handler_push") < text.index("${CURL(${CASCADE_URL}/authorize")


def test_the_asterisk_json_bodies_are_json():
    contexts, _ = dialplan()
    bodies = [data.split("=", 1)[1] for lines in contexts.values() for _, _, app, data in lines
              if app == "Set" and data.split("=", 1)[1].startswith("{")]
    assert len(bodies) == 3
    for body in bodies:
        # every ${...} stands for a FILTER()ed value: digits/letters, no quote or backslash to escape
        decoded = json.loads(re.sub(r"\$\{\w+\}", "1", body))
        assert set(decoded) <= {"account", "destination", "call_id", "caller_id", "billsec", "disposition"}
