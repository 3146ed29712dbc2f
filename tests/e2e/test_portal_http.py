"""The portal's smoke path over HTTP against `make run`'s stack: the printed logins work, a reseller
signs up a client with a SIP user, pays it, the client calls through the switch API, and the ledger, the
walls, the password-reset mail (read back from moto's SES) and sign-out behave as on AWS."""
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from decimal import Decimal

import pytest

from tests.e2e.stack import ROOT, LocalStack

KEY = "csk_demo_local_only_not_for_production"


@pytest.fixture(scope="module")
def stack():
    running = LocalStack(table_prefix="cascade-portal-e2e-")
    yield running
    running.stop()


def call(base, method, path, body=None, token=None, headers=None):
    h = {"Content-Type": "application/json", **(headers or {})}
    if token:
        h["Authorization"] = "Bearer " + token
    request = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                     method=method, headers=h)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw, parse_float=Decimal) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw, parse_float=Decimal) if raw else None


def logins(stack) -> dict:
    """role -> (email, password) from the banner make run prints."""
    found = {}
    for line in stack.lines:
        m = re.match(r"\s+(admin|reseller|client)\s+(\S+@\S+)\s+password (\S+)", line)
        if m:
            found[m.group(1)] = (m.group(2), m.group(3))
    return found


def sign_in(stack, role):
    email, password = logins(stack)[role]
    status, body = call(stack.base, "POST", "/auth/sign-in", {"email": email, "password": password})
    assert status == 200, body
    return body


def test_the_banner_prints_a_working_login_for_the_admin_a_reseller_and_a_client(stack):
    assert set(logins(stack)) == {"admin", "reseller", "client"}
    for role, account in (("admin", "admin"), ("reseller", "atlas"), ("client", "acme")):
        token = sign_in(stack, role)["access_token"]
        status, me = call(stack.base, "GET", "/me", token=token)
        assert (status, me["id"], me["role"]) == (200, account, role)


def test_a_reseller_signs_up_a_client_pays_it_and_the_client_calls(stack):
    base, token = stack.base, sign_in(stack, "reseller")["access_token"]
    # GIVEN atlas creates a client on its own tariff with a SIP user, and records a payment of 5.00
    status, client = call(base, "POST", "/accounts/atlas/children", {
        "role": "client", "name": "HTTP Smoke Ltd", "tariff_id": "borealis-buys", "email": "smoke@example.test",
        "password": "a long enough password"}, token)
    assert status == 201, client
    status, sip = call(base, "POST", f"/accounts/{client['id']}/sip-users", {"username": "smoke-1"}, token)
    assert status == 201 and sip["password"]
    payment = {"amount": "5.00", "idempotency_key": "smoke-pay-1", "reference": "bank 42"}
    assert call(base, "POST", f"/accounts/{client['id']}/payments", payment, token)[0] == 201
    status, again = call(base, "POST", f"/accounts/{client['id']}/payments", payment, token)
    assert status == 201 and again["replayed"] is True
    # WHEN the client's SIP user calls for 60 s
    status, grant = call(base, "POST", "/authorize", {"account": "smoke-1", "destination": "15551230001",
                                                       "call_id": "smoke-call-1"}, headers={"X-Api-Key": KEY})
    assert status == 200, grant
    status, _ = call(base, "POST", "/calls/smoke-call-1/complete", {"billsec": 60, "disposition": "ANSWERED"},
                     headers={"X-Api-Key": KEY})
    assert status == 200
    # THEN the client's ledger shows the payment once and the call, and the balance is their sum
    status, history = call(base, "GET", f"/accounts/{client['id']}/ledger", token=token)
    kinds = [i["kind"] for i in history["items"]]
    assert status == 200 and sorted(kinds) == ["call", "payment"]
    status, balance = call(base, "GET", f"/accounts/{client['id']}/balance", token=token)
    # (amounts travel as strings, parsed exactly)
    paid_for_calls = sum(Decimal(i["amount"]) for i in history["items"] if i["kind"] == "call")
    assert Decimal(balance["balance"]) == Decimal("5") + paid_for_calls and paid_for_calls < 0
    # AND the client, signed in itself, sees itself but not its reseller
    own = call(base, "POST", "/auth/sign-in", {"email": "smoke@example.test", "password": "a long enough password"})[1]
    assert call(base, "GET", f"/accounts/{client['id']}", token=own["access_token"])[0] == 200
    assert call(base, "GET", "/accounts/atlas", token=own["access_token"]) == \
        call(base, "GET", "/accounts/no-such-account", token=own["access_token"])


