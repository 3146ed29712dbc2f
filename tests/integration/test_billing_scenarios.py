"""Worked billing examples over the whole switch path (Chalice route -> services -> DynamoDB on moto).

Prices used (demo/seed.json, prefix 1555 "USA demo exchange", all 1 s / 1 s increments):
    admin  (carrier cost)          0.30 /min
    atlas  buys from admin         0.60 /min
    borealis buys from atlas       1.20 /min
    cumulus buys from borealis     markup tariff: 1.20 x 1.20 = 1.44 /min
    acme, shortly buy from cumulus 2.00 /min
    delta buys from admin          0.90 /min (commission reseller, 10 %); echo pays delta's tariff
"""
import json
from decimal import Decimal as D

import pytest

from tests.conftest import demo_seed, load
from tests.integration.helpers import (ALL_DEMO, DEMO_CHAIN, account, assert_ledger_invariant, body_of,
                                       call_entries, cdrs, client, ledger, postings_to, post_authorize,  # noqa: F401
                                       post_complete, seed_account)

NUMBER = "15551230001"


def by_account(rows):
    return {r.account_id: r for r in rows}


# --- 1. the demo chain, one answered minute ------------------------------------------------------

def test_demo_chain_authorize_holds_every_charged_level_and_complete_bills_each_at_its_own_price(client):
    # GIVEN the demo seed
    load(demo_seed())

    # WHEN SIP 1001 (acme) dials 15551230001
    r = post_authorize(client, "1001", NUMBER, "call-1@pbx")

    # THEN it is granted; max_duration is set by acme's funds: 20.00 / (2.00/60) = 600 s
    #   (cumulus 200 / (1.44/60) = 8333 s, borealis 600 / (1.2/60) = 30000 s, atlas 1000 / (0.6/60) = 100000 s,
    #    the tree cap 10800 s)
    assert r.status_code == 200, r.body
    grant = body_of(r)
    assert grant["authorized"] is True
    assert grant["max_duration"] == 600
    assert grant["call_id"] == "call-1@pbx"
    assert grant["number"] == NUMBER and grant["prefix"] == "1555"
    assert D(grant["rate"]) == D("2.0") and D(grant["connect_fee"]) == 0
    assert grant["increments"] == [1, 1]

    # AND each charged level holds its price for 600 s:
    #   acme 2.00 x 10 = 20.00, cumulus 1.44 x 10 = 14.40, borealis 1.20 x 10 = 12.00, atlas 0.60 x 10 = 6.00
    expected_holds = {"acme": D("20.00"), "cumulus": D("14.40"), "borealis": D("12.00"), "atlas": D("6.00")}
    # available = balance (+ credit for postpaid borealis) - held
    expected_available = {"acme": D("0.00"), "cumulus": D("185.60"), "borealis": D("588.00"),
                          "atlas": D("994.00")}
    for name, hold in expected_holds.items():
        item = account(name)
        assert item.held == hold, name
        assert item.available == expected_available[name], name
        assert item.active_calls == 1, name
    # the root is not charged inside Cascade: no hold, no call counted
    admin = account("admin")
    assert admin.held == 0 and admin.active_calls == 0

    # WHEN the call ends after 60 s, answered
    r = post_complete(client, "call-1@pbx", 60, "ANSWERED")

    # THEN every level pays one minute at its own price
    assert r.status_code == 200, r.body
    result = body_of(r)
    assert D(result["charged"]) == D("2.00")
    assert result["over_max"] is False and result["late"] is False
    assert [lvl["account_id"] for lvl in result["levels"]] == list(DEMO_CHAIN)
    assert [D(lvl["cost"]) for lvl in result["levels"]] == [D("2.00"), D("1.44"), D("1.20"), D("0.60"), D("0.30")]

    # balances: acme 20 - 2.00 = 18.00; cumulus 200 - 1.44 = 198.56; borealis 500 - 1.20 = 498.80;
    #           atlas 1000 - 0.60 = 999.40; admin untouched
    expected_balance = {"acme": D("18.00"), "cumulus": D("198.56"), "borealis": D("498.80"),
                        "atlas": D("999.40"), "admin": D("0")}
    for name, balance in expected_balance.items():
        item = account(name)
        assert item.balance == balance, name
        assert item.held == 0, name
        assert item.active_calls == 0, name

    # AND one CDR per level, each at its own buy / sell:
    #   acme      buy 2.00
    #   cumulus   buy 1.44  sell 2.00  profit 2.00 - 1.44 = 0.56
    #   borealis  buy 1.20  sell 1.44  profit 1.44 - 1.20 = 0.24
    #   atlas     buy 0.60  sell 1.20  profit 1.20 - 0.60 = 0.60
    #   admin     buy 0.30  sell 0.60  profit 0.60 - 0.30 = 0.30
    expected_cdr = {"acme": (D("2.00"), None, None), "cumulus": (D("1.44"), D("2.00"), D("0.56")),
                    "borealis": (D("1.20"), D("1.44"), D("0.24")), "atlas": (D("0.60"), D("1.20"), D("0.60")),
                    "admin": (D("0.30"), D("0.60"), D("0.30"))}
    for name, (buy, sell, profit) in expected_cdr.items():
        rows = cdrs(name)
        assert len(rows) == 1, name
        row = rows[0]
        assert (row.buy, row.sell, row.profit) == (buy, sell, profit), name
        assert row.call_id == "call-1@pbx" and row.client_id == "acme"
        assert row.billsec == 60 and row.billed_seconds == 60 and row.disposition == "ANSWERED"
        assert row.prefix == "1555" and row.over_max is False

    # the levels' profits add up to what the client paid less the carrier: 0.56 + 0.24 + 0.60 + 0.30 = 2.00 - 0.30
    assert sum(cdrs(name)[0].profit for name in DEMO_CHAIN[1:]) == D("2.00") - D("0.30")

    # AND one 'call' ledger entry per charged level, none for the root
    for name, amount in (("acme", "-2.00"), ("cumulus", "-1.44"), ("borealis", "-1.20"), ("atlas", "-0.60")):
        entries = call_entries(name)
        assert [(e.entry_kind, e.amount, e.ref) for e in entries] == [("call", D(amount), "call-1@pbx")], name
    assert ledger("admin") == []

    assert_ledger_invariant(ALL_DEMO)


