"""Reports from the outside: CDRs at each level with filters, pages and CSV; the month in figures, kept by
the stream consumer exactly once, reconciling with the ledger and the CDRs at every level."""
import csv
import io
import json
import time
from decimal import Decimal

import pytest

from chalicelib.entrypoints import reporter
from tests.integration.helpers import (body_of, cdrs, client, headers, ledger, post_authorize,  # noqa: F401
                                       post_complete)
from tests.integration.portal_helpers import Portal, key, table_snapshot

MONTH = time.strftime("%Y-%m", time.gmtime())
CHAIN = ["acme", "cumulus", "borealis", "atlas", "admin"]


def call(client, account, number, call_id, billsec, disposition="ANSWERED"):
    response = post_authorize(client, account, number, call_id)
    assert response.status_code == 200, response.body
    assert post_complete(client, call_id, billsec, disposition).status_code == 200


def inbound(client, did, call_id, billsec):
    response = client.http.post("/authorize", headers=headers(), body=json.dumps(
        {"direction": "inbound", "destination": did, "call_id": call_id}))
    assert response.status_code == 200, response.body
    assert post_complete(client, call_id, billsec, "ANSWERED").status_code == 200


def drain():
    """What the deployed stream consumer would have done by now (from the stream's start: applying a
    record twice must change nothing, so every drain re-reads everything)."""
    return reporter.drain(reset=True)


@pytest.fixture
def portal(client, demo, monkeypatch):
    monkeypatch.setenv("CASCADE_SWITCH_CACHE_SECONDS", "0")
    return Portal(client)


@pytest.fixture
def month_of_calls(portal, client):
    """acme: two answered calls and a busy one; shortly: none (no funds); echo (delta's): one; an inbound
    call to the demo DID; a payment to acme."""
    call(client, "1001", "15551230001", "m-1", 60)
    call(client, "1001", "442071234567", "m-2", 125)
    call(client, "1001", "15551230001", "m-3", 0, "BUSY")
    call(client, "2001", "15551230001", "m-4", 30)
    inbound(client, "+15550100100", "m-5", 90)
    status, _ = portal.money("cumulus", "payment", "acme", "5.00", key("pay"))
    assert status == 201
    first = drain()
    assert first["records"] == 5 and first["skipped"] == 0
    return first


def figures(portal, who, account):
    report = portal.ok(who, "GET", f"/accounts/{account}/reports/monthly?month={MONTH}")
    return report


def test_every_level_reconciles_with_its_cdrs_and_its_ledger(portal, month_of_calls):
    for account in ["cumulus", "borealis", "atlas", "admin", "delta"]:
        totals = figures(portal, account, account)["totals"]
        views = cdrs(account)
        assert totals["calls"] == len(views), account
        assert Decimal(totals["cost"]) == sum((v.buy for v in views), Decimal(0)), account
        assert Decimal(totals["revenue"]) == sum((v.sell for v in views), Decimal(0)), account
        assert Decimal(totals["profit"]) == sum((v.profit for v in views), Decimal(0)), account
        assert totals["seconds"] == sum(v.billsec for v in views)
        assert totals["answered"] == sum(v.disposition == "ANSWERED" for v in views) > 0
        # what its calls took from its wallet, in the ledger, is its cost less its commission
        calls_in_ledger = sum((line.amount for line in ledger(account) if line.entry_kind == "call"), Decimal(0))
        if account != "admin":
            assert calls_in_ledger == -(Decimal(totals["cost"]) - Decimal(totals["commission"])), account
    # a client: what it paid, as its ledger says, and its payment
    acme = figures(portal, "acme", "acme")
    paid = -sum((line.amount for line in ledger("acme") if line.entry_kind == "call"), Decimal(0))
    assert Decimal(acme["totals"]["cost"]) == paid and acme["totals"]["calls"] == 4
    assert set(acme["totals"]) == {"calls", "answered", "seconds", "minutes", "cost"}
    assert Decimal(acme["money"]["payments"]) == Decimal("5.00")
    assert acme["fees"] == {"did_setup": "0", "did_monthly": "3.000000", "total": "3.000000"}


