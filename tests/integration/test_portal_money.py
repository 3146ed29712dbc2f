"""The portal's money routes end to end (chalice.test.Client -> portal service -> DynamoDB in moto): payments,
charges, transfers and credit limits, idempotency, money held for calls in flight, concurrency, the history
and exact amounts. Every test checks the answer AND what is stored, and ends with the double-entry
invariant (tests/integration/helpers.assert_ledger_invariant). Money is Decimal only.

Demo tree (demo/seed.json): admin -> atlas 1000 -> borealis 500 (postpaid, credit 100) -> cumulus 200 ->
acme 20 (SIP 1001), shortly 0.20 (SIP 1002); admin -> delta 100 -> echo 10 (SIP 2001).
A call from 1001 to 1555... holds at every level: acme 20.00 (all of it), cumulus 14.40, borealis 12.00,
atlas 6.00 (600 s at each level's price).
"""
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from tests.conftest import demo_seed, load
from tests.integration.helpers import (ALL_DEMO, assert_ledger_invariant, client,  # noqa: F401
                                       post_authorize, post_complete)
from tests.integration.portal_helpers import (D, Portal, journal_items, key, snapshot_diff, stored, table_snapshot)

NUMBER = "15551230001"


@pytest.fixture
def portal(client):
    load(demo_seed())
    return Portal(client)


def refused(answer, status, error):
    got, body = answer
    assert got == status, body
    assert body["error"] == error, body


def entries(account_id, kind=None):
    return [i for i in journal_items(account_id) if kind is None or i.entry_kind == kind]


# --- payment ------------------------------------------------------------------------------------------

def test_a_payment_raises_the_childs_balance_and_not_the_parents(portal):
    # GIVEN acme (20.00) and its reseller cumulus (200.00)
    # WHEN cumulus records a payment of 12.34 from acme
    status, entry = portal.money("cumulus", "payment", "acme", "12.34", reference="INV-7", description="cash")
    # THEN the answer is the journal entry: acme's wallet +12.34, the world -12.34
    assert status == 201, entry
    assert entry["kind"] == "payment" and entry["replayed"] is False and entry["by"] == "cumulus"
    assert D(entry["amount"]) == Decimal("12.34")
    assert {k: D(v) for k, v in entry["postings"].items()} == {"wallet:acme": Decimal("12.34"),
                                                               "world": Decimal("-12.34")}
    assert entry["reference"] == "INV-7" and entry["description"] == "cash"
    # AND acme's balance and available grew; cumulus's own balance with borealis did not move (ASTPP #118)
    assert stored("acme").balance == Decimal("32.34") and stored("acme").available == Decimal("32.34")
    assert stored("cumulus").balance == Decimal("200") and stored("cumulus").available == Decimal("200")
    assert stored("borealis").balance == Decimal("500")
    assert [e.entry_id for e in entries("acme", "payment")] == [entry["id"]]
    assert [i.entry_kind for i in entries("cumulus")] == ["opening"]
    assert_ledger_invariant(ALL_DEMO)


def test_the_admin_pays_into_any_account_and_its_own_balance_stays(portal):
    portal.ok("admin", "POST", "/accounts/echo/payments", {"amount": "5", "idempotency_key": key()}, status=201)
    assert stored("echo").balance == Decimal("15") and stored("admin").balance == 0
    assert stored("delta").balance == Decimal("100")
    assert_ledger_invariant(ALL_DEMO)


# --- charge -------------------------------------------------------------------------------------------

def test_a_charge_lowers_the_balance_up_to_what_is_available(portal):
    # GIVEN acme with 20.00
    # WHEN cumulus charges 7.5
    status, entry = portal.money("cumulus", "charge", "acme", "7.5")
    # THEN acme has 12.50, the entry moves money from acme's wallet to the world
    assert status == 201 and entry["kind"] == "charge" and D(entry["amount"]) == Decimal("-7.5")
    assert stored("acme").balance == Decimal("12.5") and stored("acme").available == Decimal("12.5")
    assert stored("cumulus").balance == Decimal("200")
    # WHEN it charges more than is left
    before = table_snapshot()
    refused(portal.money("cumulus", "charge", "acme", "12.500001"), 409, "insufficient_funds")
    # THEN nothing moved; exactly what is left can still be charged, down to 0
    assert table_snapshot() == before
    assert portal.money("cumulus", "charge", "acme", "12.5")[0] == 201
    assert stored("acme").balance == 0 and stored("acme").available == 0
    assert_ledger_invariant(ALL_DEMO)