def test_an_inbound_call_reaches_the_month_report_through_the_streams_consumer(stack):
    """make run reads the table's stream every second, as the deployed reporter Lambda does."""
    import time
    base, token = stack.base, sign_in(stack, "reseller")["access_token"]
    month = time.strftime("%Y-%m", time.gmtime())

    def atlas_dids():
        status, report = call(base, "GET", f"/accounts/atlas/reports/dids?month={month}", token=token)
        assert status == 200, report
        return {r["number"]: r for r in report["items"]}
    before = atlas_dids()["15550100100"]["calls"]
    status, grant = call(base, "POST", "/authorize", {"direction": "inbound", "destination": "+15550100100",
                                                       "call_id": "e2e-inbound-1"}, headers={"X-Api-Key": KEY})
    assert status == 200 and grant["client_id"] == "acme", grant
    assert call(base, "POST", "/calls/e2e-inbound-1/complete", {"billsec": 30, "disposition": "ANSWERED"},
                headers={"X-Api-Key": KEY})[0] == 200
    deadline = time.time() + 20
    while atlas_dids()["15550100100"]["calls"] == before and time.time() < deadline:
        time.sleep(0.5)
    row = atlas_dids()["15550100100"]
    assert row["calls"] == before + 1 and Decimal(row["cost"]) >= Decimal("0.004"), row


def test_password_reset_by_the_mail_moto_holds_and_sign_out(stack):
    base = stack.base
    # GIVEN the client asks for a reset
    email, _ = logins(stack)["client"]
    assert call(base, "POST", "/auth/password-reset", {"email": email})[0] == 202
    # WHEN it follows the link the mail carries (read from moto's SES, as the README says)
    out = subprocess.check_output([sys.executable, "scripts/read_mail.py", "--to", email, "--last", "--links"],
                                  cwd=ROOT, text=True, env={**os.environ, "AWS_ENDPOINT_URL": stack.dynamodb_endpoint})
    token = re.search(r"token=([A-Za-z0-9_-]+)", out).group(1)
    assert call(base, "POST", "/auth/password-reset/confirm", {"token": token, "password": "a brand new password"})[0] == 204
    # THEN the new password signs in, the token is spent, and sign-out revokes the refresh token
    status, session = call(base, "POST", "/auth/sign-in", {"email": email, "password": "a brand new password"})
    assert status == 200
    assert call(base, "POST", "/auth/password-reset/confirm", {"token": token, "password": "another new password"})[0] != 204
    assert call(base, "POST", "/auth/sign-out", {"refresh_token": session["refresh_token"]})[0] == 204
    assert call(base, "POST", "/auth/refresh", {"refresh_token": session["refresh_token"]})[0] == 401


def test_a_sip_users_switch_password_is_stored_for_the_switch_and_shown_only_once(stack):
    base, token = stack.base, sign_in(stack, "reseller")["access_token"]
    status, sip = call(base, "POST", "/accounts/acme/sip-users", {"username": "once-1"}, token)
    assert status == 201 and len(sip["password"]) >= 20
    # the list never shows it again
    listed = call(base, "GET", "/accounts/acme/sip-users", token=token)[1]["items"]
    assert [u for u in listed if u["username"] == "once-1"] == [{"username": "once-1", "account_id": "acme", "status": "active"}]
    # and the item keeps it for the switch
    item = stack.table("core").get_item(Key={"pk": "ID#once-1", "sk": "#"}, ConsistentRead=True)["Item"]
    assert item["sip_secret"] == sip["password"]


def test_a_reseller_imports_a_deck_through_the_local_s3_and_its_background_task(stack):
    """The large-deck path on make run's stack: a presigned POST to moto's S3, then the import runs in a
    thread of the API server and is polled to the end."""
    import time

    import requests
    token = sign_in(stack, "reseller")["access_token"]
    status, tariff = call(stack.base, "POST", "/accounts/atlas/tariffs", {"name": "E2E deck"}, token=token)
    assert status == 201, tariff
    status, opened = call(stack.base, "POST", f"/accounts/atlas/tariffs/{tariff['id']}/imports", {}, token=token)
    assert status == 201, opened
    deck = "prefix,name,price\n" + "".join(f"49{n:04d},Germany {n},0.0{n % 90 + 10}\n" for n in range(3000))
    form = opened["upload"]
    uploaded = requests.post(form["url"], data=form["fields"], files={"file": ("deck.csv", deck.encode(), "text/csv")},
                             timeout=30)
    assert uploaded.status_code in (200, 201, 204), uploaded.text
    path = f"/accounts/atlas/tariffs/{tariff['id']}/imports/{opened['id']}"
    status, started = call(stack.base, "POST", path + "/start", token=token)
    assert status == 202 and started["status"] in ("queued", "reading", "applying", "done"), started
    deadline = time.time() + 60
    while True:
        status, job = call(stack.base, "GET", path, token=token)
        if job["status"] in ("done", "failed") or time.time() > deadline:
            break
        time.sleep(0.5)
    assert job["status"] == "done" and job["result"]["added"] == 3000 and job["rows_read"] == 3001, job
    status, body = call(stack.base, "GET", f"/accounts/atlas/tariffs/{tariff['id']}?limit=5000", token=token)
    assert status == 200 and len(body["rates"]) == 3000
