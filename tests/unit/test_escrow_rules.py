"""domain.escrow: where a hold goes, what the rebalancer plans (pure, no I/O)."""
from decimal import Decimal

from chalicelib.domain.accounts import Account
from chalicelib.domain.authorization import Level
from chalicelib.domain.escrow import (REFILL_HOLDS, REFILL_PERMITS, Slot, SlotMove, escrowable, funds, owner_change,
                                      place, plan_idle, plan_owner)
from chalicelib.domain.ledger import debits, holds, releases
from chalicelib.domain.settlement import settle
from chalicelib.domain.tariffs import Rate

D = Decimal
RATE = Rate(prefix="1", price=D("1.20"), name="US")


def chain(slot_available=None, top_available=D("100"), **top):
    slots = () if slot_available is None else (Slot(2, "top", available=D(slot_available)),)
    return [Account("c", "client", "sub", "t", balance=D("50"), escrow=slots),
            Account("sub", "reseller", "top", "t", balance=D("50"), max_calls=10),
            Account("top", "reseller", "admin", "t", balance=top_available, **top),
            Account("admin", "admin", None, "t")]


def levels(hold=D("6")):
    return [Level(a, r, RATE, charged=a != "admin", hold=hold if a != "admin" else D(0))
            for a, r in (("c", "client"), ("sub", "reseller"), ("top", "reseller"), ("admin", "admin"))]


NOW = 1_796_000_000


def test_early_guarded_resellers_without_spend_limits_escrow():
    c = chain()
    assert escrowable(c[2], levels()[2])
    assert escrowable(c[1], levels()[1])                           # max_calls: escrowed as call permits
    assert not escrowable(c[0], levels()[0])                       # the client is its own item anyway
    assert escrowable(chain(cps_limit=5)[2], levels()[2])          # CPS: escrowed as a share
    assert not escrowable(chain(daily_limit=D("5"))[2], levels()[2])   # spend limits stay exact on the item


def test_a_slot_that_covers_the_whole_hold_takes_it_and_asks_for_more_when_it_would_not_cover_another():
    placed, wants, _ = place(chain("10"), levels(), NOW)
    assert [l.escrow for l in placed] == [0, 0, 2, 0]
    assert (2, "top", D("6")) in wants                              # 10 - 6 < 6
    placed, wants, _ = place(chain("12"), levels(), NOW)
    assert placed[2].escrow == 2 and all(w[0] != 2 for w in wants)


def test_a_slot_too_small_leaves_the_hold_on_the_owner_item_never_split():
    placed, wants, _ = place(chain("5"), levels(), NOW)
    assert placed[2].escrow == 0 and (2, "top", D("6")) in wants


def test_funds_are_the_larger_of_the_own_available_and_the_slot_so_escrow_never_shortens_a_call():
    assert funds(chain("30", top_available=D("10")), 2, levels()[2], NOW) == D("30")
    assert funds(chain("3", top_available=D("10")), 2, levels()[2], NOW) == D("10")
    assert funds(chain("30"), 1, levels()[1], NOW) == D("50")      # sub has no slot on this client


def test_hold_debit_and_release_of_an_escrowed_level_touch_only_the_client_item():
    placed, wants, fresh = place(chain("10"), levels(), NOW)
    changes = holds(placed, wants, NOW, (), fresh)
    assert [c.account_id for c in changes] == ["c", "sub"]
    slot = changes[0].slots[0]
    assert (slot.distance, slot.owner, slot.available, slot.min_available, slot.want) == (2, "top", D("-6"), D("6"), D("6"))
    charges = settle(placed, 60, "ANSWERED")
    done = debits(placed, charges, was_held=True)
    assert [c.account_id for c in done] == ["c", "sub"]
    assert (done[0].slots[0].available, done[0].slots[0].spent) == (D("6") - D("1.20"), D("1.20"))
    assert [c.account_id for c in releases(placed)] == ["c", "sub"]
    assert releases(placed)[0].slots[0].available == D("6")


def test_a_late_bill_from_a_slot_asks_the_rebalancer_to_sweep_it():
    placed, _, _ = place(chain("10"), levels(), NOW)
    late = debits(placed, settle(placed, 60, "ANSWERED", hold_released=False), was_held=False)
    assert late[0].slots[0].want == 0 and late[0].slots[0].available == D("-1.20")