def test_a_postpaid_account_is_charged_into_its_credit_but_not_beyond(portal):
    # GIVEN borealis, postpaid: 500 + credit 100
    # WHEN atlas charges 600.000001 THEN 409; 600 THEN the balance is -100 and nothing is available
    refused(portal.money("atlas", "charge", "borealis", "600.000001"), 409, "insufficient_funds")
    assert portal.money("atlas", "charge", "borealis", "600")[0] == 201
    item = stored("borealis")
    assert item.balance == Decimal("-100") and item.available == 0
    assert_ledger_invariant(ALL_DEMO)


# --- transfer -----------------------------------------------------------------------------------------

def test_a_transfer_moves_exactly_from_the_payer_to_the_payee(portal):
    # GIVEN cumulus (200) and its client acme (20)
    # WHEN cumulus transfers 25.25 to acme
    status, entry = portal.money("cumulus", "transfer", "acme", "25.25")
    # THEN one entry: cumulus's wallet -25.25, acme's +25.25, nothing to or from the world
    assert status == 201, entry
    assert entry["kind"] == "transfer" and D(entry["amount"]) == Decimal("25.25")
    assert {k: D(v) for k, v in entry["postings"].items()} == {"wallet:cumulus": Decimal("-25.25"),
                                                               "wallet:acme": Decimal("25.25")}
    assert stored("cumulus").balance == Decimal("174.75") and stored("acme").balance == Decimal("45.25")
    assert stored("borealis").balance == Decimal("500")
    # AND it is in both histories, with each one's own amount
    acme_view = portal.ok("cumulus", "GET", "/accounts/acme/ledger?kind=transfer")["items"]
    cumulus_view = portal.ok("borealis", "GET", "/accounts/cumulus/ledger?kind=transfer")["items"]
    assert [i["id"] for i in acme_view] == [i["id"] for i in cumulus_view] == [entry["id"]]
    assert D(acme_view[0]["amount"]) == Decimal("25.25") and D(cumulus_view[0]["amount"]) == Decimal("-25.25")
    assert_ledger_invariant(ALL_DEMO)


def test_only_the_direct_parent_reseller_transfers_and_only_what_it_has(portal):
    before = table_snapshot()
    # WHEN borealis (a grandparent) or the admin transfers to acme; acme to itself; delta to acme
    refused(portal.money("borealis", "transfer", "acme", "1"), 403, "forbidden")
    refused(portal.money("admin", "transfer", "atlas", "1"), 403, "forbidden")
    refused(portal.money("acme", "transfer", "acme", "1"), 403, "forbidden")
    refused(portal.money("delta", "transfer", "acme", "1"), 404, "not_found")
    # AND cumulus transfers more than its 200
    refused(portal.money("cumulus", "transfer", "acme", "200.01"), 409, "insufficient_funds")
    # THEN nothing moved
    assert table_snapshot() == before
    assert portal.money("cumulus", "transfer", "acme", "200")[0] == 201
    assert stored("cumulus").balance == 0 and stored("acme").balance == Decimal("220")
    assert_ledger_invariant(ALL_DEMO)


# --- credit limit -------------------------------------------------------------------------------------

def test_a_credit_limit_change_is_ledgered_and_moves_available_for_postpaid_only(portal):
    # GIVEN borealis postpaid (500 + 100) and acme prepaid (20)
    # WHEN atlas raises borealis's credit to 250
    status, body = portal("atlas", "PUT", "/accounts/borealis/credit-limit",
                          {"credit_limit": "250", "idempotency_key": key(), "description": "good payer"})
    # THEN an entry with no postings records old and new, and available grows by 150
    assert status == 200, body
    assert body["kind"] == "credit_limit" and body["postings"] == {} and D(body["amount"]) == 0
    assert {k: D(v) for k, v in body["details"].items()} == {"old": Decimal("100"), "new": Decimal("250")}
    assert D(body["credit_limit"]) == Decimal("250") and D(body["available"]) == Decimal("750")
    item = stored("borealis")
    assert item.credit_limit == Decimal("250") and item.available == Decimal("750") and item.balance == Decimal("500")
    assert len(entries("borealis", "credit_limit")) == 1
    # WHEN cumulus gives prepaid acme a credit limit, THEN available does not change
    body = portal.ok("cumulus", "PUT", "/accounts/acme/credit-limit", {"credit_limit": "40", "idempotency_key": key()})
    assert D(body["available"]) == Decimal("20") and stored("acme").credit_limit == Decimal("40")
    # AND a limit of 0 is allowed; a negative one is not
    assert D(portal.ok("atlas", "PUT", "/accounts/borealis/credit-limit",
                       {"credit_limit": 0, "idempotency_key": key()})["available"]) == Decimal("500")
    refused(portal("atlas", "PUT", "/accounts/borealis/credit-limit", {"credit_limit": "-1", "idempotency_key": key()}),
            400, "invalid_request")
    assert_ledger_invariant(ALL_DEMO)


