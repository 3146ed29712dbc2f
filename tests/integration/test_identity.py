"""The portal's sign-in API end to end: chalice.test.Client -> identity service -> DynamoDB and SES
in moto (one global lock, as in every test here). The identity service gets a controllable clock for
lock-out expiry; access tokens are still checked by PyJWT against real time."""
import json
import re
import threading
from decimal import Decimal

import pytest

from chalicelib import bootstrap

PASSWORD = "correct horse battery staple"
EMAIL = "reseller.one@example.com"
JSON = {"Content-Type": "application/json"}


class Clock:
    def __init__(self):
        import time
        self.now = time.time()

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(aws, clock, monkeypatch):
    """The identity service the routes use, over moto, with accounts r1 (reseller), c1 (client) and
    admin, and a login for r1."""
    monkeypatch.setenv("CASCADE_MAIL_VERIFY_SENDER", "1")        # moto wants a verified sender
    from chalicelib.adapters.dynamo.models import AccountItem
    from chalicelib.adapters.identity_wiring import build_identity_service
    for account_id, role, parent, path in (("admin", "admin", None, "admin"), ("r1", "reseller", "admin", "admin/r1"),
                                           ("c1", "client", "r1", "admin/r1/c1")):
        AccountItem(pk=f"ACC#{account_id}", sk="#", id=account_id, role=role, parent_id=parent, path=path,
                    email=f"{account_id}@example.com", status="active").save()
    svc = build_identity_service(clock=clock)
    bootstrap.use(bootstrap.Container(identity=svc))      # what the routes get (conftest resets it)
    svc.create_login("r1", " Reseller.One@Example.com ", PASSWORD)
    return svc


@pytest.fixture
def client(service):
    from chalice.test import Client

    from app import app
    with Client(app) as c:
        yield c


def post(client, path, body, headers=None):
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.http.post(path, headers={**JSON, **(headers or {})}, body=raw)


def body_of(response):
    return json.loads(response.body, parse_float=Decimal) if response.body else None


def sign_in(client, email=EMAIL, password=PASSWORD):
    return post(client, "/auth/sign-in", {"email": email, "password": password})


def me(client, access_token=None, key=None):
    headers = {"Authorization": f"Bearer {access_token}"} if access_token else {"X-Portal-Key": key}
    return client.http.get("/auth/me", headers=headers)


def login_item(email=EMAIL):
    from chalicelib.adapters.dynamo.identity_models import LoginItem
    return LoginItem.get(f"LOGIN#{email}", "#")


def set_status(account_id, status):
    from chalicelib.adapters.dynamo.models import AccountItem
    item = AccountItem.get(f"ACC#{account_id}", "#")
    item.status = status
    item.save()


def mails(to=None):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends
    sent = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    return [m for m in sent if to is None or to in m.destinations["ToAddresses"]]


def link_token(message) -> str:
    match = re.search(r"http://127\.0\.0\.1:8000/reset-password\?token=([A-Za-z0-9_\-]+)", message.body)
    assert match, message.body
    return match.group(1)


# --- sign-in ----------------------------------------------------------------------------------------

def test_sign_in_returns_tokens_and_me_reads_the_current_account(client):
    response = sign_in(client, email="  RESELLER.one@EXAMPLE.com", password=PASSWORD)
    assert response.status_code == 200, response.body
    body = body_of(response)
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert body["account"] == {"id": "r1", "role": "reseller"}
    assert response.headers["Cache-Control"] == "no-store"
    who = me(client, body["access_token"])
    assert who.status_code == 200
    assert body_of(who) == {"account_id": "r1", "role": "reseller", "path": "r1", "via": "token"}
    assert me(client, body["access_token"] + "x").status_code == 401
    unauthenticated = client.http.get("/auth/me")
    assert unauthenticated.status_code == 401 and body_of(unauthenticated)["error"] == "invalid_token"
    assert unauthenticated.headers["WWW-Authenticate"].startswith("Bearer")