# --- 4. unanswered calls ----------------------------------------------------------------------------

@pytest.mark.parametrize("disposition", ["BUSY", "NO ANSWER", "FAILED"])
def test_unanswered_call_charges_nobody_releases_holds_and_still_writes_cdrs(client, disposition):
    # GIVEN the demo seed and an authorized call from acme
    load(demo_seed())
    assert post_authorize(client, "1001", NUMBER, "unanswered-1").status_code == 200
    assert account("acme").held == D("20.00")

    # WHEN it ends unanswered (a billsec the switch may still report is ignored)
    r = post_complete(client, "unanswered-1", 30, disposition)

    # THEN nothing is charged at any level and every hold is released
    assert r.status_code == 200, r.body
    result = body_of(r)
    assert D(result["charged"]) == 0
    assert all(D(lvl["cost"]) == 0 and lvl["billed_seconds"] == 0 for lvl in result["levels"])
    opening = {"acme": D("20.00"), "cumulus": D("200.00"), "borealis": D("500.00"), "atlas": D("1000.00")}
    for name, balance in opening.items():
        item = account(name)
        assert item.balance == balance and item.held == 0 and item.active_calls == 0, name
        assert call_entries(name) == [], name
    assert account("borealis").available == D("600.00")   # 500 + credit 100

    # AND a CDR row per level says so, with nothing billed
    for name in DEMO_CHAIN:
        rows = cdrs(name)
        assert len(rows) == 1, name
        assert rows[0].disposition == disposition and rows[0].billsec == 30
        assert rows[0].billed_seconds == 0 and rows[0].buy == 0, name

    assert_ledger_invariant(DEMO_CHAIN)


# --- 5. billsec over the granted duration -------------------------------------------------------------

