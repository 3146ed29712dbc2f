"""domain.dids: numbers, holders handed down and taken back, and the rates of an inbound call."""
from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from chalicelib.domain import dids
from chalicelib.domain.dids import DidRefused, InvalidDid, Prices

NOW = "2026-12-01T00:00:00Z"
TREE = ["admin", "r1", "r2", "r3", "client"]


def fresh(per_minute="0.002"):
    return dids.create("+1 555 000 1234", "us", "admin", Prices(per_minute=Decimal(per_minute)), Prices(), NOW)


@pytest.mark.parametrize("text, number", [("+15550001234", "15550001234"), ("0044 20 7946 0000", "442079460000"),
                                          ("1 (555) 000-1234", "15550001234"), ("4420.7946.0000", "442079460000")])
def test_a_number_is_read_as_e164_digits(text, number):
    assert dids.did_number(text) == number


@pytest.mark.parametrize("text", ["", "12345", "+0123456789", "1234567890123456", "15550001234x", "١٢٣٤٥٦٧", None, 15550001234])
def test_anything_else_is_refused_naming_the_number(text):
    with pytest.raises(InvalidDid) as refused:
        dids.did_number(text)
    assert refused.value.field == "number"


def test_handing_down_past_levels_has_them_pass_it_on_at_the_same_price():
    did = dids.assign(fresh(), "admin", TREE[1:], Prices(per_minute=Decimal("0.01")), NOW)
    assert did.holder == "client" and did.route() == list(reversed(TREE)) and did.rev == 1
    rates = dids.inbound_rates(did, did.route())
    assert [r.price for r in rates] == [Decimal("0.01")] * 4 + [Decimal("0.002")]
    assert dids.inbound_rates(did, ["client", "r3", "admin"]) is None        # not the holders: no price


def test_only_the_last_holder_assigns_and_only_a_holder_takes_back():
    did = dids.assign(fresh(), "admin", ["r1"], Prices(), NOW)
    for giver, code in (("admin", "did_assigned"), ("r2", "not_held")):
        with pytest.raises(DidRefused) as refused:
            dids.assign(did, giver, ["r2"], Prices(), NOW)
        assert refused.value.code == code
    back, ended = dids.unassign(did, "admin")
    assert back.holder == "admin" and [h.account_id for h in ended] == ["r1"]
    with pytest.raises(DidRefused):
        dids.unassign(back, "admin")
    with pytest.raises(DidRefused):
        dids.close(did)
    assert dids.close(back).status == dids.CLOSED


def test_an_event_is_shown_to_its_receiver_and_ancestors_only():
    assert dids.visible("admin/r1/r2", "admin/r1") and dids.visible("admin/r1", "admin/r1")
    assert not dids.visible("admin/r1", "admin/r1/r2") and not dids.visible("admin/r10", "admin/r1")


@given(st.lists(st.tuples(st.sampled_from(["assign", "unassign"]), st.integers(0, 4), st.integers(1, 4)),
                max_size=20))
def test_whatever_is_done_the_holders_stay_one_chain_from_the_root(steps):
    did = fresh()
    for action, who, depth in steps:
        giver = TREE[who]
        try:
            if action == "assign":
                below = TREE[who + 1:who + 1 + depth]
                did = dids.assign(did, giver, below, Prices(per_minute=Decimal(who)), NOW)
            else:
                did, _ = dids.unassign(did, giver)
        except (DidRefused, InvalidDid):
            continue
    assert [h.account_id for h in did.holders] == TREE[:len(did.holders)]
    assert dids.inbound_rates(did, did.route()) is not None
