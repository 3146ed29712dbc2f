"""Assembles the identity service from the real adapters (the composition root calls this once per
process; tests pass fakes for any part, e.g. a clock).

Environment: CASCADE_TOKEN_KEY or CASCADE_TOKEN_KEY_SECRET (adapters.tokens), CASCADE_MAIL_FROM and
CASCADE_MAIL_VERIFY_SENDER (adapters.mail), CASCADE_PORTAL_URL (links in mails), and, in tests only,
CASCADE_SCRYPT_N (adapters.passwords).
"""
import os
import time
from typing import Callable, Optional

from chalicelib.services.identity import IdentityService

DEFAULT_PORTAL_URL = "http://127.0.0.1:8000"


def build_identity_service(clock: Optional[Callable[[], float]] = None, store=None, hasher=None, tokens=None,
                           mailer=None) -> IdentityService:
    from .dynamo.identity_store import DynamoIdentityStore
    from .mail import SesMailer
    from .passwords import ScryptHasher
    from .tokens import JwtCodec
    return IdentityService(store=store or DynamoIdentityStore(), hasher=hasher or ScryptHasher(),
                           tokens=tokens or JwtCodec(), mailer=mailer or SesMailer.from_env(),
                           clock=clock or time.time,
                           portal_url=os.environ.get("CASCADE_PORTAL_URL") or DEFAULT_PORTAL_URL)
