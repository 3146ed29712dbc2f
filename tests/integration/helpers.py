"""Small helpers shared by the integration tests: post to the switch API, read the tables back, and
check the money invariant every test ends with. Money is Decimal only, never float."""
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, List
from urllib.parse import quote

import pytest

from tests.conftest import DEMO_KEY

JSON = "application/json"


@dataclass(frozen=True)
class SwitchAnswer:
    status: int
    body: dict


def authorize_http(*args, **kwargs) -> SwitchAnswer:
    """services.authorize_call's result as the switch API answers it (status and body)."""
    from chalicelib.entrypoints.switch_http import authorize_response
    from chalicelib.services.authorize_call import authorize_call
    return SwitchAnswer(*authorize_response(authorize_call(*args, **kwargs)))


def headers(key=DEMO_KEY) -> dict:
    h = {"Content-Type": JSON}
    if key is not None:
        h["X-Api-Key"] = key
    return h


def body_of(response) -> dict:
    return json.loads(response.body, parse_float=Decimal)


def post_authorize(client, account, destination, call_id, key=DEMO_KEY):
    payload = {"account": account, "destination": destination, "call_id": call_id}
    return client.http.post("/authorize", headers=headers(key), body=json.dumps(payload))


def post_complete(client, call_id, billsec, disposition, key=DEMO_KEY):
    return client.http.post(f"/calls/{quote(call_id, safe='')}/complete", headers=headers(key),
                            body=json.dumps({"billsec": billsec, "disposition": disposition}))


def account(account_id: str):
    from chalicelib.adapters.dynamo.models import AccountItem
    return AccountItem.get("ACC#" + account_id, "#")


def call_item(call_id: str):
    """The call as the store reads it (services.records.CallRecord: answer and result rebuilt from the
    compact item)."""
    from chalicelib.adapters.dynamo.keys import call_key
    from chalicelib.adapters.dynamo.models import CallItem
    from chalicelib.adapters.dynamo.reads import to_call
    return to_call(CallItem.get(*call_key(call_id)))


@dataclass(frozen=True)
class Line:
    """One posting of a journal entry to one book, with its entry's kind and references."""
    entry_id: str
    entry_kind: str
    amount: Decimal
    ref: str
    description: str
    late: bool


def journal_entries() -> List:
    """Every journal entry as (id, kind, {book: amount}, ref, description, late): the journal table's
    items and the finished calls' records (a call's entry is its record)."""
    from chalicelib.adapters.dynamo.models import CallItem, CoreItem, JournalItem
    from chalicelib.adapters.dynamo.store import to_call
    out = []
    for item in JournalItem.scan():
        postings = {book: Decimal(v) for book, v in item.postings.items()}
        out.append((item.entry_id, item.entry_kind, postings, item.ref, item.description, False))
    for item in CoreItem.scan(CoreItem.kind == CallItem):
        entry = to_call(item).journal_entry() if isinstance(item, CallItem) else None
        if entry is not None:
            out.append((entry.id, entry.kind, {p.book: p.amount for p in entry.postings}, entry.ref,
                        entry.description, entry.late))
    return out


def postings_to(book: str) -> List[Line]:
    lines = [Line(eid, kind, postings[book], ref, description, late)
             for eid, kind, postings, ref, description, late in journal_entries() if book in postings]
    return sorted(lines, key=lambda line: line.entry_id)


def ledger(account_id: str) -> List[Line]:
    """What moved the account's balance: the postings to its wallet."""
    return postings_to(f"wallet:{account_id}")


def call_entries(account_id: str) -> List[Line]:
    """Wallet postings other than the seed's opening balance."""
    return [e for e in ledger(account_id) if e.entry_kind != "opening"]


def cdrs(account_id: str) -> List:
    """The account's CDRs: its view of every billed call on its chain (the call record is the only
    CDR; services.records.level_view), oldest first."""
    from chalicelib.adapters.dynamo.models import CallItem, CoreItem
    from chalicelib.adapters.dynamo.reads import to_call
    from chalicelib.services.records import level_view
    views = []
    for item in CoreItem.scan(CoreItem.kind == CallItem):
        if isinstance(item, CallItem) and item.status == "done":
            view = level_view(to_call(item), account_id, item.cdr_at)
            if view is not None:
                views.append(view)
    return sorted(views, key=lambda v: v.cdr_id)


