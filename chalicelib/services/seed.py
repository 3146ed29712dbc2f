"""The seed file: a JSON description of one account tree (format in docs/seed-format.md).

Parsing is pure and validates everything before anything is written, naming the offending field.
"""
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Dict, List, Optional

from chalicelib.domain import accounts as acc
from chalicelib.domain import dids
from chalicelib.domain.access import child_path
from chalicelib.domain.accounts import Account, TreeSettings, check_chain
from chalicelib.domain.money import ZERO, NotMoney, money
from chalicelib.domain.tariffs import InvalidRate, Rate, Tariff


class InvalidSeed(ValueError):
    def __init__(self, field_path: str, message: str):
        super().__init__(f"{field_path}: {message}")
        self.field = field_path


@dataclass
class Seed:
    settings: TreeSettings
    accounts: List[Account]                  # parents before children
    tariffs: List[Tariff]
    rates: Dict[str, List[Rate]]             # tariff id -> rates (versions allowed)
    identities: Dict[str, str]               # SIP username or client id -> client id
    switch_keys: List[dict]                  # {"id", "name", "key"}
    dids: List[tuple] = ()                   # (domain.dids.Did, [DidEvent]) as if created and assigned

    def chain_of(self, client_id: str) -> List[Account]:
        by_id = {a.id: a for a in self.accounts}
        chain = [by_id[client_id]]
        while chain[-1].parent_id:
            chain.append(by_id[chain[-1].parent_id])
        return chain


def _opt_money(data: dict, key: str, where: str) -> Optional[Decimal]:
    if data.get(key) is None:
        return None
    try:
        return money(data[key])
    except NotMoney as exc:
        raise InvalidSeed(f"{where}.{key}", str(exc)) from exc


def _choice(data: dict, key: str, allowed, default, where: str):
    value = data.get(key, default)
    if value is not None and value not in allowed:
        raise InvalidSeed(f"{where}.{key}", f"must be one of {', '.join(allowed)}")
    return value


def _settings(data: dict) -> TreeSettings:
    if not isinstance(data, dict):
        raise InvalidSeed("settings", "must be an object")
    for key in ("max_depth", "max_duration", "hold_grace"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidSeed(f"settings.{key}", "must be a whole number >= 1")
    _choice(data, "billing_mode", acc.BILLING_MODES, acc.EARLY, "settings")
    plan = data.get("dial_plan") or {}
    if not isinstance(plan, dict) or not str(plan.get("country_code", "1")).isdigit():
        raise InvalidSeed("settings.dial_plan.country_code", "must be digits")
    length = plan.get("national_length", 10)
    if length is not None and (isinstance(length, bool) or not isinstance(length, int)):
        raise InvalidSeed("settings.dial_plan.national_length", "must be a whole number or null")
    return TreeSettings.from_dict(data)


def _increments(value, where: str):
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 3 or any(isinstance(v, bool) or not isinstance(v, int)
                                                              for v in value)
            or value[0] < 0 or value[1] < 1 or value[2] < 1):
        raise InvalidSeed(f"{where}.increments", "must be [minimum >= 0, initial >= 1, subsequent >= 1] seconds")
    return tuple(value)