def test_billsec_over_max_duration_is_billed_in_full_and_flagged(client):
    # GIVEN shortly (SIP 1002: 0.20 at 2.00/min, 1 s increments) granted 0.20 / (2.00/60) = 6 s
    load(demo_seed())
    r = post_authorize(client, "1002", NUMBER, "over-1")
    assert r.status_code == 200 and body_of(r)["max_duration"] == 6

    # WHEN the switch reports 10 s (it did not cut the call)
    r = post_complete(client, "over-1", 10, "ANSWERED")

    # THEN all 10 s are billed at every level and the completion is flagged
    #   shortly 2.00 x 10/60 = 0.333333 (6 places, half up); cumulus 1.44 x 10/60 = 0.24;
    #   borealis 1.20 x 10/60 = 0.20; atlas 0.60 x 10/60 = 0.10; admin 0.30 x 10/60 = 0.05
    assert r.status_code == 200, r.body
    result = body_of(r)
    assert result["over_max"] is True
    assert D(result["charged"]) == D("0.333333")
    expected = {"shortly": D("0.333333"), "cumulus": D("0.24"), "borealis": D("0.20"), "atlas": D("0.10"),
                "admin": D("0.05")}
    for name, cost in expected.items():
        rows = cdrs(name)
        assert len(rows) == 1 and rows[0].over_max is True and rows[0].buy == cost, name
        assert rows[0].billed_seconds == 10
    # shortly's hold (0.20) is released and its balance goes below zero: 0.20 - 0.333333 = -0.133333
    shortly = account("shortly")
    assert shortly.balance == D("-0.133333") and shortly.held == 0
    assert account("cumulus").balance == D("199.76")          # 200 - 0.24

    assert_ledger_invariant(("shortly", "cumulus", "borealis", "atlas", "admin"))


# --- 6. commission reseller ---------------------------------------------------------------------------

def test_commission_reseller_client_pays_parent_tariff_and_reseller_is_credited_commission(client):
    # GIVEN echo (SIP 2001) under delta, a commission reseller (10 %) that sets no prices:
    #   echo pays delta's own tariff, delta-buys 0.90/min for 1555
    load(demo_seed())

    # WHEN echo dials
    r = post_authorize(client, "2001", NUMBER, "echo-1")

    # THEN it is granted 10.00 / (0.90/60) = 666.67 -> 666 s (0.90 x 666/60 = 9.99 fits, 667 s = 10.005 does not)
    assert r.status_code == 200, r.body
    grant = body_of(r)
    assert grant["max_duration"] == 666 and D(grant["rate"]) == D("0.9")
    # holds: echo 9.99; delta's net charge 9.99 - 10 % = 8.991
    assert account("echo").held == D("9.99")
    assert account("delta").held == D("8.991")

    # WHEN the call lasts 60 s
    r = post_complete(client, "echo-1", 60, "ANSWERED")
    assert r.status_code == 200, r.body

    # THEN echo pays 0.90; delta pays 0.90 to admin and is credited 0.09: net 0.81
    assert account("echo").balance == D("9.10")              # 10.00 - 0.90
    assert account("delta").balance == D("99.19")            # 100.00 - 0.90 + 0.09
    assert account("delta").held == 0 and account("echo").held == 0
    # delta's wallet moves once, by its net charge: it pays 0.90 and is credited 0.09 (one entry, the call's)
    assert [(e.entry_kind, e.amount) for e in call_entries("delta")] == [("call", D("-0.81"))]
    assert [(e.entry_kind, e.amount) for e in postings_to("sales:admin")] == [("call", D("0.81") - D("0.30"))]
    assert [(e.entry_kind, e.amount) for e in call_entries("echo")] == [("call", D("-0.90"))]

    # AND delta's CDR: buy 0.90, sell 0.90, commission 0.09, profit 0.90 - 0.90 + 0.09 = 0.09
    (delta_cdr,) = cdrs("delta")
    assert (delta_cdr.buy, delta_cdr.sell, delta_cdr.commission, delta_cdr.profit) == \
        (D("0.90"), D("0.90"), D("0.09"), D("0.09"))
    # admin: buy 0.30 (carrier); it takes 0.90 from delta but credits back the 0.09 commission, so its
    #   sell is 0.90 - 0.09 = 0.81 and its profit 0.81 - 0.30 = 0.51 (settlement.py, commit e933119)
    (admin_cdr,) = cdrs("admin")
    assert (admin_cdr.buy, admin_cdr.sell, admin_cdr.profit) == (D("0.30"), D("0.81"), D("0.51"))
    # the tree's profits add up to what the client paid less the carrier: 0.09 + 0.51 = 0.90 - 0.30
    assert delta_cdr.profit + admin_cdr.profit == D("0.90") - D("0.30")

    assert_ledger_invariant(("echo", "delta", "admin"))


