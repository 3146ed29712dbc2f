"""Late billing (check funds, hold nothing) and the sweeper (release holds whose completion never came,
then still bill a completion that arrives after all).

Prices (demo/seed.json, prefix 1555, 1 s / 1 s): acme pays cumulus 2.00/min, cumulus pays borealis
1.44/min (1.20 + 20 %), borealis pays atlas 1.20/min, atlas pays admin 0.60/min, admin's cost 0.30/min.
Tree settings: max_duration 10800 s, hold_grace 3600 s.
"""
import time
from decimal import Decimal as D


from tests.conftest import DEMO_KEY, demo_seed, load
from tests.integration.helpers import (ALL_DEMO, DEMO_CHAIN, account, assert_ledger_invariant, body_of,
                                       call_entries, call_item, cdrs, client, money_snapshot,  # noqa: F401
                                       post_authorize, post_complete, seed_account)

NUMBER = "15551230001"
CHARGED = DEMO_CHAIN[:-1]          # acme, cumulus, borealis, atlas (the root is not charged)
HOLD_GRACE = 3600


def sweep(at):
    from chalicelib.adapters.dynamo.store import DynamoStore
    from chalicelib.services.sweep_holds import sweep_expired_holds
    return sweep_expired_holds(DynamoStore(), clock=lambda: at)


# --- 9. late billing ------------------------------------------------------------------------------------

def test_late_billing_client_is_checked_not_held_and_debited_on_completion(client):
    # GIVEN acme with billing_mode late (its resellers keep the tree's early mode)
    seed = demo_seed()
    seed_account(seed, "acme")["billing_mode"] = "late"
    load(seed)

    # WHEN it dials
    r = post_authorize(client, "1001", NUMBER, "late-1")

    # THEN max_duration is still limited by its funds: 20.00 / (2.00/60) = 600 s
    assert r.status_code == 200, r.body
    assert body_of(r)["max_duration"] == 600
    # AND nothing is held at acme (but the call is counted), while its resellers hold as usual
    acme = account("acme")
    assert acme.held == 0 and acme.available == D("20.00") and acme.active_calls == 1
    assert account("cumulus").held == D("14.40")      # 1.44 x 600/60
    assert account("borealis").held == D("12.00")     # 1.20 x 600/60
    assert account("atlas").held == D("6.00")         # 0.60 x 600/60

    # WHEN 60 s are answered
    r = post_complete(client, "late-1", 60, "ANSWERED")
    assert r.status_code == 200, r.body

    # THEN acme is debited 2.00 after the fact: 20.00 - 2.00 = 18.00
    acme = account("acme")
    assert acme.balance == D("18.00") and acme.held == 0 and acme.available == D("18.00")
    assert acme.active_calls == 0
    assert [(e.entry_kind, e.amount) for e in call_entries("acme")] == [("call", D("-2.00"))]
    assert account("cumulus").balance == D("198.56") and account("cumulus").held == 0

    assert_ledger_invariant(ALL_DEMO)


def test_late_billing_client_without_funds_is_refused(client):
    # GIVEN a late-billed client with nothing left (the check still applies)
    seed = demo_seed()
    seed_account(seed, "shortly").update(billing_mode="late", balance="0")
    load(seed)
    before = money_snapshot(ALL_DEMO)
    # WHEN it dials THEN 402, and no level holds or counts anything
    r = post_authorize(client, "1002", NUMBER, "late-2")
    assert r.status_code == 402 and body_of(r)["reason"] == "insufficient_funds"
    assert money_snapshot(ALL_DEMO) == before
    assert_ledger_invariant(ALL_DEMO)


