"""The portal's tariff reads: an account's own price lists, behind the wall (isolation matrix too)."""
from tests.integration.helpers import client  # noqa: F401
from tests.integration.portal_helpers import Portal


def test_a_reseller_reads_the_tariffs_it_sells_with_and_its_ancestors_read_them_too(client, demo):
    portal = Portal(client)
    mine = portal.ok("cumulus", "GET", "/accounts/cumulus/tariffs")
    assert [t["id"] for t in mine["items"]] == ["cumulus-retail"] and mine["next_cursor"] is None
    assert mine["items"][0]["owner"] == "cumulus" and mine["items"][0]["kind"] == "table"
    assert portal.ok("borealis", "GET", "/accounts/cumulus/tariffs") == mine          # an ancestor
    assert [t["id"] for t in portal.ok("borealis", "GET", "/accounts/borealis/tariffs")["items"]] == \
        ["cumulus-package"]
    # the client sells to nobody
    assert portal.ok("acme", "GET", "/accounts/acme/tariffs") == {"items": [], "next_cursor": None}


def test_a_tariff_shows_every_rate_version_and_never_a_parents_cost(client, demo):
    portal = Portal(client)
    retail = portal.ok("cumulus", "GET", "/accounts/cumulus/tariffs/cumulus-retail")
    assert retail["id"] == "cumulus-retail" and retail["rates"]
    assert all({"prefix", "price", "effective_from", "initial", "subsequent"} <= set(r) for r in retail["rates"])
    assert [r["prefix"] for r in retail["rates"]] == sorted(r["prefix"] for r in retail["rates"])
    # cumulus is charged through borealis's package, owned by borealis: not readable as cumulus's own...
    status, body = portal("cumulus", "GET", "/accounts/cumulus/tariffs/cumulus-package")
    assert (status, body) == (404, {"error": "not_found", "message": "no such tariff"})
    # ...nor through borealis, above cumulus's wall: the same 404 as an account that does not exist
    status, body = portal("cumulus", "GET", "/accounts/borealis/tariffs/cumulus-package")
    assert (status, body) == (404, {"error": "not_found", "message": "no such account"})
    status, _ = portal("borealis", "GET", "/accounts/borealis/tariffs/no-such-tariff")
    assert status == 404


def test_tariff_lists_page_with_a_cursor(client, demo):
    from decimal import Decimal
    from chalicelib.adapters.dynamo.writer import tariff_items
    from chalicelib.domain.tariffs import Rate, Tariff
    for n in range(3):
        for item in tariff_items(Tariff(f"extra-{n}", owner="cumulus"), [Rate("1", Decimal("1"))]):
            item.save()
    portal = Portal(client)
    first = portal.ok("cumulus", "GET", "/accounts/cumulus/tariffs?limit=2")
    second = portal.ok("cumulus", "GET", f"/accounts/cumulus/tariffs?limit=2&cursor={first['next_cursor']}")
    rest = portal.ok("cumulus", "GET", f"/accounts/cumulus/tariffs?limit=2&cursor={second['next_cursor']}") \
        if second["next_cursor"] else {"items": []}
    ids = [t["id"] for page in (first, second, rest) for t in page["items"]]
    assert ids == ["cumulus-retail", "extra-0", "extra-1", "extra-2"]


def test_the_documented_example_is_what_the_api_answers(client, demo):
    # docs/portal-api.md, section 15
    portal = Portal(client)
    assert [{k: t[k] for k in ("id", "kind", "owner")} for t in portal.ok("cumulus", "GET", "/accounts/cumulus/tariffs")["items"]] == \
        [{"id": "cumulus-retail", "kind": "table", "owner": "cumulus"}]
    assert portal.ok("cumulus", "GET", "/accounts/cumulus/tariffs/cumulus-retail")["rates"][0] == {
        "prefix": "1", "name": "USA/Canada", "price": "0.020000", "connect_fee": "0.000000", "minimum": 0,
        "initial": 6, "subsequent": 6, "effective_from": "1970-01-01T00:00:00Z"}


def test_an_oversized_tariff_id_is_a_404_and_never_reaches_the_table(client, demo, monkeypatch):
    # DynamoDB refuses a partition key over 2,048 bytes (a 500); moto does not, so the test watches the reads
    from chalicelib.adapters.dynamo.store import DynamoStore
    asked = []
    real = DynamoStore.tariff_header
    monkeypatch.setattr(DynamoStore, "tariff_header", lambda self, tid: asked.append(tid) or real(self, tid))
    status, body = Portal(client)("cumulus", "GET", "/accounts/cumulus/tariffs/" + "x" * 3000)
    assert (status, body) == (404, {"error": "not_found", "message": "no such tariff"}) and asked == []
    assert Portal(client).ok("cumulus", "GET", "/accounts/cumulus/tariffs/cumulus-retail")["id"] == "cumulus-retail"
    assert asked == ["cumulus-retail"]