def test_children_rows_add_up_to_the_totals_and_show_only_what_is_below(portal, month_of_calls):
    admin = figures(portal, "admin", "admin")
    children = {c["account_id"]: c for c in admin["children"]}
    assert set(children) == {"atlas", "delta"}
    for name in ("calls", "seconds"):
        assert sum(c[name] for c in children.values()) == admin["totals"][name]
    assert sum(Decimal(c["revenue"]) for c in children.values()) == Decimal(admin["totals"]["revenue"])
    # cumulus reads its own month: its revenue from acme, never borealis' or atlas' prices
    cumulus = figures(portal, "cumulus", "cumulus")
    assert [c["account_id"] for c in cumulus["children"]] == ["acme"]
    borealis_view = figures(portal, "borealis", "borealis")["totals"]
    assert borealis_view["revenue"] == cumulus["totals"]["cost"]          # what cumulus paid is borealis' revenue
    assert borealis_view["cost"] not in json.dumps(cumulus)
    # sub-accounts: every child, with or without calls
    items = portal.ok("cumulus", "GET", f"/accounts/cumulus/reports/sub-accounts?month={MONTH}")["items"]
    assert {i["account_id"]: i["calls"] for i in items} == {"acme": 4, "shortly": 0}
    # the wall: a client cannot read its parent's report, an outsider not at all
    assert portal("acme", "GET", "/accounts/cumulus/reports/monthly")[0] == 404
    assert portal("delta", "GET", "/accounts/atlas/reports/monthly")[0] == 404


def test_a_record_delivered_again_or_a_longer_retry_is_counted_once(portal, client, month_of_calls):
    before = figures(portal, "admin", "admin")["totals"]
    # the whole stream again, twice (the drain re-reads from the start)
    assert drain()["skipped"] == 5 and drain()["runs"] == 0
    assert figures(portal, "admin", "admin")["totals"] == before
    # a retry that starts where a delivered batch started but carries one more record
    call(client, "1001", "15551230001", "m-6", 60)
    from chalicelib.adapters.dynamo.stream import StreamReader
    records = [r for batch in StreamReader().batches() for r in batch]
    billed = [r for r in records if (r["dynamodb"].get("NewImage") or {}).get("status", {}).get("S") == "done"
              and (r["dynamodb"].get("OldImage") or {}).get("status", {}).get("S") != "done"]
    assert len(billed) == 6
    stats = reporter.handle(billed)
    assert (stats["skipped"], stats["runs"]) == (5, 2)          # its client row, and the shared rows
    after = figures(portal, "admin", "admin")["totals"]
    assert after["calls"] == before["calls"] + 1
    assert reporter.handle(billed)["runs"] == 0 and figures(portal, "admin", "admin")["totals"] == after


