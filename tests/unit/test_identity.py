"""Identity without storage: the domain rules, scrypt hashing and the JWT codec."""
import base64
import json
import time

import jwt
import pytest

from chalicelib.adapters import passwords, tokens
from chalicelib.adapters.passwords import ScryptHasher
from chalicelib.adapters.tokens import JwtCodec, parse_keys
from chalicelib.domain import identity as d
from chalicelib.services.identity_ports import AccessClaims

KEY_A = "a" * 64
KEY_B = "b" * 64


# --- domain: password policy, e-mail, lock-out arithmetic -------------------------------------------

@pytest.mark.parametrize("password", ["short", "x" * 11, " " * 20, "\t\n" * 8, "x" * 257, "valid-length\ud800x",
                                      None, 123])
def test_weak_passwords_are_refused_with_the_field(password):
    with pytest.raises(d.WeakPassword) as caught:
        d.check_password(password, "new_password")
    assert caught.value.field == "new_password" and caught.value.code == "weak_password"


@pytest.mark.parametrize("password", ["x" * 12, "correct horse battery", "é" * 12, "x" * 256, " padded  pass "])
def test_passwords_within_the_policy_pass(password):
    assert d.check_password(password) == password


def test_emails_are_normalised_to_lower_case_without_padding():
    assert d.normalise_email("  Alice.Smith@Example.COM \n") == "alice.smith@example.com"


@pytest.mark.parametrize("email", ["", "no-at-sign", "@example.com", "alice@", "a@b@c", "al ice@example.com",
                                   "alice@exa\tmple.com", "a\x00@b.c", "a" * 250 + "@b.co", 42, None])
def test_invalid_emails_are_refused(email):
    with pytest.raises(d.InvalidRequest) as caught:
        d.normalise_email(email)
    assert caught.value.field == "email"


def test_lock_durations_double_from_15_minutes_up_to_a_day():
    assert [d.lock_duration(n) for n in range(0, 9)] == [0, 900, 1800, 3600, 7200, 14400, 28800, 57600, 86400]
    assert d.lock_duration(50) == 86400


def test_every_fifth_consecutive_failure_starts_the_next_lock():
    now = 1_000_000
    assert [d.lockout_after(n, now) for n in (0, 1, 4, 6, 9)] == [None] * 5
    assert d.lockout_after(5, now) == d.Lockout(until=now + 900, number=1)
    assert d.lockout_after(10, now) == d.Lockout(until=now + 1800, number=2)
    assert d.lockout_after(100, now) == d.Lockout(until=now + 86400, number=20)


def test_retry_after_rounds_up_and_ip_windows_are_fixed():
    assert d.retry_after(None, 100) == 0 and d.retry_after(99, 100) == 0
    assert d.retry_after(100.2, 100) == 1 and d.retry_after(1000, 100) == 900
    assert d.ip_window(1799) == 900 and d.ip_window(1800) == 1800
    assert d.TooManyAttempts(0).retry_after == 1      # never "retry after 0 seconds"


# --- scrypt -----------------------------------------------------------------------------------------

def test_the_production_cost_is_owasps_and_the_env_only_lowers_it_for_tests(monkeypatch):
    assert passwords.DEFAULT_N == 2 ** 17 and passwords.DEFAULT_R == 8 and passwords.DEFAULT_P == 1
    monkeypatch.delenv("CASCADE_SCRYPT_N", raising=False)
    assert ScryptHasher().n == 131072
    monkeypatch.setenv("CASCADE_SCRYPT_N", "1000")          # not a power of two
    with pytest.raises(RuntimeError):
        ScryptHasher()


def test_a_hash_at_the_production_cost_runs_within_its_maxmem():
    hasher = ScryptHasher(n=2 ** 17)
    encoded = hasher.hash("correct horse battery")
    assert encoded.startswith("scrypt$131072$8$1$")
    assert hasher.verify("correct horse battery", encoded) and not hasher.needs_rehash(encoded)


def test_hashes_describe_themselves_and_verify():
    hasher = ScryptHasher(n=1024)
    encoded = hasher.hash("correct horse battery")
    scheme, n, r, p, salt, key = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "1024", "8", "1")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    assert len(base64.b64decode(pad(salt))) == 16 and len(base64.b64decode(pad(key))) == 32
    assert hasher.verify("correct horse battery", encoded)
    assert not hasher.verify("correct horse batterY", encoded)
    assert hasher.hash("correct horse battery") != encoded        # a fresh salt every time


def test_a_hash_below_the_current_cost_verifies_and_asks_for_a_rehash():
    old = ScryptHasher(n=512).hash("correct horse battery")
    current = ScryptHasher(n=1024)
    assert current.verify("correct horse battery", old)
    assert current.needs_rehash(old)
    assert not current.needs_rehash(current.hash("correct horse battery"))


@pytest.mark.parametrize("encoded", ["", "plain", "bcrypt$1024$8$1$c2FsdA$a2V5", "scrypt$1000$8$1$AAAA$AAAA",
                                     "scrypt$1024$8$1$!!!$AAAA", "scrypt$4194304$8$1$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43,
                                     "scrypt$1024$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAA", None])
def test_malformed_or_hostile_hashes_never_verify(encoded):
    hasher = ScryptHasher(n=1024)
    assert hasher.verify("anything at all", encoded) is False
    assert hasher.needs_rehash(encoded)


# --- JWT --------------------------------------------------------------------------------------------

def claims(now=None, **over) -> AccessClaims:
    now = int(time.time()) if now is None else now
    values = dict(sub="r1", role="reseller", path="admin/r1", epoch=3, iat=now, exp=now + 900, jti="j1")
    values.update(over)
    return AccessClaims(**values)


