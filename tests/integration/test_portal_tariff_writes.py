"""The portal's tariff writes, from the outside: a reseller builds a price list, assigns it, schedules a
change, imports and exports decks, and reads what it is charged; the switch prices the next call by it."""
import time
from decimal import Decimal

from chalicelib.adapters.dynamo.models import CallItem
from chalicelib.adapters.dynamo.store import DynamoStore, call_key, to_call
from chalicelib.services.authorize_call import AuthorizeRequest
from chalicelib.services.switch_keys import key_hash
from tests.conftest import DEMO_KEY
from tests.integration.helpers import authorize_http, client, post_complete  # noqa: F401
from tests.integration.portal_helpers import Portal, table_snapshot

NEXT_YEAR = time.strftime("%Y", time.gmtime(time.time() + 366 * 86400)) + "-01-01T00:00:00Z"


def csv_request(portal: Portal, who: str, method: str, path: str, body: str = ""):
    headers = dict(portal.headers(who), **({"Content-Type": "text/csv"} if method == "PUT" else {}))
    response = portal.client.http.request(method, path, headers=headers, body=body.encode("utf-8"))
    return response.status_code, response.body.decode("utf-8"), dict(response.headers)


def put_deck(portal, who, account, tariff, deck, query=""):
    import json
    status, text, _ = csv_request(portal, who, "PUT", f"/accounts/{account}/tariffs/{tariff}/deck{query}", deck)
    return status, json.loads(text, parse_float=Decimal)


def acme_call(call_id: str, when: float = None, number: str = "15551230001"):
    """1001 (acme) dials; returns acme's rate as frozen in the call record."""
    answer = authorize_http(DynamoStore(), AuthorizeRequest("1001", number, call_id), key_hash(DEMO_KEY),
                            clock=(lambda: when) if when else time.time)
    assert answer.status == 200, answer.body
    return to_call(CallItem.get(*call_key(call_id))).levels[0].rate


def test_a_reseller_builds_a_price_list_assigns_it_and_the_next_call_is_priced_by_it(client, demo, monkeypatch):
    monkeypatch.setenv("CASCADE_SWITCH_CACHE_SECONDS", "0")
    portal = Portal(client)
    # GIVEN cumulus creates a table tariff with two rates
    created = portal.ok("cumulus", "POST", "/accounts/cumulus/tariffs", {"name": "Gold", "rates": [
        {"prefix": "1", "price": "0.05", "name": "USA", "initial": 1, "subsequent": 1},
        {"prefix": "1555", "price": "2.40", "name": "USA premium", "initial": 1, "subsequent": 1}]}, status=201)
    tid = created["id"]
    assert tid.startswith("t_") and created["owner"] == "cumulus" and created["kind"] == "table"
    assert tid in [t["id"] for t in portal.ok("cumulus", "GET", "/accounts/cumulus/tariffs")["items"]]
    # WHEN it assigns the tariff to its client acme
    portal.ok("cumulus", "PATCH", "/accounts/acme", {"tariff_id": tid})
    # THEN acme's next call is rated by it, and the call names the version it was rated at
    rate = acme_call("gold-1")
    assert (rate.prefix, rate.price, rate.name) == ("1555", Decimal("2.40"), "USA premium")
    assert rate.effective_from == "1970-01-01T00:00:00Z"
    # AND acme reads the prices it is charged
    status, text, headers = csv_request(portal, "acme", "GET", "/accounts/acme/price-list")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert text.splitlines()[2] == "1555,USA premium,2.400000,0.000000,0,1,1,1970-01-01T00:00:00Z,"


