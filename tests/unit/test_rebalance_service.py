"""services.rebalance over a fake store: how often a dry owner's whole registry is read."""
from decimal import Decimal

from chalicelib.domain.accounts import Account
from chalicelib.domain.escrow import Slot
from chalicelib.services import rebalance as service

D = Decimal


class FakeStore:
    """One dry owner with one wanting client and one other slot holder."""
    def __init__(self, owner_status="active"):
        self.registry_reads, self.applied, self.recall_at = 0, [], 0
        self.items = {
            "top": Account("top", "reseller", "admin", "t", balance=D("5"), status=owner_status),
            "c1": Account("c1", "client", "top", "t", escrow=(Slot(1, None, need=D("10"), wanted_by="top"),)),
            "c2": Account("c2", "client", "top", "t", escrow=(Slot(1, "top", available=D("3")),)),
        }

    def wanting_clients(self):
        return ["c1"]

    def accounts(self, ids):
        return {i: self.items[i] for i in ids if i in self.items}

    def escrow_owners(self):
        return [("top", self.recall_at)]

    def escrow_slots(self, owner_id):
        self.registry_reads += 1
        return [("c2", 1, 0)]

    def clear_recall(self, owner_id, at):
        self.recall_at = 0

    def clear_wants(self, ids):
        pass

    def forget_slots(self, owner_id, ids):
        pass

    def touch_slots(self, owner_id, entries):
        pass

    def apply_moves(self, owner_id, moves, change, now, clear_wants=(), list_owner=True):
        self.listed_by_refill = list_owner
        self.applied += list(moves)
        return []


def test_a_dry_owner_registry_is_read_at_most_once_per_interval_but_a_recall_request_always_reads_it(monkeypatch):
    t = [100.0]
    monkeypatch.setattr(service, "clock", lambda: t[0])
    monkeypatch.setattr(service, "_dry_read_at", {})
    store = FakeStore()
    assert service.rebalance(store, 1).dry == ["top"] and store.registry_reads == 1
    assert [(m.client_id, m.recall) for m in store.applied] == [("c2", D("3"))]
    t[0] += 5
    service.rebalance(store, 2)
    assert store.registry_reads == 1                     # still dry 5 s later: not read again
    t[0] += service.DRY_RECALL_EVERY
    service.rebalance(store, 3)
    assert store.registry_reads == 2
    store.recall_at = 3                                 # a suspension's recall request: read at once
    service.rebalance(store, 4)
    assert store.registry_reads == 3


def test_an_owner_already_in_the_owners_list_is_not_written_again_and_only_empty_slots_are_registered():
    store = FakeStore()
    store.items["top"] = Account("top", "reseller", "admin", "t", balance=D("1000"))
    store.items["c1"] = Account("c1", "client", "top", "t",
                                escrow=(Slot(1, "top", available=D("2"), need=D("10"), wanted_by="top"),))
    service.rebalance(store, 1_000)
    moves = store.applied
    assert len(moves) == 1 and moves[0].refill == D("38") and not moves[0].register     # listed already: a non-empty slot
    assert store.listed_by_refill is False                           # "top" is in escrow_owners()
