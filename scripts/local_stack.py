"""`make run`: Cascade on the embedded local stack.

moto in server mode stands in for DynamoDB, behind one lock so each request is atomic as on AWS (moto
alone is not). scripts/local_api.py serves the API against it in a process of its own (chalice's local
gateway, with a listen backlog for a switch lab's load instead of `chalice local`'s 5); threads run the
hold sweeper every minute, the escrow rebalancer and the report consumer every second (nothing local runs schedules;
CASCADE_REBALANCE_TICK=0 runs no rebalancer, so every hold stays on its level's own item). Ctrl-C
stops everything.
"""
import json
import os
import secrets
import pathlib
import signal
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
MOTO_PORT = int(os.environ.get("MOTO_PORT", "8766"))
API_PORT = int(os.environ.get("PORT", "8000"))
SEED = pathlib.Path(os.environ.get("SEED") or ROOT / "demo" / "seed.json")

os.environ.update({
    "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{MOTO_PORT}",
    "CASCADE_TABLE_PREFIX": os.environ.get("CASCADE_TABLE_PREFIX", "cascade-local-"),
    # Local only: deployed stages read the pepper and the token signing key from Secrets Manager.
    "CASCADE_KEY_PEPPER": os.environ.get("CASCADE_KEY_PEPPER", "local-development-pepper"),
    # A fresh signing key per run: tokens from an earlier run stop working, as after a key rotation.
    "CASCADE_TOKEN_KEY": os.environ.get("CASCADE_TOKEN_KEY") or "local:" + secrets.token_urlsafe(48),
    "CASCADE_PORTAL_URL": f"http://127.0.0.1:{API_PORT}",
})
sys.path.insert(0, str(ROOT))

from scripts import moto_journal  # noqa: E402


class OneAtATime:
    """WSGI middleware: serve one AWS request at a time, body included (DynamoDB's per-request
    atomicity; see FACTS: moto's update_item and transactions race otherwise)."""

    def __init__(self, app):
        self.app, self.lock = app, threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            return list(self.app(environ, start_response))


def start_moto():
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs):
            pass

    class Server(ThreadedWSGIServer):
        request_queue_size = 1024     # the API process opens a connection per busy thread
    moto_journal.install()    # transactions cost what they touch, not the tables' size
    server = Server("127.0.0.1", MOTO_PORT, OneAtATime(DomainDispatcherApplication(create_backend_app)),
                    handler=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True, name="moto").start()
    return server


def sweeper_loop(stop: threading.Event):
    from chalicelib.bootstrap import container
    from chalicelib.services.sweep_holds import sweep_expired_holds
    store = container().store
    while not stop.wait(60):
        try:
            released = sweep_expired_holds(store)
            if released:
                print(f"[sweeper] released {released} expired hold(s)", flush=True)
        except Exception as exc:   # keep the local stack alive; the next minute retries
            print(f"[sweeper] {exc!r}", flush=True)


def rebalancer_loop(stop: threading.Event):
    """The escrow rebalancer, as deployed: a tick a second (nothing local runs schedules)."""
    from chalicelib.bootstrap import container
    from chalicelib.entrypoints.rebalancer import run
    store = container().store
    while not stop.is_set():
        run(store, run_for=55, sleep=lambda s: stop.wait(s))


def reporter_loop(stop: threading.Event):
    """The report consumer: deployed, a Lambda on the core table's stream; here the stream is read every
    second and each shard's new records are applied as the Lambda would (entrypoints.reporter)."""
    from chalicelib.entrypoints.reporter import drain
    while not stop.wait(1):
        try:
            drain()
        except Exception as exc:   # keep the local stack alive; the next second retries the same records
            print(f"[reporter] {exc!r}", flush=True)


DEMO_DOMAIN = "demo.cascade.local"


