"""A relay between the switch and Cascade that plays the network's part in the SIP tests.

Requests pass through unchanged, except /authorize calls whose Call-ID starts with
- ``slow-``: forwarded after ``SLOW_SECONDS`` (Cascade is slow but answers; a CANCEL can arrive meanwhile),
- ``hang-``: never answered (Cascade hangs: the switch's own timeout must fire),
and completions whose call id starts with
- ``flaky-``: 503 the first ``FLAKY_FAILURES`` times,
- ``stuck-``: 503 for as long as ``Gate.stuck`` is set (Cascade refuses them until the test says so).
Kamailio's call id is Call-ID;From-tag;CSeq, so it starts with the SIP Call-ID.
"""
import json
import threading
import urllib.parse
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_SECONDS = 1.0
FLAKY_FAILURES = 2


class Gate:
    def __init__(self, upstream: str, port: int = 0):
        self.upstream = upstream
        self.seen = []                       # (path, call_id, status) in arrival order
        self.release = threading.Event()     # set at shutdown so hung requests end
        self.failed = {}                     # completion path -> 503s given so far
        self.stuck = threading.Event()       # while set, completions of stuck-... ids get 503
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                call_id = ""
                if self.path == "/authorize":
                    try:
                        call_id = str(json.loads(body).get("call_id", ""))
                    except ValueError:
                        pass
                if self.path.endswith("/complete"):
                    call_id = urllib.parse.unquote(self.path.split("/")[2])
                    if call_id.startswith("flaky-") and gate.failed.get(call_id, 0) < FLAKY_FAILURES:
                        gate.failed[call_id] = gate.failed.get(call_id, 0) + 1
                        gate.seen.append((self.path, call_id, 503))
                        return self.answer(503, b'{"error": "busy"}')
                    if call_id.startswith("stuck-") and gate.stuck.is_set():
                        gate.seen.append((self.path, call_id, 503))
                        return self.answer(503, b'{"error": "busy"}')
                if call_id.startswith("hang-"):
                    gate.seen.append((self.path, call_id, None))
                    gate.release.wait(120)
                    self.close_connection = True
                    return
                if call_id.startswith("slow-"):
                    time.sleep(SLOW_SECONDS)
                request = urllib.request.Request(
                    gate.upstream + self.path, data=body, method="POST",
                    headers={k: v for k, v in self.headers.items() if k.lower() in ("content-type", "x-api-key")})
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, payload = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    status, payload = exc.code, exc.read()
                gate.seen.append((self.path, call_id, status))
                self.answer(status, payload)

            def answer(self, status, payload):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True, name="gate").start()

    def statuses(self, call_id: str, kind: str):
        """Statuses Cascade (or the relay) gave for ``call_id``, in order; kind "authorize" or "complete"."""
        return [status for path, cid, status in list(self.seen) if cid == call_id and path.endswith("/" + kind)]

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