# --- 7. a postpaid reseller short of credit -------------------------------------------------------------

def test_postpaid_reseller_near_its_credit_limit_limits_max_duration_by_its_own_price(client):
    # GIVEN borealis postpaid with credit limit 100 and balance -95: available -95 + 100 = 5.00
    seed = demo_seed()
    seed_account(seed, "borealis")["balance"] = "-95.00"
    load(seed)
    assert account("borealis").available == D("5.00")

    # WHEN acme dials
    r = post_authorize(client, "1001", NUMBER, "postpaid-1")

    # THEN max_duration is borealis's: 5.00 / (1.20/60) = 250 s (acme alone could afford 600 s)
    assert r.status_code == 200, r.body
    assert body_of(r)["max_duration"] == 250
    # holds for 250 s: borealis 1.20 x 250/60 = 5.00; acme 2.00 x 250/60 = 8.333333;
    #                  cumulus 1.44 x 250/60 = 6.00; atlas 0.60 x 250/60 = 2.50
    assert account("borealis").held == D("5.00") and account("borealis").available == 0
    assert account("acme").held == D("8.333333")
    assert account("cumulus").held == D("6.00")
    assert account("atlas").held == D("2.50")

    # WHEN the call uses all 250 s
    assert post_complete(client, "postpaid-1", 250, "ANSWERED").status_code == 200

    # THEN borealis is at its floor: -95 - 5.00 = -100.00 (= -credit limit), and nothing more is granted
    borealis = account("borealis")
    assert borealis.balance == D("-100.00") and borealis.available == 0
    r = post_authorize(client, "1001", NUMBER, "postpaid-2")
    assert r.status_code == 402 and body_of(r) == {"authorized": False, "reason": "insufficient_funds"}

    assert_ledger_invariant(DEMO_CHAIN)


# --- 8. a soft-prepaid client ----------------------------------------------------------------------------

def test_soft_prepaid_client_with_no_balance_is_authorized_and_goes_negative(client):
    # GIVEN shortly as prepaid_soft with balance 0
    seed = demo_seed()
    seed_account(seed, "shortly").update(billing_type="prepaid_soft", balance="0")
    load(seed)

    # WHEN it dials
    r = post_authorize(client, "1002", NUMBER, "soft-1")

    # THEN it is granted; its own funds do not limit, its parents' do:
    #   cumulus 200 / (1.44/60) = 8333.3 -> 8333 s (1.44 x 8333/60 = 199.992; 8334 s = 200.016)
    assert r.status_code == 200, r.body
    assert body_of(r)["max_duration"] == 8333
    # shortly still holds its charge for 8333 s: 2.00 x 8333/60 = 277.766667
    shortly = account("shortly")
    assert shortly.held == D("277.766667") and shortly.available == D("-277.766667")

    # WHEN 60 s are answered
    assert post_complete(client, "soft-1", 60, "ANSWERED").status_code == 200

    # THEN its balance goes to 0 - 2.00 = -2.00, holds released
    shortly = account("shortly")
    assert shortly.balance == D("-2.00") and shortly.held == 0 and shortly.available == D("-2.00")
    assert account("cumulus").balance == D("198.56")

    assert_ledger_invariant(("shortly", "cumulus", "borealis", "atlas", "admin"))


def test_soft_prepaid_client_is_still_refused_when_a_parent_has_no_funds(client):
    # GIVEN shortly soft-prepaid, but its reseller cumulus (prepaid) at 0
    seed = demo_seed()
    seed_account(seed, "shortly").update(billing_type="prepaid_soft", balance="0")
    seed_account(seed, "cumulus")["balance"] = "0"
    load(seed)

    # WHEN it dials THEN it is refused for funds, and nothing is held
    r = post_authorize(client, "1002", NUMBER, "soft-2")
    assert r.status_code == 402 and body_of(r)["reason"] == "insufficient_funds"
    for name in ("shortly", "cumulus", "borealis", "atlas"):
        assert account(name).held == 0 and account(name).active_calls == 0, name

    assert_ledger_invariant(("shortly", "cumulus", "borealis", "atlas", "admin"))