def test_late_billing_tree_default_with_an_early_override(client):
    # GIVEN a tree billed late by default, with cumulus overriding to early (its clients inherit early)
    seed = demo_seed()
    seed["settings"]["billing_mode"] = "late"
    seed_account(seed, "cumulus")["billing_mode"] = "early"
    load(seed)
    # WHEN acme dials
    r = post_authorize(client, "1001", NUMBER, "late-3")
    assert r.status_code == 200 and body_of(r)["max_duration"] == 600
    # THEN acme and cumulus hold (early), borealis and atlas do not (late)
    assert account("acme").held == D("20.00")
    assert account("cumulus").held == D("14.40")
    assert account("borealis").held == 0 and account("atlas").held == 0
    # AND completion bills all four: 2.00, 1.44, 1.20, 0.60
    assert post_complete(client, "late-3", 60, "ANSWERED").status_code == 200
    assert [account(a).balance for a in CHARGED] == [D("18.00"), D("198.56"), D("498.80"), D("999.40")]
    assert all(account(a).held == 0 and account(a).active_calls == 0 for a in CHARGED)
    assert_ledger_invariant(ALL_DEMO)


# --- 10. the sweeper ------------------------------------------------------------------------------------

def test_sweeper_releases_an_expired_hold_and_a_late_completion_still_bills_once(client):
    # GIVEN the demo seed and acme's call, granted 600 s and held at every charged level
    load(demo_seed())
    r = post_authorize(client, "1001", NUMBER, "lost-1")
    assert r.status_code == 200 and body_of(r)["max_duration"] == 600
    authorized_at = int(call_item("lost-1").authorized_at)
    expires_at = authorized_at + 600 + HOLD_GRACE
    assert int(call_item("lost-1").expires_at) == expires_at
    held = {"acme": D("20.00"), "cumulus": D("14.40"), "borealis": D("12.00"), "atlas": D("6.00")}
    assert {a: account(a).held for a in CHARGED} == held

    # WHEN the sweeper runs one second before the hold expires THEN nothing is released
    assert sweep(expires_at - 1) == 0
    assert {a: account(a).held for a in CHARGED} == held

    # WHEN it runs after authorized_at + max_duration + hold_grace
    assert sweep(expires_at + 1) == 1

    # THEN every hold and call counter is released, the call is marked expired, and no money moved
    for name in CHARGED:
        item = account(name)
        assert item.held == 0 and item.active_calls == 0, name
        assert call_entries(name) == [], name
    assert account("acme").available == D("20.00")
    assert account("borealis").available == D("600.00")    # 500 + credit 100
    assert call_item("lost-1").status == "expired"
    assert all(cdrs(name) == [] for name in DEMO_CHAIN)
    assert_ledger_invariant(ALL_DEMO)

    # WHEN it runs again THEN there is nothing left to release
    assert sweep(expires_at + 2) == 0
    assert account("acme").held == 0

    # WHEN the completion arrives after all (60 s answered)
    r = post_complete(client, "lost-1", 60, "ANSWERED")

    # THEN it is billed once at every level, flagged late, and the holds are not released a second time
    assert r.status_code == 200, r.body
    result = body_of(r)
    assert result["late"] is True and D(result["charged"]) == D("2.00")
    expected = {"acme": D("18.00"), "cumulus": D("198.56"), "borealis": D("498.80"), "atlas": D("999.40")}
    for name, balance in expected.items():
        item = account(name)
        assert item.balance == balance, name
        assert item.held == 0 and item.active_calls == 0, name        # not -hold, not -1
        assert len(call_entries(name)) == 1, name
    assert account("borealis").available == D("598.80")    # 498.80 + 100 - 0
    assert all(len(cdrs(name)) == 1 for name in DEMO_CHAIN)
    assert call_item("lost-1").status == "done"

    # AND a repeated completion or sweep changes nothing
    assert body_of(post_complete(client, "lost-1", 60, "ANSWERED")) == result
    assert sweep(expires_at + 10_000) == 0
    assert account("acme").balance == D("18.00")

    assert_ledger_invariant(ALL_DEMO)