def owner(available="100", status="active"):
    return Account("top", "reseller", "admin", "t", balance=D(available), status=status)


def test_refills_top_up_to_refill_holds_times_the_need_and_sweep_what_was_spent():
    moves, dry = plan_owner(owner(), [("c", Slot(2, "top", available=D("1"), spent=D("2"), need=D("6")))], [])
    assert not dry
    assert moves == [SlotMove("c", 2, "top", sweep=D("2"), refill=REFILL_HOLDS * D("6") - 1, claim=True)]
    change = owner_change(moves)
    assert (change.balance, change.held, change.available, change.min_available) == (D("-2"), D("21"), D("-23"), D("23"))


def test_an_owner_refills_only_from_plenty_and_when_dry_recalls_its_other_slots_and_refills_nothing():
    asks = [(f"c{i}", Slot(2, None, need=D("10"), wanted_by="top")) for i in range(3)]   # 40 each: 120
    others = [("x", Slot(2, "top", available=D("7"), spent=D("1"))), ("y", Slot(2, "other", available=D("9")))]
    moves, dry = plan_owner(owner("240"), asks, others)
    assert not dry and [m.refill for m in moves] == [D("40")] * 3                 # keeps 120 of 240
    moves, dry = plan_owner(owner("239"), asks, others)
    assert dry
    assert moves == [SlotMove("x", 2, "top", sweep=D("1"), recall=D("7"))]      # never another owner's slot
    assert owner_change(moves).available == D("7")


def test_a_suspended_owner_refills_nothing_and_recalls_everything():
    asks = [("c", Slot(2, "top", available=D("3"), need=D("10"), wanted_by="top")),
            ("new", Slot(2, None, need=D("10"), wanted_by="top"))]
    moves, dry = plan_owner(owner(status="suspended"), asks, [("x", Slot(2, "top", available=D("5")))])
    assert dry and all(m.refill == 0 and not m.claim for m in moves)
    assert sorted((m.client_id, m.recall) for m in moves) == [("c", D("3")), ("x", D("5"))]


# --- levels with a concurrent-call or CPS limit escrow call permits and a CPS share with their money --

def limited_chain(slot: Slot, **sub):
    sub.setdefault("max_calls", 10)
    return [Account("c", "client", "sub", "t", balance=D("50"), escrow=(slot,)),
            Account("sub", "reseller", "top", "t", balance=D("50"), **sub),
            Account("top", "reseller", "admin", "t", balance=D("100")),
            Account("admin", "admin", None, "t")]


def limited_levels(chain_, hold=D("6")):
    return [Level(a.id, a.role, RATE, charged=a.role != "admin", hold=hold if a.role != "admin" else D(0),
                  max_calls=a.max_calls if a.role != "admin" else None,
                  cps_limit=a.cps_limit if a.role != "admin" else None) for a in chain_]


def test_a_call_from_a_slot_takes_a_free_permit_and_gives_it_back_when_it_ends():
    c = limited_chain(Slot(1, "sub", available=D("30"), permits=1))
    placed, wants, _ = place(c, limited_levels(c), NOW)
    assert placed[1].escrow == 1
    assert (1, "sub", D("6")) in wants                             # its last permit: ask for more
    slot = holds(placed, wants, NOW)[0].slots[0]
    assert (slot.distance, slot.permits, slot.min_permits) == (1, -1, 1)
    charges = settle(placed, 60, "ANSWERED")
    assert debits(placed, charges, was_held=True)[0].slots[0].permits == 1
    assert releases(placed)[0].slots[0].permits == 1
    # a late bill after the sweeper released the call: its permit was already given back
    late = settle(placed, 60, "ANSWERED", hold_released=False)
    assert debits(placed, late, was_held=False)[0].slots[0].permits == 0


def test_a_slot_without_a_free_permit_is_not_used_the_owner_item_takes_the_call_and_asks_for_permits():
    c = limited_chain(Slot(1, "sub", available=D("30"), permits=0))
    placed, wants, _ = place(c, limited_levels(c), NOW)
    assert placed[1].escrow == 0 and (1, "sub", D("6")) in wants