def test_cdrs_at_each_level_with_filters_pages_and_csv(portal, month_of_calls):
    # cumulus' view: acme's four calls, its buy and sell; nothing above its own price
    page = portal.ok("cumulus", "GET", "/accounts/cumulus/cdrs")
    assert len(page["items"]) == 4 and page["next_cursor"] is None
    first = page["items"][0]
    assert set(first) >= {"buy", "sell", "profit", "direction", "disposition", "billsec"}
    inbound_row = next(r for r in page["items"] if r["direction"] == "inbound")
    assert inbound_row["destination"] == "15550100100" and inbound_row["call_id"] == "m-5"
    assert Decimal(first["profit"]) == Decimal(first["sell"]) - Decimal(first["buy"])
    # the client's own: its price only
    acme = portal.ok("acme", "GET", "/accounts/acme/cdrs")["items"]
    assert {r["sell"] for r in acme} == {None} and len(acme) == 4
    assert [r["buy"] for r in acme] == [r["sell"] for r in page["items"]]
    # filters
    def numbers(query, who="admin", account="admin"):
        return [r["call_id"] for r in portal.ok(who, "GET", f"/accounts/{account}/cdrs?{query}")["items"]]
    assert numbers("prefix=44") == ["m-2"]
    assert numbers("disposition=BUSY") == ["m-3"]
    assert numbers("direction=inbound") == ["m-5"]
    assert numbers("account=delta") == ["m-4"]
    assert numbers("account=echo") == ["m-4"]
    everything = ["m-1", "m-2", "m-3", "m-4", "m-5"]       # billed within a second: ordered by id's hash then
    assert sorted(numbers(f"since={MONTH}-01&until=2999-01-01")) == everything
    assert numbers("until=2000-01-01") == []
    status, body = portal("cumulus", "GET", "/accounts/cumulus/cdrs?account=echo")
    assert (status, body["field"]) == (400, "account")          # outside cumulus' subtree
    # pages
    one = portal.ok("admin", "GET", "/accounts/admin/cdrs?limit=2")
    two = portal.ok("admin", "GET", f"/accounts/admin/cdrs?limit=2&cursor={one['next_cursor']}")
    three = portal.ok("admin", "GET", f"/accounts/admin/cdrs?limit=2&cursor={two['next_cursor']}")
    assert sorted(r["call_id"] for r in one["items"] + two["items"] + three["items"]) == everything
    assert three["next_cursor"] is None
    # CSV: the same rows
    response = portal.client.http.request("GET", "/accounts/cumulus/cdrs/export?direction=outbound",
                                          headers=portal.headers("cumulus"))
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.body.decode())))
    outbound = [r for r in page["items"] if r["direction"] == "outbound"]
    assert [r["call_id"] for r in rows] == [r["call_id"] for r in outbound] and len(rows) == 3
    assert [r["buy"] for r in rows] == [r["buy"] for r in outbound]


def test_the_did_report_and_inbound_minutes_at_each_level(portal, month_of_calls):
    for who, per_minute in (("acme", "0.012"), ("cumulus", "0.008"), ("atlas", "0.004")):
        (row,) = portal.ok(who, "GET", f"/accounts/{who}/reports/dids?month={MONTH}")["items"]
        assert row["number"] == "15550100100" and row["calls"] == 1 and row["seconds"] == 90
        assert Decimal(row["cost"]) == Decimal(per_minute) * 2, who        # 90 s in 60 s increments
    (cumulus,) = portal.ok("cumulus", "GET", "/accounts/cumulus/reports/dids")["items"]
    assert Decimal(cumulus["revenue"]) == Decimal("0.024") and cumulus["assigned_to"] == "acme"


def test_bad_months_and_filters_are_400_and_write_nothing(portal):
    before = table_snapshot()
    for path, field in (("/accounts/admin/reports/monthly?month=2026-13", "month"),
                        ("/accounts/admin/cdrs?disposition=MAYBE", "disposition"),
                        ("/accounts/admin/cdrs?prefix=1a", "prefix"),
                        ("/accounts/admin/cdrs?cursor=abcd", "cursor")):
        status, body = portal("admin", "GET", path)
        assert (status, body.get("field")) == (400, field), path
    assert table_snapshot() == before


def _synthetic(n, start=0):
    from chalicelib.domain.reports import BilledCall, LevelCharge
    out = []
    for i in range(start, start + n):
        client, reseller = f"c{i % 7}", f"r{i % 2}"
        cost = Decimal(i % 5) / 10
        out.append((f"{10 ** 20 + i}", BilledCall(
            call_id=f"x{i}", billed_at="2026-11-05T10:00:00.000Z", billsec=i % 5 * 60, answered=bool(i % 5),
            levels=(LevelCharge(client, cost * 3, Decimal(0)), LevelCharge(reseller, cost * 2, Decimal("0.01")),
                    LevelCharge("admin", cost, Decimal(0))), did="15550100100" if i % 4 == 0 else None)))
    return out


def _stored_rows():
    from chalicelib.adapters.dynamo.models import CoreItem, ReportRowItem
    from chalicelib.adapters.dynamo.report_store import _parse_sk, _totals
    out = {}
    for item in CoreItem.scan(CoreItem.kind == ReportRowItem, consistent_read=True):
        key = (item.pk[4:], _parse_sk(item.sk)[1])
        out[key] = out.get(key, (0, Decimal(0), Decimal(0)))
        t = _totals(item)
        out[key] = (out[key][0] + t.calls, out[key][1] + t.revenue, out[key][2] + t.cost)
    return out