def test_a_scheduled_change_rates_calls_from_its_time_and_never_rewrites_a_version_in_force(client, demo,
                                                                                            monkeypatch):
    monkeypatch.setenv("CASCADE_SWITCH_CACHE_SECONDS", "0")
    portal = Portal(client)
    # GIVEN cumulus schedules 1555 at 2.50 from next year on the tariff acme is charged by
    change = portal.ok("cumulus", "POST", "/accounts/cumulus/tariffs/cumulus-retail/rates",
                       {"prefix": "1555", "price": "2.50", "name": "USA premium", "initial": 6, "subsequent": 6,
                        "effective_from": NEXT_YEAR}, status=201)
    assert change["change"]["changed"] == 1 and change["rate"]["effective_from"] == NEXT_YEAR
    # THEN a call now is still rated at 2.00, one from next year at 2.50 (the version it names)
    assert acme_call("now-1").price == Decimal("2.0")
    assert post_complete(client, "now-1", 0, "NO ANSWER").status_code == 200     # its hold back
    later = acme_call("later-1", when=time.mktime(time.strptime(NEXT_YEAR, "%Y-%m-%dT%H:%M:%SZ")) + 86400 * 2)
    assert (later.price, later.effective_from) == (Decimal("2.50"), NEXT_YEAR)
    # AND a version already in force is never rewritten, nor is one written in the past
    status, body = portal("cumulus", "POST", "/accounts/cumulus/tariffs/cumulus-retail/rates",
                          {"prefix": "1555", "price": "9", "effective_from": "2020-01-01"})
    assert (status, body["error"], body["field"]) == (400, "invalid_request", "effective_from")
    # AND the scheduled version can be rescheduled (replaced) while it is still in the future
    portal.ok("cumulus", "POST", "/accounts/cumulus/tariffs/cumulus-retail/rates",
              {"prefix": "1555", "price": "2.45", "name": "USA premium", "initial": 6, "subsequent": 6,
               "effective_from": NEXT_YEAR}, status=201)
    versions = [r for r in portal.ok("cumulus", "GET", "/accounts/cumulus/tariffs/cumulus-retail")["rates"]
                if r["prefix"] == "1555"]
    assert [(v["price"], v["effective_from"]) for v in versions] == [("2.000000", "1970-01-01T00:00:00Z"),
                                                                    ("2.450000", NEXT_YEAR)]


def test_an_ended_rate_falls_back_to_the_shorter_prefix(client, demo, monkeypatch):
    monkeypatch.setenv("CASCADE_SWITCH_CACHE_SECONDS", "0")
    portal = Portal(client)
    change_at = portal.ok("cumulus", "POST", "/accounts/cumulus/tariffs/cumulus-retail/rates",
                          {"prefix": "15551", "price": "2.20", "name": "USA premium 1"}, status=201)["rate"]["effective_from"]
    assert acme_call("before-end").prefix == "15551"
    assert post_complete(client, "before-end", 0, "NO ANSWER").status_code == 200
    # a version in force cannot be replaced: the end must start in a later second than the rate it ends
    status, body = portal("cumulus", "POST", "/accounts/cumulus/tariffs/cumulus-retail/rates/15551/end",
                          {"effective_from": change_at})
    assert (status, body["error"]) in ((409, "version_in_force"), (400, "invalid_request"))   # 400: a second later
    time.sleep(max(0.0, 1.05 - (time.time() % 1)))
    ended = portal.ok("cumulus", "POST", "/accounts/cumulus/tariffs/cumulus-retail/rates/15551/end", {})
    assert ended["rate"]["ended"] is True and ended["change"]["ended"] == 1
    assert (acme_call("after-end").prefix, acme_call("after-end").price) == ("1555", Decimal("2.0"))
    # ending it again, or a prefix with no rate, is refused by name
    status, body = portal("cumulus", "POST", "/accounts/cumulus/tariffs/cumulus-retail/rates/15551/end", {})
    assert (status, body["field"]) == (400, "prefix")


def test_who_may_change_tariffs(client, demo):
    portal = Portal(client)
    # a client sells to nobody
    status, body = portal("acme", "POST", "/accounts/acme/tariffs", {"name": "Mine"})
    assert (status, body["error"]) == (403, "clients_sell_nothing")
    # another tree's reseller sees no such account
    assert portal("delta", "POST", "/accounts/cumulus/tariffs", {"name": "x"})[0] == 404
    # cumulus cannot change the package borealis charges it by (it is borealis's)
    status, body = portal("cumulus", "PATCH", "/accounts/cumulus/tariffs/cumulus-package", {"markup_percent": "1"})
    assert (status, body) == (404, {"error": "not_found", "message": "no such tariff"})
    # an ancestor may act for its reseller
    made = portal.ok("borealis", "POST", "/accounts/cumulus/tariffs", {"name": "Made by borealis"}, status=201)
    assert made["owner"] == "cumulus"
    # a markup needs a price of its own to mark up; a table has no markup
    bare = portal.ok("atlas", "POST", "/accounts/atlas/children", {"role": "reseller", "name": "No tariff yet"},
                     status=201)["id"]
    status, body = portal("atlas", "POST", f"/accounts/{bare}/tariffs", {"kind": "markup", "markup_percent": "5"})
    assert (status, body["field"]) == (400, "kind")
    status, body = portal("cumulus", "POST", "/accounts/cumulus/tariffs", {"markup_percent": "5"})
    assert (status, body["field"]) == (400, "markup_percent")