# --- 11. deep chains --------------------------------------------------------------------------------

def deep_seed(resellers: int, max_depth: int = 8) -> dict:
    """admin -> r1 -> ... -> rN -> client "deep" (SIP 3001), prefix 1555 at 1 s / 1 s:
    admin's carrier cost 0.30/min; r1 buys at 0.40, r2 at 0.50, ... rN at 0.30 + N x 0.10;
    the client buys at 0.30 + (N+1) x 0.10. Every reseller balance 100.00, the client 10.00."""
    def rate(price):
        return [{"prefix": "1555", "name": "demo", "price": str(price), "initial": 1, "subsequent": 1}]

    tariffs = [{"id": "t-admin", "owner": "admin", "rates": rate(D("0.30"))}]
    accounts = [{"id": "admin", "role": "admin", "tariff": "t-admin"}]
    parent = "admin"
    for n in range(1, resellers + 1):
        tariffs.append({"id": f"t-r{n}", "owner": parent, "rates": rate(D("0.30") + n * D("0.10"))})
        accounts.append({"id": f"r{n}", "role": "reseller", "parent": parent, "tariff": f"t-r{n}",
                         "balance": "100.00"})
        parent = f"r{n}"
    tariffs.append({"id": "t-client", "owner": parent, "rates": rate(D("0.30") + (resellers + 1) * D("0.10"))})
    accounts.append({"id": "deep", "role": "client", "parent": parent, "tariff": "t-client",
                     "balance": "10.00", "sip_users": ["3001"]})
    settings = dict(demo_seed()["settings"], max_depth=max_depth)
    return {"settings": settings, "tariffs": tariffs, "accounts": accounts,
            "switch_keys": demo_seed()["switch_keys"]}


def test_chain_of_eight_resellers_authorizes_and_bills_every_level(client):
    # GIVEN a tree with max_depth 8 and a client 8 resellers below the root
    load(deep_seed(8))

    # WHEN its client dials
    r = post_authorize(client, "3001", NUMBER, "deep-1")

    # THEN it is granted: the client pays 0.30 + 9 x 0.10 = 1.20/min, 10.00 / (1.20/60) = 500 s
    #   (each reseller: 100 / (<= 1.10/60) > 5000 s)
    assert r.status_code == 200, r.body
    assert body_of(r)["max_duration"] == 500
    # holds for 500 s: client 1.20 x 500/60 = 10.00; r8 1.10 x 500/60 = 9.166667 ...
    assert account("deep").held == D("10.00")
    assert account("r8").held == D("9.166667")
    assert account("r1").held == D("3.333333")      # 0.40 x 500/60
    for n in range(1, 9):
        assert account(f"r{n}").active_calls == 1

    # WHEN 60 s are answered
    r = post_complete(client, "deep-1", 60, "ANSWERED")
    assert r.status_code == 200, r.body

    # THEN each level pays one minute of its own price: client 1.20, r8 1.10, ..., r1 0.40; each reseller's
    #   profit is 0.10 (what its child paid it less what it paid), the admin's 0.40 - 0.30 = 0.10
    assert account("deep").balance == D("8.80")
    for n in range(1, 9):
        price = D("0.30") + n * D("0.10")
        item = account(f"r{n}")
        assert item.balance == D("100.00") - price and item.held == 0 and item.active_calls == 0, n
        (row,) = cdrs(f"r{n}")
        assert row.buy == price and row.profit == D("0.10"), n
    (admin_cdr,) = cdrs("admin")
    assert admin_cdr.buy == D("0.30") and admin_cdr.profit == D("0.10")

    assert_ledger_invariant(["deep", "admin"] + [f"r{n}" for n in range(1, 9)])