def _expected(records):
    from chalicelib.domain.reports import contributions
    out = {}
    for _, call in records:
        for (account, _, row), t in contributions(call).items():
            had = out.get((account, row), (0, Decimal(0), Decimal(0)))
            out[(account, row)] = (had[0] + t.calls, had[1] + t.revenue, had[2] + t.cost)
    return out


def test_a_consumer_that_crashes_between_transactions_and_is_retried_counts_every_call_once(aws, monkeypatch):
    """Small transactions (4 rows) so a batch is many; the commit fails now and then, as a Lambda that
    times out or loses its connection would; the batch is delivered again (then longer) until it passes."""
    from chalicelib.adapters.dynamo import report_store
    from chalicelib.adapters.dynamo.store import DynamoStore
    from chalicelib.adapters.dynamo.writes import Tx
    monkeypatch.setattr(report_store, "RUN_ITEMS", 4)
    original, commits = Tx.commit, {"n": 0}

    def flaky(self, connection_of, what):
        commits["n"] += 1
        if commits["n"] % 5 == 0:
            raise RuntimeError("the Lambda died here")
        return original(self, connection_of, what)
    monkeypatch.setattr(Tx, "commit", flaky)
    store = DynamoStore()
    batch = _synthetic(40)
    failures = 0
    for attempt in range(100):
        records = batch if attempt == 0 else batch + _synthetic(10, start=40)   # retries carry more
        try:
            store.apply_calls(records)
            break
        except RuntimeError:
            failures += 1
    assert failures >= 2
    assert _stored_rows() == _expected(batch + _synthetic(10, start=40))
    monkeypatch.setattr(Tx, "commit", original)
    store.apply_calls(batch + _synthetic(10, start=40))      # once more, whole: nothing changes
    assert _stored_rows() == _expected(batch + _synthetic(10, start=40))


def test_a_large_period_is_exported_by_a_background_task_to_a_file(portal, month_of_calls):
    """The task runs inline in tests (CASCADE_IMPORTS_INLINE); deployed, the importer Lambda runs it."""
    job = portal.ok("cumulus", "POST", "/accounts/cumulus/cdrs/exports", {"direction": "outbound"}, status=202)
    assert job["id"].startswith("exp_") and job["filters"] == {"direction": "outbound"}
    done = portal.ok("cumulus", "GET", f"/accounts/cumulus/cdrs/exports/{job['id']}")
    assert done["status"] == "done" and done["rows"] == 3 and done["download_url"]
    from chalicelib.adapters import decks
    body = decks._s3().get_object(Bucket=decks.bucket(), Key=f"exports/{job['id']}.csv")["Body"].read().decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    listed = [r for r in portal.ok("cumulus", "GET", "/accounts/cumulus/cdrs?direction=outbound")["items"]]
    assert [r["call_id"] for r in rows] == [r["call_id"] for r in listed]
    assert [r["buy"] for r in rows] == [r["buy"] for r in listed]
    # the wall: another account's export is not found, a client exports only its own
    assert portal("acme", "GET", f"/accounts/cumulus/cdrs/exports/{job['id']}")[0] == 404
    assert portal("atlas", "GET", f"/accounts/atlas/cdrs/exports/{job['id']}")[0] == 404
    status, body = portal("acme", "POST", "/accounts/acme/cdrs/exports", {"account": "cumulus"})
    assert (status, body["field"]) == (400, "account")
    own = portal.ok("acme", "POST", "/accounts/acme/cdrs/exports", {}, status=202)
    assert portal.ok("acme", "GET", f"/accounts/acme/cdrs/exports/{own['id']}")["rows"] == 4


def test_a_csv_cell_never_starts_a_formula():
    from chalicelib.entrypoints.cdr_csv import _cell
    assert [_cell(v) for v in ("=HYPERLINK(1)", "+1", "-2.5", "@x", "15551230001", None)] == \
        ["'=HYPERLINK(1)", "+1", "-2.5", "'@x", "15551230001", ""]
