"""Shared fixtures: moto (with one global lock, which models DynamoDB's per-request atomicity; moto
alone is not atomic under concurrency) and a seeded Cascade."""
import json
import os
import pathlib
import threading

os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true", "CASCADE_TABLE_PREFIX": "test-",
    "CASCADE_KEY_PEPPER": "test-pepper",
    "CASCADE_TOKEN_KEY": "t1:test-token-signing-key-not-for-production-0123456789",
})
os.environ.setdefault("CASCADE_SCRYPT_N", "1024")   # tests only: production hashes at 2**17
# Each test sees its own writes at once; the warm-Lambda cache is tested on its own (test_switch_cache.py).
os.environ["CASCADE_SWITCH_CACHE_SECONDS"] = "0"
os.environ.pop("AWS_ENDPOINT_URL", None)

import pytest
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMO_KEY = "csk_demo_local_only_not_for_production"

_moto_lock = threading.RLock()
_original = BotocoreStubber.process_request


def _atomic_process_request(self, *args, **kwargs):
    with _moto_lock:
        return _original(self, *args, **kwargs)


BotocoreStubber.process_request = _atomic_process_request

# moto's transactions copy whole tables for their rollback; under the lock above an undo journal of the
# touched items does the same job at a cost that does not grow with the tables (scripts/moto_journal.py).
from scripts import moto_journal  # noqa: E402
moto_journal.install()


def demo_seed() -> dict:
    return json.loads((ROOT / "demo" / "seed.json").read_text())


@pytest.fixture(autouse=True)
def fresh_container():
    """Each test starts from the composition root's defaults (tests may install their own)."""
    from chalicelib import bootstrap
    bootstrap.use(None)
    yield
    bootstrap.use(None)


@pytest.fixture
def aws(monkeypatch):
    # A deck import's background task runs before the request returns, so a test reads its outcome.
    monkeypatch.setenv("CASCADE_IMPORTS_INLINE", "1")
    from chalicelib.adapters import decks
    decks.reset()                     # its S3 client (and bucket) belong to this test's moto
    with mock_aws():
        from chalicelib.adapters.dynamo.models import create_tables
        create_tables()
        yield
    decks.reset()


def load(seed: dict) -> None:
    from chalicelib.adapters.dynamo.writer import write_seed
    from chalicelib.services.seed import parse_seed
    write_seed(parse_seed(json.dumps(seed)))


@pytest.fixture
def demo(aws):
    load(demo_seed())
    return demo_seed()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CASCADE_REQUIRE_SWITCH_TOOLS=1) nothing may be skipped: a skip there means a tool the
    suite needs was not installed, and must fail the run rather than pass it silently."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CASCADE_REQUIRE_SWITCH_TOOLS") == "1" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, but CASCADE_REQUIRE_SWITCH_TOOLS=1 forbids skips: {report.longrepr}"
