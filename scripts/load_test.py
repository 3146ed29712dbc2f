"""Load a deployed stage's switch function the way a switch does: POST /authorize, then, `--hold` seconds
after a grant, POST /calls/{call_id}/complete. Standard library only (threads, http.client).

    .venv/bin/python scripts/load_test.py --url "$SWITCH" --key csk_... --accounts load-seed.accounts.txt \\
        --rate 50 --seconds 120 --hold 60 --concurrency 64

    .venv/bin/python scripts/load_test.py --make-seed 1000 --out load-seed.json [--subs 10] [--hot-top] [--prefix lt]

Calls arrive at a fixed rate (open loop: a slow answer does not slow the arrivals) and take the accounts
round robin. `--concurrency` threads send the requests, each over its own kept-alive connection (as the
Kamailio recipe does). A completion answered 5xx or not at all is re-sent after each of `--retry-delays`
(the Kamailio integration's first retries, 1, 2 and 4 s); an authorize that timed out gets a 0-second
`FAILED` completion, so a hold it may have placed is released now rather than by the sweeper.

Prints granted calls/s, denials by reason, 503s, latency percentiles and the UTC windows of the run
(for CloudWatch), then one JSON line with every figure. Runbook: docs/deploy.md, "Calibrating on a dev
stage: a load test".
"""
import argparse
import http.client
import heapq
import itertools
import json
import os
import pathlib
import re
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import quote, urlsplit

ROOT = pathlib.Path(__file__).resolve().parent.parent


# --- the seed generator ----------------------------------------------------------------------------

def make_seed(clients: int, subs: int = 10, hot_top: bool = False, max_duration: int = 3600,
              prefix: str = None) -> dict:
    """A tree for the load test (docs/seed-format.md): admin -> one top reseller -> `subs` sub-resellers
    -> `clients` clients, spread round robin over the subs, each with one SIP username.

    Prices for prefix 1 (dial 1 + 10 digits): carrier 0.005, top buys at 0.008, subs at 0.012, clients at
    0.02 per minute, 6 s / 6 s. Money for long runs: top 1,000,000, each sub 100,000, each client 1,000.
    The top reseller is escrowed (no limits) unless `hot_top`: then it gets a daily spend limit it never
    reaches (the one limit escrow does not lend out: domain.escrow), which makes every call hold and
    settle on its own item (the hot item the lock window is measured on). Ids start with `prefix` (default `lh` with `hot_top`, else `lt`), so both trees can be
    loaded into one stage side by side; only the admin and its carrier tariff are shared. No switch keys:
    issue one with scripts/switch_keys.py --stage <stage> new loadtest."""
    if clients < 1 or subs < 1:
        raise ValueError("at least one client and one sub-reseller")
    p = prefix or ("lh" if hot_top else "lt")
    if not re.fullmatch(r"[a-z][a-z0-9]{0,9}", p):
        raise ValueError(f"prefix {p!r}: 1-10 lower-case letters and digits, starting with a letter")
    subs = min(subs, clients)
    width = max(5, len(str(clients - 1)))
    tariffs = [
        {"id": "lt-carrier", "owner": "admin", "name": "load test: carrier cost",
         "rates": [{"prefix": "1", "name": "USA/Canada", "price": "0.005", "initial": 6, "subsequent": 6}]},
        {"id": f"{p}-top-buys", "owner": "admin", "name": "load test: admin -> top",
         "rates": [{"prefix": "1", "name": "USA/Canada", "price": "0.008", "initial": 6, "subsequent": 6}]},
        {"id": f"{p}-sub-buys", "owner": f"{p}-top", "name": "load test: top -> subs",
         "rates": [{"prefix": "1", "name": "USA/Canada", "price": "0.012", "initial": 6, "subsequent": 6}]},
    ]
    top = {"id": f"{p}-top", "role": "reseller", "parent": "admin", "name": "Load test top reseller",
           "tariff": f"{p}-top-buys", "balance": "1000000"}
    if hot_top:
        top["daily_limit"] = "1000000"
    accounts = [{"id": "admin", "role": "admin", "name": "Load test operator", "tariff": "lt-carrier"}, top]
    for j in range(subs):
        tariffs.append({"id": f"{p}-retail-{j}", "owner": f"{p}-sub-{j}", "name": f"load test: sub {j} retail",
                        "rates": [{"prefix": "1", "name": "USA/Canada", "price": "0.02", "initial": 6,
                                   "subsequent": 6}]})
        accounts.append({"id": f"{p}-sub-{j}", "role": "reseller", "parent": f"{p}-top", "name": f"Load test sub {j}",
                         "tariff": f"{p}-sub-buys", "balance": "100000"})
    for i in range(clients):
        j = i % subs
        accounts.append({"id": f"{p}-c{i:0{width}d}", "role": "client", "parent": f"{p}-sub-{j}",
                         "name": f"Load test client {i}", "tariff": f"{p}-retail-{j}", "balance": "1000",
                         "sip_users": [f"{p}{i:0{width}d}"]})
    return {"settings": {"max_duration": max_duration, "billing_mode": "early"},
            "tariffs": tariffs, "accounts": accounts}