def test_a_credit_limit_cannot_be_lowered_below_what_is_spent_or_held(portal):
    # GIVEN borealis charged into its credit: balance -50, available 50
    assert portal.money("atlas", "charge", "borealis", "550")[0] == 201
    before = table_snapshot()
    # WHEN atlas lowers its credit to 40 (available would be -10)
    status, body = portal("atlas", "PUT", "/accounts/borealis/credit-limit",
                          {"credit_limit": "40", "idempotency_key": key()})
    # THEN 409 and nothing changed; 50 is still fine
    assert status == 409, body
    assert table_snapshot() == before
    assert portal("atlas", "PUT", "/accounts/borealis/credit-limit",
                  {"credit_limit": "50", "idempotency_key": key()})[0] == 200
    assert stored("borealis").available == 0
    assert_ledger_invariant(ALL_DEMO)


def test_a_credit_limit_refused_for_funds_says_so(portal):
    assert portal.money("atlas", "charge", "borealis", "550")[0] == 201
    status, body = portal("atlas", "PUT", "/accounts/borealis/credit-limit",
                          {"credit_limit": "40", "idempotency_key": key()})
    assert status == 409 and body["error"] == "insufficient_funds", body


# --- idempotency --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,target", [("payment", "acme"), ("charge", "acme"), ("transfer", "acme")])
def test_a_retried_movement_is_applied_once_and_answered_as_a_replay(portal, kind, target):
    # GIVEN a first movement with key K
    k = key("retry")
    status, first = portal.money("cumulus", kind, target, "3.10", k)
    assert status == 201 and first["replayed"] is False
    after_first = (stored("acme").balance, stored("cumulus").balance)
    # WHEN the same request is sent again (the amount written differently but equal)
    status, second = portal.money("cumulus", kind, target, "3.1", k)
    # THEN the first entry is returned, marked replayed, and nothing moved again
    assert status == 201 and second["replayed"] is True
    assert {k_: v for k_, v in second.items() if k_ != "replayed"} == \
        {k_: v for k_, v in first.items() if k_ != "replayed"}
    assert (stored("acme").balance, stored("cumulus").balance) == after_first
    assert len(entries("acme", kind)) == 1
    # WHEN the key comes back with another amount
    before = table_snapshot()
    refused(portal.money("cumulus", kind, target, "3.11", k), 409, "idempotency_key_reused")
    # THEN nothing changed
    assert table_snapshot() == before
    assert_ledger_invariant(ALL_DEMO)


def test_keys_are_the_callers_own_two_callers_never_collide(portal):
    # GIVEN cumulus used key K for a payment into acme
    assert portal.money("cumulus", "payment", "acme", "1", "shared-key")[0] == 201
    # WHEN borealis uses the same K for its own payment into acme
    status, body = portal.money("borealis", "payment", "acme", "2", "shared-key")
    # THEN it is a second, separate movement
    assert status == 201 and body["replayed"] is False
    assert stored("acme").balance == Decimal("23")
    assert len(entries("acme", "payment")) == 2
    assert_ledger_invariant(ALL_DEMO)


@pytest.mark.parametrize("second", [("payment", "shortly", "1"), ("charge", "acme", "1"), ("transfer", "acme", "1"),
                                    ("credit_limit", "acme", "1")])
def test_the_same_key_for_another_account_or_kind_is_refused(portal, second):
    # GIVEN cumulus paid 1 into acme with key K
    assert portal.money("cumulus", "payment", "acme", "1", "once-only")[0] == 201
    before = table_snapshot()
    # WHEN it sends K again for another account or another kind of movement
    kind, target, amount = second
    if kind == "credit_limit":
        status, body = portal("cumulus", "PUT", f"/accounts/{target}/credit-limit",
                              {"credit_limit": amount, "idempotency_key": "once-only"})
    else:
        status, body = portal.money("cumulus", kind, target, amount, "once-only")
    # THEN 409 idempotency_key_reused, and nothing moved
    assert status == 409 and body["error"] == "idempotency_key_reused", body
    assert table_snapshot() == before


