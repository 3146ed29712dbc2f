"""Identity items in the ``core`` table (subclasses of CoreItem, told apart by ``kind``).

    pk                  sk         kind             what
    LOGIN#<email>       #          login            account_id, password_hash, failures, locked_until,
                                                    lock_count (a "ghost" has no account_id: failure
                                                    counters of an unknown e-mail, with a TTL)
    AUTH#<account id>   #          auth             email, token_epoch: what every token check reads,
                                                    keyed by account id (tokens know no e-mail)
    REFRESH#<sha256>    #          refresh_token    account_id, family, epoch, expires, used (TTL)
    RFAM#<family>       #          refresh_family   account_id, revoked (TTL: its newest token's)
    RESET#<sha256>      #          reset_token      account_id, email, purpose, expires, used (TTL)
    PKEY#<sha256>       #          portal_key       account_id, key_ref, name, status; listed under
                                                    PORTALKEYS#<account id> in the listing index
    IPFAIL#<ip>         <window>   counter          n: failed attempts from an IP in a 15-minute window
"""
from pynamodb.attributes import BooleanAttribute, NumberAttribute, UnicodeAttribute

from .models import CoreItem

ROOT = "#"


class LoginItem(CoreItem, discriminator="login"):
    account_id = UnicodeAttribute(null=True)
    password_hash = UnicodeAttribute(null=True)
    failures = NumberAttribute(null=True)
    locked_until = NumberAttribute(null=True)
    lock_count = NumberAttribute(null=True)
    reset_sent_at = NumberAttribute(null=True)


class AuthItem(CoreItem, discriminator="auth"):
    account_id = UnicodeAttribute()
    email = UnicodeAttribute(null=True)
    token_epoch = NumberAttribute(default=0)


class RefreshTokenItem(CoreItem, discriminator="refresh_token"):
    account_id = UnicodeAttribute()
    family = UnicodeAttribute()
    epoch = NumberAttribute()
    expires = NumberAttribute()
    used = BooleanAttribute(default=False)


class RefreshFamilyItem(CoreItem, discriminator="refresh_family"):
    account_id = UnicodeAttribute()
    revoked = BooleanAttribute(default=False)


class ResetTokenItem(CoreItem, discriminator="reset_token"):
    account_id = UnicodeAttribute()
    email = UnicodeAttribute()
    purpose = UnicodeAttribute(default="reset")
    expires = NumberAttribute()
    used = BooleanAttribute(default=False)


class PortalKeyItem(CoreItem, discriminator="portal_key"):
    account_id = UnicodeAttribute()
    key_ref = UnicodeAttribute()
    name = UnicodeAttribute(default="")
    status = UnicodeAttribute(default="active")
    created = NumberAttribute()


def login_key(email: str):
    return f"LOGIN#{email}", ROOT


def auth_key(account_id: str):
    return f"AUTH#{account_id}", ROOT


def refresh_key(digest: str):
    return f"REFRESH#{digest}", ROOT


def family_key(family: str):
    return f"RFAM#{family}", ROOT


def reset_key(digest: str):
    return f"RESET#{digest}", ROOT


def portal_key_key(digest: str):
    return f"PKEY#{digest}", ROOT


def portal_keys_list(account_id: str) -> str:
    return f"PORTALKEYS#{account_id}"


def ip_counter_key(ip: str, window: int):
    return f"IPFAIL#{ip}", str(window)
