"""Switch API keys are random 256-bit tokens, stored only as HMAC-SHA256 under a server-side pepper.

A fast keyed hash is right here (not argon2/bcrypt): the keys carry full entropy, so there is nothing to
slow-hash against guessing, and authorize must stay in milliseconds. The pepper means a leaked table
alone cannot be used to check candidate keys.
"""
import hashlib
import hmac
import os
import secrets

PEPPER_ENV = "CASCADE_KEY_PEPPER"


def _pepper() -> bytes:
    pepper = os.environ.get(PEPPER_ENV)
    if not pepper:
        raise RuntimeError(f"{PEPPER_ENV} is not set")
    return pepper.encode()


def key_hash(api_key: str) -> str:
    return hmac.new(_pepper(), api_key.encode(), hashlib.sha256).hexdigest()


def new_key() -> str:
    return "csk_" + secrets.token_urlsafe(32)