def test_a_retried_credit_limit_change_is_answered_as_a_replay(portal):
    k = key("credit")
    body = {"credit_limit": "250", "idempotency_key": k}
    status, first = portal("atlas", "PUT", "/accounts/borealis/credit-limit", body)
    assert status == 200 and first["replayed"] is False
    status, second = portal("atlas", "PUT", "/accounts/borealis/credit-limit", body)
    assert status == 200, second
    assert second["replayed"] is True and second["id"] == first["id"]
    assert stored("borealis").credit_limit == Decimal("250") and len(entries("borealis", "credit_limit")) == 1


def test_a_credit_limit_retry_after_a_later_change_replays_and_does_not_undo_it(portal):
    # GIVEN atlas set borealis's credit to 250 (key K1), then to 300 (key K2)
    k1, k2 = key("credit"), key("credit")
    first = portal.ok("atlas", "PUT", "/accounts/borealis/credit-limit", {"credit_limit": "250", "idempotency_key": k1})
    portal.ok("atlas", "PUT", "/accounts/borealis/credit-limit", {"credit_limit": "300", "idempotency_key": k2})
    before = table_snapshot()
    # WHEN the first request is retried late
    again = portal.ok("atlas", "PUT", "/accounts/borealis/credit-limit", {"credit_limit": "250", "idempotency_key": k1})
    # THEN it is answered as a replay of the first entry, and the later limit stands
    assert again["replayed"] is True and again["id"] == first["id"]
    assert D(again["credit_limit"]) == Decimal("300") and stored("borealis").credit_limit == Decimal("300")
    assert table_snapshot() == before
    assert_ledger_invariant(ALL_DEMO)


def test_concurrent_uses_of_one_key_for_different_accounts_make_one_movement(portal):
    from chalicelib.bootstrap import container
    from chalicelib.services.portal import Conflict, Portal as PortalService
    principal = container().identity.authenticate(portal.headers("cumulus"))
    service = PortalService(container().store, container().identity, container().clock)
    targets = ["acme", "shortly"] * 5
    barrier = threading.Barrier(len(targets))

    def run(i):
        barrier.wait()
        try:
            service.payment(principal, targets[i], Decimal("1"), "one-key-two-accounts")
            return targets[i]
        except Conflict as exc:
            return exc.code
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        results = list(pool.map(run, range(len(targets))))
    # exactly one account got the money; every retry naming that account replays, the others are refused
    winner = stored("acme").balance == Decimal("21")
    assert winner != (stored("shortly").balance == Decimal("1.2"))
    won = "acme" if winner else "shortly"
    lost = "shortly" if winner else "acme"
    assert results.count(lost) == 0 and results.count("idempotency_key_reused") == 5
    assert len(entries(won, "payment")) == 1 and entries(lost, "payment") == []
    assert_ledger_invariant(ALL_DEMO)


def test_a_credit_limit_key_reused_with_another_limit_is_refused(portal):
    k = key("credit")
    assert portal("atlas", "PUT", "/accounts/borealis/credit-limit",
                  {"credit_limit": "250", "idempotency_key": k})[0] == 200
    before = table_snapshot()
    refused(portal("atlas", "PUT", "/accounts/borealis/credit-limit", {"credit_limit": "300", "idempotency_key": k}),
            409, "idempotency_key_reused")
    assert table_snapshot() == before and stored("borealis").credit_limit == Decimal("250")


# --- money held for calls in flight -------------------------------------------------------------------

def test_charges_and_transfers_never_take_money_held_for_a_call(portal):
    # GIVEN acme's SIP user 1001 in a call: money held at every level
    granted = post_authorize(portal.client, "1001", NUMBER, "held-1")
    assert granted.status_code == 200, granted.body
    acme, cumulus = stored("acme"), stored("cumulus")
    assert acme.held == Decimal("20") and acme.available == 0 and acme.balance == Decimal("20")
    assert cumulus.held == Decimal("14.4") and cumulus.available == Decimal("185.6")
    before = table_snapshot()
    # WHEN cumulus charges acme 5 (less than its balance, more than its available 0)
    refused(portal.money("cumulus", "charge", "acme", "5"), 409, "insufficient_funds")
    # AND borealis charges cumulus 190, and cumulus transfers 190 to shortly (available 185.60)
    refused(portal.money("borealis", "charge", "cumulus", "190"), 409, "insufficient_funds")
    refused(portal.money("cumulus", "transfer", "shortly", "190"), 409, "insufficient_funds")
    # THEN nothing moved and nothing is below 0 available
    assert table_snapshot() == before
    # AND exactly what is available can go
    assert portal.money("cumulus", "transfer", "shortly", "185.6")[0] == 201
    assert stored("cumulus").available == 0 and stored("cumulus").held == Decimal("14.4")
    # WHEN the call ends after 30 s (1.00 at 2.00/min), THEN the hold is released and the bill paid
    assert post_complete(portal.client, "held-1", 30, "ANSWERED").status_code == 200
    assert stored("acme").balance == Decimal("19") and stored("acme").available == Decimal("19")
    assert all(stored(a).available >= 0 and stored(a).held == 0 for a in ALL_DEMO)
    assert_ledger_invariant(ALL_DEMO)


