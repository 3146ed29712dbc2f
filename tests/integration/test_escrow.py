"""Hierarchical escrow over moto (with the one-lock atomicity of tests/conftest.py): a call holds an
ancestor's money from the slot on its client's item, the rebalancer refills, recalls and sweeps, and no
level is ever overdrawn, through races and a suspension mid-burst."""
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from chalicelib.adapters.dynamo.store import DynamoStore
from chalicelib.services.authorize_call import AuthorizeRequest, authorize_call, Authorized, Denied
from chalicelib.services.complete_call import complete_call
from chalicelib.services.rebalance import rebalance
from chalicelib.services.switch_keys import key_hash
from tests.conftest import DEMO_KEY, load
from tests.integration.helpers import (ALL_DEMO, account, assert_ledger_invariant, escrow_slots,
                                       money_snapshot)

NOW = 1_780_000_000


def clock(t=NOW):
    return lambda: t


def dial(store, sip, call_id, number="15551230001", key=DEMO_KEY, at=NOW):
    return authorize_call(store, AuthorizeRequest(sip, number, call_id), key_hash(key), clock(at))


def test_a_slot_carries_the_upper_levels_so_a_call_writes_neither_reseller_above_the_limited_one(demo):
    store = DynamoStore()
    first = dial(store, "1001", "e-1")
    assert isinstance(first, Authorized)
    levels = {l.account_id: l for l in store.find_call("e-1", None)[0].levels}
    # borealis and atlas have no per-call limits: escrowable; cumulus (max_calls, cps) and acme are exact
    assert [levels[a].escrow for a in ("acme", "cumulus", "borealis", "atlas")] == [0, 0, 0, 0]
    acme = account("acme")
    assert acme.want is not None and acme.e2w == "borealis" and acme.e3w == "atlas"
    assert acme.e2n == levels["borealis"].hold and acme.e3n == levels["atlas"].hold

    report = rebalance(store, NOW)
    assert report.refilled == 2 and report.dry == []
    acme = account("acme")
    assert acme.want is None and acme.e2w is None
    assert acme.e2o == "borealis" and acme.e2a == 4 * levels["borealis"].hold
    assert acme.e3o == "atlas" and acme.e3a == 4 * levels["atlas"].hold
    assert account("borealis").held == 5 * levels["borealis"].hold      # its own hold + the slot

    complete_call(store, "e-1", 60, "ANSWERED", key_hash(DEMO_KEY), clock(NOW + 61))
    upper = money_snapshot(["borealis", "atlas"])
    second = dial(store, "1001", "e-2", at=NOW + 100)
    assert isinstance(second, Authorized)
    placed = {l.account_id: l.escrow for l in store.find_call("e-2", None)[0].levels}
    assert placed == {"acme": 0, "cumulus": 0, "borealis": 2, "atlas": 3, "admin": 0}
    result = complete_call(store, "e-2", 90, "ANSWERED", key_hash(DEMO_KEY), clock(NOW + 200))
    assert money_snapshot(["borealis", "atlas"]) == upper          # neither item was written
    charged = {l["account_id"]: Decimal(l["charged"]) for l in result["levels"]}
    acme = account("acme")
    assert acme.e2s == charged["borealis"] and acme.e3s == charged["atlas"]
    assert acme.e2a == 4 * levels["borealis"].hold - charged["borealis"]
    assert_ledger_invariant(ALL_DEMO)        # counts the unswept spent against each owner

    # Idle: after IDLE_AFTER the slots give their money back and the spent money is swept
    report = rebalance(store, NOW + 10_000, idle=True)
    assert report.recalled == 2 and report.swept == 2
    acme = account("acme")
    assert (acme.e2a, acme.e2s, acme.e3a, acme.e3s) == (0, 0, 0, 0)
    assert escrow_slots("borealis") == [] and escrow_slots("atlas") == []
    assert_ledger_invariant(ALL_DEMO)
    for a in ("borealis", "atlas"):
        item = account(a)
        assert item.held == 0 and item.active_calls == 0