def test_chain_deeper_than_max_depth_is_refused_when_loading_the_seed(aws):
    from chalicelib.services.seed import InvalidSeed, parse_seed

    # GIVEN 9 resellers under a root whose max_depth is 8
    # THEN the seed does not parse (and so nothing is written)
    with pytest.raises(InvalidSeed) as info:
        parse_seed(json.dumps(deep_seed(9, max_depth=8)))
    assert "max depth 8" in str(info.value)
    # while exactly 8 is fine
    parse_seed(json.dumps(deep_seed(8, max_depth=8)))


# --- increments, connect fees, sub-cent rounding, dialled formats ------------------------------------------

def test_uk_mobile_call_with_connect_fee_and_minute_increments_dialled_with_an_access_code(client):
    # GIVEN the demo seed; prefix 447 (UK mobile):
    #   acme pays cumulus 0.09/min, 60 s / 60 s increments, connect fee 0.05
    #   cumulus pays borealis 0.04 x 1.2 = 0.048/min (markup of borealis's 1 s / 1 s rate)
    #   borealis pays atlas 0.04, atlas pays admin 0.03, admin's cost 0.02 (all 1 s / 1 s)
    load(demo_seed())

    # WHEN acme dials it the US way: 011 (international access code) 44 7700 900123
    r = post_authorize(client, "1001", "011 44 7700 900123", "uk-1")

    # THEN the number is normalized and the tree's cap is granted:
    #   acme for 10800 s: 0.05 + 0.09 x 180 min = 16.25 <= 20.00
    assert r.status_code == 200, r.body
    grant = body_of(r)
    assert grant["number"] == "447700900123" and grant["prefix"] == "447"
    assert grant["max_duration"] == 10800
    assert D(grant["connect_fee"]) == D("0.05") and grant["increments"] == [60, 60]
    assert account("acme").held == D("16.25")
    assert account("cumulus").held == D("8.64")          # 0.048 x 180

    # WHEN 61 s are answered
    r = post_complete(client, "uk-1", 61, "ANSWERED")
    assert r.status_code == 200, r.body

    # THEN acme is billed 2 minutes plus the fee: 0.05 + 0.09 x 2 = 0.23
    #   cumulus 0.048 x 61/60 = 0.0488; borealis 0.04 x 61/60 = 0.0406666.. -> 0.040667 (6 places, half up)
    #   atlas 0.03 x 61/60 = 0.0305; admin 0.02 x 61/60 = 0.0203333.. -> 0.020333
    expected = {"acme": (D("0.23"), 120), "cumulus": (D("0.0488"), 61), "borealis": (D("0.040667"), 61),
                "atlas": (D("0.0305"), 61), "admin": (D("0.020333"), 61)}
    for name, (buy, billed) in expected.items():
        (row,) = cdrs(name)
        assert (row.buy, row.billed_seconds) == (buy, billed), name
    assert cdrs("cumulus")[0].profit == D("0.1812")      # 0.23 - 0.0488
    assert account("acme").balance == D("19.77")
    assert account("borealis").balance == D("499.959333")  # 500 - 0.040667

    assert_ledger_invariant(ALL_DEMO)


def test_us_call_in_national_format_with_six_second_increments(client):
    # GIVEN the demo seed; prefix 1 (USA/Canada), 6 s / 6 s everywhere:
    #   acme 0.02/min, cumulus 0.01 x 1.2 = 0.012, borealis 0.01, atlas 0.006, admin 0.004
    load(demo_seed())
    # WHEN acme dials 10 national digits (the plan adds country code 1) and talks 61 s -> 66 s billed
    r = post_authorize(client, "1001", "(212) 555-0100", "us-1")
    assert r.status_code == 200, r.body
    assert body_of(r)["number"] == "12125550100" and body_of(r)["prefix"] == "1"
    assert post_complete(client, "us-1", 61, "ANSWERED").status_code == 200
    # THEN acme 0.02 x 66/60 = 0.022; cumulus 0.0132; borealis 0.011; atlas 0.0066; admin 0.0044
    expected = {"acme": D("0.022"), "cumulus": D("0.0132"), "borealis": D("0.011"), "atlas": D("0.0066"),
                "admin": D("0.0044")}
    for name, buy in expected.items():
        (row,) = cdrs(name)
        assert row.buy == buy and row.billed_seconds == 66, name
    assert account("acme").balance == D("19.978")
    assert_ledger_invariant(ALL_DEMO)