def sip_users(seed: dict) -> list:
    return [user for a in seed["accounts"] if a["role"] == "client" for user in a.get("sip_users", [])]


def write_seed_files(seed: dict, out: pathlib.Path) -> pathlib.Path:
    """Validate with the loader's own parser, then write the seed and, next to it, its SIP usernames
    (one a line: the --accounts file). Returns the accounts file's path."""
    sys.path.insert(0, str(ROOT))
    from chalicelib.services.seed import parse_seed
    parse_seed(json.dumps(seed))
    out.write_text(json.dumps(seed, indent=1) + "\n")
    accounts = out.with_suffix(".accounts.txt")
    accounts.write_text("\n".join(sip_users(seed)) + "\n")
    return accounts


# --- accounts --------------------------------------------------------------------------------------

_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_accounts(spec: str) -> list:
    """A file (one SIP username a line; blank lines and # comments skipped), a pattern with one numeric
    range (`lt{00000..00999}`: zero-padded like the bounds), or a comma-separated list."""
    path = pathlib.Path(spec)
    if path.is_file():
        names = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
        return [n for n in names if n]
    match = _RANGE.search(spec)
    if match:
        lo, hi = match.group(1), match.group(2)
        width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
        head, tail = spec[:match.start()], spec[match.end():]
        return [f"{head}{n:0{width}d}{tail}" for n in range(int(lo), int(hi) + 1)]
    return [n.strip() for n in spec.split(",") if n.strip()]


# --- statistics ------------------------------------------------------------------------------------