def test_money_paid_in_during_a_call_is_available_at_once(portal):
    assert post_authorize(portal.client, "1001", NUMBER, "held-2").status_code == 200
    assert portal.money("cumulus", "payment", "acme", "5")[0] == 201
    assert stored("acme").available == Decimal("5") and stored("acme").held == Decimal("20")
    assert portal.money("cumulus", "charge", "acme", "5")[0] == 201
    assert stored("acme").available == 0
    assert_ledger_invariant(ALL_DEMO)


# --- concurrency --------------------------------------------------------------------------------------

def test_twenty_concurrent_payments_and_charges_while_a_call_is_in_flight(portal):
    """Threads call the portal service (the layer that decides and writes): Chalice's test client keeps
    the current request on the app object, so it cannot serve two requests at once in one process."""
    from chalicelib.bootstrap import container
    from chalicelib.services.portal import Conflict, Portal as PortalService
    # GIVEN acme in a call (20.00 held), then paid 5.00 (5.00 available), and cumulus's session
    assert post_authorize(portal.client, "1001", NUMBER, "race-call").status_code == 200
    assert portal.money("cumulus", "payment", "acme", "5")[0] == 201
    opening = stored("acme").balance
    assert opening == Decimal("25") and stored("acme").available == Decimal("5")
    principal = container().identity.authenticate(portal.headers("cumulus"))
    service = PortalService(container().store, container().identity, container().clock)
    payments = [Decimal("1.25") + Decimal(i) / 100 for i in range(10)]     # 1.25 .. 1.34
    charges = [Decimal("2.10")] * 10
    work = [("payment", a) for a in payments] + [("charge", a) for a in charges]
    work = [w for pair in zip(work[:10], work[10:]) for w in pair]          # interleaved
    barrier = threading.Barrier(len(work))
    samples, stop = [], threading.Event()

    def sampler():
        while not stop.is_set():
            item = stored("acme")
            samples.append((item.available, item.held))

    def run(i):
        kind, amount = work[i]
        barrier.wait()
        try:
            getattr(service, kind)(principal, "acme", amount, f"race-{i}")
            return kind, amount, True
        except Conflict as exc:
            assert exc.code == "insufficient_funds", exc.code
            return kind, amount, False
    # WHEN 20 threads pay and charge at once, while a sampler reads acme
    watcher = threading.Thread(target=sampler)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=len(work)) as pool:
            results = list(pool.map(run, range(len(work))))
    finally:
        stop.set()
        watcher.join()
    # THEN every payment went through, and the balance is the opening plus what succeeded
    paid = sum((a for k, a, ok in results if k == "payment" and ok), Decimal(0))
    charged = sum((a for k, a, ok in results if k == "charge" and ok), Decimal(0))
    assert paid == sum(payments)
    # 5.00 available before: at least 2 charges of 2.10 fit whatever the order; at most 8 fit in 5 + 12.95
    assert 2 <= sum(1 for k, _, ok in results if k == "charge" and ok) <= 8
    item = stored("acme")
    assert item.balance == opening + paid - charged
    assert item.held == Decimal("20") and item.available == item.balance - item.held >= 0
    # AND available never went below 0 and the hold was never touched
    assert samples and all(available >= 0 and held == Decimal("20") for available, held in samples)
    # AND the journal holds exactly the successful movements, once each
    assert len(entries("acme", "payment")) == 11
    assert len(entries("acme", "charge")) == sum(1 for k, _, ok in results if k == "charge" and ok)
    assert_ledger_invariant(ALL_DEMO)
    # AND the call still bills correctly afterwards
    assert post_complete(portal.client, "race-call", 60, "ANSWERED").status_code == 200
    assert stored("acme").balance == opening + paid - charged - Decimal("2")
    assert_ledger_invariant(ALL_DEMO)


