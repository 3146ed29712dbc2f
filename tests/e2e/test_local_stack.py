"""`make run`'s stack for real: moto server behind its lock, chalice local, HTTP from outside."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEY = "csk_demo_local_only_not_for_production"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack():
    api, moto = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CASCADE_"))}
    env.update(PORT=str(api), MOTO_PORT=str(moto), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "scripts/local_stack.py"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines = []
    ready = threading.Event()

    def pump():
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "READY":
                ready.set()
    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(90):
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("local stack did not start:\n" + "".join(lines[-40:]))
    yield f"http://127.0.0.1:{api}", lines
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def post(base, path, body, key=KEY):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **({"X-Api-Key": key} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_banner_gives_the_url_the_key_and_a_curl_line(stack):
    base, lines = stack
    banner = "".join(lines)
    assert base in banner and KEY in banner and "curl -s -X POST " + base + "/authorize" in banner


def test_a_demo_call_is_authorized_and_billed_over_http(stack):
    base, _ = stack
    status, body = post(base, "/authorize", {"account": "1001", "destination": "15551230001", "call_id": "e2e-1@host"})
    assert status == 200 and body["max_duration"] == 600
    status, body = post(base, "/calls/e2e-1%40host/complete", {"billsec": 42, "disposition": "ANSWERED"})
    assert status == 200 and body["charged"] == "1.400000"      # 42 s at 2.00/min, 1/1
    status, again = post(base, "/calls/e2e-1%40host/complete", {"billsec": 42, "disposition": "ANSWERED"})
    assert status == 200 and again == body


def test_refusals_over_http(stack):
    base, _ = stack
    assert post(base, "/authorize", {"account": "1001", "destination": "1555", "call_id": "k"}, key="wrong")[0] == 401
    assert post(base, "/authorize", {"account": "1001", "call_id": "k"}) == \
        (400, {"error": "invalid_request", "field": "destination",
               "message": "destination is required and must be a non-empty string"})
    assert post(base, "/authorize", {"account": "1001", "destination": "881612345678", "call_id": "sat"}) == \
        (403, {"authorized": False, "reason": "no_rate"})
    assert post(base, "/calls/nope/complete", {"billsec": 1, "disposition": "ANSWERED"})[0] == 404


def test_concurrent_calls_over_http_on_funds_for_one(stack):
    base, _ = stack
    # 'shortly' (SIP 1002) has 0.20: at 2.00/min, 1/1, that is 6 s, held whole by the first granted call
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda i: post(base, "/authorize", {
            "account": "1002", "destination": "15551230001", "call_id": f"race-{i}@host"}), range(12)))
    granted = [b for s, b in results if s == 200]
    assert len(granted) == 1 and granted[0]["max_duration"] == 6
    assert sorted({s for s, _ in results}) == [200, 402]
