"""Kamailio (the shipped configuration) and sipp, run for real around the local stack."""
import glob
import hashlib
import os
import pathlib
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from tests.e2e.stack import ROOT, free_port

KAMAILIO_DIR = ROOT / "integrations" / "kamailio"
SIPP_DIR = KAMAILIO_DIR / "sipp"
MODULES = ("http_client.so", "jansson.so", "dialog.so", "rtimer.so", "htable.so", "sqlops.so", "db_sqlite.so")
MAX_ID_BYTES = 256
# The caller scenarios' From tag is [$ftag]SIPpTag00[call_number]; each sipp here makes one call (-m 1).
FROM_TAG_SUFFIX = "SIPpTag001"
CARRIER_IP = "127.0.0.2"       # a second loopback address: calls from it are a carrier's, to DIDs


def cascade_id(call_id: str, from_tag: str, cseq: int = 1) -> str:
    """The call id cascade.cfg sends Cascade (route[CASCADE_ID]): Call-ID;From-tag;CSeq, or its SHA-256
    when that is longer than Cascade accepts."""
    composed = f"{call_id};{from_tag};{cseq}"
    if len(composed.encode()) > MAX_ID_BYTES:
        return "sha256:" + hashlib.sha256(composed.encode()).hexdigest()
    return composed


def missing_tools() -> List[str]:
    missing = [tool for tool in ("kamailio", "sipp") if not shutil.which(tool)]
    if "kamailio" not in missing:
        for module in MODULES:
            if not glob.glob(f"/usr/lib/*/kamailio/modules/{module}") + glob.glob(f"/usr/lib*/kamailio/modules/{module}"):
                missing.append(module)
    return missing


@dataclass
class Outcome:
    returncode: int
    seconds: float
    finals: Dict[str, Tuple[str, str]] = field(default_factory=dict)   # Cascade id -> (status, X-Cascade-Reason)
    errors: str = ""
    sip_call_ids: Dict[str, str] = field(default_factory=dict)         # Cascade id -> SIP Call-ID

    @property
    def call_ids(self) -> List[str]:
        return list(self.finals)

    def only(self) -> Tuple[str, str, str]:
        """(Cascade id, final status, X-Cascade-Reason) of the one call this sipp made."""
        assert len(self.finals) == 1, (self.finals, self.errors[-2000:])
        call_id, (status, reason) = next(iter(self.finals.items()))
        return call_id, status, reason


def parse_results(log: pathlib.Path) -> Dict[str, Tuple[str, str]]:
    """SIP Call-ID -> (final status, X-Cascade-Reason) from the scenarios' RESULT lines."""
    out = {}
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            m = re.match(r"RESULT (\S+) (\d{3}) ?(.*)$", line.strip())
            if m:
                out[m.group(1)] = (m.group(2), m.group(3).strip())
    return out


