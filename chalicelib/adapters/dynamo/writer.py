"""Writes accounts, tariffs, identities and keys (the seed loader; later the portal)."""
import time
from collections import defaultdict
from typing import Dict, Iterable, List, Optional

from chalicelib.domain.accounts import POSTPAID, Account
from chalicelib.domain.tariffs import Rate, Tariff, group_of
from chalicelib.services.records import Route
from chalicelib.services.seed import Seed
from chalicelib.adapters.secrets import load_key_pepper
from chalicelib.services.switch_keys import key_hash, new_key

from .models import AccountItem, IdentityItem, LedgerEntryItem, RateGroupItem, SwitchKeyItem, TariffItem
from .store import account_key, identity_key, iso_ms, rate_group_key, switch_key_key, tariff_key


def now_iso() -> str:
    return iso_ms(time.time())


MAX_GROUP_BYTES = 350_000   # DynamoDB items stop at 400 KB; keep room for keys and attribute names


class RateGroupTooLarge(ValueError):
    pass


def account_item(a: Account) -> AccountItem:
    credit = a.credit_limit if a.billing_type == POSTPAID else 0
    settings = None
    if a.settings is not None:
        s = a.settings
        settings = {"max_depth": s.max_depth, "max_duration": s.max_duration, "hold_grace": s.hold_grace,
                    "billing_mode": s.billing_mode, "dial_plan": s.dial_plan.to_dict()}
    return AccountItem(
        *account_key(a.id), id=a.id, role=a.role, parent_id=a.parent_id, tariff_id=a.tariff_id, name=a.name,
        status=a.status, billing_type=a.billing_type, billing_mode=a.billing_mode, balance=a.balance,
        credit_limit=a.credit_limit, held=a.held, available=a.balance + credit - a.held,
        active_calls=a.active_calls, max_calls=a.max_calls, cps_limit=a.cps_limit, daily_limit=a.daily_limit,
        monthly_limit=a.monthly_limit, allow_loss=a.allow_loss, reseller_model=a.reseller_model,
        commission_percent=a.commission_percent, currency=a.currency, settings=settings,
    )


def tariff_items(tariff: Tariff, rates: Iterable[Rate]) -> List:
    groups: Dict[str, Dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for rate in rates:
        groups[group_of(rate.prefix)][rate.prefix].append(rate.to_dict())
    items = [TariffItem(*tariff_key(tariff.id), id=tariff.id, owner=tariff.owner, tariff_kind=tariff.kind,
                        name=tariff.name, markup_fixed=tariff.markup_fixed, markup_percent=tariff.markup_percent,
                        increments=list(tariff.increments) if tariff.increments else None)]
    for group, book in groups.items():
        item = RateGroupItem(*rate_group_key(tariff.id, group), tariff_id=tariff.id, rates=dict(book))
        if len(RateGroupItem.rates.serialize(item.rates)) > MAX_GROUP_BYTES:
            raise RateGroupTooLarge(f"tariff {tariff.id}: prefixes starting {group} exceed one DynamoDB item")
        items.append(item)
    return items


def write_seed(seed: Seed) -> None:
    stamp = now_iso()
    if seed.switch_keys:
        load_key_pepper()
    with AccountItem.batch_write() as batch:
        for tariff in seed.tariffs:
            for item in tariff_items(tariff, seed.rates.get(tariff.id, [])):
                batch.save(item)
        for account in seed.accounts:
            batch.save(account_item(account))
        for name, client_id in seed.identities.items():
            route = Route.of_chain(seed.chain_of(client_id))
            batch.save(IdentityItem(*identity_key(name), name=name, client_id=client_id, route=route.to_dict()))
        for key in seed.switch_keys:
            batch.save(SwitchKeyItem(*switch_key_key(key_hash(key["key"])), key_id=key["id"],
                                     name=key.get("name", ""), status="active", created_at=stamp))
    with LedgerEntryItem.batch_write() as batch:
        for account in seed.accounts:
            if account.balance:
                batch.save(LedgerEntryItem(account.id, f"{stamp}#seed#opening", amount=account.balance,
                                           entry_kind="opening", ref="seed", created_at=stamp,
                                           description="opening balance from seed"))


class UnknownSwitchKey(LookupError):
    pass


def create_switch_key(key_id: str, name: str = "") -> str:
    """Issue a key for one switch; the plain key is returned once and never stored."""
    load_key_pepper()
    plain = new_key()
    SwitchKeyItem(*switch_key_key(key_hash(plain)), key_id=key_id, name=name, status="active",
                  created_at=now_iso()).save(condition=SwitchKeyItem.pk.does_not_exist())
    return plain


def switch_keys() -> List[SwitchKeyItem]:
    # Keys are addressed by their hash; listing by id is an operator task, so a filtered scan is fine.
    return list(SwitchKeyItem.scan(SwitchKeyItem.pk.startswith("KEY#")))


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
