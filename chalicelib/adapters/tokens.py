"""Access tokens: JWTs made and checked by PyJWT, HS256 only.

The signing keys come from ``CASCADE_TOKEN_KEY`` (local, tests) or, on AWS, from the Secrets Manager
secret named by ``CASCADE_TOKEN_KEY_SECRET``, fetched once per cold start with botocore (already loaded
by PynamoDB). The value is ``kid1:key1,kid2:key2``: tokens are signed with the first key and checked
with the one their ``kid`` header names, so a key is rotated by putting a new one first, waiting an
access token's life (15 minutes), then dropping the old one. A value without ``:`` is one key, kid
"k1". Keys must have at least 32 bytes (RFC 7518 3.2: an HS256 key at least as long as the hash).

Verification pins the algorithm list to ["HS256"] (no "none", no key confusion), requires exp, iat,
sub and jti, and checks iss, aud and typ.
"""
import os
import threading
from typing import List, Optional, Tuple

import jwt

from chalicelib.domain.identity import InvalidToken
from chalicelib.services.identity_ports import AccessClaims

KEY_ENV, SECRET_ENV = "CASCADE_TOKEN_KEY", "CASCADE_TOKEN_KEY_SECRET"
ISSUER, AUDIENCE, ALGORITHM = "cascade", "cascade-portal", "HS256"
MIN_KEY_BYTES = 32
_cache: Optional[List[Tuple[str, str]]] = None
_lock = threading.Lock()


def parse_keys(value: str) -> List[Tuple[str, str]]:
    """``kid1:key1,kid2:key2`` (or one bare key) -> [(kid, key)], signing key first."""
    value = (value or "").strip()
    items = [part.strip() for part in value.split(",") if part.strip()]
    if len(items) == 1 and ":" not in items[0]:
        keys = [("k1", items[0])]
    else:
        keys = [tuple(s.strip() for s in item.split(":", 1)) for item in items]
    if not keys or any(len(k) != 2 or not k[0] or len(k[1].encode()) < MIN_KEY_BYTES for k in keys):
        raise RuntimeError(f"token signing keys must be 'kid:key,...' with keys of at least {MIN_KEY_BYTES} bytes")
    if len({kid for kid, _ in keys}) != len(keys):
        raise RuntimeError("token signing key ids must be unique")
    return keys


def signing_keys(refresh: bool = False) -> List[Tuple[str, str]]:
    """The keys, read once per process (cold start) from the environment or Secrets Manager."""
    global _cache
    with _lock:
        if _cache is None or refresh:
            if os.environ.get(KEY_ENV):
                _cache = parse_keys(os.environ[KEY_ENV])
            elif os.environ.get(SECRET_ENV):
                import botocore.session
                client = botocore.session.get_session().create_client("secretsmanager")
                _cache = parse_keys(client.get_secret_value(SecretId=os.environ[SECRET_ENV])["SecretString"])
            else:
                raise RuntimeError(f"set {KEY_ENV} (local) or {SECRET_ENV} (the Secrets Manager secret's name)")
        return _cache


class JwtCodec:
    def __init__(self, keys: Optional[List[Tuple[str, str]]] = None):
        self.keys = keys if keys is not None else signing_keys()

    def issue(self, claims: AccessClaims) -> str:
        kid, key = self.keys[0]
        payload = {"sub": claims.sub, "role": claims.role, "path": claims.path, "ep": claims.epoch,
                   "iat": claims.iat, "exp": claims.exp, "jti": claims.jti, "typ": "access",
                   "iss": ISSUER, "aud": AUDIENCE}
        return jwt.encode(payload, key, algorithm=ALGORITHM, headers={"kid": kid})

    def verify(self, token: str) -> AccessClaims:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = dict(self.keys).get(kid) if isinstance(kid, str) else None
            if key is None:
                raise InvalidToken("unknown signing key")
            data = jwt.decode(token, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                              options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("access token expired") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("invalid access token") from None
        if data.get("typ") != "access" or not isinstance(data.get("ep"), int) or \
                not all(isinstance(data.get(c), str) for c in ("sub", "role", "path", "jti")):
            raise InvalidToken("invalid access token")
        return AccessClaims(sub=data["sub"], role=data["role"], path=data["path"], epoch=data["ep"],
                            iat=int(data["iat"]), exp=int(data["exp"]), jti=data["jti"])