def test_concurrent_retries_of_one_payment_apply_it_once(portal):
    from chalicelib.bootstrap import container
    from chalicelib.services.portal import Portal as PortalService
    principal = container().identity.authenticate(portal.headers("cumulus"))
    service = PortalService(container().store, container().identity, container().clock)
    barrier = threading.Barrier(10)

    def run(_):
        barrier.wait()
        return service.payment(principal, "acme", Decimal("4"), "same-retry")[1]
    with ThreadPoolExecutor(max_workers=10) as pool:
        created = list(pool.map(run, range(10)))
    assert created.count(True) == 1
    assert stored("acme").balance == Decimal("24") and len(entries("acme", "payment")) == 1
    assert_ledger_invariant(ALL_DEMO)


# --- history ------------------------------------------------------------------------------------------

def _all_pages(portal, who, path, limit, **query):
    items, cursor, pages = [], None, 0
    while True:
        params = dict(query, limit=limit, **({"cursor": cursor} if cursor else {}))
        page = portal.ok(who, "GET", path + "?" + "&".join(f"{k}={v}" for k, v in params.items()))
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor, pages = page["next_cursor"], pages + 1
        if not cursor:
            return items, pages
        assert pages < 50


def _calls_and_payments(portal):
    """3 finished calls (10, 20, 30 s at 2.00/min) and 3 payments into acme, interleaved."""
    made = []
    for i in range(3):
        assert post_authorize(portal.client, "1001", NUMBER, f"hist-{i}").status_code == 200
        assert post_complete(portal.client, f"hist-{i}", 10 * (i + 1), "ANSWERED").status_code == 200
        status, entry = portal.money("cumulus", "payment", "acme", f"{i + 1}.00")
        assert status == 201
        made.append(entry["id"])
    return made


@pytest.mark.parametrize("limit", [1, 2, 3, 100])
def test_the_history_pages_through_entries_and_calls_newest_first(portal, limit):
    # GIVEN 3 calls and 3 payments on acme after its opening balance
    payments = _calls_and_payments(portal)
    # WHEN cumulus pages through acme's history
    items, pages = _all_pages(portal, "cumulus", "/accounts/acme/ledger", limit)
    # THEN everything appears once: the opening, 3 payments, 3 calls, newest first
    ids = [i["id"] for i in items]
    assert len(ids) == len(set(ids)) == 7, ids
    kinds = sorted(i["kind"] for i in items)
    assert kinds == ["call"] * 3 + ["opening"] + ["payment"] * 3
    assert set(payments) <= set(ids)
    stamps = [i["at"] for i in items]
    assert stamps == sorted(stamps, reverse=True)
    # AND the amounts add up to the balance (20 + 6 - 2.00 = 24.00)
    assert sum((D(i["amount"]) for i in items), Decimal(0)) == stored("acme").balance == Decimal("24")
    calls = [i for i in items if i["kind"] == "call"]
    assert sorted(D(c["amount"]) for c in calls) == [Decimal("-1"), Decimal("-0.666667"), Decimal("-0.333333")]
    assert sorted(c["billsec"] for c in calls) == [10, 20, 30]
    assert all(c["reference"].startswith("hist-") for c in calls)
    assert_ledger_invariant(ALL_DEMO)


