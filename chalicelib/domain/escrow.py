"""Hierarchical escrow: an ancestor's money set aside in advance on the item every call already writes.

A call of client C used to update the account item of every charged level of its chain, so a top reseller's
item was written by every call in its tree (one item: about 1,000 write units/s, and transactions on it
conflict). Now each client item carries up to ``MAX_SLOTS`` escrow slots, slot k for the ancestor at
distance k (1: the parent). A slot holds an ancestor's money for that client's calls:

    available  what the client's calls may still hold at the ancestor's level
    spent      what they were billed at that level since the rebalancer last swept the slot

A slot is a standing hold on the ancestor's own item. The rebalancer (the only writer that moves money
between a slot and its owner) refills (owner ``held +x``, ``available -x``; slot ``available +x``), recalls
(the reverse) and sweeps (slot ``spent -s``; owner ``balance -s``, ``held -s``). So at every moment

    owner.held      = holds placed on the owner's own item + sum over slots (available + in flight + spent)
    owner.available = balance + credit - held   (never more than the owner may spend: portal charges,
                                                 transfers and direct holds guarded by it stay exact)
    wallet:<owner>  = owner.balance - sum over slots of spent   (the journal; exact after a sweep)

A call holds from a slot when the slot covers the level's whole hold; otherwise the level is held on the
owner's item as before (exact, and the way the owner's last money is spent when it runs dry) and the
client item asks the rebalancer for a refill (``Want``). Escrow (O'Neil's escrow method, the demarcation
protocol) never changes what is granted: a level's funds are the larger of its own available and its slot.

Which levels escrow: a reseller level billed early, with a floor, and without a concurrent-call, CPS or
daily/monthly spend limit. A level with such a limit is held on its own item, where the limit is exact;
such a level is capped by its own limit and is never the item 5,000 calls/s meet.
"""
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .accounts import ACTIVE, EARLY, RESELLER, Account
from .money import ZERO

MAX_SLOTS = 8            # ancestors (distance 1..8 above the client) that can escrow on a client's item
REFILL_HOLDS = 4         # a refill tops a slot up to this many of the holds that asked for it
IDLE_AFTER = 300         # seconds without a refill after which a slot's escrow is recalled
RESERVE = 1              # an owner refills only while it keeps at least RESERVE x what it gives


@dataclass(frozen=True)
class Slot:
    """Escrow an ancestor (``owner``) keeps on a client's item."""
    distance: int
    owner: Optional[str]             # None: asked for (want) but never refilled
    available: Decimal = ZERO
    spent: Decimal = ZERO
    need: Decimal = ZERO             # the hold of the call that last asked for a refill
    wanted_by: Optional[str] = None  # the owner a pending refill request names
    used_at: int = 0                 # when a call last held from it (epoch s): idle means unused


@dataclass(frozen=True)
class SlotChange:
    """What a call or the rebalancer does to one slot of a client item (deltas, and guards the store
    checks: ``owner`` must be the slot's owner; ``min_available``: the slot's available before)."""
    distance: int
    owner: str
    available: Decimal = ZERO
    spent: Decimal = ZERO
    min_available: Optional[Decimal] = None
    min_spent: Optional[Decimal] = None
    claim: bool = False             # the rebalancer opens the slot for ``owner`` (or finds it its own)
    want: Optional[Decimal] = None  # a call asks for a refill: the hold it needed
    used_at: Optional[int] = None   # a hold from the slot stamps its last use

    @property
    def empty(self) -> bool:
        return not (self.available or self.spent or self.claim or self.want is not None)


def slot_for(client: Account, distance: int, owner: str) -> Optional[Slot]:
    for slot in client.escrow:
        if slot.distance == distance and slot.owner == owner:
            return slot
    return None


def escrowable(account: Account, level) -> bool:
    """May this level be held from escrow? (See the module's last paragraph.)"""
    return (level.charged and level.mode == EARLY and level.guarded and account.role == RESELLER
            and account.max_calls is None and account.cps_limit is None
            and account.daily_limit is None and account.monthly_limit is None)


def funds(chain: Sequence[Account], i: int, level) -> Decimal:
    """What level i may hold for this call: its own available, or its slot on the client if larger
    (a hold is placed whole on one of the two, never split)."""
    own = chain[i].available
    if 1 <= i <= MAX_SLOTS and escrowable(chain[i], level):
        slot = slot_for(chain[0], i, chain[i].id)
        if slot is not None and slot.available > own:
            return slot.available
    return own


def place(chain: Sequence[Account], levels: Sequence) -> Tuple[list, Tuple[Tuple[int, str, Decimal], ...]]:
    """Where each level's hold goes: ``Level.escrow`` = the slot's distance, 0 on the level's own item.
    Also the refill requests (distance, owner, need): a level that could not use its slot, or whose slot
    this hold leaves below one more such hold."""
    placed, wants = list(levels), []
    for i in range(1, min(len(levels), MAX_SLOTS + 1)):
        level, account = levels[i], chain[i]
        if not escrowable(account, level):
            continue
        slot = slot_for(chain[0], i, account.id)
        if slot is not None and slot.available >= level.hold:
            placed[i] = replace(level, escrow=i)
            if slot.available - level.hold < level.hold:
                wants.append((i, account.id, level.hold))
        else:
            wants.append((i, account.id, level.hold))
    return placed, tuple(wants)


