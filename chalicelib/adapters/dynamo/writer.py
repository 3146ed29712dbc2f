"""Writes tariffs, identities, accounts and switch keys for the seed loader and scripts/switch_keys.py."""
import time
from collections import defaultdict
from typing import Dict, List, Optional

from chalicelib.services.records import Route
from chalicelib.services.seed import Seed
from chalicelib.adapters.secrets import load_key_pepper
from chalicelib.services.switch_keys import key_hash, new_key

from chalicelib.domain import ledger

from .did_store import did_item, event_item, holding_item
from .keys import SWITCH_KEYS_LIST, iso_ms, switch_key_key
from .models import AccountItem, CoreItem, JournalItem, SwitchKeyItem
from .tariff_store import GroupTooLarge as RateGroupTooLarge, tariff_items  # noqa: F401 (scripts import them here)
from .portal_store import identity_item
from .writes import account_item, journal_item


def now_iso() -> str:
    return iso_ms(time.time())


def write_seed(seed: Seed) -> None:
    stamp = now_iso()
    if seed.switch_keys:
        load_key_pepper()
    used_by: Dict[str, int] = defaultdict(int)
    for account in seed.accounts:
        if account.tariff_id:
            used_by[account.tariff_id] += 1
    with AccountItem.batch_write() as batch:
        for tariff in seed.tariffs:
            for item in tariff_items(tariff, seed.rates.get(tariff.id, []), used_by[tariff.id],
                                     stamp if used_by[tariff.id] else None, stamp):
                batch.save(item)
        for account in seed.accounts:
            batch.save(account_item(account))
        for name, client_id in seed.identities.items():
            route = Route.of_chain(seed.chain_of(client_id))
            batch.save(identity_item(name, client_id, route))
        for key in seed.switch_keys:
            batch.save(switch_key_item(key_hash(key["key"]), key["id"], key.get("name", ""), stamp))
        for did, events in seed.dids:
            batch.save(did_item(did))
            for holding in did.holders:
                batch.save(holding_item(did.number, holding.account_id))
            for event in events:
                batch.save(event_item(did.number, event))
    # Opening balances as journal entries (id from the account: loading the seed again rewrites the same
    # entry, as it rewrites the account's balance).
    with JournalItem.batch_write() as batch:
        for account in seed.accounts:
            movement = ledger.opening(account, "seed")
            if movement is not None:
                batch.save(journal_item(movement.entry, stamp))


class UnknownSwitchKey(LookupError):
    pass


def create_switch_key(key_id: str, name: str = "") -> str:
    """Issue a key for one switch; the plain key is returned once and never stored."""
    load_key_pepper()
    plain = new_key()
    switch_key_item(key_hash(plain), key_id, name, now_iso()).save(condition=SwitchKeyItem.pk.does_not_exist())
    return plain


def switch_key_item(digest: str, key_id: str, name: str, stamp: str) -> SwitchKeyItem:
    # Listed under SWITCHKEYS in the listing index, by switch id then issue time.
    return SwitchKeyItem(*switch_key_key(digest), key_id=key_id, name=name, status="active", created_at=stamp,
                         list_pk=SWITCH_KEYS_LIST, list_sk=f"{key_id}#{stamp}")


def switch_keys() -> List[SwitchKeyItem]:
    """Every switch key, by a Query on the listing index (keys are addressed by their hash)."""
    from .portal_store import full_items
    return [i for i in full_items(list(CoreItem.listing.query(SWITCH_KEYS_LIST))) if isinstance(i, SwitchKeyItem)]


def key_ref(item: SwitchKeyItem) -> str:
    """A short public name for one key of a switch: the start of its HMAC (reveals nothing usable)."""
    return item.pk[len("KEY#"):][:10]


def rotate_switch_key(key_id: str) -> str:
    """A further key for the same switch id; the old ones stay valid until revoked by ref. Calls are
    walled by switch id, not by key, so calls authorized with an old key complete with the new one."""
    current = [i for i in switch_keys() if i.key_id == key_id and i.status == "active"]
    if not current:
        raise UnknownSwitchKey(key_id)
    return create_switch_key(key_id, current[0].name)


def revoke_switch_key(key_id: str, ref: Optional[str] = None) -> int:
    """Revoke every active key of a switch, or only the one whose ref is given."""
    revoked = 0
    for item in switch_keys():
        if item.key_id == key_id and item.status == "active" and (ref is None or key_ref(item) == ref):
            item.update(actions=[SwitchKeyItem.status.set("revoked")])
            revoked += 1
    if not revoked:
        raise UnknownSwitchKey(key_id)
    return revoked
