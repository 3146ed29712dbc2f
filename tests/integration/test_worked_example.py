"""The worked example of docs/portal-api.md section 19, step by step against the API: a reseller imports a
deck, schedules a price change for next month, a DID is handed down to its client, the client makes a call
in each direction, and the reports at three levels reconcile with the ledger and with the CDRs."""
import json
import time
from decimal import Decimal

from chalicelib.entrypoints import reporter
from tests.integration.helpers import body_of, client, headers, post_complete  # noqa: F401
from tests.integration.portal_helpers import Portal

MONTH = time.strftime("%Y-%m", time.gmtime())
NEXT_MONTH = time.strftime("%Y-%m-01", time.gmtime(time.time() + 32 * 86400 - (time.gmtime().tm_mday - 1) * 86400))
DECK = ("prefix,name,price,initial,subsequent\n"
        "1,USA/Canada,0.020,6,6\n"
        "1555,USA premium,2.40,1,1\n"
        "44,United Kingdom,0.030,60,60\n")


def wallet_calls(portal, who, account):
    """What calls took from the account's balance this month, from its ledger (GET .../ledger)."""
    items = portal.ok(who, "GET", f"/accounts/{account}/ledger?kind=call&limit=100")["items"]
    return -sum((Decimal(i["amount"]) for i in items if i["at"].startswith(MONTH)), Decimal(0))


def test_the_worked_example(client, demo, monkeypatch):
    monkeypatch.setenv("CASCADE_SWITCH_CACHE_SECONDS", "0")
    portal = Portal(client)
    # 1. cumulus imports a deck into a new tariff and assigns it to acme
    tariff = portal.ok("cumulus", "POST", "/accounts/cumulus/tariffs", {"name": "Retail 2027"}, status=201)["id"]
    response = client.http.request("PUT", f"/accounts/cumulus/tariffs/{tariff}/deck",
                                   headers=dict(portal.headers("cumulus"), **{"Content-Type": "text/csv"}),
                                   body=DECK.encode())
    assert response.status_code == 200 and body_of(response)["added"] == 3, response.body
    portal.ok("cumulus", "PATCH", "/accounts/acme", {"tariff_id": tariff})
    # 2. and schedules the UK at 0.025 from the first of next month
    change = portal.ok("cumulus", "POST", f"/accounts/cumulus/tariffs/{tariff}/rates",
                       {"prefix": "44", "price": "0.025", "name": "United Kingdom", "effective_from": NEXT_MONTH},
                       status=201)
    assert change["rate"]["effective_from"] == NEXT_MONTH + "T00:00:00Z"
    # 3. the admin creates a DID and gives it to cumulus (atlas and borealis pass it on at cost); cumulus
    #    assigns it to acme at its own prices
    portal.ok("admin", "POST", "/accounts/admin/dids", {
        "number": "+1 555 010 0300", "country": "US", "cost": {"monthly": "0.50", "per_minute": "0.002"},
        "setup": "1.00", "monthly": "1.00", "per_minute": "0.004"}, status=201)
    portal.ok("admin", "POST", "/accounts/admin/dids/15550100300/assign", {"to": "cumulus"})
    did = portal.ok("cumulus", "POST", "/accounts/cumulus/dids/15550100300/assign",
                    {"to": "acme", "setup": "2.00", "monthly": "3.00", "per_minute": "0.010"})
    assert did["buy"]["per_minute"] == "0.004000" and did["sell"]["per_minute"] == "0.010000"
    # 4. acme calls London for 95 s; a caller rings the DID and talks 61 s
    for body, billsec in (({"account": "1001", "destination": "00442071234567", "call_id": "ex-out"}, 95),
                          ({"direction": "inbound", "destination": "+15550100300", "call_id": "ex-in"}, 61)):
        response = client.http.post("/authorize", headers=headers(), body=json.dumps(body))
        assert response.status_code == 200, response.body
        assert post_complete(client, body["call_id"], billsec, "ANSWERED").status_code == 200
    reporter.drain(reset=True)     # deployed: the reporter Lambda on the table's stream, within seconds
    # 5. the reports at three levels
    acme = portal.ok("acme", "GET", f"/accounts/acme/reports/monthly?month={MONTH}")
    cumulus = portal.ok("cumulus", "GET", f"/accounts/cumulus/reports/monthly?month={MONTH}")
    admin = portal.ok("admin", "GET", f"/accounts/admin/reports/monthly?month={MONTH}")
    # acme: 2 minutes to London at 0.030 (60/60) + 2 minutes in on the DID at 0.010 (60/60)
    assert acme["totals"] == {"calls": 2, "answered": 2, "seconds": 156, "minutes": "2.60", "cost": "0.080000"}
    # its DIDs' fees, recorded for invoicing: the new one's setup and monthly, the demo DID's monthly
    assert acme["fees"] == {"did_setup": "2.000000", "did_monthly": "6.000000", "total": "8.000000"}
    # cumulus: what acme paid is its revenue; its cost is borealis' markup on the UK (0.015 + 20 %, per
    # second) and the DID at 0.004
    assert cumulus["totals"]["revenue"] == "0.080000" and cumulus["children"][0]["account_id"] == "acme"
    assert Decimal(cumulus["totals"]["cost"]) == Decimal("0.018") * Decimal(95) / 60 + Decimal("0.008")
    # every level reconciles: its report's cost (less commission) is what calls took from its ledger,
    # and its revenue is what the level below paid
    assert Decimal(acme["totals"]["cost"]) == wallet_calls(portal, "acme", "acme")
    assert Decimal(cumulus["totals"]["cost"]) == wallet_calls(portal, "cumulus", "cumulus")
    borealis = portal.ok("borealis", "GET", f"/accounts/borealis/reports/monthly?month={MONTH}")["totals"]
    assert borealis["revenue"] == cumulus["totals"]["cost"]
    assert admin["totals"]["calls"] == 2 and Decimal(admin["totals"]["profit"]) > 0
    atlas = portal.ok("atlas", "GET", f"/accounts/atlas/reports/monthly?month={MONTH}")["totals"]
    assert admin["totals"]["revenue"] == atlas["cost"] == str(wallet_calls(portal, "atlas", "atlas").quantize(
        Decimal("0.000001")))
    # and with the CDRs each level reads
    for who in ("acme", "cumulus", "admin"):
        rows = portal.ok(who, "GET", f"/accounts/{who}/cdrs?since={MONTH}-01")["items"]
        report = {"acme": acme, "cumulus": cumulus, "admin": admin}[who]["totals"]
        assert sum(Decimal(r["buy"]) for r in rows) == Decimal(report["cost"]), who
        assert {r["direction"] for r in rows} == {"outbound", "inbound"}
    # next month's price is in the deck the client is charged from then on
    prices = client.http.request("GET", f"/accounts/acme/price-list?at={NEXT_MONTH}", headers=portal.headers("acme"))
    assert "44,United Kingdom,0.025000" in prices.body.decode()
