"""Deployed stages keep the switch-key pepper in Secrets Manager; only its name is in the environment."""
import hashlib
import hmac
import json

import boto3
import pytest

from tests.conftest import DEMO_KEY, demo_seed, load
from tests.integration.helpers import client, headers  # noqa: F401 (fixture)

SECRET = "cascade/test/switch-key-pepper"


@pytest.fixture
def pepper_in_secrets_manager(aws, monkeypatch):
    boto3.client("secretsmanager").create_secret(Name=SECRET, SecretString="pepper-from-secrets-manager")
    monkeypatch.delenv("CASCADE_KEY_PEPPER")
    monkeypatch.setenv("CASCADE_KEY_PEPPER_SECRET", SECRET)
    yield
    # load_key_pepper caches the value in the environment; monkeypatch restores the test pepper.


def test_keys_are_hashed_with_the_secret_and_the_switch_api_reads_it(pepper_in_secrets_manager, client):
    load(demo_seed())                       # hashes the demo key: fetches the pepper first
    from chalicelib.adapters.dynamo.models import SwitchKeyItem
    expected = hmac.new(b"pepper-from-secrets-manager", DEMO_KEY.encode(), hashlib.sha256).hexdigest()
    assert SwitchKeyItem.get("KEY#" + expected, "#").status == "active"
    response = client.http.post("/authorize", headers=headers(), body=json.dumps(
        {"account": "1001", "destination": "15551230001", "call_id": "secret-1"}))
    assert response.status_code == 200


def test_without_a_pepper_or_its_secret_the_error_names_both(aws, monkeypatch):
    monkeypatch.delenv("CASCADE_KEY_PEPPER")
    monkeypatch.delenv("CASCADE_KEY_PEPPER_SECRET", raising=False)
    from chalicelib.adapters.secrets import load_key_pepper
    with pytest.raises(RuntimeError, match="CASCADE_KEY_PEPPER.*CASCADE_KEY_PEPPER_SECRET"):
        load_key_pepper()
