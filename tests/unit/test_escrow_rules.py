"""domain.escrow: where a hold goes, what the rebalancer plans (pure, no I/O)."""
from decimal import Decimal

from chalicelib.domain.accounts import Account
from chalicelib.domain.authorization import Level
from chalicelib.domain.escrow import (REFILL_HOLDS, Slot, SlotMove, escrowable, funds, owner_change, place,
                                      plan_owner)
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


def test_only_unlimited_early_guarded_resellers_escrow():
    c = chain()
    assert escrowable(c[2], levels()[2])
    assert not escrowable(c[1], levels()[1])                       # max_calls: exact on its own item
    assert not escrowable(c[0], levels()[0])                       # the client is its own item anyway
    assert not escrowable(chain(cps_limit=5)[2], levels()[2])
    assert not escrowable(chain(daily_limit=D("5"))[2], levels()[2])


def test_a_slot_that_covers_the_whole_hold_takes_it_and_asks_for_more_when_it_would_not_cover_another():
    placed, wants = place(chain("10"), levels())
    assert [l.escrow for l in placed] == [0, 0, 2, 0]
    assert wants == ((2, "top", D("6")),)                          # 10 - 6 < 6
    placed, wants = place(chain("12"), levels())
    assert placed[2].escrow == 2 and wants == ()


def test_a_slot_too_small_leaves_the_hold_on_the_owner_item_never_split():
    placed, wants = place(chain("5"), levels())
    assert placed[2].escrow == 0 and wants == ((2, "top", D("6")),)


def test_funds_are_the_larger_of_the_own_available_and_the_slot_so_escrow_never_shortens_a_call():
    assert funds(chain("30", top_available=D("10")), 2, levels()[2]) == D("30")
    assert funds(chain("3", top_available=D("10")), 2, levels()[2]) == D("10")
    assert funds(chain("30"), 1, levels()[1]) == D("50")           # sub is not escrowable


def test_hold_debit_and_release_of_an_escrowed_level_touch_only_the_client_item():
    placed, wants = place(chain("10"), levels())
    changes = holds(placed, wants)
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
    placed, _ = place(chain("10"), levels())
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