def percentile(values, p: float):
    """Nearest-rank percentile (p in 0..100) of a list; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(min(rank, len(ordered))) - 1]


def latency_summary(values) -> dict:
    out = {}
    for name, p in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99), ("max_ms", 100)):
        v = percentile(values, p)
        out[name] = None if v is None else round(v, 1)
    return out


def utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the switch ------------------------------------------------------------------------------------

class Switch:
    """POSTs to the switch API over one kept-alive connection per thread."""

    def __init__(self, url: str, key: str, timeout: float):
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url must be http(s)://host[:port], not {url!r}")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.base = parts.path
        self.key, self.timeout = key, timeout
        self.local = threading.local()

    def _connection(self):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = self.local.conn = cls(self.host, self.port, timeout=self.timeout)
        return conn

    def post(self, path: str, body: dict):
        """(status, parsed body or None, milliseconds); status None on a timeout or connection error."""
        data = json.dumps(body).encode()
        headers = {"X-Api-Key": self.key, "Content-Type": "application/json", "Connection": "keep-alive"}
        started = time.perf_counter()
        for attempt in (1, 2):     # a kept-alive connection the server closed meanwhile: reconnect once
            conn = self._connection()
            try:
                conn.request("POST", self.base + path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self._drop()
                ms = (time.perf_counter() - started) * 1000
                try:
                    parsed = json.loads(raw) if raw else None
                except ValueError:
                    parsed = None
                return response.status, parsed, ms
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop()
                if attempt == 2 or time.perf_counter() - started > self.timeout:
                    return None, {"error": type(exc).__name__}, (time.perf_counter() - started) * 1000
            except (OSError, http.client.HTTPException) as exc:      # timeouts, refused connections
                self._drop()
                return None, {"error": type(exc).__name__}, (time.perf_counter() - started) * 1000
        return None, None, (time.perf_counter() - started) * 1000

    def _drop(self):
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()
        self.local.conn = None


# --- the run ---------------------------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.auth_sent = self.granted = self.auth_busy = self.auth_errors = 0
        self.denied = {}
        self.auth_other = {}
        self.auth_ms = []
        self.lag_ms = []
        self.complete_sent = self.complete_ok = self.complete_busy = self.complete_failed = 0
        self.complete_retries = self.complete_errors = 0
        self.complete_other = {}
        self.complete_ms = []
        self.released = 0          # FAILED completions sent for authorizations that timed out
        self.first_auth = self.last_auth = self.first_complete = self.last_complete = None

    def window(self, kind: str, t: float):
        first, last = f"first_{kind}", f"last_{kind}"
        if getattr(self, first) is None or t < getattr(self, first):
            setattr(self, first, t)
        if getattr(self, last) is None or t > getattr(self, last):
            setattr(self, last, t)


class Runner:
    def __init__(self, switch: Switch, accounts: list, destination: str, rate: float, seconds: float,
                 hold: float, concurrency: int, retry_delays, run_id: str):
        self.switch, self.accounts, self.destination = switch, accounts, destination
        self.rate, self.seconds, self.hold, self.concurrency = rate, seconds, hold, concurrency
        self.retry_delays = list(retry_delays)
        self.run_id = run_id
        self.stats = Stats()
        self.tasks = []                       # heap of (due, seq, kind, payload)
        self.seq = itertools.count()
        self.cv = threading.Condition()
        self.open_calls = 0                   # granted (or unsure) calls not yet completed or given up
        self.arrivals_done = False
        self.stop = False

    def push(self, due: float, kind: str, payload: dict) -> None:
        with self.cv:
            heapq.heappush(self.tasks, (due, next(self.seq), kind, payload))
            self.cv.notify()

    def _next_task(self):
        with self.cv:
            while True:
                if self.tasks:
                    due = self.tasks[0][0]
                    wait = due - time.time()
                    if wait <= 0:
                        return heapq.heappop(self.tasks)
                    self.cv.wait(min(wait, 0.5))
                elif self.arrivals_done and self.open_calls == 0:
                    self.cv.notify_all()
                    return None
                else:
                    self.cv.wait(0.5)

    def _open(self, delta: int) -> None:
        with self.cv:
            self.open_calls += delta
            self.cv.notify_all()

    def worker(self) -> None:
        while True:
            task = self._next_task()
            if task is None:
                return
            due, _, kind, payload = task
            if kind == "authorize":
                self.authorize(due, payload)
            else:
                self.complete(payload)

    def authorize(self, due: float, call: dict) -> None:
        stats = self.stats
        sent = time.time()
        status, body, ms = self.switch.post("/authorize", {"account": call["account"], "call_id": call["call_id"],
                                                           "destination": self.destination})
        with stats.lock:
            stats.auth_sent += 1
            stats.lag_ms.append(max(0.0, (sent - due) * 1000))
            stats.window("auth", sent)
            if status is not None:
                stats.auth_ms.append(ms)
            if status == 200:
                stats.granted += 1
            elif status in (402, 403, 409):
                reason = (body or {}).get("reason", str(status))
                stats.denied[reason] = stats.denied.get(reason, 0) + 1
            elif status == 503:
                stats.auth_busy += 1
            elif status is None:
                stats.auth_errors += 1
            else:
                stats.auth_other[str(status)] = stats.auth_other.get(str(status), 0) + 1
        if status == 200:
            self._open(1)
            self.push(time.time() + self.hold, "complete",
                      dict(call, billsec=int(round(self.hold)), disposition="ANSWERED", attempt=0))
        elif status is None:      # no answer: a hold may exist; release it as a switch that tidies up would
            self._open(1)
            self.push(time.time(), "complete", dict(call, billsec=0, disposition="FAILED", attempt=0, release=True))

    def complete(self, call: dict) -> None:
        stats = self.stats
        sent = time.time()
        path = f"/calls/{quote(call['call_id'], safe='')}/complete"
        status, body, ms = self.switch.post(path, {"billsec": call["billsec"], "disposition": call["disposition"]})
        retry = status is None or status >= 500
        with stats.lock:
            stats.complete_sent += 1
            stats.window("complete", sent)
            if call["attempt"]:
                stats.complete_retries += 1
            if status is not None:
                stats.complete_ms.append(ms)
            if status == 200 or (call.get("release") and status == 404):
                stats.complete_ok += 1
                stats.released += 1 if call.get("release") else 0
            elif status == 503:
                stats.complete_busy += 1
            elif status is None:
                stats.complete_errors += 1
            else:
                stats.complete_other[str(status)] = stats.complete_other.get(str(status), 0) + 1
        if retry and call["attempt"] < len(self.retry_delays):
            self.push(time.time() + self.retry_delays[call["attempt"]], "complete",
                      dict(call, attempt=call["attempt"] + 1))
            return
        if retry:
            with stats.lock:
                stats.complete_failed += 1
        self._open(-1)

    def run(self) -> dict:
        threads = [threading.Thread(target=self.worker, daemon=True, name=f"load-{i}")
                   for i in range(self.concurrency)]
        for t in threads:
            t.start()
        started = time.time()
        total = int(self.rate * self.seconds)
        try:
            for i in range(total):
                due = started + i / self.rate
                while True:        # keep the heap short: enqueue each arrival shortly before it is due
                    ahead = due - time.time()
                    if ahead <= 0.05 or self.stop:
                        break
                    time.sleep(min(ahead - 0.05, 0.2))
                if self.stop:
                    break
                account = self.accounts[i % len(self.accounts)]
                self.push(due, "authorize", {"account": account, "call_id": f"load-{self.run_id}-{i}@loadtest"})
        except KeyboardInterrupt:
            print("interrupted: no new calls; completing the calls in flight", file=sys.stderr)
        with self.cv:
            self.arrivals_done = True
            self.cv.notify_all()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
        except KeyboardInterrupt:
            print("interrupted again: calls still open are left to the sweeper", file=sys.stderr)
        return self.report(started)

    def report(self, started: float) -> dict:
        s = self.stats
        span = max(self.seconds, 1e-9)
        return {
            "run_id": self.run_id, "offered_per_s": self.rate, "seconds": self.seconds, "hold_s": self.hold,
            "concurrency": self.concurrency, "accounts": len(self.accounts),
            "authorize": {"sent": s.auth_sent, "granted": s.granted, "granted_per_s": round(s.granted / span, 2),
                          "denied": dict(sorted(s.denied.items())), "busy_503": s.auth_busy,
                          "no_answer": s.auth_errors, "other": dict(sorted(s.auth_other.items())),
                          **latency_summary(s.auth_ms)},
            "complete": {"sent": s.complete_sent, "ok": s.complete_ok, "busy_503": s.complete_busy,
                         "no_answer": s.complete_errors, "other": dict(sorted(s.complete_other.items())),
                         "retries": s.complete_retries, "gave_up": s.complete_failed,
                         "released_after_timeout": s.released, **latency_summary(s.complete_ms)},
            "schedule_lag_p99_ms": latency_summary(s.lag_ms)["p99_ms"],
            "windows_utc": {"authorize": [utc(s.first_auth), utc(s.last_auth)] if s.first_auth else None,
                            "complete": [utc(s.first_complete), utc(s.last_complete)] if s.first_complete else None},
            "started_utc": utc(started),
        }


def print_report(r: dict) -> None:
    a, c = r["authorize"], r["complete"]
    print(f"offered {r['offered_per_s']:g} calls/s for {r['seconds']:g} s over {r['accounts']} accounts, "
          f"hold {r['hold_s']:g} s, {r['concurrency']} threads (run {r['run_id']})")
    print(f"authorize: {a['sent']} sent, {a['granted']} granted ({a['granted_per_s']:g}/s), "
          f"503 busy {a['busy_503']}, no answer {a['no_answer']}, other {a['other'] or '-'}")
    denied = ", ".join(f"{k} {v}" for k, v in a["denied"].items()) or "none"
    print(f"  denied by reason: {denied}")
    print(f"  latency ms: p50 {a['p50_ms']}  p95 {a['p95_ms']}  p99 {a['p99_ms']}  max {a['max_ms']}")
    print(f"complete: {c['sent']} sent ({c['retries']} retries), {c['ok']} ok, 503 busy {c['busy_503']}, "
          f"no answer {c['no_answer']}, other {c['other'] or '-'}, gave up {c['gave_up']}, "
          f"timed-out authorizations released {c['released_after_timeout']}")
    print(f"  latency ms: p50 {c['p50_ms']}  p95 {c['p95_ms']}  p99 {c['p99_ms']}  max {c['max_ms']}")
    lag = r["schedule_lag_p99_ms"]
    print(f"schedule lag p99 {lag} ms" + (" (the generator fell behind: raise --concurrency or use a bigger host)"
                                          if lag is not None and lag > 100 else ""))
    w = r["windows_utc"]
    print(f"windows (UTC): authorize {w['authorize']}, complete {w['complete']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="the stage's SwitchUrl (or a local base URL)")
    parser.add_argument("--key", default=os.environ.get("CASCADE_API_KEY"),
                        help="switch API key (default: $CASCADE_API_KEY)")
    parser.add_argument("--accounts", help="file of SIP usernames, a pattern like lt{00000..00999}, or a,b,c")
    parser.add_argument("--destination", default="15551230001", help="number dialled (default 15551230001)")
    parser.add_argument("--rate", type=float, default=10.0, help="calls started per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long calls keep arriving")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds from grant to completion (= billsec)")
    parser.add_argument("--concurrency", type=int, default=64, help="sending threads (connections)")
    parser.add_argument("--timeout", type=float, default=2.0, help="per request, seconds (the switch's: 2)")
    parser.add_argument("--retry-delays", default="1,2,4",
                        help="seconds before each re-sent completion after a 5xx or no answer")
    parser.add_argument("--make-seed", type=int, metavar="N_CLIENTS",
                        help="write a load-test seed with this many clients instead of running")
    parser.add_argument("--subs", type=int, default=10, help="--make-seed: sub-resellers under the top one")
    parser.add_argument("--hot-top", action="store_true",
                        help="--make-seed: give the top reseller a daily spend limit, so it is not escrowed")
    parser.add_argument("--prefix", help="--make-seed: account id prefix (default lt, or lh with --hot-top)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("load-seed.json"),
                        help="--make-seed: where to write the seed (SIP usernames go to <out>.accounts.txt)")
    args = parser.parse_args(argv)

    if args.make_seed is not None:
        try:
            seed = make_seed(args.make_seed, args.subs, args.hot_top, prefix=args.prefix)
        except ValueError as exc:
            parser.error(str(exc))
        accounts = write_seed_files(seed, args.out)
        top = seed["accounts"][1]["id"]
        print(f"wrote {args.out} ({len(seed['accounts'])} accounts, top reseller {top}"
              f"{' with a daily spend limit: not escrowed' if args.hot_top else ' escrowed'}) and {accounts}")
        return 0
    if not (args.url and args.key and args.accounts):
        parser.error("--url, --key (or CASCADE_API_KEY) and --accounts are required to run")
    if args.rate <= 0 or args.seconds <= 0 or args.hold < 0 or args.concurrency < 1:
        parser.error("--rate and --seconds must be > 0, --hold >= 0, --concurrency >= 1")
    accounts = expand_accounts(args.accounts)
    if not accounts:
        parser.error(f"--accounts {args.accounts!r} names no account")
    delays = [float(d) for d in args.retry_delays.split(",") if d.strip()]
    runner = Runner(Switch(args.url, args.key, args.timeout), accounts, args.destination, args.rate,
                    args.seconds, args.hold, args.concurrency, delays, uuid.uuid4().hex[:8])
    report = runner.run()
    print_report(report)
    print(json.dumps(report, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
