"""scripts/load_seed.py writes to a deployed stage: it must never make the published demo key valid there."""
import pytest

from tests.conftest import ROOT


def test_the_demo_seed_is_refused_for_a_deployed_stage_before_anything_is_written(monkeypatch):
    from scripts import load_seed
    written = []
    for name in ("CASCADE_TABLE_PREFIX", "CASCADE_KEY_PEPPER_SECRET"):   # --stage sets them; undone after
        monkeypatch.setenv(name, "unset-by-test")
    monkeypatch.setattr("chalicelib.adapters.dynamo.writer.write_seed", written.append)
    with pytest.raises(SystemExit) as refused:
        load_seed.main(["--stage", "prod", str(ROOT / "demo" / "seed.json")])
    assert "published demo key" in str(refused.value) and written == []
