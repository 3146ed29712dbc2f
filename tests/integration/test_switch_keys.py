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
    assert "\tactive\t" in capsys.readouterr().out
    cli.main(["revoke", "asterisk-2"])
    cli.main(["list"])
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("asterisk-2\t"))
    assert line.split("\t")[2] == "revoked"


def test_a_rotated_key_completes_the_calls_of_the_old_one_and_the_old_one_is_revoked_alone(demo, capsys):
    """Rotation keeps the switch id: a call authorized with the old key completes with the new one,
    and revoking the old key by its ref leaves the new one working."""
    import scripts.switch_keys as cli
    from app import app
    old = writer.create_switch_key("kamailio-9", "Kamailio Lyon")
    with Client(app) as client:
        assert authorize(client, old, "rot-1") == 200
        capsys.readouterr()     # the request's metric line, not the script's output
        cli.main(["rotate", "kamailio-9"])
        new = capsys.readouterr().out.strip()
        assert new.startswith("csk_") and new != old
        cli.main(["list"])
        rows = [l.split("\t") for l in capsys.readouterr().out.splitlines() if l.startswith("kamailio-9\t")]
        assert [(r[2], r[4]) for r in rows] == [("active", "Kamailio Lyon")] * 2
        old_ref = next(writer.key_ref(i) for i in writer.switch_keys() if i.key_id == "kamailio-9"
                       and i.created_at == min(r[3] for r in rows))
        cli.main(["revoke", "kamailio-9", "--ref", old_ref])
        complete = client.http.post("/calls/rot-1/complete", body=json.dumps({"billsec": 30, "disposition": "ANSWERED"}),
                                    headers={"X-Api-Key": new, "Content-Type": "application/json"})
        assert complete.status_code == 200, complete.body
        assert authorize(client, old, "rot-2") == 401 and authorize(client, new, "rot-3", account="2001") == 200