# --- the rebalancer's plan (pure) ------------------------------------------------------------------

@dataclass(frozen=True)
class SlotMove:
    """One slot's part in a rebalance: ``sweep`` spent money into the owner's balance, then ``refill``
    from or ``recall`` to the owner's available. ``release_want`` clears a served refill request."""
    client_id: str
    distance: int
    owner: str
    sweep: Decimal = ZERO
    refill: Decimal = ZERO
    recall: Decimal = ZERO
    claim: bool = False

    def slot_change(self) -> SlotChange:
        # A sweep never fails: calls only add to spent. A recall takes only what is still available.
        return SlotChange(self.distance, self.owner, available=self.refill - self.recall, spent=-self.sweep,
                          min_available=self.recall - self.refill if self.recall > self.refill else None,
                          min_spent=self.sweep if self.sweep else None, claim=self.claim)

    @property
    def empty(self) -> bool:
        return not (self.sweep or self.refill or self.recall or self.claim)


@dataclass(frozen=True)
class OwnerChange:
    """What a batch of slot moves does to the owner's own item (the BalanceChange's numbers)."""
    balance: Decimal
    held: Decimal
    available: Decimal
    min_available: Optional[Decimal]


def owner_change(moves: Sequence[SlotMove]) -> OwnerChange:
    sweep = sum((m.sweep for m in moves), ZERO)
    refill = sum((m.refill for m in moves), ZERO)
    recall = sum((m.recall for m in moves), ZERO)
    need = refill - recall
    return OwnerChange(balance=-sweep, held=refill - recall - sweep, available=-need,
                       min_available=need if need > ZERO else None)


def plan_owner(owner: Account, wanted: Sequence[Tuple[str, Slot]], others: Sequence[Tuple[str, Slot]],
               recall_all: bool = False) -> Tuple[List[SlotMove], bool]:
    """Refill the slots that asked (``wanted``: client id, its slot for this owner) and sweep their
    spent money, but only from plenty: the owner must keep at least as much as it gives (RESERVE). An
    owner that cannot, or is not active, is *dry*: it refills nothing and recalls the available money
    of its other slots (``others``), so its last funds are spent through its own item, where every hold
    is an exact conditional write (the 95% of the issue: nothing is stranded in idle slots).

    Returns the moves and whether the owner was dry."""
    moves: List[SlotMove] = []
    asks = [(client_id, slot, max(ZERO, REFILL_HOLDS * slot.need - slot.available))   # a late bill may leave it < 0
            for client_id, slot in wanted]
    total = sum((a for _, _, a in asks), ZERO)
    stop = recall_all or owner.status != ACTIVE
    dry = stop or total * (1 + RESERVE) > max(ZERO, owner.available)
    for client_id, slot, ask in asks:
        if stop and slot.owner is not None:
            moves.append(SlotMove(client_id, slot.distance, owner.id, sweep=slot.spent,
                                  recall=max(ZERO, slot.available)))
        elif not dry:
            moves.append(SlotMove(client_id, slot.distance, owner.id, sweep=slot.spent, refill=ask,
                                  claim=bool(ask)))
        elif slot.owner is not None and slot.spent:
            moves.append(SlotMove(client_id, slot.distance, owner.id, sweep=slot.spent))
    if dry:
        for client_id, slot in others:
            if slot.owner == owner.id and (slot.available > ZERO or slot.spent):
                moves.append(SlotMove(client_id, slot.distance, owner.id, sweep=slot.spent,
                                      recall=max(ZERO, slot.available)))
    return [m for m in moves if not m.empty], dry


def plan_idle(owner_id: str, client_id: str, slot: Slot) -> Optional[SlotMove]:
    """A slot no call has used for IDLE_AFTER seconds gives its escrow back (and its spent is swept)."""
    move = SlotMove(client_id, slot.distance, owner_id, sweep=slot.spent, recall=max(ZERO, slot.available))
    return None if move.empty else move


def slots_by_owner(slots: Sequence[Slot]) -> Dict[str, Slot]:
    return {s.owner: s for s in slots if s.owner is not None}


def pending_wants(client: Account) -> List[Slot]:
    """The refill requests a client item carries: slots whose ``wanted_by`` names an owner."""
    return [s for s in client.escrow if s.wanted_by is not None]


def wallet_lag(slots: Mapping[str, Sequence[Slot]], owner_id: str) -> Decimal:
    """How far an owner's item balance is ahead of its journal: spent money not yet swept."""
    return sum((s.spent for ss in slots.values() for s in ss if s.owner == owner_id), ZERO)
