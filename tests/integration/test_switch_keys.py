"""One key per switch, stored hashed, revocable."""
import json

from chalice.test import Client

from chalicelib.adapters.dynamo import writer
from chalicelib.adapters.dynamo.models import CoreItem
from tests.conftest import DEMO_KEY

def authorize(client, key, call_id, account="1001"):
    body = json.dumps({"account": account, "destination": "15551230001", "call_id": call_id})
    return client.http.post("/authorize", body=body,
                            headers={"X-Api-Key": key, "Content-Type": "application/json"}).status_code


def test_a_new_key_works_is_stored_only_hashed_and_stops_working_when_revoked(demo):
    from app import app
    key = writer.create_switch_key("kamailio-1", "Kamailio Frankfurt")
    stored = [i for i in writer.switch_keys() if i.key_id == "kamailio-1"]
    assert len(stored) == 1 and key not in json.dumps(stored[0].attribute_values, default=str)
    assert all(key not in json.dumps(i.attribute_values, default=str) for i in CoreItem.scan())
    with Client(app) as client:
        assert authorize(client, key, "k1") == 200
        writer.revoke_switch_key("kamailio-1")
        assert authorize(client, key, "k2") == 401
        assert authorize(client, DEMO_KEY, "k3", account="2001") == 200   # other switches are unaffected


def test_the_cli_issues_lists_and_revokes(demo, capsys):
    import scripts.switch_keys as cli
    cli.main(["new", "asterisk-2", "Asterisk"])
    key = capsys.readouterr().out.strip()
    assert key.startswith("csk_") and len(key) > 40
    cli.main(["list"])
    assert "asterisk-2\tactive" in capsys.readouterr().out
    cli.main(["revoke", "asterisk-2"])
    cli.main(["list"])
    assert "asterisk-2\trevoked" in capsys.readouterr().out