def test_the_history_filters_by_kind_and_time(portal):
    payments = _calls_and_payments(portal)
    everything, _ = _all_pages(portal, "cumulus", "/accounts/acme/ledger", 100)
    # kind
    def only(kind):
        return [i["id"] for i in _all_pages(portal, "cumulus", "/accounts/acme/ledger", 2, kind=kind)[0]]
    assert sorted(only("payment")) == sorted(payments)
    assert len(only("call")) == 3 and len(only("opening")) == 1 and only("charge") == []
    # time: since/until bound 'at' inclusively
    stamps = sorted({i["at"] for i in everything})
    middle = stamps[len(stamps) // 2]
    since, _ = _all_pages(portal, "cumulus", "/accounts/acme/ledger", 2, since=middle)
    until, _ = _all_pages(portal, "cumulus", "/accounts/acme/ledger", 2, until=middle)
    assert sorted(i["id"] for i in since) == sorted(i["id"] for i in everything if i["at"] >= middle)
    assert sorted(i["id"] for i in until) == sorted(i["id"] for i in everything if i["at"] <= middle)
    today = stamps[0][:10]
    assert len(_all_pages(portal, "cumulus", "/accounts/acme/ledger", 100, since=today)[0]) == 7
    assert _all_pages(portal, "cumulus", "/accounts/acme/ledger", 100, until="2000-01-01")[0] == []
    assert _all_pages(portal, "cumulus", "/accounts/acme/ledger", 100, since="2999-01-01")[0] == []
    # bad filters are 400s naming the parameter
    for query, field in (("kind=refund", "kind"), ("since=yesterday", "since"), ("limit=0", "limit"),
                         ("until=2020-13", "until"), ("page=2", "page")):
        status, body = portal("cumulus", "GET", f"/accounts/acme/ledger?{query}")
        assert status == 400 and body["field"] == field, (query, body)


def test_a_resellers_history_holds_its_own_calls_and_transfers(portal):
    # GIVEN a call of acme's and a transfer from cumulus to acme
    assert post_authorize(portal.client, "1001", NUMBER, "rh-1").status_code == 200
    assert post_complete(portal.client, "rh-1", 60, "ANSWERED").status_code == 200
    assert portal.money("cumulus", "transfer", "acme", "10")[0] == 201
    # WHEN borealis reads cumulus's history
    items, _ = _all_pages(portal, "borealis", "/accounts/cumulus/ledger", 2)
    # THEN cumulus's side of the call (1.44 at 1.44/min) and of the transfer are there, and they add up
    kinds = sorted(i["kind"] for i in items)
    assert kinds == ["call", "opening", "transfer"]
    call = next(i for i in items if i["kind"] == "call")
    assert D(call["amount"]) == Decimal("-1.44") and D(call["sell"]) == Decimal("2") and call["billsec"] == 60
    assert sum((D(i["amount"]) for i in items), Decimal(0)) == stored("cumulus").balance == Decimal("188.56")
    assert_ledger_invariant(ALL_DEMO)


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_a_resellers_history_pages_through_own_entries_peer_transfers_and_calls(portal, limit):
    # GIVEN cumulus with: 2 payments from borealis (its own entries), 3 transfers to its clients (entries
    # filed under the clients, naming cumulus as peer) and 2 finished calls of acme's (its CDRs)
    made = []
    for i in range(2):
        made.append(portal.money("borealis", "payment", "cumulus", f"{i + 1}")[1]["id"])
    for target in ("acme", "shortly", "acme"):
        made.append(portal.money("cumulus", "transfer", target, "0.5")[1]["id"])
    for i in range(2):
        assert post_authorize(portal.client, "1001", NUMBER, f"rp-{i}").status_code == 200
        assert post_complete(portal.client, f"rp-{i}", 30, "ANSWERED").status_code == 200
    # WHEN borealis pages through cumulus's history
    items, _ = _all_pages(portal, "borealis", "/accounts/cumulus/ledger", limit)
    # THEN every movement appears once, newest first, and the amounts add up to the balance
    ids = [i["id"] for i in items]
    assert len(ids) == len(set(ids)) == 8, ids                    # + the opening
    assert set(made) <= set(ids)
    assert sorted(i["kind"] for i in items) == ["call"] * 2 + ["opening"] + ["payment"] * 2 + ["transfer"] * 3
    assert [i["at"] for i in items] == sorted((i["at"] for i in items), reverse=True)
    assert sum((D(i["amount"]) for i in items), Decimal(0)) == stored("cumulus").balance
    assert_ledger_invariant(ALL_DEMO)


# --- the balance route --------------------------------------------------------------------------------

def test_the_balance_route_shows_balance_credit_held_available_and_low(portal):
    bor = portal.balance("atlas", "borealis")
    assert (bor["balance"], bor["credit_limit"], bor["held"], bor["available"]) == \
        (Decimal("500"), Decimal("100"), 0, Decimal("600"))
    assert post_authorize(portal.client, "1002", NUMBER, "bal-1").status_code == 200
    portal.ok("cumulus", "PATCH", "/accounts/shortly", {"low_balance": "1"})
    status, body = portal("cumulus", "GET", "/accounts/shortly/balance")
    assert status == 200
    assert body["account_id"] == "shortly" and body["currency"] == "USD" and body["low"] is True
    assert D(body["balance"]) == Decimal("0.2") and D(body["held"]) == Decimal("0.2") and D(body["available"]) == 0
    assert portal.balance("shortly", "shortly")["available"] == 0        # the account reads its own
    assert portal.ok("atlas", "GET", "/accounts/borealis/balance")["low"] is False


# --- exact amounts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,expected", [
    ('"0.1"', "0.1"), ("0.1", "0.1"), ('"12.345678"', "12.345678"), ("12.345678", "12.345678"),
    ('"10"', "10"), ("10", "10"), ('"0.000001"', "0.000001"), ('"1.100000"', "1.1"),
    ('"999999999999.999999"', "999999999999.999999"),
    # exponent forms are accepted, and exact
    ('"1e3"', "1000"), ("1e3", "1000"), ('"1E+1"', "10"), ("2.5e-1", "0.25"),
])
def test_amounts_as_strings_or_numbers_are_exact(portal, raw, expected):
    # GIVEN acme with 20
    # WHEN cumulus pays an amount written as raw JSON
    body = '{"amount": %s, "idempotency_key": "%s"}' % (raw, key("exact"))
    status, entry = portal("cumulus", "POST", "/accounts/acme/payments", body)
    # THEN the entry and the balance hold exactly that amount, at 6 decimals
    assert status == 201, entry
    assert D(entry["amount"]) == Decimal(expected)
    assert entry["amount"] == str(Decimal(expected).quantize(Decimal("0.000001")))
    assert stored("acme").balance == Decimal("20") + Decimal(expected)
    assert_ledger_invariant(ALL_DEMO)


