"""Kamailio (the shipped configuration) and sipp, run for real around the local stack."""
import glob
import os
import pathlib
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from tests.e2e.stack import ROOT, free_port

KAMAILIO_DIR = ROOT / "integrations" / "kamailio"
SIPP_DIR = KAMAILIO_DIR / "sipp"
MODULES = ("http_client.so", "jansson.so", "dialog.so", "mqueue.so", "rtimer.so")


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
    finals: Dict[str, Tuple[str, str]] = field(default_factory=dict)   # Call-ID -> (status, X-Cascade-Reason)
    errors: str = ""

    @property
    def call_ids(self) -> List[str]:
        return list(self.finals)

    def only(self) -> Tuple[str, str, str]:
        assert len(self.finals) == 1, (self.finals, self.errors[-2000:])
        call_id, (status, reason) = next(iter(self.finals.items()))
        return call_id, status, reason


def parse_results(log: pathlib.Path) -> Dict[str, Tuple[str, str]]:
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
        runtime = workdir / "run"
        runtime.mkdir(exist_ok=True)
        env = dict(os.environ, CASCADE_URL=cascade_url, CASCADE_API_KEY=api_key,
                   CASCADE_GATEWAY=f"sip:127.0.0.1:{self.callee_port}", CASCADE_TIMEOUT=str(timeout_s),
                   SIP_LISTEN=f"udp:127.0.0.1:{self.port}", SIP_CHILDREN="4", KAMAILIO_RUNTIME_DIR=str(runtime),
                   KAMAILIO_SHM_MB="64", KAMAILIO_PKG_MB="8")
        self.log_handle = open(self.kamailio_log, "w")
        self.kamailio = subprocess.Popen([str(KAMAILIO_DIR / "kamailio-cascade"), "-DD", "-E"], env=env,
                                         stdout=self.log_handle, stderr=subprocess.STDOUT, start_new_session=True)
        self._calls = 0
        if not self.answers_options(20):
            self.stop()
            raise RuntimeError("Kamailio did not answer OPTIONS:\n" + self.kamailio_log.read_text()[-4000:])

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
                   timeout_s: int = 60):
        """Start one sipp caller; returns a handle for finish()."""
        self._calls += 1
        name = f"{tag}-{self._calls}"
        log, errors = self.workdir / f"{name}.log", self.workdir / f"{name}-errors.log"
        args = ["sipp", f"127.0.0.1:{self.port}", "-sf", str(SIPP_DIR / scenario), "-s", number,
                "-set", "account", account, "-cid_str", f"{tag}-%u-%p@%s", "-i", "127.0.0.1",
                "-p", str(free_port(socket.SOCK_DGRAM)), "-m", "1", "-nostdin", "-timeout", f"{timeout_s}s",
                "-timeout_error", "-trace_logs", "-log_file", str(log), "-trace_err", "-error_file", str(errors)]
        if pause_ms is not None:
            args += ["-d", str(pause_ms)]
        started = time.monotonic()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        return proc, started, log, errors

    @staticmethod
    def finish(handle) -> Outcome:
        proc, started, log, errors = handle
        returncode = proc.wait(120)
        return Outcome(returncode, time.monotonic() - started, parse_results(log),
                       errors.read_text(errors="replace") if errors.exists() else "")

    def call(self, *args, **kwargs) -> Outcome:
        return self.finish(self.start_call(*args, **kwargs))

    def callee_saw_bye(self, call_id: str) -> bool:
        return self.callee_log.exists() and f"BYE {call_id}" in self.callee_log.read_text(errors="replace")

    def log(self) -> str:
        return self.kamailio_log.read_text(errors="replace")

    def stop(self) -> None:
        for proc in (self.kamailio, self.callee):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.log_handle.close()