def test_a_tariff_in_use_cannot_be_deleted_until_nobody_is_charged_by_it(client, demo):
    portal = Portal(client)
    tid = portal.ok("cumulus", "POST", "/accounts/cumulus/tariffs", {"name": "Temp", "rates": [
        {"prefix": "1", "price": "0.05"}]}, status=201)["id"]
    portal.ok("cumulus", "PATCH", "/accounts/shortly", {"tariff_id": tid})
    before = table_snapshot()
    status, body = portal("cumulus", "DELETE", f"/accounts/cumulus/tariffs/{tid}")
    assert (status, body["error"], body["used_by"]) == (409, "tariff_in_use", 1)
    assert table_snapshot() == before
    portal.ok("cumulus", "PATCH", "/accounts/shortly", {"tariff_id": "cumulus-retail"})
    assert portal("cumulus", "DELETE", f"/accounts/cumulus/tariffs/{tid}")[0] == 204
    assert portal("cumulus", "GET", f"/accounts/cumulus/tariffs/{tid}")[0] == 404
    assert not [k for k in table_snapshot() if k[0] == f"TRF#{tid}"]


DECK = ("prefix,name,price,connect_fee,minimum,initial,subsequent\n"
        "1,USA/Canada,0.021,0,0,6,6\n"              # changed (was 0.02)
        "1555,USA demo exchange,2.0,0,0,1,1\n"      # unchanged
        "44,United Kingdom,0.03,0,0,60,60\n"        # unchanged
        "49,Germany,0.04,0,0,60,60\n")              # added; 447 is left out: ended


def test_a_deck_dry_run_reports_and_writes_nothing_then_applies_once(client, demo):
    portal = Portal(client)
    before = table_snapshot()
    status, report = put_deck(portal, "cumulus", "cumulus", "cumulus-retail", DECK,
                              f"?dry_run=true&effective_from={NEXT_YEAR}")
    assert status == 200 and report["dry_run"] is True
    assert (report["added"], report["changed"], report["ended"], report["unchanged"]) == (1, 1, 1, 2)
    assert report["sample"] == {"added": ["49"], "changed": ["1"], "ended": ["447"]}
    assert table_snapshot() == before
    status, applied = put_deck(portal, "cumulus", "cumulus", "cumulus-retail", DECK, f"?effective_from={NEXT_YEAR}")
    assert status == 200 and dict(applied, dry_run=True) == report
    # the same deck again changes nothing
    status, again = put_deck(portal, "cumulus", "cumulus", "cumulus-retail", DECK, f"?effective_from={NEXT_YEAR}")
    assert (again["added"], again["changed"], again["ended"], again["unchanged"]) == (0, 0, 0, 4)
    status, text, _ = csv_request(portal, "cumulus", "GET", f"/accounts/cumulus/tariffs/cumulus-retail/deck?at={NEXT_YEAR}")
    assert [line.split(",")[0] for line in text.splitlines()[1:]] == ["1", "1555", "44", "49"]


def test_a_bad_deck_is_refused_whole_with_every_bad_line_numbered(client, demo):
    portal = Portal(client)
    before = table_snapshot()
    deck = "prefix,name,price\n1,USA,0.02\n44x,UK,0.03\n49,Germany,lots\n50,=cmd(),0.01\n"
    status, body = put_deck(portal, "cumulus", "cumulus", "cumulus-retail", deck)
    assert (status, body["error"], body["failed_lines"]) == (400, "invalid_deck", 3)
    assert [(e["line"], e["field"]) for e in body["errors"]] == [(3, "prefix"), (4, "price"), (5, "name")]
    assert table_snapshot() == before
    status, body = put_deck(portal, "cumulus", "cumulus", "cumulus-retail", "prefix,cost\n1,2\n")
    assert (status, body["errors"][0]["line"]) == (400, 1)


def test_export_then_import_into_a_fresh_tariff_gives_the_same_tariff(client, demo):
    portal = Portal(client)
    portal.ok("cumulus", "POST", "/accounts/cumulus/tariffs/cumulus-retail/rates",
              {"prefix": "44", "price": "0.035", "name": "UK", "effective_from": NEXT_YEAR}, status=201)
    portal.ok("cumulus", "POST", "/accounts/cumulus/tariffs/cumulus-retail/rates/447/end",
              {"effective_from": NEXT_YEAR})
    _, exported, _ = csv_request(portal, "cumulus", "GET", "/accounts/cumulus/tariffs/cumulus-retail/deck")
    fresh = portal.ok("cumulus", "POST", "/accounts/cumulus/tariffs", {"name": "Copy"}, status=201)["id"]
    status, report = put_deck(portal, "cumulus", "cumulus", fresh, exported)
    assert status == 200, report
    _, again, _ = csv_request(portal, "cumulus", "GET", f"/accounts/cumulus/tariffs/{fresh}/deck")
    assert again == exported and len(exported.splitlines()) == 7
    original = portal.ok("cumulus", "GET", "/accounts/cumulus/tariffs/cumulus-retail")["rates"]
    assert portal.ok("cumulus", "GET", f"/accounts/cumulus/tariffs/{fresh}")["rates"] == original