def demo_logins(seed) -> list:
    """Sign-ins for the root, its first reseller and the client whose SIP user is shown: e-mails
    <id>@demo.cascade.local, passwords new on every run (printed once, never stored in the repo)."""
    from chalicelib.bootstrap import container
    by_id = {a.id: a for a in seed.accounts}
    root = next(a for a in seed.accounts if a.parent_id is None)
    reseller = next((a for a in seed.accounts if a.parent_id == root.id and a.role == "reseller"), None)
    client_id = next((c for n, c in seed.identities.items() if n != c), None)
    logins = []
    for account in (root, reseller, by_id.get(client_id)):
        if account is None:
            continue
        email, password = f"{account.id}@{DEMO_DOMAIN}", secrets.token_urlsafe(12)
        store = container().store
        store.update_account(account.id, {"email": email}, search=(account.name, email))
        identity = container().identity
        try:
            identity.create_login(account.id, email, password)
        except Exception:      # a login left by an earlier run on the same tables: set a new password
            identity.close_login(account.id, email)
            identity.create_login(account.id, email, password)
        logins.append((account.role, account.id, email, password))
    return logins


def wait_for(url: str, seconds: float = 30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up in {seconds:.0f}s")


def main():
    from chalicelib.adapters.dynamo.models import create_tables
    from chalicelib.adapters.dynamo.writer import write_seed
    from chalicelib.services.seed import parse_seed

    start_moto()
    create_tables()
    seed = parse_seed(SEED.read_text())
    write_seed(seed)
    logins = demo_logins(seed)
    chalice = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "local_api.py"), "--host", "127.0.0.1", "--port", str(API_PORT)],
        cwd=ROOT)
    stop = threading.Event()

    def shutdown(*_):
        stop.set()
        chalice.terminate()
    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)

    base = f"http://127.0.0.1:{API_PORT}"
    wait_for(base + "/health")
    threading.Thread(target=sweeper_loop, args=(stop,), daemon=True).start()
    threading.Thread(target=reporter_loop, args=(stop,), daemon=True).start()
    if int(os.environ.get("CASCADE_REBALANCE_TICK", "1")) > 0:      # 0: no escrow (every hold on its own item)
        threading.Thread(target=rebalancer_loop, args=(stop,), daemon=True).start()
    key = seed.switch_keys[0]["key"] if seed.switch_keys else "<no key in seed>"
    sip = next(iter(n for n, c in seed.identities.items() if n != c), next(iter(seed.identities), "1001"))
    body = json.dumps({"account": sip, "destination": "15551230001", "call_id": "demo-1@local"})
    print(f"""
Cascade is running on the local stack (seed: {SEED})
  base URL        {base}
  switch API key  {key}
  authorize       curl -s -X POST {base}/authorize -H 'X-Api-Key: {key}' -H 'Content-Type: application/json' -d '{body}'
  complete        curl -s -X POST {base}/calls/demo-1%40local/complete -H 'X-Api-Key: {key}' -H 'Content-Type: application/json' -d '{{"billsec": 42, "disposition": "ANSWERED"}}'
  DynamoDB (moto) {os.environ['AWS_ENDPOINT_URL']}   tables prefixed {os.environ['CASCADE_TABLE_PREFIX']}
Portal logins (new passwords every run; API walk-through: docs/portal-api.md)""" + "".join(f"""
  {role:9s} {email:32s} password {password}""" for role, _, email, password in logins) + f"""
  sign in         curl -s -X POST {base}/auth/sign-in -H 'Content-Type: application/json' -d '{{"email": "{logins[1][2] if len(logins) > 1 else ''}", "password": "{logins[1][3] if len(logins) > 1 else ''}"}}'
  mail (resets)   .venv/bin/python scripts/read_mail.py --last --links
  OpenAPI         {base}/openapi.json
READY""", flush=True)
    code = chalice.wait()
    stop.set()
    sys.exit(0 if stop.is_set() else code)


if __name__ == "__main__":
    main()
