"""The FreeSWITCH and Asterisk recipes (integrations/freeswitch, integrations/asterisk).

FreeSWITCH: cascade.lua runs under plain Lua 5.2 and 5.3 (mod_lua 1.10 is built against one or the
other) inside tests/integration/freeswitch_harness.lua, a stand-in for the mod_lua API. Each mod_curl call is
answered here: either a scripted reply, or the real Cascade app (Chalice test client over moto). The
request is read the way mod_curl 1.10 reads its argument line (at most 10 space-separated tokens, the
post data url-decoded), so a request that real mod_curl would mangle fails here too.

Asterisk: not packaged for Debian, so extensions.conf is checked for structure, and its paths are
walked on a model of the dialplan applications and functions it uses (see "Asterisk: the paths").

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
from urllib.parse import quote, urlsplit

import pytest

from tests.conftest import demo_seed, load
from tests.integration.helpers import account

ROOT = Path(__file__).resolve().parents[2]
LUA_SCRIPT = ROOT / "integrations" / "freeswitch" / "cascade.lua"
DIALPLAN_XML = ROOT / "integrations" / "freeswitch" / "dialplan.xml"
INBOUND_XML = ROOT / "integrations" / "freeswitch" / "dialplan_inbound.xml"
EXTENSIONS_CONF = ROOT / "integrations" / "asterisk" / "extensions.conf"
HARNESS = Path(__file__).with_name("freeswitch_harness.lua")
INTERPRETERS = ("lua5.2", "lua5.3")
BASE = "http://cascade.test"
KEY = "csk_test_key_0123"
SIP_CALL_ID = "a84b4c76e66710@pc33.example.com"    # chosen by the caller
CALL_ID = "0d6f4b8e-3c1a-4f0e-9a57-2b8c1d4e5f60"      # the channel's uuid: what cascade.lua sends


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


CALLER = {"sip_auth_username": "1001", "destination_number": "15551230001", "sip_call_id": SIP_CALL_ID,
          "caller_id_number": "15550001111", "uuid": CALL_ID}


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


CARRIER = {"cascade_direction": "inbound", "destination_number": "+15550100100", "sip_call_id": SIP_CALL_ID,
           "caller_id_number": "442071234567", "uuid": CALL_ID}


def test_an_inbound_call_sends_the_did_and_no_account_and_keeps_the_client_to_ring(lua):
    granted = http(200, {"authorized": True, "max_duration": 900, "call_id": CALL_ID, "number": "15550100100",
                         "prefix": "15550100100", "destination": "Inbound US 15550100100", "rate": "0.012000",
                         "connect_fee": "0.000000", "increments": [60, 60], "direction": "inbound",
                         "client_id": "acme"})
    result = run(lua, [granted], vars=CARRIER)
    (request,) = result.requests
    assert json.loads(request["data"]) == {"direction": "inbound", "destination": "+15550100100", "call_id": CALL_ID,
                                           "caller_id": "442071234567"}
    assert result.final["cascade_client"] == "acme" and result.final["cascade_decision"] == "authorized"
    assert result.final["execute_on_answer"] == "sched_hangup +900 ALLOTTED_TIMEOUT" and result.ready is True


def test_an_unknown_direction_fails_closed_without_asking(lua):
    result = run(lua, [], vars={**CARRIER, "cascade_direction": "sideways"})
    assert result.requests == []
    assert_rejected(result, 503, "unavailable", "Service Unavailable")


def test_channel_variables_override_the_globals_and_odd_characters_survive_the_trip(lua):
    caller = {**CALLER, "cascade_timeout": "5", "cascade_account": "x/y z\"q'\\é@host", "caller_id_number": None}
    result = run(lua, [AUTHORIZED], vars={k: v for k, v in caller.items() if v is not None},
                 globals={"cascade_url": "https://other.test/"})

    (request,) = result.requests
    assert request["url"] == "https://other.test/authorize" and request["timeout"] == "5"
    assert json.loads(request["data"]) == {"account": "x/y z\"q'\\é@host", "destination": "15551230001",
                                           "call_id": CALL_ID}


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


def test_the_call_id_is_the_channel_uuid_and_the_sip_call_id_only_goes_to_the_log(lua):
    # The caller chooses the SIP Call-ID; a repeated id with the same account and number is a retry
    # to Cascade (no new hold), so the id must be one FreeSWITCH made for this channel.
    caller = {**CALLER, "sip_call_id": "reused@caller\nX-Injected: 1"}
    result = run(lua, [AUTHORIZED], vars=caller)

    assert json.loads(result.requests[0]["data"])["call_id"] == CALL_ID
    assert result.final["cascade_call_id"] == CALL_ID
    (line,) = [m for m in result.logs("INFO") if "authorized for 600 s" in m]
    assert f"{CALL_ID} (Call-ID reused@caller?X-Injected: 1)" in line, "in the log, control characters masked"


def test_two_channels_with_the_same_sip_call_id_send_two_call_ids(lua):
    ids = [json.loads(run(lua, [AUTHORIZED], vars={**CALLER, "uuid": uuid}).requests[0]["data"])["call_id"]
           for uuid in (CALL_ID, OTHER_UUID)]
    assert ids == [CALL_ID, OTHER_UUID]


@pytest.mark.parametrize("reason", ["call_id_in_use", "call_ended"])
def test_a_409_is_refused_with_403_and_the_hook_posts_nothing(lua, reason):
    result = run(lua, [http(409, {"authorized": False, "reason": reason})], vars=CALLER)

    assert_rejected(result, 403, reason, "Forbidden")
    assert result.final["cascade_decision"] == "refused"
    assert any("409 " + reason in m and "no completion" in m for m in result.logs("WARNING"))
    # The id is another call's: a completion (FAILED, 0 s) would bill that call, or make it free.
    hook = run(lua, [], vars={**result.final, "hangup_cause": "CALL_REJECTED"}, complete=True)
    assert hook.requests == []
    hook = run(lua, [], vars={**result.final, "hangup_cause": "CALL_REJECTED"}, complete=True, session=False,
               env=True)
    assert hook.requests == []


def test_a_409_with_an_unreadable_body_is_still_refused_without_a_completion(lua):
    result = run(lua, [http(409, "<html>conflict</html>")], vars=CALLER)
    assert_rejected(result, 403, "refused", "Forbidden")
    assert result.final["cascade_decision"] == "refused"


@pytest.mark.parametrize("first, decision", [("600", "authorized"), (None, "failed")])
def test_a_second_run_on_the_same_channel_does_not_ask_again(lua, first, decision):
    # A transfer back into the dialplan: the same uuid would be a retry of the first call (a second
    # bridge on one hold), and the dialplan has just reset cascade_decision to "none".
    channel = {**CALLER, "cascade_call_id": CALL_ID, "cascade_decision": "none",
               "api_hangup_hook": "lua cascade.lua complete", "session_in_hangup_hook": "true",
               "answer_epoch": "1700000000", **({"cascade_max_duration": first} if first else {})}
    result = run(lua, [], vars=channel, answered=True)

    assert result.requests == []
    assert result.hangups == ["NORMAL_TEMPORARY_FAILURE"] and result.ready is False
    assert result.final["cascade_decision"] == decision
    assert any("already ran on this channel" in m for m in result.logs("ERR"))
    # the hook then reports the first call as it stands
    hook = run(lua, [COMPLETED], vars={**result.final, "billsec": "42"}, complete=True)
    expected = {"billsec": 42, "disposition": "ANSWERED"} if first else {"billsec": 0, "disposition": "FAILED"}
    assert json.loads(hook.requests[0]["data"]) == expected


def test_cascade_variables_copied_from_another_channel_do_not_stop_this_one_asking(lua):
    # e.g. a loopback leg: another uuid, so not this channel's authorization
    channel = {**CALLER, "cascade_call_id": OTHER_UUID, "cascade_decision": "authorized",
               "cascade_max_duration": "600"}
    result = run(lua, [AUTHORIZED], vars=channel)
    assert json.loads(result.requests[0]["data"])["call_id"] == CALL_ID
    assert result.final["cascade_call_id"] == CALL_ID and result.ready is True


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
    assert result.final["cascade_call_id"] == CALL_ID


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
    assert request["url"] == BASE + f"/calls/{CALL_ID}/complete"
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


CONFLICT = http(409, {"error": "completion_conflict",
                      "message": "this call was already billed with another billsec or disposition",
                      "applied": {"call_id": CALL_ID, "billsec": 40, "disposition": "ANSWERED",
                                  "charged": "1.333334", "over_max": False, "late": False, "levels": []}})


def test_a_completion_conflict_is_posted_once_and_logged_with_what_stands(lua):
    channel = authorized_channel(hangup_cause="NORMAL_CLEARING", answer_epoch="1700000000", billsec="42")
    result = run(lua, [CONFLICT], vars=channel, complete=True, globals={"cascade_retries": "5"})

    assert len(result.requests) == 1 and result.sleeps == []
    (line,) = result.logs("ERR")
    assert "completion ANSWERED 42 s conflicts with the one Cascade applied (ANSWERED 40 s, charged 1.333334)" in line
    assert "not retried" in line and CALL_ID in line and SIP_CALL_ID in line


def test_a_completion_conflict_with_an_unreadable_body_is_not_retried_either(lua):
    result = run(lua, [http(409, "conflict")], vars=authorized_channel(hangup_cause="USER_BUSY"), complete=True)
    assert len(result.requests) == 1 and result.sleeps == []
    assert any("conflicts with the one Cascade applied (unreadable answer)" in m for m in result.logs("ERR"))


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
    assert path == f"/calls/{CALL_ID}/complete" and status == 200
    assert body["call_id"] == CALL_ID, "the channel uuid, not the SIP Call-ID"
    assert body["charged"] == "1.400000" and again == body       # 42 s at 2.00/min, billed once
    assert account("acme").balance == Decimal("18.60")
    assert account("acme").held == 0


def test_against_cascade_an_inbound_call_to_the_demo_did_is_billed_at_every_holder(lua, cascade_app):
    load(demo_seed())
    seen = []
    first = run(lua, cascade(cascade_app, seen), vars=CARRIER, globals=DEMO_KEY_SETTINGS)
    assert seen[0][1] == 200 and seen[0][2]["client_id"] == "acme" and first.final["cascade_client"] == "acme"
    before = {a: account(a).balance for a in ("acme", "cumulus", "borealis", "atlas")}
    hangup = {**first.final, "hangup_cause": "NORMAL_CLEARING", "answer_epoch": "1700000000", "billsec": "61"}
    run(lua, cascade(cascade_app, seen), vars=hangup, complete=True, globals=DEMO_KEY_SETTINGS)
    assert seen[1][1] == 200 and seen[1][2]["charged"] == "0.024000"          # 2 minutes at 0.012
    paid = {a: before[a] - account(a).balance for a in before}
    assert paid == {"acme": Decimal("0.024"), "cumulus": Decimal("0.016"), "borealis": Decimal("0.012"),
                    "atlas": Decimal("0.008")}
    # a DID nobody holds: refused with the reason, nothing to complete
    refused = run(lua, cascade(cascade_app, seen), vars={**CARRIER, "destination_number": "15559999999",
                                                           "uuid": CALL_ID + "-2"}, globals=DEMO_KEY_SETTINGS)
    assert_rejected(refused, 403, "did_unknown", "Forbidden")


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


OTHER_UUID = "7e1c2f40-9b3d-4c55-8d21-0a6e9f3b7c18"
OTHER_SWITCH = {"id": "other-switch", "name": "Another switch", "key": "csk_other_switch_test_key_0123456789"}


def hang_up_answered(channel, billsec):
    return {**channel, "hangup_cause": "NORMAL_CLEARING", "answer_epoch": "1700000000", "billsec": billsec}


def test_against_cascade_a_caller_reusing_its_sip_call_id_gets_a_hold_per_call(lua, cascade_app):
    # Two INVITEs with one Call-ID: two channels, two uuids, two calls, each held and billed.
    seed = demo_seed()
    seed["settings"]["max_duration"] = 600      # a hold takes at most 10 min (20.00), not all the funds
    for item in seed["accounts"]:
        if item["id"] == "acme":
            item["balance"] = "100.00"
    load(seed)
    seen = []
    calls = [run(lua, cascade(cascade_app, seen), vars={**CALLER, "uuid": uuid}, globals=DEMO_KEY_SETTINGS)
             for uuid in (CALL_ID, OTHER_UUID)]
    assert [status for _, status, _ in seen] == [200, 200]
    assert account("acme").active_calls == 2

    for call, billsec in zip(calls, ("42", "21")):
        run(lua, cascade(cascade_app, seen), vars=hang_up_answered(call.final, billsec), complete=True,
            globals=DEMO_KEY_SETTINGS)
    assert [(body["call_id"], body["charged"]) for _, _, body in seen[2:]] == [(CALL_ID, "1.400000"),
                                                                               (OTHER_UUID, "0.700000")]
    assert account("acme").balance == Decimal("97.90") and account("acme").held == 0


def test_against_cascade_a_channel_replaying_a_call_id_is_refused_and_the_first_call_is_billed(lua, cascade_app):
    seed = demo_seed()
    seed["switch_keys"].append(OTHER_SWITCH)
    load(seed)
    seen = []
    first = run(lua, cascade(cascade_app, seen), vars=CALLER, globals=DEMO_KEY_SETTINGS)
    assert seen[-1][1] == 200
    held = account("acme").held

    # The first call's id again, for another call: another number from this switch, the same number
    # from another switch. Refused, and no completion: a FAILED, 0 s one would bill the first call at 0.
    replays = [({**CALLER, "destination_number": "15551230002"}, DEMO_KEY_SETTINGS),
               (CALLER, {"cascade_api_key": OTHER_SWITCH["key"]})]
    for channel, settings in replays:
        replay = run(lua, cascade(cascade_app, seen), vars=channel, globals=settings)
        assert seen[-1][1:] == (409, {"authorized": False, "reason": "call_id_in_use"})
        assert_rejected(replay, 403, "call_id_in_use", "Forbidden")
        hook = run(lua, cascade(cascade_app, seen), vars={**replay.final, "hangup_cause": "CALL_REJECTED"},
                   complete=True, globals=settings)
        assert hook.requests == []
    assert account("acme").held == held and account("acme").active_calls == 1

    run(lua, cascade(cascade_app, seen), vars=hang_up_answered(first.final, "42"), complete=True,
        globals=DEMO_KEY_SETTINGS)
    assert seen[-1][1] == 200 and seen[-1][2]["disposition"] == "ANSWERED" and seen[-1][2]["charged"] == "1.400000"
    assert account("acme").balance == Decimal("18.60")
    assert account("acme").held == 0 and account("acme").active_calls == 0


def test_against_cascade_an_id_asked_again_after_its_call_ended_is_refused_and_a_conflict_is_logged(lua, cascade_app):
    load(demo_seed())
    seen = []
    first = run(lua, cascade(cascade_app, seen), vars=CALLER, globals=DEMO_KEY_SETTINGS)
    hangup = hang_up_answered(first.final, "42")
    run(lua, cascade(cascade_app, seen), vars=hangup, complete=True, globals=DEMO_KEY_SETTINGS)
    assert seen[-1][1] == 200

    again = run(lua, cascade(cascade_app, seen), vars=CALLER, globals=DEMO_KEY_SETTINGS)
    assert seen[-1][1:] == (409, {"authorized": False, "reason": "call_ended"})
    assert_rejected(again, 403, "call_ended", "Forbidden")
    hook = run(lua, cascade(cascade_app, seen), vars={**again.final, "hangup_cause": "CALL_REJECTED"},
               complete=True, globals=DEMO_KEY_SETTINGS)
    assert hook.requests == []

    # the first call reported again with another billsec (say the CDR replay disagrees): 409, once, logged
    late = run(lua, cascade(cascade_app, seen), vars={**hangup, "billsec": "40"}, complete=True,
               globals=DEMO_KEY_SETTINGS)
    assert len(late.requests) == 1 and late.sleeps == []
    assert seen[-1][1] == 409 and seen[-1][2]["error"] == "completion_conflict"
    assert any("conflicts with the one Cascade applied (ANSWERED 42 s, charged 1.400000)" in m
               for m in late.logs("ERR"))
    assert account("acme").balance == Decimal("18.60") and account("acme").held == 0


# --------------------------------------------------------------------------- FreeSWITCH: files

@pytest.mark.parametrize("compiler", ["luac5.2", "luac5.3"])
def test_the_script_and_the_harness_compile(compiler):
    luac = tool(compiler)
    for path in (LUA_SCRIPT, HARNESS):
        out = subprocess.run([luac, "-p", str(path)], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("path", [DIALPLAN_XML, INBOUND_XML])
def test_the_example_dialplans_are_xml_that_bridge_only_an_authorized_call(path):
    import xml.etree.ElementTree as ET
    extension = ET.parse(path).getroot().find("extension")
    actions = [(a.get("application"), a.get("data")) for a in extension.iter("action")]
    apps = [app for app, _ in actions]
    assert apps.index("lua") < apps.index("bridge")
    assert ("lua", "cascade.lua") in actions
    assert ("set", "cascade_decision=none") in actions and apps.index("set") < apps.index("lua")
    bridge = dict(actions)["bridge"]
    assert bridge.startswith("${cond(${cascade_decision} == authorized ? ") and " : error/" in bridge
    if path == INBOUND_XML:     # the carrier's call: inbound, and the PBX is told which client to ring
        assert ("set", "cascade_direction=inbound") in actions
        assert ("export", "sip_h_X-Cascade-Client=${cascade_client}") in actions
        assert apps.index("export") < apps.index("bridge")


# --------------------------------------------------------------------------- Asterisk: structure

KNOWN_APPS = {"NoOp", "Set", "ExecIf", "GotoIf", "Goto", "Gosub", "Return", "Dial", "Hangup", "PJSIPHangup",
              "Log"}
KNOWN_FUNCTIONS = {"CHANNEL", "FILTER", "CALLERID", "CURLOPT", "CURL", "URIENCODE", "JSON_DECODE", "STRREPLACE",
                   "CUT", "CDR", "PJSIP_HEADER"}
# Set by Asterisk itself, not by the dialplan.
ASTERISK_VARIABLES = {"EXTEN", "UNIQUEID", "GOSUB_RETVAL", "DIALSTATUS", "ANSWEREDTIME", "HANGUPCAUSE"}


def dialplan():
    """{context: [(extension, label or None, application, data)]}, [globals] as a dict."""
    contexts, globals_, context, extension = {}, {}, None, None
    for raw in EXTENSIONS_CONF.read_text().splitlines():
        # ";" starts a comment, "\;" is a literal semicolon (Asterisk's config parser)
        line = re.split(r"(?<!\\);", raw, maxsplit=1)[0].replace("\\;", ";").strip()
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
    dials = [data for lines in contexts.values() for _, _, app, data in lines if app == "Dial"]
    assert len(dials) == 2                              # to the carrier, and inbound to the PBX
    for dial in dials:
        assert dial.split(",")[2].startswith("S(${CASCADE_MAX})"), "S() counts from the callee's answer, in seconds"
    assert "/calls/${URIENCODE(${CASCADE_CALL_ID})}/complete" in text
    assert "Set(CHANNEL(hangup_handler_push)=cascade-complete,s,1)" in text
    # pushed before the request is sent, so an ending during the request is reported too
    assert text.index("hangup_handler_push") < text.index("${CURL(${CASCADE_URL}/authorize")


def test_the_asterisk_json_bodies_are_json():
    contexts, _ = dialplan()
    bodies = [data.split("=", 1)[1] for lines in contexts.values() for _, _, app, data in lines
              if app == "Set" and data.split("=", 1)[1].startswith("{")]
    assert len(bodies) == 5                             # outbound and inbound, with and without caller_id; completion
    for body in bodies:
        # every ${...} stands for a FILTER()ed value: digits/letters, no quote or backslash to escape
        decoded = json.loads(re.sub(r"\$\{\w+\}", "1", body))
        assert set(decoded) <= {"account", "direction", "destination", "call_id", "caller_id", "billsec",
                                "disposition"}
        assert ("account" in decoded) != (decoded.get("direction") == "inbound") or "billsec" in decoded


# --------------------------------------------------------------------------- Asterisk: the paths, on a model
#
# No Asterisk here, so the dialplan is walked by a model of the few applications and functions it
# uses, with CURL() answered by the test (scripted bodies, or the real app). What each one does was
# taken from the Asterisk sources: argument splitting (app.c __ast_app_separate_args), ${...} and $[...]
# substitution (pbx_variables.c), Set/ExecIf/GotoIf/Gosub/Return/Log, FILTER/CUT/STRREPLACE
# (func_strings.c, func_cut.c), JSON_DECODE (func_json.c), URIENCODE (ast_uri_http), CURL (func_curl.c:
# the body only, 4xx included). It is a check of the dialplan's logic, not of Asterisk.

class AsteriskHangup(Exception):
    pass


def separate_args(text: str, count: int, remove_chars: bool = True) -> list:
    """__ast_app_separate_args: commas split outside (), [] and quotes; with remove_chars quotes go and
    a backslash makes the next character literal; the last of `count` arguments keeps the rest as is."""
    args, i, last_was_delim = [], 0, False
    while i < len(text) and len(args) < count - 1:
        out, paren, bracket, quote, last_was_delim = [], 0, 0, False, False
        while i < len(text):
            c = text[i]
            if c == '"':
                quote = not quote
                if remove_chars:
                    i += 1
                    continue
            elif c == "\\":
                if remove_chars:
                    out.append(text[i + 1:i + 2])
                    i += 2
                    continue
                out.append(text[i:i + 2])
                i += 2
                continue
            elif c == "(":
                paren += 1
            elif c == ")":
                paren = max(0, paren - 1)
            elif c == "[":
                bracket += 1
            elif c == "]":
                bracket = max(0, bracket - 1)
            elif c == "," and not (paren or bracket or quote):
                i += 1
                last_was_delim = True
                break
            out.append(c)
            i += 1
        args.append("".join(out))
    if i < len(text) or last_was_delim:
        args.append(text[i:])
    return args


def filter_chars(allowed: str, text: str) -> str:
    """FILTER(): `a-z` is a range, any other character stands for itself (a leading "-" too)."""
    chars, i = set(), 0
    while i < len(allowed):
        if allowed[i + 1:i + 2] == "-" and i + 2 < len(allowed):
            chars.update(chr(c) for c in range(ord(allowed[i]), ord(allowed[i + 2]) + 1))
            i += 3
        else:
            chars.add(allowed[i])
            i += 1
    return "".join(c for c in text if c in chars)


class Asterisk:
    """One channel through extensions.conf: run("cascade-outbound"), then its hangup handlers."""

    def __init__(self, curl, *, call_id=SIP_CALL_ID, uniqueid="pbx1-1700000000.42", exten="15551230001",
                 endpoint="1001", callerid="15550001111", dial=None, json_decode=True, pjsiphangup=True):
        self.contexts, self.vars = dialplan()
        self.vars.update(CASCADE_JSON_DECODE="yes" if json_decode else "no",
                         CASCADE_PJSIPHANGUP="yes" if pjsiphangup else "no", EXTEN=exten, UNIQUEID=uniqueid)
        self.channel = {"endpoint": endpoint, "pjsip,call-id": call_id or "", "callerid": callerid}
        self.dial_result = dial or {"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "42"}
        self.curl, self.requests, self.logs, self.curlopts, self.cdr = curl, [], [], [], {}
        self.handlers, self.ended, self.dialled = [], None, None

    # ---- ${...} and $[...]
    def substitute(self, text: str) -> str:
        out, i = [], 0
        while i < len(text):
            if text.startswith("${", i) or text.startswith("$[", i):
                opening = text[i + 1]
                closing = "}" if opening == "{" else "]"
                j, depth = i + 2, 1
                while j < len(text) and depth:
                    depth += (text[j] == opening) - (text[j] == closing)
                    j += 1
                inner = self.substitute(text[i + 2:j - 1])
                out.append(self.value(inner) if opening == "{" else self.expression(inner))
                i = j
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    def value(self, inner: str) -> str:
        call = re.fullmatch(r"([A-Z_]+)\((.*)\)", inner, re.S)
        if call:
            return self.function(call.group(1), call.group(2))
        name, _, slice_ = inner.partition(":")
        text = self.vars.get(name, "")
        if slice_:
            offset, _, length = slice_.partition(":")
            text = text[int(offset):][:int(length)] if length else text[int(offset):]
        return text

    def function(self, name: str, data: str) -> str:
        if name == "FILTER":
            allowed, text = separate_args(data, 2)
            return filter_chars(allowed, text)
        if name == "CUT":
            var, delim, field = separate_args(data, 3)
            fields = self.vars.get(var, "").split(delim)
            if field.endswith("-"):
                return delim.join(fields[int(field[:-1]) - 1:])
            return fields[int(field) - 1] if int(field) <= len(fields) else ""
        if name == "STRREPLACE":
            var, find, replace = separate_args(data, 4)
            return self.vars.get(var, "").replace(find, replace)
        if name == "JSON_DECODE":
            var, key = separate_args(data, 2)
            try:
                found = json.loads(self.vars.get(var, ""))[key]
            except (ValueError, KeyError, TypeError):
                return ""
            return found if isinstance(found, str) else json.dumps(found, separators=(",", ":"))
        if name == "URIENCODE":
            return quote(data, safe="-_.!~*'()")
        if name == "CHANNEL":
            return self.channel[data]
        if name == "CALLERID":
            assert data == "num"
            return self.channel["callerid"]
        if name == "CDR":
            return self.cdr.get(data, self.dial_result.get("CDR_" + data, ""))
        if name == "CURL":
            url, body = separate_args(data, 2)
            self.requests.append((url, body))
            return self.curl(self, url, body)
        raise AssertionError(f"{name}() is not modelled")

    def expression(self, text: str) -> str:
        tokens = re.findall(r'"[^"]*"|!=|[=<>&|+()]|[^\s"=<>&|+()]+', text)

        def operand():
            token = tokens.pop(0)
            if token == "(":
                result = either()
                assert tokens.pop(0) == ")"
                return result
            return token[1:-1] if token.startswith('"') else token

        def number(v):
            return int(v) if re.fullmatch(r"-?\d+", v) else None

        def plus():
            left = operand()
            while tokens and tokens[0] == "+":
                tokens.pop(0)
                left = str(number(left) + number(operand()))
            return left

        def compare():
            left = plus()
            while tokens and tokens[0] in ("=", "!=", "<", ">"):
                op, right = tokens.pop(0), plus()
                a, b = (number(left), number(right)) if None not in (number(left), number(right)) else (left, right)
                left = "1" if {"=": a == b, "!=": a != b, "<": a < b, ">": a > b}[op] else "0"
            return left

        def both():
            left = compare()
            while tokens and tokens[0] == "&":
                tokens.pop(0)
                right = compare()
                left = left if truth(left) and truth(right) else "0"
            return left

        def either():
            left = both()
            while tokens and tokens[0] == "|":
                tokens.pop(0)
                right = both()
                left = left if truth(left) else right if truth(right) else "0"
            return left

        result = either()
        assert not tokens, text
        return result

    # ---- applications
    def run(self, context: str, label=None, args=()):
        lines = self.contexts[context]
        saved = {f"ARG{n}": self.vars.pop(f"ARG{n}", None) for n in range(1, 10)}
        self.vars.update({f"ARG{n}": a for n, a in enumerate(args, 1)})
        try:
            i = 0 if label is None else [lbl for _, lbl, _, _ in lines].index(label)
            while i < len(lines):
                _, _, app, data = lines[i]
                jump = self.execute(context, app, self.substitute(data))
                if jump == "return":
                    return
                i = [lbl for _, lbl, _, _ in lines].index(jump) if jump else i + 1
        finally:
            for name, value in saved.items():
                self.vars.pop(name, None)
                if value is not None:
                    self.vars[name] = value

    def execute(self, context, app, data):
        if app == "NoOp":
            return None
        if app == "Set":
            name, value = data.split("=", 1)
            if name.startswith("CURLOPT("):
                self.curlopts.append((name[8:-1], value))
            elif name.startswith("CDR("):
                self.cdr[name[4:-1]] = value
            elif name == "CHANNEL(hangup_handler_push)":
                self.handlers.append(value)
            else:
                assert re.fullmatch(r"\w+", name), name
                self.vars[name] = value
            return None
        if app == "ExecIf":
            condition, action = data.split("?", 1)
            nested = re.fullmatch(r"(\w+)\((.*)\)", action, re.S)
            return self.execute(context, nested.group(1), nested.group(2)) if truth(condition) else None
        if app == "GotoIf":
            condition, targets = data.split("?", 1)
            yes, _, no = targets.partition(":")
            target = yes if truth(condition) else no
            return target or None
        if app == "Gosub":
            target, _, args = data.partition("(")
            sub, ext, priority = target.split(",")
            assert ext == "s" and priority == "1"
            self.run(sub, args=separate_args(args[:args.rindex(")")], 100, remove_chars=False))
            return None
        if app == "Return":
            self.vars["GOSUB_RETVAL"] = data
            return "return"
        if app in ("Hangup", "PJSIPHangup"):
            self.ended = (app, data)
            raise AsteriskHangup()
        if app == "Log":
            self.logs.append(tuple(separate_args(data, 2)))
            return None
        if app == "Dial":
            self.dialled = data
            self.vars.update(self.dial_result)
            return None
        if app == "Goto":
            assert "," not in data, "the model follows jumps within a context only"
            return data
        raise AssertionError(f"{app} is not modelled")

    def enter(self):
        """The channel runs [cascade-outbound] to its end (a Hangup, after Dial() or instead of it)."""
        try:
            self.run("cascade-outbound")
        except AsteriskHangup:
            pass
        return self

    def call(self):
        """enter(), then the core runs the pushed hangup handlers."""
        self.enter().hang_up()
        return self

    def hang_up(self):
        while self.handlers:
            context, ext, priority = self.handlers.pop().split(",")
            self.run(context)

    @property
    def authorize_bodies(self):
        return [json.loads(body) for url, body in self.requests if url.endswith("/authorize")]

    @property
    def completions(self):
        return [(url, json.loads(body)) for url, body in self.requests if "/complete" in url]

    def logged(self, level):
        return [message for lvl, message in self.logs if lvl == level]


def truth(value: str) -> bool:
    """pbx_checkcondition: empty is false, a number is its value, any other text is true."""
    value = value.strip()
    return bool(value) and (not re.fullmatch(r"-?\d+", value) or int(value) != 0)


def curl_script(*bodies):
    """CURL() answers in order (the body only: CURL() gives no status)."""
    pending = [b if isinstance(b, str) else json.dumps(b) for b in bodies]

    def answer(model, url, body):
        assert pending, f"unexpected CURL() to {url}"
        return pending.pop(0)
    answer.pending = pending
    return answer


ASTERISK_AUTHORIZED = {"authorized": True, "max_duration": 600, "call_id": "x", "number": "15551230001",
                       "prefix": "1555", "destination": "US", "rate": "2.000000", "connect_fee": "0.000000",
                       "increments": [1, 1]}
ASTERISK_COMPLETED = {"call_id": "x", "billsec": 42, "disposition": "ANSWERED", "charged": "1.400000",
                      "over_max": False, "late": False, "levels": []}
ASTERISK_CONFLICT = {"error": "completion_conflict",
                     "message": "this call was already billed with another billsec or disposition",
                     "applied": {**ASTERISK_COMPLETED, "billsec": 40, "charged": "1.333334"}}
JSON_MODES = pytest.mark.parametrize("json_decode", [True, False], ids=["JSON_DECODE", "fallback"])


def test_asterisk_an_inbound_call_sends_the_did_and_dials_the_pbx_naming_the_client():
    granted = {**ASTERISK_AUTHORIZED, "number": "15550100100", "direction": "inbound", "client_id": "acme"}
    for json_decode in (True, False):
        ast = Asterisk(curl_script(granted, ASTERISK_COMPLETED), exten="15550100100", endpoint="carrier-1",
                       callerid="442071234567", json_decode=json_decode)
        ast.vars["CASCADE_DIRECTION"] = "inbound"          # what [from-carriers] sets
        ast.call()
        assert ast.authorize_bodies == [{"direction": "inbound", "destination": "15550100100",
                                         "call_id": f"{SIP_CALL_ID};pbx1-1700000000.42", "caller_id": "442071234567"}]
        assert ast.dialled == "PJSIP/15550100100@pbx,60,S(600)b(cascade-client-header^s^1(acme))"
        assert [body for _, body in ast.completions] == [{"billsec": 42, "disposition": "ANSWERED"}]
    contexts, _ = dialplan()
    assert [(app, data) for _, _, app, data in contexts["from-carriers"]][:2] == [
        ("Set", "CASCADE_DIRECTION=inbound"), ("Goto", "cascade-outbound,${EXTEN},1")]


def test_asterisk_model_regressions_an_answered_call_is_authorized_dialled_and_completed():
    # the model first reproduces what the recipe is documented to do
    ast = Asterisk(curl_script(ASTERISK_AUTHORIZED, ASTERISK_COMPLETED)).call()
    assert ast.dialled == "PJSIP/15551230001@carrier,60,S(600)"
    assert ast.authorize_bodies == [{"account": "1001", "destination": "15551230001",
                                     "call_id": f"{SIP_CALL_ID};pbx1-1700000000.42", "caller_id": "15550001111"}]
    (url, body), = ast.completions
    assert url == f"http://127.0.0.1:8000/calls/{SIP_CALL_ID.replace('@', '%40')}%3Bpbx1-1700000000.42/complete"
    assert body == {"billsec": 42, "disposition": "ANSWERED"}
    assert ast.cdr["cascade_call_id"] == f"{SIP_CALL_ID};pbx1-1700000000.42"
    assert any("completed" in m for m in ast.logged("NOTICE"))
    assert sorted(name for name, _ in ast.curlopts) == ["conntimeout", "httpheader", "httpheader", "httptimeout"]


@pytest.mark.parametrize("call_id, uniqueid, expected", [
    (SIP_CALL_ID, "1700000000.42", f"{SIP_CALL_ID};1700000000.42"),
    ('a"b\\c,d(e)f;g h' + "x" * 300, "pbx1-1700000000.42", "abcdefgh" + "x" * 92 + ";pbx1-1700000000.42"),
    (SIP_CALL_ID, "p" * 138 + "-1700000000.42", SIP_CALL_ID + ";" + "p" * 138 + "-1700000000.42"),
    (None, "pbx1-1700000000.42", "pbx1-1700000000.42"),
    ('"\\"', "1700000000.42", "1700000000.42"),
], ids=["plain", "hostile-call-id", "longest-uniqueid", "no-call-id", "nothing-left-of-the-call-id"])
def test_the_asterisk_call_id_is_the_filtered_call_id_and_the_uniqueid(call_id, uniqueid, expected):
    ast = Asterisk(curl_script(ASTERISK_AUTHORIZED, ASTERISK_COMPLETED), call_id=call_id, uniqueid=uniqueid).call()
    (body,) = ast.authorize_bodies       # json.loads'ed: the filtered values need no escaping
    assert body["call_id"] == expected
    assert len(expected.encode()) <= 256, "Cascade's bound"
    assert ast.cdr["cascade_call_id"] == expected


def test_the_asterisk_call_id_differs_for_two_calls_with_one_sip_call_id():
    ids = [Asterisk(curl_script(ASTERISK_AUTHORIZED, ASTERISK_COMPLETED), uniqueid=u).call().authorize_bodies[0]
           ["call_id"] for u in ("pbx1-1700000000.42", "pbx1-1700000000.43")]
    assert ids[0] != ids[1]


def test_the_asterisk_call_id_semicolon_is_escaped_in_the_file():
    # an unescaped ";" would start a comment and silently drop the UNIQUEID
    assert "Set(CASCADE_CALL_ID=${CASCADE_SIP_CALL_ID:0:100}\\;${CASCADE_UNIQUEID})" in EXTENSIONS_CONF.read_text()


@JSON_MODES
@pytest.mark.parametrize("pjsiphangup, ended", [(True, ("PJSIPHangup", "403")), (False, ("Hangup", "21"))])
@pytest.mark.parametrize("reason", ["call_id_in_use", "call_ended"])
def test_an_asterisk_409_is_refused_with_403_and_no_completion(json_decode, pjsiphangup, ended, reason):
    ast = Asterisk(curl_script({"authorized": False, "reason": reason}), json_decode=json_decode,
                   pjsiphangup=pjsiphangup).call()
    assert ast.ended == ended and ast.dialled is None
    assert ast.vars["CASCADE_DECISION"] == "refused"
    assert len(ast.requests) == 1, "the handler posts nothing: the id is another call's"
    assert any(reason in m and "no completion" in m for m in ast.logged("WARNING"))


@JSON_MODES
@pytest.mark.parametrize("body, ended, completion", [
    ({"authorized": False, "reason": "insufficient_funds"}, ("PJSIPHangup", "402"), None),
    ({"authorized": False, "reason": "cps_limit"}, ("PJSIPHangup", "403"), None),
    ("", ("PJSIPHangup", "503"), {"billsec": 0, "disposition": "FAILED"}),
    ({"error": "internal", "message": "internal error"}, ("PJSIPHangup", "503"),
     {"billsec": 0, "disposition": "FAILED"}),
], ids=["402", "403", "timeout", "500"])
def test_asterisk_model_regressions_other_answers(json_decode, body, ended, completion):
    replies = [body] + ([ASTERISK_COMPLETED] if completion else [])
    ast = Asterisk(curl_script(*replies), json_decode=json_decode).call()
    assert ast.ended == ended
    assert [b for _, b in ast.completions] == ([completion] if completion else [])


@JSON_MODES
def test_an_asterisk_completion_conflict_is_posted_once_and_logged(json_decode):
    script = curl_script(ASTERISK_AUTHORIZED, ASTERISK_CONFLICT)
    ast = Asterisk(script, json_decode=json_decode).call()
    assert len(ast.completions) == 1 and not script.pending
    (line,) = ast.logged("ERROR")
    assert "(ANSWERED 42 s) conflicts with the one applied - not retried" in line
    assert json.loads(line.split("Cascade answered: ", 1)[1]) == ASTERISK_CONFLICT, "logged whole"


@JSON_MODES
def test_asterisk_model_regressions_the_completion_is_retried_on_busy_and_timeouts_only(json_decode):
    busy = {"error": "busy", "message": "try again"}
    ast = Asterisk(curl_script(ASTERISK_AUTHORIZED, busy, "", ASTERISK_COMPLETED), json_decode=json_decode).call()
    assert len(ast.completions) == 3 and ast.logged("ERROR") == []
    ast = Asterisk(curl_script(ASTERISK_AUTHORIZED, busy, busy, busy), json_decode=json_decode).call()
    assert any("not delivered after 3 attempts" in m for m in ast.logged("ERROR"))
    ast = Asterisk(curl_script(ASTERISK_AUTHORIZED, {"error": "unknown_call", "message": "x"}),
                   json_decode=json_decode).call()
    assert len(ast.completions) == 1 and any("refused: unknown_call" in m for m in ast.logged("ERROR"))


def test_asterisk_entering_cascade_outbound_again_does_not_ask_again():
    script = curl_script(ASTERISK_AUTHORIZED, ASTERISK_COMPLETED)
    ast = Asterisk(script).enter()      # authorized and dialled; then a redirect brings it back
    assert ast.dialled and ast.ended == ("Hangup", "")
    ast.enter()
    assert ast.ended == ("PJSIPHangup", "503") and len(ast.authorize_bodies) == 1
    ast.hang_up()
    assert [b for _, b in ast.completions] == [{"billsec": 42, "disposition": "ANSWERED"}], "the first call, once"


def asterisk_cascade(client_, seen):
    """CURL() answered by the real app, as func_curl gives it: the body, whatever the status. The
    headers are the CURLOPT(httpheader)s the channel set ([globals] has the demo key)."""
    def answer(model, url, body):
        headers = dict(value.split(": ", 1) for name, value in model.curlopts if name == "httpheader")
        response = client_.http.post(urlsplit(url).path, headers=headers, body=body)
        text = response.body.decode() if isinstance(response.body, bytes) else response.body
        seen.append((urlsplit(url).path, response.status_code, json.loads(text)))
        return text
    return answer


def test_against_cascade_asterisk_ids_replays_and_conflicts(cascade_app):
    seed = demo_seed()
    seed["settings"]["max_duration"] = 600
    for item in seed["accounts"]:
        if item["id"] == "acme":
            item["balance"] = "100.00"
    load(seed)
    seen = []
    # two INVITEs with one Call-ID: two channels, two ids, two holds
    first = Asterisk(asterisk_cascade(cascade_app, seen), uniqueid="pbx1-1700000000.1")
    second = Asterisk(asterisk_cascade(cascade_app, seen), uniqueid="pbx1-1700000000.2",
                      dial={"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "21"})
    for channel in (first, second):
        assert channel.enter().dialled
    assert [status for _, status, _ in seen] == [200, 200] and account("acme").active_calls == 2

    # the first id again, for another number (two boxes without systemname, one UNIQUEID): refused, no completion
    replay = Asterisk(asterisk_cascade(cascade_app, seen), uniqueid="pbx1-1700000000.1", exten="15551230002").call()
    assert seen[-1][1:] == (409, {"authorized": False, "reason": "call_id_in_use"})
    assert replay.ended == ("PJSIPHangup", "403") and len(replay.requests) == 1

    first.hang_up()
    second.hang_up()
    assert [(status, body["charged"]) for _, status, body in seen[3:]] == [(200, "1.400000"), (200, "0.700000")]
    assert account("acme").balance == Decimal("97.90") and account("acme").held == 0

    # the first call's handler run again with another billsec: 409, posted once, logged
    posted = len(first.requests)
    first.vars["ANSWEREDTIME"] = "40"
    first.run("cascade-complete")
    assert seen[-1][1] == 409 and seen[-1][2]["applied"]["billsec"] == 42 and len(first.requests) == posted + 1
    assert any("(ANSWERED 40 s) conflicts with the one applied" in m for m in first.logged("ERROR"))
    assert account("acme").balance == Decimal("97.90")
