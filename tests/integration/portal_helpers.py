"""Helpers for the portal API tests: sign in as a demo account, call a route, read every table back
for "nothing changed" checks, and parse money exactly (Decimal only, never float).

The switch side (POST /authorize, /calls/{id}/complete) and the ledger invariant live in
tests/integration/helpers.py; this module adds the portal's half.
"""
import itertools
import json
from decimal import Decimal
from typing import Dict, Iterable, List, Optional, Tuple

JSON = "application/json"
PASSWORD = "portal-test-password-0123"
LOGIN_PREFIXES = ("LOGIN#", "AUTH#", "REFRESH#", "RFAM#", "IPFAIL#")   # what a sign-in writes
_keys = itertools.count(1)


def email_of(account_id: str) -> str:
    return f"{account_id}@example.test"


def ensure_login(account_id: str, password: str = PASSWORD) -> str:
    """A login for the account (created once; an existing one is kept)."""
    from chalicelib.bootstrap import container
    from chalicelib.domain.identity import EmailTaken, LoginExists
    try:
        container().identity.create_login(account_id, email_of(account_id), password)
    except (EmailTaken, LoginExists):
        pass
    return email_of(account_id)


def sign_in(client, email: str, password: str = PASSWORD):
    """POST /auth/sign-in as it is: (status, body)."""
    return api(client, "POST", "/auth/sign-in", None, {"email": email, "password": password})


def sign_in_as(client, account_id: str) -> Dict[str, str]:
    """Headers of a fresh session of ``account_id`` (its login is created on first use)."""
    email = ensure_login(account_id)
    status, body = sign_in(client, email)
    assert status == 200, (account_id, status, body)
    return bearer(body["access_token"])


def bearer(token: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": JSON}


def parse(raw) -> Optional[dict]:
    if not raw:
        return None
    return json.loads(raw, parse_float=Decimal)


def api(client, method: str, path: str, headers: Optional[dict], body=None) -> Tuple[int, Optional[dict]]:
    """One request; ``body`` is a dict (sent as JSON, Decimals as strings) or raw str/bytes."""
    if body is None:
        raw = b""
    elif isinstance(body, (str, bytes)):
        raw = body
    else:
        raw = json.dumps(body, default=str)
    h = {"Content-Type": JSON, **(headers or {})}
    response = client.http.request(method, path, headers=h, body=raw)
    if str(response.headers.get("Content-Type", "")).startswith("text/csv"):
        return response.status_code, {"csv": response.body.decode("utf-8")}
    return response.status_code, parse(response.body)


def key(prefix: str = "k") -> str:
    """A fresh idempotency key."""
    return f"{prefix}-{next(_keys)}"


# --- money -------------------------------------------------------------------------------------------

def D(value) -> Decimal:
    """An amount from an answer or a literal, exactly (floats are refused: they already lost the cents)."""
    if isinstance(value, float):
        raise TypeError(f"float {value!r} is not money")
    return Decimal(str(value))


def balance_of(client, headers: dict, account_id: str) -> Dict[str, Decimal]:
    status, body = api(client, "GET", f"/accounts/{account_id}/balance", headers)
    assert status == 200, body
    return {k: D(body[k]) for k in ("balance", "credit_limit", "held", "available")}


def stored(account_id: str):
    """The account's item as stored."""
    from chalicelib.adapters.dynamo.models import AccountItem
    return AccountItem.get("ACC#" + account_id, "#", consistent_read=True)


def journal_items(account_id: str) -> List:
    from chalicelib.adapters.dynamo.models import JournalItem
    return list(JournalItem.query(account_id, consistent_read=True))


def all_account_ids() -> List[str]:
    from chalicelib.adapters.dynamo.models import AccountItem, CoreItem
    return sorted(i.id for i in CoreItem.scan(CoreItem.kind == AccountItem, consistent_read=True)
                  if isinstance(i, AccountItem))


# --- tables ------------------------------------------------------------------------------------------

def _scan(model) -> Iterable[dict]:
    """Every raw item of a model's table (strongly consistent), through PynamoDB's own connection."""
    connection = model._get_connection()
    start = None
    while True:
        page = connection.scan(exclusive_start_key=start, consistent_read=True)
        yield from page.get("Items", [])
        start = page.get("LastEvaluatedKey")
        if not start:
            return


def _moto_items(model) -> Optional[List[dict]]:
    """A table's items straight from moto's in-memory backend (a Scan through the API costs ~0.1 s in
    moto's response serializer; the matrix takes hundreds of snapshots). None when moto is not there."""
    try:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends
        from tests.conftest import _moto_lock
        backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][model.Meta.region]
        with _moto_lock:
            table = backend.tables[model.Meta.table_name]
            return [item.to_json()["Attributes"] for item in table.all_items()]
    except Exception:    # noqa: BLE001 not moto, or another layout: scan instead
        return None