def test_cloning_the_tariff_a_reseller_is_charged_by_copies_its_prices_never_the_parents_cost(client, demo):
    portal = Portal(client)
    # cumulus is charged by borealis's markup package over borealis's own price (borealis-buys)
    clone = portal.ok("cumulus", "POST", "/accounts/cumulus/tariffs", {"clone_from": "cumulus-package"}, status=201)
    assert clone["kind"] == "table" and clone["owner"] == "cumulus"
    rates = {r["prefix"]: r["price"] for r in portal.ok("cumulus", "GET", f"/accounts/cumulus/tariffs/{clone['id']}")["rates"]}
    _, prices, _ = csv_request(portal, "cumulus", "GET", "/accounts/cumulus/price-list")
    listed = {line.split(",")[0]: line.split(",")[2] for line in prices.splitlines()[1:]}
    assert rates == listed and rates
    cost = {r["prefix"]: r["price"] for r in portal.ok("admin", "GET", "/accounts/atlas/tariffs/borealis-buys")["rates"]}
    assert all(rates[p] != cost[p] for p in rates if p in cost)          # marked up, not the cost itself
    # a tariff neither its own nor the one it is charged by cannot be cloned
    status, body = portal("cumulus", "POST", "/accounts/cumulus/tariffs", {"clone_from": "borealis-buys"})
    assert (status, body["field"]) == (400, "clone_from")
    # its own clones keep every version
    own = portal.ok("cumulus", "POST", "/accounts/cumulus/tariffs", {"clone_from": "cumulus-retail"}, status=201)
    assert portal.ok("cumulus", "GET", f"/accounts/cumulus/tariffs/{own['id']}")["rates"] == \
        portal.ok("cumulus", "GET", "/accounts/cumulus/tariffs/cumulus-retail")["rates"]


