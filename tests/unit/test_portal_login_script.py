"""scripts/portal_login.py: the first sign-in of a stage, from the command line."""
import io
import json

import pytest

from tests.conftest import demo_seed, load


def test_set_gives_an_account_a_login_it_can_sign_in_with(aws, monkeypatch, capsys):
    # GIVEN the demo tree, no logins
    import scripts.portal_login as cli
    from chalice.test import Client
    from app import app
    load(demo_seed())
    # WHEN the operator sets the admin's login from the command line (password on stdin)
    monkeypatch.setattr("sys.stdin", io.StringIO("a long operator password\n"))
    cli.main(["set", "admin", "Ops@Example.com"])
    assert "admin signs in as ops@example.com" in capsys.readouterr().out
    # THEN the admin signs in with it and its account shows the address
    with Client(app) as client:
        r = client.http.post("/auth/sign-in", headers={"Content-Type": "application/json"},
                             body=json.dumps({"email": "ops@example.com", "password": "a long operator password"}))
        assert r.status_code == 200
        token = json.loads(r.body)["access_token"]
        me = json.loads(client.http.get("/me", headers={"Authorization": f"Bearer {token}"}).body)
        assert (me["id"], me["role"], me["email"]) == ("admin", "admin", "ops@example.com")


def test_an_unknown_account_or_a_taken_email_is_refused(aws, monkeypatch):
    import scripts.portal_login as cli
    load(demo_seed())
    with pytest.raises(SystemExit, match="no account"):
        cli.main(["invite", "nobody", "x@example.com"])
    monkeypatch.setattr("sys.stdin", io.StringIO("a long operator password\n"))
    cli.main(["set", "admin", "ops@example.com"])
    monkeypatch.setattr("sys.stdin", io.StringIO("another long password\n"))
    with pytest.raises(SystemExit, match="email_taken"):
        cli.main(["set", "atlas", "ops@example.com"])