class Switch:
    """Kamailio with cascade.cfg between a sipp caller and a sipp callee (the carrier)."""

    def __init__(self, workdir: pathlib.Path, cascade_url: str, api_key: str, timeout_s: int = 2):
        self.workdir = workdir
        self.port = free_port(socket.SOCK_DGRAM)
        self.callee_port = free_port(socket.SOCK_DGRAM)
        self.callee_log = workdir / "callee.log"
        self.kamailio_log = workdir / "kamailio.log"
        self.callee = subprocess.Popen(
            ["sipp", "-sf", str(SIPP_DIR / "uas.xml"), "-i", "127.0.0.1", "-p", str(self.callee_port), "-nostdin",
             "-trace_logs", "-log_file", str(self.callee_log), "-trace_err",
             "-error_file", str(workdir / "callee-errors.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        self.runtime = workdir / "run"
        self.runtime.mkdir(exist_ok=True)
        self.spool = self.runtime / "cascade-spool.sqlite"      # this switch's own, kept across its restarts
        self.env = dict(os.environ, CASCADE_URL=cascade_url, CASCADE_API_KEY=api_key,
                        CASCADE_GATEWAY=f"sip:127.0.0.1:{self.callee_port}", CASCADE_TIMEOUT=str(timeout_s),
                        # the carrier's calls to DIDs come from CARRIER_IP; inbound goes to the same callee
                        CASCADE_CARRIER_NET=f"{CARRIER_IP}/32",
                        CASCADE_INBOUND_GATEWAY=f"sip:127.0.0.1:{self.callee_port}",
                        SIP_LISTEN=f"udp:127.0.0.1:{self.port}", SIP_CHILDREN="4",
                        KAMAILIO_RUNTIME_DIR=str(self.runtime), KAMAILIO_SHM_MB="64", KAMAILIO_PKG_MB="8",
                        CASCADE_SPOOL=str(self.spool))
        self.log_handle = open(self.kamailio_log, "a")
        self.kamailio: Optional[subprocess.Popen] = None
        self._calls = 0
        self.sip_call_ids: Dict[str, str] = {}      # Cascade id -> SIP Call-ID, for every finished call
        try:
            self.start_kamailio()
        except Exception:
            self.stop()
            raise

    def start_kamailio(self) -> None:
        """Start Kamailio (again) on the same port and runtime directory, so with the same spool."""
        self.log_handle.write(f"==== kamailio-cascade started at {time.strftime('%H:%M:%S')}\n")
        self.log_handle.flush()
        self.kamailio = subprocess.Popen([str(KAMAILIO_DIR / "kamailio-cascade"), "-DD", "-E"], env=self.env,
                                         stdout=self.log_handle, stderr=subprocess.STDOUT, start_new_session=True)
        if not self.answers_options(30):
            raise RuntimeError("Kamailio did not answer OPTIONS:\n" + self.kamailio_log.read_text()[-4000:])

    def stop_kamailio(self, seconds: float = 20) -> int:
        """SIGTERM, as systemd or an operator's restart does; returns Kamailio's exit status."""
        if self.kamailio is None:
            return 0
        if self.kamailio.poll() is None:
            self.kamailio.terminate()
            try:
                self.kamailio.wait(seconds)
            except subprocess.TimeoutExpired:
                os.killpg(self.kamailio.pid, signal.SIGKILL)
                self.kamailio.wait(5)
        return self.kamailio.returncode

    def answers_options(self, seconds: float) -> bool:
        deadline = time.time() + seconds
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.5)
            n = 0
            while time.time() < deadline:
                if self.kamailio.poll() is not None:
                    return False
                n += 1
                me = s.getsockname()[1]
                s.sendto((f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0\r\n"
                          f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-ping-{n}\r\n"
                          f"From: <sip:ping@127.0.0.1:{me}>;tag=p{n}\r\nTo: <sip:127.0.0.1:{self.port}>\r\n"
                          f"Call-ID: ping-{n}@127.0.0.1\r\nCSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\n"
                          "Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", self.port))
                try:
                    if s.recvfrom(65535)[0].startswith(b"SIP/2.0 200"):
                        return True
                except socket.timeout:
                    pass
        return False

    def start_call(self, scenario: str, account: str, number: str, tag: str, pause_ms: Optional[int] = None,
                   timeout_s: int = 60, call_id: Optional[str] = None, from_tag: Optional[str] = None,
                   source_ip: str = "127.0.0.1"):
        """Start one sipp caller; returns a handle for finish(). ``call_id`` is a literal Call-ID (default: a
        unique one starting with ``tag``-), ``from_tag`` the From tag's prefix (default: a unique one; the
        tag is ``from_tag + FROM_TAG_SUFFIX``); the INVITE's CSeq is always 1. ``source_ip``: CARRIER_IP for
        a carrier's call to a DID (``account`` is then the caller's number)."""
        self._calls += 1
        name = f"{tag}-{self._calls}"
        log, errors = self.workdir / f"{name}.log", self.workdir / f"{name}-errors.log"
        if from_tag is None:
            from_tag = f"{name}-{uuid.uuid4().hex[:8]}-"
        assert call_id is None or "%" not in call_id, "sipp's -cid_str reads % as a placeholder"
        args = ["sipp", f"127.0.0.1:{self.port}", "-sf", str(SIPP_DIR / scenario), "-s", number,
                "-set", "account", account, "-set", "ftag", from_tag,
                "-cid_str", call_id or f"{tag}-%u-%p@%s", "-i", source_ip,
                "-p", str(free_port(socket.SOCK_DGRAM)), "-m", "1", "-nostdin", "-timeout", f"{timeout_s}s",
                "-timeout_error", "-trace_logs", "-log_file", str(log), "-trace_err", "-error_file", str(errors)]
        if pause_ms is not None:
            args += ["-d", str(pause_ms)]
        started = time.monotonic()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        return proc, started, log, errors, from_tag + FROM_TAG_SUFFIX

    def finish(self, handle) -> Outcome:
        proc, started, log, errors, from_tag = handle
        returncode = proc.wait(120)
        outcome = Outcome(returncode, time.monotonic() - started,
                          errors=errors.read_text(errors="replace") if errors.exists() else "")
        for sip_call_id, final in parse_results(log).items():
            cid = cascade_id(sip_call_id, from_tag)
            outcome.finals[cid] = final
            outcome.sip_call_ids[cid] = sip_call_id
        self.sip_call_ids.update(outcome.sip_call_ids)
        return outcome

    def call(self, *args, **kwargs) -> Outcome:
        return self.finish(self.start_call(*args, **kwargs))

    def callee_saw_bye(self, call_id: str, seconds: float = 15) -> bool:
        """``call_id``: the Cascade id of a finished call. sipp writes its log through a buffer it flushes
        when it gets to it (a busy machine delays that), so look for a while."""
        line = f"BYE {self.sip_call_ids[call_id]}"
        deadline = time.time() + seconds
        while True:
            if self.callee_log.exists() and line in self.callee_log.read_text(errors="replace"):
                return True
            if time.time() > deadline:
                return False
            time.sleep(0.2)

    def callee_saw_client(self, call_id: str, seconds: float = 15) -> Optional[str]:
        """The X-Cascade-Client header the callee got with the INVITE of ``call_id`` (a Cascade id)."""
        prefix = f"INVITE {self.sip_call_ids[call_id]} header="
        deadline = time.time() + seconds
        while True:
            if self.callee_log.exists():
                for line in self.callee_log.read_text(errors="replace").splitlines():
                    if line.startswith(prefix):
                        return line[len(prefix):].replace("X-Cascade-Client:", "", 1).strip()
            if time.time() > deadline:
                return None
            time.sleep(0.2)

    def log(self) -> str:
        return self.kamailio_log.read_text(errors="replace")

    def spool_rows(self) -> List[dict]:
        """The completions waiting in Kamailio's spool (read as an operator would, beside a running Kamailio)."""
        if not self.spool.exists():
            return []
        db = sqlite3.connect(str(self.spool), timeout=10)
        try:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM completions ORDER BY id")]
        finally:
            db.close()

    def stop(self) -> None:
        self.stop_kamailio(10)
        if self.callee.poll() is None:
            self.callee.terminate()
            try:
                self.callee.wait(10)
            except subprocess.TimeoutExpired:
                self.callee.kill()
        self.log_handle.close()