def test_sweeper_leaves_completed_and_unexpired_calls_alone(client):
    # GIVEN one completed call (acme) and one still running (echo, granted 666 s)
    load(demo_seed())
    assert post_authorize(client, "1001", NUMBER, "done-1").status_code == 200
    assert post_complete(client, "done-1", 60, "ANSWERED").status_code == 200
    assert post_authorize(client, "2001", NUMBER, "running-1").status_code == 200
    running = call_item("running-1")
    assert int(running.max_duration) == 666
    before = money_snapshot(ALL_DEMO)

    # WHEN the sweeper runs before the running call's expiry THEN nothing changes
    assert sweep(int(running.expires_at) - 1) == 0
    assert money_snapshot(ALL_DEMO) == before
    assert call_item("done-1").status == "done" and call_item("running-1").status == "held"

    # WHEN it runs after it THEN only the running call is released (echo 9.99, delta 8.991)
    assert sweep(int(running.expires_at)) == 1
    assert account("echo").held == 0 and account("delta").held == 0
    assert account("acme").balance == D("18.00")
    assert_ledger_invariant(ALL_DEMO)


def test_scheduled_sweeper_lambda_releases_a_hold_that_expired_in_the_past(client):
    """The scheduled function (real clock) over a call authorized, by the service with a fixed clock, long
    enough ago that its hold has expired: 5000 s ago > 600 s granted + 3600 s grace."""
    from chalicelib.adapters.dynamo.store import DynamoStore
    from chalicelib.services.authorize_call import AuthorizeRequest
    from tests.integration.helpers import authorize_http as authorize_call
    from chalicelib.services.switch_keys import key_hash

    load(demo_seed())
    past = int(time.time()) - 5000
    answer = authorize_call(DynamoStore(), AuthorizeRequest("1001", NUMBER, "old-1"), key_hash(DEMO_KEY),
                            clock=lambda: past)
    assert answer.status == 200 and answer.body["max_duration"] == 600
    assert account("acme").held == D("20.00")

    result = client.lambda_.invoke("sweeper", client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]))
    assert result.payload == {"released": 1}
    assert all(account(a).held == 0 and account(a).active_calls == 0 for a in CHARGED)
    assert call_item("old-1").status == "expired"
    assert_ledger_invariant(ALL_DEMO)


# --- a completion racing the sweeper ----------------------------------------------------------------------

def test_completion_that_loses_the_race_to_the_sweeper_is_still_billed(client, monkeypatch):
    from chalicelib import bootstrap
    from chalicelib.adapters.dynamo.store import DynamoStore

    # GIVEN acme's call, held (600 s granted)
    load(demo_seed())
    assert post_authorize(client, "1001", NUMBER, "race-1").status_code == 200

    class SweptJustBeforeSettle(DynamoStore):
        """Deterministic interleaving: the sweeper's release commits between complete_call's read of the
        call (status 'held') and its settle transaction. The sweeper runs once."""
        swept = False

        def settle(self, call, *args, **kwargs):
            if not self.swept:
                self.swept = True
                assert sweep(call.expires_at + 1) == 1
            return super().settle(call, *args, **kwargs)

    monkeypatch.setattr(bootstrap, "_container", bootstrap.Container(store=SweptJustBeforeSettle()))

    # WHEN the completion (60 s answered) arrives just as the sweeper releases the call
    r = post_complete(client, "race-1", 60, "ANSWERED")

    # THEN it is still billed once at every level (as a completion after the sweep would be)
    assert r.status_code == 200, r.body
    result = body_of(r)
    assert result is not None and D(result["charged"]) == D("2.00")
    assert call_item("race-1").status == "done"
    expected = {"acme": D("18.00"), "cumulus": D("198.56"), "borealis": D("498.80"), "atlas": D("999.40")}
    for name, balance in expected.items():
        item = account(name)
        assert (item.balance, item.held, item.active_calls) == (balance, 0, 0), name
    assert_ledger_invariant(ALL_DEMO)