def test_me_answers_the_accounts_current_role_not_the_tokens_and_no_id_above_it(client):
    from chalicelib.adapters.dynamo.models import AccountItem
    token = body_of(sign_in(client))["access_token"]
    item = AccountItem.get("ACC#r1", "#")
    item.path, item.role = "admin/r0/r1", "client"     # moved and changed after the token was issued
    item.save()
    answer = body_of(me(client, token))
    assert (answer["role"], answer["path"]) == ("client", "r1")


def test_wrong_password_and_unknown_email_get_the_same_401(client):
    wrong = sign_in(client, password="not the password at all")
    unknown = sign_in(client, email="nobody@example.com", password="not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert body_of(wrong) == body_of(unknown) == {"error": "invalid_credentials", "message": "wrong e-mail or password"}


def test_unknown_email_costs_one_full_hash_at_current_parameters_like_a_wrong_password(service):
    """The dummy hash an unknown e-mail is checked against has the current cost, and each failed
    sign-in runs exactly one hash, whichever way it fails."""
    real = service.hasher
    costs = []

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def verify(self, password, encoded):
            costs.append(encoded.split("$")[1:4])
            return real.verify(password, encoded)
    service.hasher = Counting()
    from chalicelib.domain.identity import InvalidCredentials
    for email in (EMAIL, "nobody@example.com"):
        with pytest.raises(InvalidCredentials):
            service.sign_in(email, "wrong password here", "198.51.100.1")
    assert costs == [["1024", "8", "1"], ["1024", "8", "1"]]


def test_sign_ins_emit_emf_metrics_in_the_stage_namespace(client, capsys, monkeypatch):
    monkeypatch.setenv("CASCADE_METRICS_NAMESPACE", "Cascade/test")
    sign_in(client)
    sign_in(client, password="wrong password here")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    emitted = [(m["_aws"]["CloudWatchMetrics"][0]["Namespace"], m["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"])
               for m in lines]
    assert emitted == [("Cascade/test", "SignIns"), ("Cascade/test", "SignInFailures")]


def test_a_malformed_email_is_a_400_naming_the_field(client):
    response = sign_in(client, email="not-an-email")
    assert response.status_code == 400 and body_of(response)["field"] == "email"


# --- lock-out ---------------------------------------------------------------------------------------

def test_five_failures_lock_the_login_even_for_the_right_password_until_it_expires(client, clock):
    for _ in range(5):
        assert sign_in(client, password="wrong password here").status_code == 401
    locked = sign_in(client)                                    # the right password
    assert locked.status_code == 429
    assert body_of(locked)["error"] == "locked" and 899 <= body_of(locked)["retry_after"] <= 900
    assert locked.headers["Retry-After"] == str(body_of(locked)["retry_after"])
    item = login_item()
    assert (item.failures, item.lock_count) == (5, 1)
    clock.advance(901)
    assert sign_in(client).status_code == 200
    item = login_item()
    assert (item.failures, item.lock_count, item.locked_until) == (0, 0, None)


def test_wrong_passwords_while_locked_double_the_next_lock(client, clock):
    for _ in range(5):
        sign_in(client, password="wrong password here")
    for _ in range(5):
        response = sign_in(client, password="wrong password here")
        assert response.status_code == 429
    assert 1799 <= int(response.headers["Retry-After"]) <= 1800
    assert (login_item().failures, login_item().lock_count) == (10, 2)


def test_unknown_emails_lock_like_real_ones(client):
    for _ in range(5):
        assert sign_in(client, email="ghost@example.com", password="wrong password here").status_code == 401
    response = sign_in(client, email="ghost@example.com", password="wrong password here")
    assert response.status_code == 429 and body_of(response)["error"] == "locked"
    ghost = login_item("ghost@example.com")
    assert ghost.account_id is None and ghost.ttl is not None         # expires on its own
    # and the ghost does not block creating a real login for that address later
    bootstrap.container().identity.create_login("c1", "ghost@example.com", "a brand new password")
    assert sign_in(client, email="ghost@example.com", password="a brand new password").status_code == 200


def test_fifty_failures_from_one_ip_refuse_that_ip_for_the_rest_of_the_window(client, clock, monkeypatch):
    for i in range(50):
        assert sign_in(client, email=f"spray{i}@example.com", password="wrong password here").status_code == 401
    refused = sign_in(client)                                   # even the right password
    assert refused.status_code == 429 and body_of(refused)["error"] == "too_many_attempts"
    assert 1 <= int(refused.headers["Retry-After"]) <= 900
    assert post(client, "/auth/password-reset", {"email": EMAIL}).status_code == 429
    from chalice.local import LambdaEventConverter
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", "10.0.0.2")
    assert sign_in(client).status_code == 200                   # another IP is not affected
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", "127.0.0.1")
    clock.advance(900)                                          # next window
    assert sign_in(client).status_code == 200


def test_concurrent_failures_are_all_counted(service):
    """10 threads with wrong passwords at once: the counters are UpdateItem ADDs, none is lost."""
    barrier = threading.Barrier(10)
    errors = []

    def attempt():
        barrier.wait()
        try:
            service.sign_in(EMAIL, "wrong password here", "192.0.2.7")
        except Exception as exc:   # noqa: BLE001 (collected and checked below)
            errors.append(type(exc).__name__)
    threads = [threading.Thread(target=attempt) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 10 and set(errors) <= {"InvalidCredentials", "Locked"}
    item = login_item()
    assert item.failures == 10 and item.lock_count == 2
    from chalicelib.adapters.dynamo.identity_models import ip_counter_key
    from chalicelib.adapters.dynamo.models import CounterItem
    from chalicelib.domain.identity import ip_window
    assert CounterItem.get(*ip_counter_key("192.0.2.7", ip_window(service.clock()))).n == 10


# --- refresh and sign-out ---------------------------------------------------------------------------

def test_refresh_rotates_the_refresh_token(client):
    first = body_of(sign_in(client))
    second = post(client, "/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    second = body_of(second)
    assert second["refresh_token"] != first["refresh_token"] and second["access_token"] != first["access_token"]
    assert me(client, second["access_token"]).status_code == 200
    third = post(client, "/auth/refresh", {"refresh_token": second["refresh_token"]})
    assert third.status_code == 200


def test_a_replayed_refresh_token_revokes_its_whole_family_only(client):
    stolen = body_of(sign_in(client))["refresh_token"]
    other_session = body_of(sign_in(client))["refresh_token"]
    rotated = body_of(post(client, "/auth/refresh", {"refresh_token": stolen}))["refresh_token"]
    replay = post(client, "/auth/refresh", {"refresh_token": stolen})
    assert replay.status_code == 401 and body_of(replay)["error"] == "invalid_token"
    assert post(client, "/auth/refresh", {"refresh_token": rotated}).status_code == 401    # family revoked
    assert post(client, "/auth/refresh", {"refresh_token": other_session}).status_code == 200


def test_sign_out_revokes_the_session(client):
    session = body_of(sign_in(client))
    response = post(client, "/auth/sign-out", {"refresh_token": session["refresh_token"]})
    assert response.status_code == 204
    assert post(client, "/auth/refresh", {"refresh_token": session["refresh_token"]}).status_code == 401
    assert post(client, "/auth/sign-out", {"refresh_token": "never-issued"}).status_code == 204


def test_expired_refresh_tokens_are_refused(client, clock):
    session = body_of(sign_in(client))
    clock.advance(30 * 86400 + 1)
    assert post(client, "/auth/refresh", {"refresh_token": session["refresh_token"]}).status_code == 401


# --- account status ---------------------------------------------------------------------------------

def test_a_suspended_account_signs_in_and_reads_but_suspension_ends_its_sessions(client, service):
    before = body_of(sign_in(client))
    set_status("r1", "suspended")
    service.bump_epoch("r1")                                   # what the portal does when suspending
    assert me(client, before["access_token"]).status_code == 401
    assert post(client, "/auth/refresh", {"refresh_token": before["refresh_token"]}).status_code == 401
    after = sign_in(client)
    assert after.status_code == 200
    assert me(client, body_of(after)["access_token"]).status_code == 200


def test_a_closed_account_cannot_sign_in_refresh_or_use_its_tokens(client):
    session = body_of(sign_in(client))
    set_status("r1", "closed")
    response = sign_in(client)
    assert response.status_code == 401 and body_of(response)["error"] == "invalid_credentials"
    assert me(client, session["access_token"]).status_code == 401
    assert post(client, "/auth/refresh", {"refresh_token": session["refresh_token"]}).status_code == 401


def test_close_login_frees_the_email_and_ends_every_session(client, service):
    session = body_of(sign_in(client))
    key = service.create_api_key("r1", "billing sync")
    service.close_login("r1", EMAIL)
    assert me(client, session["access_token"]).status_code == 401
    assert me(client, key=key).status_code == 401
    assert sign_in(client).status_code == 401
    service.create_login("admin", EMAIL, "the admin's own password")      # the address is free again
    assert body_of(sign_in(client, password="the admin's own password"))["account"]["id"] == "admin"


def test_email_is_unique_across_the_deployment_and_one_login_per_account(service):
    from chalicelib.domain.identity import EmailTaken, LoginExists
    with pytest.raises(EmailTaken):
        service.create_login("c1", "RESELLER.ONE@example.com", "another long password")
    with pytest.raises(LoginExists):
        service.create_login("r1", "second@example.com", "another long password")


# --- password reset and change ----------------------------------------------------------------------

def test_password_reset_end_to_end(client, clock):
    old = body_of(sign_in(client))
    for _ in range(5):
        sign_in(client, password="wrong password here")         # locked now
    asked = post(client, "/auth/password-reset", {"email": "Reseller.One@example.com"})
    unknown = post(client, "/auth/password-reset", {"email": "nobody@example.com"})
    assert asked.status_code == unknown.status_code == 202 and body_of(asked) == body_of(unknown)
    sent = mails()
    assert len(sent) == 1 and sent[0].destinations["ToAddresses"] == [EMAIL]
    assert sent[0].source == "no-reply@cascade.local" and "Reset your Cascade password" in sent[0].subject
    token = link_token(sent[0])
    clock.advance(30)
    post(client, "/auth/password-reset", {"email": EMAIL})
    assert len(mails()) == 1                                    # at most one mail a minute

    weak = post(client, "/auth/password-reset/confirm", {"token": token, "password": "short"})
    assert weak.status_code == 400
    assert (body_of(weak)["error"], body_of(weak)["field"]) == ("weak_password", "password")
    done = post(client, "/auth/password-reset/confirm", {"token": token, "password": "a new long password"})
    assert done.status_code == 204
    again = post(client, "/auth/password-reset/confirm", {"token": token, "password": "yet another password"})
    assert again.status_code == 401 and body_of(again)["error"] == "invalid_token"

    assert post(client, "/auth/refresh", {"refresh_token": old["refresh_token"]}).status_code == 401
    assert me(client, old["access_token"]).status_code == 401
    assert sign_in(client).status_code == 401                   # the lock is cleared, the old password gone
    assert sign_in(client, password="a new long password").status_code == 200


def test_a_failing_mail_service_still_answers_202(client, service, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("SES is down")
    monkeypatch.setattr(service.mailer, "send", broken)
    response = post(client, "/auth/password-reset", {"email": EMAIL})
    assert response.status_code == 202 and mails() == []


def test_an_expired_reset_token_is_refused(client, clock):
    post(client, "/auth/password-reset", {"email": EMAIL})
    token = link_token(mails(EMAIL)[-1])
    clock.advance(3601)
    response = post(client, "/auth/password-reset/confirm", {"token": token, "password": "a new long password"})
    assert response.status_code == 401


def test_a_login_created_without_a_password_gets_a_set_password_link(client, service):
    service.create_login("c1", "client.one@example.com")
    assert sign_in(client, email="client.one@example.com", password="anything at all").status_code == 401
    (welcome,) = mails("client.one@example.com")
    assert "Set your Cascade password" in welcome.subject
    response = post(client, "/auth/password-reset/confirm",
                    {"token": link_token(welcome), "password": "chosen by the client"})
    assert response.status_code == 204
    signed_in = sign_in(client, email="client.one@example.com", password="chosen by the client")
    assert body_of(signed_in)["account"] == {"id": "c1", "role": "client"}


def test_change_password_ends_other_sessions_and_returns_a_new_one(client):
    first = body_of(sign_in(client))
    auth = {"Authorization": f"Bearer {first['access_token']}"}
    wrong = post(client, "/auth/password",
                 {"old_password": "not my password", "new_password": "a new long password"}, auth)
    assert wrong.status_code == 401 and body_of(wrong)["error"] == "invalid_credentials"
    weak = post(client, "/auth/password", {"old_password": PASSWORD, "new_password": "short"}, auth)
    assert weak.status_code == 400 and body_of(weak)["field"] == "new_password"
    changed = post(client, "/auth/password", {"old_password": PASSWORD, "new_password": "a new long password"}, auth)
    assert changed.status_code == 200
    assert me(client, first["access_token"]).status_code == 401
    assert post(client, "/auth/refresh", {"refresh_token": first["refresh_token"]}).status_code == 401
    assert me(client, body_of(changed)["access_token"]).status_code == 200
    assert sign_in(client, password="a new long password").status_code == 200
    assert post(client, "/auth/password", {"old_password": PASSWORD, "new_password": "x" * 20}).status_code == 401


def test_sign_in_rehashes_a_hash_below_the_current_cost(client):
    from chalicelib.adapters.passwords import ScryptHasher
    item = login_item()
    item.password_hash = ScryptHasher(n=256).hash(PASSWORD)
    item.save()
    assert sign_in(client).status_code == 200
    assert login_item().password_hash.startswith("scrypt$1024$")


# --- API keys ---------------------------------------------------------------------------------------

def test_api_keys_authenticate_resellers_until_revoked(client, service):
    from chalicelib.adapters.dynamo.identity_models import PortalKeyItem
    from chalicelib.domain.identity import NotAllowed
    key = service.create_api_key("r1", "billing sync")
    assert key.startswith("cpk_")
    assert body_of(me(client, key=key)) == {"account_id": "r1", "role": "reseller", "path": "r1",
                                            "via": "api_key"}
    assert all(key not in str(i.serialize()) for i in PortalKeyItem.scan())     # stored hashed only
    (listed,) = service.list_api_keys("r1")
    assert listed.name == "billing sync" and listed.status == "active" and key.startswith(f"cpk_{listed.ref}_")
    assert me(client, key=key[:-1] + ("A" if key[-1] != "A" else "B")).status_code == 401
    assert service.revoke_api_key("r1", listed.ref) is True
    assert me(client, key=key).status_code == 401
    assert service.revoke_api_key("c1", listed.ref) is False
    with pytest.raises(NotAllowed):
        service.create_api_key("c1", "clients have none")
    admin_key = service.create_api_key("admin", "ops")
    assert body_of(me(client, key=admin_key))["role"] == "admin"
    api_key_auth = {"X-Portal-Key": admin_key}
    refused = post(client, "/auth/password", {"old_password": PASSWORD, "new_password": "x" * 20}, api_key_auth)
    assert refused.status_code == 403 and body_of(refused)["error"] == "forbidden"


# --- hostile input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, status, field", [
    ({"email": EMAIL, "password": PASSWORD, "remember": True}, 400, "remember"),
    ({"email": EMAIL}, 400, "password"),
    ({"email": EMAIL, "password": 12345678901234}, 400, "password"),
    ('{"email": "a@b.c", "email": "x@y.z", "password": "p"}', 400, "email"),
    ("[1, 2]", 400, "body"),
    ("not json", 400, "body"),
    ('{"email": NaN}', 400, "body"),
    ("[" * 10000, 400, "body"),
    ('{"email": "' + "a" * 17000 + '", "password": "p"}', 413, "body"),
])
def test_bad_bodies_get_json_errors_naming_the_field(client, raw, status, field):
    response = post(client, "/auth/sign-in", raw)
    assert response.status_code == status
    body = body_of(response)
    assert body["error"] == "invalid_request" and body["field"] == field
    assert "Traceback" not in response.body.decode() and "test-core" not in response.body.decode()


def test_a_lone_surrogate_password_is_just_a_wrong_password(client):
    response = post(client, "/auth/sign-in", '{"email": "%s", "password": "\\ud800 long enough text"}' % EMAIL)
    assert response.status_code == 401 and body_of(response)["error"] == "invalid_credentials"