def parse_seed(text: str) -> Seed:
    try:
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise InvalidSeed("$", f"not JSON: {exc}") from exc
    settings = _settings(data.get("settings") or {})
    tariffs, rates = [], {}
    for i, t in enumerate(data.get("tariffs", [])):
        where = f"tariffs[{i}]"
        for key in ("id", "owner"):
            if not t.get(key):
                raise InvalidSeed(f"{where}.{key}", "is required")
        if t["id"] in rates:
            raise InvalidSeed(f"{where}.id", f"{t['id']!r} is listed twice")
        try:
            tariffs.append(Tariff(
                id=t["id"], owner=t["owner"], kind=t.get("kind", "table"), name=t.get("name", ""),
                markup_fixed=money(t.get("markup_fixed", "0")), markup_percent=money(t.get("markup_percent", "0")),
                increments=_increments(t.get("increments"), where)))
            rates[t["id"]] = [Rate.from_dict(r) for r in t.get("rates", [])]
        except InvalidRate as exc:
            raise InvalidSeed(f"{where}.{exc.field}", str(exc)) from exc
        except NotMoney as exc:
            raise InvalidSeed(where, str(exc)) from exc
    tariff_ids = {t.id for t in tariffs}

    accounts: List[Account] = []
    identities: Dict[str, str] = {}
    seen: Dict[str, Account] = {}
    for i, a in enumerate(data.get("accounts", [])):
        where = f"accounts[{i}]"
        if not a.get("id"):
            raise InvalidSeed(f"{where}.id", "is required")
        if not isinstance(a["id"], str) or any(c in a["id"] for c in "#/~"):
            # '#' separates key parts, '/' path parts, '~' names a reseller's pools (domain.escrow)
            raise InvalidSeed(f"{where}.id", "must be text without '#', '/' or '~'")
        role = _choice(a, "role", acc.ROLES, None, where)
        if role is None:
            raise InvalidSeed(f"{where}.role", "is required")
        parent = a.get("parent")
        if role == acc.ADMIN and parent:
            raise InvalidSeed(f"{where}.parent", "the admin is the root and has no parent")
        if role != acc.ADMIN and parent not in seen:
            raise InvalidSeed(f"{where}.parent", f"{parent!r} is not an account listed before this one")
        if a["id"] in seen:
            raise InvalidSeed(f"{where}.id", f"{a['id']!r} is listed twice")
        tariff = a.get("tariff")
        if tariff is not None and tariff not in tariff_ids:
            raise InvalidSeed(f"{where}.tariff", f"no tariff {tariff!r}")
        account = Account(
            id=a["id"], role=role, parent_id=parent, tariff_id=tariff, name=a.get("name", ""),
            status=_choice(a, "status", acc.STATUSES, acc.ACTIVE, where),
            billing_type=_choice(a, "billing_type", acc.BILLING_TYPES, acc.PREPAID, where),
            billing_mode=_choice(a, "billing_mode", acc.BILLING_MODES, None, where),
            balance=_opt_money(a, "balance", where) or ZERO,
            credit_limit=_opt_money(a, "credit_limit", where) or ZERO,
            max_calls=a.get("max_calls"), cps_limit=a.get("cps_limit"),
            daily_limit=_opt_money(a, "daily_limit", where), monthly_limit=_opt_money(a, "monthly_limit", where),
            allow_loss=bool(a.get("allow_loss", False)),
            reseller_model=_choice(a, "reseller_model", acc.RESELLER_MODELS, acc.MARGIN, where),
            commission_percent=_opt_money(a, "commission_percent", where) or ZERO,
            currency=a.get("currency", "USD"),
            settings=settings if role == acc.ADMIN else None,
            path=child_path(seen[parent].path, a["id"]) if parent else a["id"],
            email=a.get("email"),
            may_create=a.get("may_create", acc.CREATE_NOTHING if role == acc.CLIENT else acc.CREATE_RESELLERS),
        )
        try:
            # the same rules the portal's "create account" applies (domain.accounts)
            acc.check_account(account, seen.get(parent) if parent else None)
        except acc.InvalidAccount as exc:
            if exc.field == "currency":
                raise InvalidSeed("accounts", "one currency per tree") from exc
            raise InvalidSeed(f"{where}.{exc.field}", str(exc).split(" ", 1)[1]) from exc
        seen[account.id] = account
        accounts.append(account)
        if role == acc.CLIENT:
            for name in [account.id] + list(a.get("sip_users", [])):
                if name in identities:
                    raise InvalidSeed(f"{where}.sip_users", f"{name!r} is already taken")
                identities[name] = account.id
    for i, tariff in enumerate(tariffs):
        if tariff.owner not in seen:
            raise InvalidSeed(f"tariffs[{i}].owner", f"no account {tariff.owner!r}")
    try:
        acc.check_tree(accounts)
    except acc.InvalidAccount as exc:
        raise InvalidSeed(exc.field, str(exc).split(" ", 1)[1]) from exc
    seed = Seed(settings, accounts, tariffs, rates, identities, list(data.get("switch_keys", [])))
    for client_id in set(identities.values()):
        try:
            check_chain(seed.chain_of(client_id))
        except acc.InvalidTree as exc:
            raise InvalidSeed(f"accounts[{client_id}]", str(exc)) from exc
    for i, k in enumerate(seed.switch_keys):
        if not k.get("key") or not k.get("id"):
            raise InvalidSeed(f"switch_keys[{i}]", "id and key are required")
    seed.dids = [_did(d, f"dids[{i}]", seen) for i, d in enumerate(data.get("dids", []))]
    if len({d.number for d, _ in seed.dids}) != len(seed.dids):
        raise InvalidSeed("dids", "a number is listed twice")
    return seed


SEEDED_AT = "2026-01-01T00:00:00Z"


def _did(data: dict, where: str, accounts: Dict[str, Account]):
    """A DID created by the admin and handed down ``holders`` (each a child of the one before, the first a
    child of the admin), each at the prices it pays; its history as if it had been done by the admin."""
    root = next(a for a in accounts.values() if a.parent_id is None)
    try:
        increments = data.get("increments") or {}
        did = dids.create(data.get("number"), data.get("country", ""), root.id, dids.Prices.of(data.get("cost")),
                          dids.Prices.of(data.get("offer")), SEEDED_AT, data.get("description", ""),
                          increments.get("initial", 60), increments.get("subsequent", 60))
        events = [dids.DidEvent(dids.CREATED, root.id, root.path, SEEDED_AT, root.id, did.holders[0].prices, 0)]
        for j, holder in enumerate(data.get("holders", [])):
            account = accounts.get(holder.get("account"))
            if account is None or account.parent_id != did.holder:
                raise InvalidSeed(f"{where}.holders[{j}].account", f"must be a child of {did.holder!r}")
            prices = dids.Prices.of(holder)
            did = dids.assign(did, did.holder, [account.id], prices, SEEDED_AT)
            events.append(dids.DidEvent(dids.ASSIGNED, account.id, account.path, SEEDED_AT, root.id, prices, did.rev))
    except dids.InvalidDid as exc:
        raise InvalidSeed(f"{where}.{exc.field}", exc.message) from exc
    except NotMoney as exc:
        raise InvalidSeed(where, str(exc)) from exc
    return did, events