def test_an_access_token_round_trips_with_the_standard_claims():
    codec = JwtCodec([("a", KEY_A)])
    now = int(time.time())
    token = codec.issue(claims(now=now))
    assert codec.verify(token) == claims(now=now)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256" and header["kid"] == "a"
    payload = jwt.decode(token, KEY_A, algorithms=["HS256"], audience="cascade-portal")
    assert payload["iss"] == "cascade" and payload["typ"] == "access" and payload["ep"] == 3


def _segments(token):
    return token.split(".")


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_a_tampered_token_is_refused():
    codec = JwtCodec([("a", KEY_A)])
    header, payload, signature = _segments(codec.issue(claims()))
    forged = jwt.decode(codec.issue(claims()), options={"verify_signature": False})
    forged["role"], forged["path"] = "admin", "admin"
    with pytest.raises(d.InvalidToken):
        codec.verify(".".join([header, _b64(forged), signature]))
    with pytest.raises(d.InvalidToken):
        codec.verify(".".join([header, payload, signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")]))


def test_alg_none_and_other_algorithms_are_refused():
    codec = JwtCodec([("a", KEY_A)])
    payload = jwt.decode(codec.issue(claims()), options={"verify_signature": False})
    unsigned = _b64({"alg": "none", "typ": "JWT", "kid": "a"}) + "." + _b64(payload) + "."
    with pytest.raises(d.InvalidToken):
        codec.verify(unsigned)
    hs512 = jwt.encode(payload, KEY_A, algorithm="HS512", headers={"kid": "a"})
    with pytest.raises(d.InvalidToken):
        codec.verify(hs512)


def test_expired_tokens_are_refused():
    codec = JwtCodec([("a", KEY_A)])
    old = int(time.time()) - 3600
    with pytest.raises(d.InvalidToken, match="expired"):
        codec.verify(codec.issue(claims(now=old)))


@pytest.mark.parametrize("change", [{"aud": "someone-else"}, {"iss": "evil"}, {"typ": "refresh"}, {"ep": "3"},
                                    {"sub": None}, {"jti": None}, {"exp": None}, {"iat": None}])
def test_wrong_audience_issuer_type_or_missing_claims_are_refused(change):
    codec = JwtCodec([("a", KEY_A)])
    payload = jwt.decode(codec.issue(claims()), options={"verify_signature": False})
    for key, value in change.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    with pytest.raises(d.InvalidToken):
        codec.verify(jwt.encode(payload, KEY_A, algorithm="HS256", headers={"kid": "a"}))


def test_key_rotation_by_kid():
    old = JwtCodec([("a", KEY_A)])
    rotated = JwtCodec(parse_keys(f"b:{KEY_B},a:{KEY_A}"))
    retired = JwtCodec([("b", KEY_B)])
    token_before = old.issue(claims())
    token_after = rotated.issue(claims())
    assert jwt.get_unverified_header(token_after)["kid"] == "b"
    assert rotated.verify(token_before).sub == "r1"          # still valid during the overlap
    assert retired.verify(token_after).sub == "r1"
    with pytest.raises(d.InvalidToken):
        retired.verify(token_before)                        # its key is gone
    with pytest.raises(d.InvalidToken):
        old.verify(token_after)
    # a token naming a kid but signed with another key is refused
    payload = jwt.decode(token_after, options={"verify_signature": False})
    with pytest.raises(d.InvalidToken):
        rotated.verify(jwt.encode(payload, KEY_B, algorithm="HS256", headers={"kid": "a"}))
    with pytest.raises(d.InvalidToken):                     # no kid at all
        rotated.verify(jwt.encode(payload, KEY_B, algorithm="HS256"))


def test_key_parsing():
    assert parse_keys(KEY_A) == [("k1", KEY_A)]
    assert parse_keys(f" new:{KEY_B} , old:{KEY_A}") == [("new", KEY_B), ("old", KEY_A)]
    for bad in ("", "short", f"a:{KEY_A},a:{KEY_B}", f":{KEY_A}", "a:short"):
        with pytest.raises(RuntimeError):
            parse_keys(bad)


def test_without_a_key_or_its_secret_the_error_names_both(monkeypatch):
    monkeypatch.delenv("CASCADE_TOKEN_KEY")
    monkeypatch.delenv("CASCADE_TOKEN_KEY_SECRET", raising=False)
    monkeypatch.setattr(tokens, "_cache", None)
    with pytest.raises(RuntimeError, match="CASCADE_TOKEN_KEY.*CASCADE_TOKEN_KEY_SECRET"):
        tokens.signing_keys()


def test_keys_come_from_secrets_manager_once_per_process(aws, monkeypatch):
    import boto3
    boto3.client("secretsmanager").create_secret(Name="cascade/test/token-keys", SecretString=f"s2:{KEY_B},s1:{KEY_A}")
    monkeypatch.delenv("CASCADE_TOKEN_KEY")
    monkeypatch.setenv("CASCADE_TOKEN_KEY_SECRET", "cascade/test/token-keys")
    monkeypatch.setattr(tokens, "_cache", None)
    assert tokens.signing_keys() == [("s2", KEY_B), ("s1", KEY_A)]
    boto3.client("secretsmanager").put_secret_value(SecretId="cascade/test/token-keys", SecretString=f"s3:{KEY_A}")
    assert tokens.signing_keys()[0][0] == "s2"              # cached: read once per cold start
    assert jwt.get_unverified_header(JwtCodec().issue(claims()))["kid"] == "s2"