def test_the_documented_walk_through_answers_as_section_16_says(client, demo):
    """docs/portal-api.md, section 16 (its January is the next one here, and import times are now)."""
    import re
    portal = Portal(client)
    january = NEXT_YEAR[:10]

    def timeless(text: str) -> str:
        return re.sub(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", lambda m: "JAN" if m.group(0).startswith(january)
                      else "NOW", text)
    gold = portal.ok("atlas", "POST", "/accounts/atlas/tariffs", {"name": "Atlas wholesale 2027"}, status=201)["id"]
    deck = ("prefix,name,price,connect_fee,initial,subsequent\n1,USA/Canada,0.009,0,6,6\n"
            "1555,USA demo exchange,1.1,0,1,1\n44,United Kingdom,0.014,0,60,60\n"
            "447,United Kingdom mobile,0.038,0,60,60\n49,Germany,0.012,0,60,60\n")
    _, dry = put_deck(portal, "atlas", "atlas", gold, deck, "?dry_run=true")
    assert {k: dry[k] for k in ("added", "changed", "ended", "unchanged", "sample", "mode", "dry_run")} == {
        "added": 5, "changed": 0, "ended": 0, "unchanged": 0, "mode": "replace", "dry_run": True,
        "sample": {"added": ["1", "1555", "44", "447", "49"], "changed": [], "ended": []}}
    assert put_deck(portal, "atlas", "atlas", gold, deck)[1]["added"] == 5
    status, bad = put_deck(portal, "atlas", "atlas", gold, "prefix,price\n1,0.01\n4x,0.02\n49,\n")
    assert (status, bad) == (400, {"error": "invalid_deck", "message": "2 line(s) of the deck are not valid; nothing "
                                   "was applied", "field": "body", "failed_lines": 2, "errors": [
                                       {"line": 3, "field": "prefix", "message": "must be 1 to 20 digits"},
                                       {"line": 4, "field": "price", "message": "is required"}]})
    rate = portal.ok("atlas", "POST", f"/accounts/atlas/tariffs/{gold}/rates", {
        "prefix": "44", "name": "United Kingdom", "price": "0.016", "effective_from": january}, status=201)["rate"]
    assert rate == {"prefix": "44", "name": "United Kingdom", "price": "0.016000", "connect_fee": "0.000000",
                    "minimum": 0, "initial": 60, "subsequent": 60, "effective_from": NEXT_YEAR}
    end = portal.ok("atlas", "POST", f"/accounts/atlas/tariffs/{gold}/rates/49/end", {"effective_from": january})
    assert end["change"] == {"added": 0, "changed": 0, "ended": 1, "unchanged": 0, "effective_from": NEXT_YEAR,
                             "sample": {"added": [], "changed": [], "ended": ["49"]}, "mode": "merge",
                             "dry_run": False}
    assert portal.ok("atlas", "PATCH", "/accounts/borealis", {"tariff_id": gold})["tariff_id"] == gold
    _, exported, _ = csv_request(portal, "atlas", "GET", f"/accounts/atlas/tariffs/{gold}/deck")
    assert timeless(exported).splitlines() == [
        "prefix,name,price,connect_fee,minimum,initial,subsequent,effective_from,ended",
        "1,USA/Canada,0.009000,0.000000,0,6,6,NOW,", "1555,USA demo exchange,1.100000,0.000000,0,1,1,NOW,",
        "44,United Kingdom,0.014000,0.000000,0,60,60,NOW,", "44,United Kingdom,0.016000,0.000000,0,60,60,JAN,",
        "447,United Kingdom mobile,0.038000,0.000000,0,60,60,NOW,", "49,Germany,0.012000,0.000000,0,60,60,NOW,",
        "49,,,,,,,JAN,yes"]
    _, prices, _ = csv_request(portal, "atlas", "GET", f"/accounts/cumulus/price-list?at={january[:4]}-01-02")
    assert timeless(prices).splitlines() == [
        "prefix,name,price,connect_fee,minimum,initial,subsequent,effective_from,ended",
        "1,USA/Canada,0.010800,0.000000,0,6,6,NOW,", "1555,USA demo exchange,1.320000,0.000000,0,1,1,NOW,",
        "44,United Kingdom,0.019200,0.000000,0,60,60,JAN,", "447,United Kingdom mobile,0.045600,0.000000,0,60,60,NOW,"]
    status, body = portal("atlas", "DELETE", f"/accounts/atlas/tariffs/{gold}")
    assert (status, body["error"], body["used_by"]) == (409, "tariff_in_use", 1)
    status, body = portal("atlas", "POST", "/accounts/atlas/tariffs/borealis-buys/rates",
                          {"prefix": "1", "price": "0.02", "effective_from": "2020-01-01"})
    assert (status, body["field"]) == (400, "effective_from")


def test_a_large_tariff_is_read_a_page_at_a_time_in_prefix_order(client, demo):
    portal = Portal(client)
    tid = portal.ok("cumulus", "POST", "/accounts/cumulus/tariffs", {"name": "Paged"}, status=201)["id"]
    deck = "prefix,price\n" + "".join(f"{p},0.01\n" for p in [f"44{n:04d}" for n in range(2500)] + ["1", "45"])
    assert put_deck(portal, "cumulus", "cumulus", tid, deck)[0] == 200
    seen, cursor, pages = [], None, 0
    while True:
        page = portal.ok("cumulus", "GET", f"/accounts/cumulus/tariffs/{tid}?limit=1000"
                         + (f"&cursor={cursor}" if cursor else ""))
        seen += [r["prefix"] for r in page["rates"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 2502 and 2 <= pages <= 4
    status, body = portal("cumulus", "GET", f"/accounts/cumulus/tariffs/{tid}?cursor=bm90LWEtY3Vyc29y")
    assert (status, body["field"]) == (400, "cursor")


def test_concurrent_rate_changes_to_one_region_are_never_lost(demo):
    """Two writers rewrite the same rate region at once: the header's revision makes the second re-plan
    from what the first wrote, so every rate of both arrives (without it, one region rewrite would
    overwrite the other's)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from chalicelib.bootstrap import container
    from chalicelib.domain.access import Principal
    from chalicelib.services.portal import Portal as PortalCases
    c = container()
    cases = PortalCases(c.store, None, c.clock)
    me = Principal("cumulus", "reseller", "admin/atlas/borealis/cumulus")
    tid = cases.create_tariff(me, "cumulus", {"name": "Race"}).id
    barrier = threading.Barrier(2)

    def writer(digit: str):
        barrier.wait()
        for n in range(15):
            cases.add_rate(me, "cumulus", tid, {"prefix": f"4420{digit}{n:02d}", "price": "0.01"})
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(writer, ["1", "2"]))
    book = c.store.read_rates(tid).book
    assert sorted(book) == sorted(f"4420{d}{n:02d}" for d in "12" for n in range(15))