def test_a_full_owner_item_still_grants_from_a_slot_with_a_permit_and_denies_without_one():
    from chalicelib.domain.authorization import CONCURRENT_CALLS_LIMIT, Denial, decide
    from chalicelib.domain.accounts import TreeSettings
    rates = [RATE] * 4
    full = limited_chain(Slot(1, "sub", available=D("30"), permits=1), active_calls=10)
    grant = decide(full, rates, {}, TreeSettings(), NOW)
    assert grant.levels[1].escrow == 1
    # the slot's money is all the level may hold: the owner item takes no more calls
    assert grant.max_duration == 30 * 60 // D("1.20")
    empty = limited_chain(Slot(1, "sub", available=D("30"), permits=0), active_calls=10)
    assert decide(empty, rates, {}, TreeSettings(), NOW) == Denial(CONCURRENT_CALLS_LIMIT, "sub")


def test_a_cps_share_admits_its_calls_per_second_and_the_owner_item_keeps_the_unlent_rest():
    from chalicelib.domain.authorization import CPS_LIMIT, Denial, Usage, decide
    from chalicelib.domain.accounts import TreeSettings
    rates = [RATE] * 4
    # GIVEN sub may start 2 calls a second, 1 of them lent as this client's share
    used = limited_chain(Slot(1, "sub", available=D("30"), share=1, second=NOW, started=1),
                         max_calls=None, cps_limit=2, cps_lent=1)
    # WHEN the share is used up this second and the item already started its 1
    assert decide(used, rates, {"sub": Usage(calls_this_second=1)}, TreeSettings(), NOW) == Denial(CPS_LIMIT, "sub")
    # THEN a new second starts the slot's counter afresh
    grant = decide(used, rates, {"sub": Usage(calls_this_second=1)}, TreeSettings(), NOW + 1)
    assert grant.levels[1].escrow == 1 and grant.fresh == (1,)
    slot = holds(grant.levels, grant.wants, NOW + 1, (), grant.fresh)[0].slots[0]
    assert (slot.start, slot.new_second) == (NOW + 1, True)


def test_refills_lend_permits_and_a_share_only_from_plenty_and_take_them_back_when_idle():
    sub = Account("sub", "reseller", "top", "t", balance=D("100"), max_calls=10, active_calls=3,
                  cps_limit=4, cps_lent=1)
    ask = [("c", Slot(1, "sub", need=D("6"), wanted_by="sub"))]
    moves, dry = plan_owner(sub, ask, [])
    assert not dry and (moves[0].permits, moves[0].share) == (REFILL_PERMITS, 1)
    change = owner_change(moves, sub, NOW)
    # the share is lent only while no more is out than was read (1), and only if the item itself started
    # at most 4 - 1 - 1 = 2 calls this second: else a slot could start its new share in a second the item
    # has already used up
    assert (change.active_calls, change.max_active_calls, change.cps_lent, change.max_cps_lent) == (2, 8, 1, 1)
    assert change.cps_room == (NOW, 2)
    assert owner_change(moves, sub, NOW, lent=2).cps_room == (NOW, 1)      # a batch after one that lent 1
    # 7 free permits cannot give 4 (2 clients x 2) and keep as many: dry, the other slot's permits come back
    other = ("x", Slot(1, "sub", available=D("5"), permits=2, share=1))
    two = ask + [("d", Slot(1, "sub", need=D("6"), wanted_by="sub"))]
    busy = Account("sub", "reseller", "top", "t", balance=D("100"), max_calls=10, active_calls=4)
    moves, dry = plan_owner(busy, two, [other])
    assert dry and moves == [SlotMove("x", 1, "sub", recall=D("5"), permits=-2, share=-1)]
    assert owner_change(moves).active_calls == -2 and owner_change(moves).max_active_calls is None
    assert plan_idle("sub", "x", other[1]) == SlotMove("x", 1, "sub", recall=D("5"), permits=-2, share=-1)
    # a share comes back only from a slot that started no call in the rebalancer's current second
    assert plan_idle("sub", "x", other[1]).slot_change(NOW).idle_since == NOW
    assert moves[0].slot_change(NOW).idle_since == NOW


# --- pools: a dry top reseller's last money ------------------------------------------------------------

