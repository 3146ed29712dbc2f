"""Password hashing with the standard library's scrypt (no binary wheel in the Lambda package, unlike
argon2-cffi), at OWASP's current parameters: N=2**17, r=8, p=1, 16-byte salt, 32-byte key.

A hash describes itself, ``scrypt$N$r$p$salt_b64$hash_b64``, so the cost can be raised later: verify
uses the stored parameters and ``needs_rehash`` tells sign-in to store a new hash at the current ones.
N=2**17 with r=8 needs 128 MiB per hash: give the portal function at least 512 MB of memory (which also
buys CPU; one hash takes a few hundred milliseconds).

``CASCADE_SCRYPT_N`` exists ONLY so the test suite can run fast (tests/conftest.py sets 1024); never
set it in a deployed stage.
"""
import base64
import binascii
import hashlib
import hmac
import os
import secrets

DEFAULT_N, DEFAULT_R, DEFAULT_P = 2 ** 17, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
N_ENV = "CASCADE_SCRYPT_N"
# Bounds on what a stored hash may ask for, so a corrupted or hostile item cannot exhaust memory.
MAX_N, MAX_R, MAX_P = 2 ** 20, 32, 16


def maxmem(n: int, r: int, p: int) -> int:
    """OpenSSL refuses to run scrypt above ``maxmem`` (default 32 MiB): it needs 128*r*(N+p+2) bytes."""
    return 128 * r * (n + p + 2) + 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def configured_n() -> int:
    value = os.environ.get(N_ENV)
    n = int(value) if value else DEFAULT_N
    if n < 2 or n & (n - 1) or n > MAX_N:
        raise RuntimeError(f"{N_ENV} must be a power of two from 2 to {MAX_N}")
    return n


class ScryptHasher:
    def __init__(self, n: int = None, r: int = DEFAULT_R, p: int = DEFAULT_P):
        self.n, self.r, self.p = (n or configured_n()), r, p

    def _derive(self, password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
        return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem(n, r, p),
                              dklen=length)

    def hash(self, password: str) -> str:
        salt = secrets.token_bytes(SALT_BYTES)
        key = self._derive(password, salt, self.n, self.r, self.p, KEY_BYTES)
        return f"scrypt${self.n}${self.r}${self.p}${_b64(salt)}${_b64(key)}"

    def verify(self, password: str, encoded: str) -> bool:
        parsed = _parse(encoded)
        if parsed is None:
            return False
        n, r, p, salt, key = parsed
        return hmac.compare_digest(self._derive(password, salt, n, r, p, len(key)), key)

    def needs_rehash(self, encoded: str) -> bool:
        parsed = _parse(encoded)
        if parsed is None:
            return True
        n, r, p, salt, key = parsed
        return n < self.n or r < self.r or p < self.p or len(salt) < SALT_BYTES or len(key) < KEY_BYTES


def _parse(encoded):
    """(n, r, p, salt, key) or None for anything that is not a sane scrypt hash."""
    if not isinstance(encoded, str):
        return None
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(x.isdigit() for x in parts[1:4]):
        return None
    n, r, p = (int(x) for x in parts[1:4])
    if n < 2 or n & (n - 1) or n > MAX_N or not 1 <= r <= MAX_R or not 1 <= p <= MAX_P:
        return None
    try:
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except (binascii.Error, ValueError):
        return None
    if not salt or not 16 <= len(key) <= 64:
        return None
    return n, r, p, salt, key