def table_snapshot(include_logins: bool = False) -> List[Tuple[str, str]]:
    """Every item of the core and journal tables, serialized and sorted, except (unless
    ``include_logins``) what signing in writes: logins, sessions, refresh tokens and families, IP failure
    counters."""
    from chalicelib.adapters.dynamo.models import CoreItem, JournalItem
    out = []
    for logical, model in (("core", CoreItem), ("journal", JournalItem)):
        items = _moto_items(model)
        for item in (items if items is not None else _scan(model)):
            pk = item.get("pk", {}).get("S", "")
            if logical == "core" and not include_logins and pk.startswith(LOGIN_PREFIXES):
                continue
            out.append((logical, json.dumps(item, sort_keys=True, default=str)))
    return sorted(out)


def account_money() -> Dict[str, Dict[str, object]]:
    """Every account's money fields as stored, in one read of moto's backend (a GetItem per account
    through the API costs ~10 ms in moto): {id: {balance, held, available, credit_limit: Decimal,
    active_calls: int, billing_type, status}}."""
    items = _moto_items(_core())
    if items is None:
        items = list(_scan(_core()))
    out = {}
    for item in items:
        if not item.get("pk", {}).get("S", "").startswith("ACC#"):
            continue
        out[item["id"]["S"]] = {
            **{name: _number(item, name) for name in ("balance", "held", "available", "credit_limit")},
            "active_calls": int(_number(item, "active_calls")),
            "billing_type": item.get("billing_type", {}).get("S", "prepaid"),
            "status": item.get("status", {}).get("S", "active")}
    return out


def _number(item: dict, name: str) -> Decimal:
    return Decimal(item[name]["N"]) if name in item else Decimal(0)


def _core():
    from chalicelib.adapters.dynamo.models import CoreItem
    return CoreItem


def snapshot_diff(before: List[Tuple[str, str]], after: List[Tuple[str, str]]) -> dict:
    """What appeared and what went (for a readable assertion message)."""
    b, a = set(before), set(after)
    return {"added": sorted(a - b)[:5], "removed": sorted(b - a)[:5]}


class Portal:
    """A Chalice test client plus one cached session per account (signing in costs a password hash)."""

    def __init__(self, client):
        self.client = client
        self._headers: Dict[str, Dict[str, str]] = {}

    def headers(self, who: Optional[str]) -> Dict[str, str]:
        if who is None:
            return {}
        if who not in self._headers:
            self._headers[who] = sign_in_as(self.client, who)
        return self._headers[who]

    def forget(self, who: str) -> None:
        """Drop a cached session (after suspending an account ends its sessions)."""
        self._headers.pop(who, None)

    def __call__(self, who: Optional[str], method: str, path: str, body=None) -> Tuple[int, Optional[dict]]:
        return api(self.client, method, path, self.headers(who), body)

    def ok(self, who: Optional[str], method: str, path: str, body=None, status: Optional[int] = None) -> dict:
        """The body of an answer that must be a success (``status`` or any 2xx)."""
        got, answer = self(who, method, path, body)
        assert (got == status) if status is not None else (200 <= got < 300), (method, path, got, answer)
        return answer

    def money(self, who: str, kind: str, account_id: str, amount, idempotency_key: Optional[str] = None, **extra):
        """POST a payment / charge / transfer (``kind`` singular)."""
        body = {"amount": amount, "idempotency_key": idempotency_key or key(kind), **extra}
        return self(who, "POST", f"/accounts/{account_id}/{kind}s", body)

    def balance(self, who: str, account_id: str) -> Dict[str, Decimal]:
        return balance_of(self.client, self.headers(who), account_id)