def test_a_dry_top_reseller_levels_its_pools_up_to_equal_shares_with_what_its_item_has_left():
    from chalicelib.domain.escrow import plan_pools, pool_id, pool_of, pool_level
    top = Account("top", "reseller", "admin", "t", balance=D("10"))
    pools = [(pool_id("top", 0), None), (pool_id("top", 1), Slot(1, "top", available=D("4"), spent=D("1"))),
             (pool_id("top", 2), Slot(1, "top", available=D("9"))), (pool_id("top", 3), Slot(1, "top"))]
    moves = plan_pools(top, pools)
    # 10 lifts the three poorest (0, 4, 0) to 14 / 3 = 4.666666 each; the pool with 9 keeps its 9
    assert {m.client_id: m.refill for m in moves} == {"top~0": D("4.666666"), "top~1": D("0.666666"),
                                                      "top~3": D("4.666666")}
    assert sum(m.refill for m in moves) <= top.available
    rich = Account("top", "reseller", "admin", "t", balance=D("40"))
    assert {m.client_id: m.refill for m in plan_pools(rich, pools)} == \
        {"top~0": D("13.25"), "top~1": D("9.25"), "top~2": D("4.25"), "top~3": D("13.25")}   # 53 / 4
    assert [m.register for m in moves] == [True, False, True]        # empty ones are (re-)listed
    assert next(m for m in moves if m.client_id == "top~1").sweep == D("1")
    assert plan_pools(Account("top", "reseller", "admin", "t", status="suspended", balance=D("10")), pools) == []
    # only the root's child may hold from a pool, and each client always reads the same one
    assert pool_level(chain()) == 2 and pool_level(chain()[:1] + chain()[3:]) is None
    assert pool_of("c") == pool_of("c") and 0 <= pool_of("c") < 32


def test_a_level_short_on_its_client_slot_holds_from_its_pool_before_its_own_item():
    from chalicelib.domain.escrow import pool_for, pool_of
    c = chain("2", top_available=D("3"))
    assert pool_for(c) == f"top~{pool_of('c')}"                    # the pool authorize reads for client c
    pool = Account(pool_for(c), "pool", "top", None, escrow=(Slot(1, "top", available=D("20")),))
    assert funds(c, 2, levels()[2], NOW, pool=pool) == D("20")
    placed, wants, _ = place(c, levels(), NOW, pool)
    assert (placed[2].escrow, placed[2].pool) == (0, 1 + pool_of("c")) and (2, "top", D("6")) in wants
    change = next(ch for ch in holds(placed, wants, NOW) if ch.account_id == pool_for(c))
    assert (change.slots[0].distance, change.slots[0].available, change.slots[0].min_available) == (1, D("-6"), D("6"))
    assert [ch.account_id for ch in releases(placed)] == ["c", "sub", pool_for(c)]


from hypothesis import given, strategies as st  # noqa: E402

amounts = st.decimals(min_value=0, max_value=1000, places=2)


@given(available=amounts, held=st.lists(st.one_of(st.none(), amounts), min_size=1, max_size=32))
def test_pools_never_take_more_than_the_owner_has_and_end_level(available, held):
    from chalicelib.domain.escrow import plan_pools
    owner = Account("top", "reseller", "admin", "t", balance=available)
    pools = [(f"top~{k}", None if h is None else Slot(1, "top", available=h)) for k, h in enumerate(held)]
    moves = plan_pools(owner, pools)
    assert sum((m.refill for m in moves), D(0)) <= available
    after = {pid: (s.available if s else D(0)) for pid, s in pools}
    for m in moves:
        after[m.client_id] += m.refill
    if moves:   # the pools given something end at one level; a pool skipped was at or above it already
        (level,) = {after[m.client_id] for m in moves}
        given_to = {m.client_id for m in moves}
        assert all(a >= level - D("0.000001") for p, a in after.items() if p not in given_to)


def test_a_top_reseller_with_plenty_keeps_only_what_is_wanted_in_its_pools_and_never_more_than_it_keeps():
    from chalicelib.domain.escrow import plan_pools
    rich = Account("top", "reseller", "admin", "t", balance=D("1000"))
    pools = [(f"top~{k}", Slot(1, "top", available=D("5"))) for k in range(4)]          # 20 in pools
    assert sum(m.refill for m in plan_pools(rich, pools, wanted=D("60"))) == D("40")    # tops up to 60
    assert plan_pools(rich, pools, wanted=D("20")) == []                                # enough already
    poor = Account("top", "reseller", "admin", "t", balance=D("30"))
    assert sum(m.refill for m in plan_pools(poor, pools, wanted=D("60"))) == D("15")    # keeps 15 of 30