def money_snapshot(account_ids: Iterable[str]) -> dict:
    """(balance, held, available, active_calls) per account, to compare before/after."""
    out = {}
    for a in account_ids:
        item = account(a)
        out[a] = (item.balance, item.held, item.available, int(item.active_calls or 0))
    return out


def assert_ledger_invariant(account_ids: Iterable[str]) -> None:
    """Double entry: every journal entry sums to zero, and each account's balance is the sum of the
    postings to its wallet; ``available`` is balance + credit (postpaid) - held."""
    entries = journal_entries()
    for eid, _, postings, *_ in entries:
        assert all(isinstance(v, Decimal) for v in postings.values()), eid
        assert sum(postings.values(), Decimal("0")) == 0, f"entry {eid} does not balance: {postings}"
    unswept = escrow_spent()
    for account_id in account_ids:
        item = account(account_id)
        assert isinstance(item.balance, Decimal) and isinstance(item.held, Decimal)
        book = f"wallet:{account_id}"
        total = sum((p[book] for _, _, p, *_ in entries if book in p), Decimal("0"))
        lag = unswept.get(account_id, Decimal("0"))
        assert item.balance - lag == total, \
            f"{account_id}: balance {item.balance} - unswept escrow {lag} != ledger sum {total}"
        credit = item.credit_limit if item.billing_type == "postpaid" else Decimal("0")
        assert item.available == item.balance + credit - item.held, \
            f"{account_id}: available {item.available} != {item.balance} + {credit} - {item.held}"
        assert item.held >= 0, f"{account_id}: held {item.held} < 0"
        assert int(item.active_calls or 0) >= 0, f"{account_id}: active_calls {item.active_calls} < 0"


def escrow_spent() -> dict:
    """Per owner: money its slots on clients' items spent and the rebalancer has not swept yet (the
    owner's item balance is ahead of its journal by exactly this: domain.escrow)."""
    from chalicelib.adapters.dynamo.models import AccountItem, CoreItem
    from chalicelib.adapters.dynamo.reads import slots_of
    out = {}
    for item in CoreItem.scan(CoreItem.kind == AccountItem):
        for slot in slots_of(item):
            if slot.owner is not None and slot.spent:
                out[slot.owner] = out.get(slot.owner, Decimal("0")) + slot.spent
    return out


def escrow_slots(owner_id: str) -> List:
    """The registry's (client, distance) pairs for an owner."""
    from chalicelib.adapters.dynamo.models import EscrowItem
    from chalicelib.adapters.dynamo.keys import escrow_partitions
    return sorted((i.sk, int(i.distance)) for p in escrow_partitions(owner_id) for i in EscrowItem.query(p))


# --- seed editing (always on a fresh copy from demo_seed()) -------------------------------------

def seed_account(seed: dict, account_id: str) -> dict:
    return next(a for a in seed["accounts"] if a["id"] == account_id)


def seed_rate(seed: dict, tariff_id: str, prefix: str) -> dict:
    tariff = next(t for t in seed["tariffs"] if t["id"] == tariff_id)
    return next(r for r in tariff["rates"] if r["prefix"] == prefix)


DEMO_CHAIN = ("acme", "cumulus", "borealis", "atlas", "admin")
ALL_DEMO = ("admin", "atlas", "borealis", "cumulus", "acme", "shortly", "delta", "echo")


@pytest.fixture
def client(aws):
    """A Chalice test client over moto (tables created, nothing seeded: tests load their own seed)."""
    from chalice.test import Client
    from app import app
    with Client(app) as c:
        yield c


@pytest.fixture
def calls(monkeypatch):
    """The DynamoDB requests made from here on, by operation name (PynamoDB's single exit to botocore)."""
    from pynamodb.connection.base import Connection
    seen = []
    original = Connection._make_api_call

    def counting(self, operation_name, *args, **kwargs):
        seen.append(operation_name)
        return original(self, operation_name, *args, **kwargs)
    monkeypatch.setattr(Connection, "_make_api_call", counting)
    return seen