@pytest.mark.parametrize("raw", [
    '"0.1234567"', "0.1234567", '"0.0000001"',             # more than 6 decimals
    '"0"', "0", '"-0"', '"-1"', "-1", '"-0.000001"',        # not positive
    '"NaN"', "NaN", '"sNaN"', '"Infinity"', "Infinity", '"-Infinity"', "-Infinity",
    '"1e12"', "1000000000000", '"1e400"', "1e400", '"99999999999999999999999999"',   # huge
    '""', '" "', '"abc"', '"0x10"', '"1,5"', '"1.2.3"', "true", "null", "[]", "{}",
    '"' + "1" * 40 + '"',
])
def test_bad_amounts_are_refused_and_nothing_moves(portal, raw):
    portal.headers("cumulus")
    before = table_snapshot()
    body = '{"amount": %s, "idempotency_key": "%s"}' % (raw, key("bad"))
    status, answer = portal("cumulus", "POST", "/accounts/acme/payments", body)
    assert status == 400, (raw, answer)
    assert answer["error"] == "invalid_request" and answer["field"] in ("amount", "body"), answer
    assert table_snapshot() == before, snapshot_diff(before, table_snapshot())


@pytest.mark.parametrize("raw,expected", [('"1_000"', "1000"), ('" 5 "', "5"), ('"+5"', "5"), ('"5."', "5"),
                                          ('".5"', "0.5")])
def test_lenient_amount_spellings_are_refused_or_exact(portal, raw, expected):
    # Decimal() accepts these spellings; whatever the API does, it must never move another amount.
    body = '{"amount": %s, "idempotency_key": "%s"}' % (raw, key("lenient"))
    status, answer = portal("cumulus", "POST", "/accounts/acme/payments", body)
    if status == 201:
        assert D(answer["amount"]) == Decimal(expected)
        assert stored("acme").balance == Decimal("20") + Decimal(expected)
    else:
        assert status == 400 and stored("acme").balance == Decimal("20")


@pytest.mark.parametrize("route,field", [("charges", "amount"), ("transfers", "amount"),
                                         ("credit-limit", "credit_limit")])
def test_every_money_route_parses_amounts_the_same_way(portal, route, field):
    portal.headers("cumulus")
    method = "PUT" if route == "credit-limit" else "POST"
    before = table_snapshot()
    for raw in ('"0.1234567"', '"NaN"', '"1e12"', "true"):
        body = '{"%s": %s, "idempotency_key": "%s"}' % (field, raw, key())
        status, answer = portal("cumulus", method, f"/accounts/acme/{route}", body)
        assert status == 400 and answer["field"] == field, (route, raw, answer)
    assert table_snapshot() == before
    body = '{"%s": 0.1, "idempotency_key": "%s"}' % (field, key())
    status, answer = portal("cumulus", method, f"/accounts/acme/{route}", body)
    assert status in (200, 201), answer
    assert_ledger_invariant(ALL_DEMO)


def test_money_bodies_refuse_unknown_fields_and_missing_keys(portal):
    portal.headers("cumulus")
    before = table_snapshot()
    for body, field in (({"amount": "1"}, "idempotency_key"), ({"idempotency_key": "x"}, "amount"),
                        ({"amount": "1", "idempotency_key": "x", "currency": "USD"}, "currency"),
                        ({"amount": "1", "idempotency_key": ""}, "idempotency_key"),
                        ({"amount": "1", "idempotency_key": "x" * 129}, "idempotency_key")):
        status, answer = portal("cumulus", "POST", "/accounts/acme/payments", body)
        assert status == 400 and answer["field"] == field, (body, answer)
    status, answer = portal("cumulus", "POST", "/accounts/acme/payments", "not json")
    assert status == 400 and answer["field"] == "body"
    assert table_snapshot() == before
