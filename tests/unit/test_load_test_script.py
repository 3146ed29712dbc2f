"""scripts/load_test.py against an in-process fake switch API: the counts it prints are what the fake
answered; --make-seed writes a seed the loader's parser accepts."""
import json
import pathlib
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import pytest

from chalicelib.services.seed import parse_seed
from scripts.load_test import expand_accounts, percentile

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "load_test.py"
KEY = "csk_fake_load_test"

# account -> how the fake answers its authorize (flaky: granted, first completion attempt 503)
ACCOUNTS = ["ok1", "poor", "ok2", "busy", "flaky", "cps"]


class FakeSwitchApi(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.tally = {}            # (route, status) -> count
        self.calls = {}            # call_id -> account, for granted calls
        self.completed = set()
        self.bad_paths = []

    def count(self, route, status):
        with self.lock:
            self.tally[(route, status)] = self.tally.get((route, status), 0) + 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"          # kept-alive connections, like the function URL

    def log_message(self, *args):
        pass

    def answer(self, route, status, body):
        self.server.count(route, status)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        server = self.server
        if self.headers.get("X-Api-Key") != KEY:
            return self.answer("auth", 401, {"error": "unauthorized"})
        if self.path == "/authorize":
            account = body["account"]
            if account == "poor":
                return self.answer("authorize", 402, {"authorized": False, "reason": "insufficient_funds"})
            if account == "cps":
                return self.answer("authorize", 403, {"authorized": False, "reason": "cps_limit"})
            if account == "busy":
                return self.answer("authorize", 503, {"error": "busy", "message": "try again"})
            with server.lock:
                server.calls[body["call_id"]] = account
            return self.answer("authorize", 200, {"authorized": True, "max_duration": 600, "call_id": body["call_id"]})
        if self.path.startswith("/calls/") and self.path.endswith("/complete"):
            call_id = unquote(self.path[len("/calls/"):-len("/complete")])
            with server.lock:
                account = server.calls.get(call_id)
                first = call_id not in server.completed
                server.completed.add(call_id)
            if account is None:
                server.bad_paths.append(self.path)
                return self.answer("complete", 404, {"error": "unknown_call"})
            if account == "flaky" and first:
                return self.answer("complete", 503, {"error": "busy", "message": "try again"})
            assert body == {"billsec": 0, "disposition": "ANSWERED"}, body
            return self.answer("complete", 200, {"call_id": call_id, "charged": "0"})
        return self.answer("other", 404, {"error": "not_found"})


@pytest.fixture
def fake():
    server = FakeSwitchApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_script(*args, timeout=20):
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_counts_printed_match_what_the_fake_answered(fake, tmp_path):
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("# one a line\n" + "\n".join(ACCOUNTS) + "\n\n")
    out = run_script("--url", f"http://127.0.0.1:{fake.server_address[1]}", "--key", KEY,
                     "--accounts", str(accounts), "--rate", "30", "--seconds", "1", "--hold", "0.1",
                     "--concurrency", "4", "--retry-delays", "0.05,0.05")
    report = json.loads(out.strip().splitlines()[-1])
    a, c = report["authorize"], report["complete"]
    tally = fake.tally

    # 30 calls, round robin over 6 accounts: 5 each
    assert a["sent"] == 30 == sum(v for (route, _), v in tally.items() if route == "authorize")
    assert a["granted"] == 15 == tally[("authorize", 200)]
    assert a["denied"] == {"cps_limit": 5, "insufficient_funds": 5}
    assert tally[("authorize", 402)] == 5 and tally[("authorize", 403)] == 5
    assert a["busy_503"] == 5 == tally[("authorize", 503)]
    assert a["no_answer"] == 0 and a["other"] == {}
    assert a["granted_per_s"] == 15.0
    assert a["p50_ms"] is not None and a["p50_ms"] <= a["p95_ms"] <= a["p99_ms"] <= a["max_ms"]

    # every grant completed once; flaky's 5 got a 503 first and were re-sent
    assert c["sent"] == 20 == sum(v for (route, _), v in tally.items() if route == "complete")
    assert c["ok"] == 15 == tally[("complete", 200)]
    assert c["busy_503"] == 5 == tally[("complete", 503)]
    assert c["retries"] == 5 and c["gave_up"] == 0 and c["other"] == {} and c["no_answer"] == 0
    assert fake.bad_paths == [] and ("auth", 401) not in tally
    assert len(fake.completed) == 15

    # the human-readable part says the same
    assert "15 granted (15/s)" in out
    assert "denied by reason: cps_limit 5, insufficient_funds 5" in out
    assert "503 busy 5" in out
    assert report["windows_utc"]["authorize"] and report["windows_utc"]["complete"]


def test_make_seed_writes_a_seed_the_loader_accepts(tmp_path):
    out = tmp_path / "load-seed.json"
    run_script("--make-seed", "25", "--subs", "4", "--out", str(out))
    seed = parse_seed(out.read_text())
    clients = [a for a in seed.accounts if a.role == "client"]
    resellers = {a.id: a for a in seed.accounts if a.role == "reseller"}
    assert len(clients) == 25 and len(resellers) == 5
    assert resellers["lt-top"].max_calls is None               # escrowed by default
    assert {c.parent_id for c in clients} == {f"lt-sub-{j}" for j in range(4)}
    users = (tmp_path / "load-seed.accounts.txt").read_text().split()
    assert len(users) == 25 and all(seed.identities[u].startswith("lt-c") for u in users)
    assert seed.switch_keys == []                               # keys are issued per stage

    hot = tmp_path / "hot.json"        # its own ids, so both trees can live in one stage
    run_script("--make-seed", "3", "--hot-top", "--out", str(hot))
    hot_seed = parse_seed(hot.read_text())
    assert {a.id: a for a in hot_seed.accounts}["lh-top"].daily_limit == 1_000_000   # not escrowable
    assert not {a.id for a in hot_seed.accounts if a.role != "admin"} & {a.id for a in seed.accounts}
    assert (tmp_path / "hot.accounts.txt").read_text().split() == ["lh00000", "lh00001", "lh00002"]


def test_accounts_patterns_and_percentiles(tmp_path):
    assert expand_accounts("lt{008..011}") == ["lt008", "lt009", "lt010", "lt011"]
    assert expand_accounts("u{1..3}@x") == ["u1@x", "u2@x", "u3@x"]
    assert expand_accounts("1001, 1002") == ["1001", "1002"]
    assert percentile([], 50) is None
    assert percentile(list(range(1, 101)), 50) == 50 and percentile(list(range(1, 101)), 99) == 99
    assert percentile([5.0], 99) == 5.0
