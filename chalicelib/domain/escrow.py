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

Which levels escrow: a reseller level billed early, with a floor, and without a daily or monthly spend
limit (a spend limit is held on the level's own item, where it is exact). A level with a concurrent-call
or CPS limit escrows its limits with its money:

    permits    free call permits (max_calls): a standing count on the owner's ``active_calls``, so
               owner.active_calls = its own calls in flight + sum over slots (free permits + calls in
               flight from the slot); a call from the slot takes one and gives it back when it ends.
    share      a CPS share: calls the slot may start per second (``second``, ``started``), lent out of the
               owner's ``cps_limit`` (owner.cps_lent = sum of shares); the owner's own calls may start
               cps_limit - cps_lent a second.

Both limits stay exact upper bounds (a share is taken back only from a slot that started no call in the
current second, so the owner's item never starts it in a second the slot used it; and lent only if the
owner's item has left room for it in the current second: OwnerChange.cps_room), but they become
conservative: permits and
shares parked in a client's slot are not available to the owner's other clients until the rebalancer
takes them back (idle: IDLE_AFTER; dry: at its next request), so a call may be refused with
``concurrent_calls_limit`` or ``cps_limit`` while the owner's true count is below it by at most the free
permits (or shares) of its other slots.

Pools. When a top reseller (the root's child, whose item every call of its tree would meet) runs dry, the
rebalancer takes its escrow back and spreads what its item has left over POOLS pool items
(``<owner>~<k>``, each one slot for the owner, like a client item's). Every call under it reads the one
pool its client maps to (``pool_of``) with the chain, and holds from it when its own slot cannot; so the
last money is spent through 32 items at the rate calls arrive, not through one item at the rate one item
takes conflicting transactions. A pool whose remainder is below a hold strands it until the next pass
levels the pools again (``plan_pools``), at most POOLS holds; pools carry money only, so a top reseller
with a concurrent-call or CPS limit has none (its own limit caps its rate anyway).
"""
import zlib
from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, Decimal
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .accounts import ACTIVE, EARLY, RESELLER, Account
from .money import ZERO

MAX_SLOTS = 8            # ancestors (distance 1..8 above the client) that can escrow on a client's item
REFILL_HOLDS = 4         # a refill tops a slot up to this many of the holds that asked for it
REFILL_PERMITS = 2       # ... and, for an owner with a concurrent-call limit, to this many free call permits
SHARE = 1                # ... and, for an owner with a CPS limit, to this CPS share
IDLE_AFTER = 300         # seconds without a refill after which a slot's escrow is recalled
RESERVE = 1              # an owner refills only while it keeps at least RESERVE x what it gives
POOLS = 32               # a dry top reseller's last funds are spread over this many pool items
POOL_SEP = "~"           # pool item ids: <owner>~<k> (an account id never contains it)
POOL = "pool"            # a pool item's role
POOL_AFTER = 32          # refill requests in one pass that make a top reseller with plenty fill its pools
POOL_PASSES = 2          # ... with about this many passes' worth of the holds that asked


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
    permits: int = 0                 # free call permits (an owner with max_calls)
    share: int = 0                   # CPS share: calls it may start a second (an owner with cps_limit)
    second: int = 0                  # the second ``started`` counts in
    started: int = 0

    def starts_left(self, now: int) -> int:
        return self.share - (self.started if self.second == now else 0)


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
    permits: int = 0                # free call permits delta
    min_permits: Optional[int] = None
    share: int = 0                  # CPS share delta (the rebalancer)
    start: Optional[int] = None     # a call starts from the slot in this second (uses the CPS share)
    new_second: bool = False        # ... the slot's counter is of an older second: start it at 1
    idle_since: Optional[int] = None   # guard of a share taken back: no call started from it this second

    @property
    def empty(self) -> bool:
        return not (self.available or self.spent or self.claim or self.want is not None or self.permits
                    or self.share or self.start is not None)


def slot_for(client: Account, distance: int, owner: str) -> Optional[Slot]:
    for slot in client.escrow:
        if slot.distance == distance and slot.owner == owner:
            return slot
    return None


def escrowable(account: Account, level) -> bool:
    """May this level be held from escrow? (See the module's last paragraphs.)"""
    return (level.charged and level.mode == EARLY and level.guarded and account.role == RESELLER
            and account.daily_limit is None and account.monthly_limit is None)


def usable(chain: Sequence[Account], i: int, level, now: int) -> Optional[Slot]:
    """Level i's slot on the client item if a call may be held from it now: escrowed, with a free permit
    and a CPS start left where the owner has those limits (its money is checked by the caller)."""
    if not 1 <= i <= MAX_SLOTS or not escrowable(chain[i], level):
        return None
    slot = slot_for(chain[0], i, chain[i].id)
    if slot is None:
        return None
    if chain[i].max_calls is not None and slot.permits < 1:
        return None
    if chain[i].cps_limit is not None and slot.starts_left(now) < 1:
        return None
    return slot


# --- pools: a dry top reseller's last funds, spread so that 5,000 calls/s do not all meet its item ----

def pool_id(owner_id: str, k: int) -> str:
    return f"{owner_id}{POOL_SEP}{k}"


def is_pool(account_id: str) -> bool:
    return POOL_SEP in account_id


def pool_of(client_id: str) -> int:
    """The pool a client's calls use (fixed, so authorize reads exactly one pool item)."""
    return zlib.crc32(client_id.encode("utf-8")) % POOLS


def pool_level(chain: Sequence[Account]) -> Optional[int]:
    """The chain index of the level that may hold from a pool: the top reseller (the root's child).
    Pools are for it alone: every call under it meets its item, and its last money must stay reachable
    at 5,000 calls/s; a deeper reseller's subtree shares its traffic with its siblings'."""
    i = len(chain) - 2
    if i >= 1 and chain[i].role == RESELLER:
        return i
    return None


def pool_for(chain: Sequence[Account]) -> Optional[str]:
    """The id of the pool item this chain's client holds from (None: no top reseller above it)."""
    i = pool_level(chain)
    return None if i is None else pool_id(chain[i].id, pool_of(chain[0].id))


def usable_pool(chain: Sequence[Account], i: int, level, pool: Optional[Account]) -> Optional[Slot]:
    """The pool's slot if level i may hold from it: escrowable, without concurrent-call or CPS limits
    (pools carry money only; a limited top reseller is capped by its own limits anyway)."""
    if pool is None or i != pool_level(chain) or not escrowable(chain[i], level):
        return None
    if chain[i].max_calls is not None or chain[i].cps_limit is not None:
        return None
    return slot_for(pool, 1, chain[i].id)


def funds(chain: Sequence[Account], i: int, level, now: int, direct: bool = True,
          pool: Optional[Account] = None) -> Decimal:
    """What level i may hold for this call: its own available (when its own limits admit the call:
    ``direct``), or its usable slot's on the client, or its pool's (a top reseller), whichever is
    largest (a hold is placed whole on one of them, never split)."""
    found = [chain[i].available] if direct else []
    for slot in (usable(chain, i, level, now), usable_pool(chain, i, level, pool)):
        if slot is not None:
            found.append(slot.available)
    return max(found) if found else ZERO


def place(chain: Sequence[Account], levels: Sequence, now: int,
          pool: Optional[Account] = None) -> Tuple[list, tuple, Tuple[int, ...]]:
    """Where each level's hold goes: ``Level.escrow`` = the slot's distance on the client item, else
    ``Level.pool`` = 1 + the pool of a top reseller (``pool``: the item read for the client), else its
    own item.
    Also the refill requests (distance, owner, need): a level that could not use its slot, or whose slot
    this call leaves without money for one more such hold or without a free permit; and the distances of
    the slots whose CPS counter this call starts afresh (the slot's is of an older second)."""
    placed, wants, fresh = list(levels), [], []
    for i in range(1, min(len(levels), MAX_SLOTS + 1)):
        level, account = levels[i], chain[i]
        if not escrowable(account, level):
            continue
        slot = usable(chain, i, level, now)
        if slot is not None and slot.available >= level.hold:
            placed[i] = replace(level, escrow=i)
            if account.cps_limit is not None and slot.second != now:
                fresh.append(i)
            if (slot.available - level.hold < level.hold
                    or (account.max_calls is not None and slot.permits - 1 < 1)):
                wants.append((i, account.id, level.hold))
        else:
            pooled = usable_pool(chain, i, level, pool)
            if pooled is not None and pooled.available >= level.hold:
                placed[i] = replace(level, pool=1 + pool_of(chain[0].id))
            if _refill_helps(account, slot_for(chain[0], i, account.id), level.hold):
                wants.append((i, account.id, level.hold))
    return placed, tuple(wants), tuple(fresh)


def _refill_helps(owner: Account, slot: Optional[Slot], hold: Decimal) -> bool:
    """A slot that could not take the call asks for a refill unless all it lacked was a CPS start this
    second (its share is full size: a refill would not change it)."""
    return (slot is None or slot.available < hold or (owner.max_calls is not None and slot.permits < 1)
            or (owner.cps_limit is not None and slot.share < SHARE))


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
    permits: int = 0                 # free call permits given (> 0) or taken back (< 0)
    share: int = 0                   # CPS share given (> 0) or taken back (< 0)
    register: bool = False           # list the slot in the owner's registry (a refill of an empty slot)

    def slot_change(self, now: Optional[int] = None) -> SlotChange:
        # A sweep never fails: calls only add to spent. A recall takes only what is still available
        # (and only free permits). A share comes back only from a slot no call started from in this
        # second (``now``): the owner's item may start the share itself from the moment it is back, so
        # taking it mid-second would let that second go over the limit.
        return SlotChange(self.distance, self.owner, available=self.refill - self.recall, spent=-self.sweep,
                          min_available=self.recall - self.refill if self.recall > self.refill else None,
                          min_spent=self.sweep if self.sweep else None, claim=self.claim,
                          permits=self.permits, min_permits=-self.permits if self.permits < 0 else None,
                          share=self.share, idle_since=now if self.share < 0 else None)

    @property
    def empty(self) -> bool:
        return not (self.sweep or self.refill or self.recall or self.claim or self.permits or self.share)


@dataclass(frozen=True)
class OwnerChange:
    """What a batch of slot moves does to the owner's own item (the BalanceChange's numbers)."""
    balance: Decimal
    held: Decimal
    available: Decimal
    min_available: Optional[Decimal]
    active_calls: int = 0                     # permits lent (+) or taken back (-)
    max_active_calls: Optional[int] = None    # guard: active_calls before may not exceed this
    cps_lent: int = 0                         # CPS shares lent (+) or taken back (-)
    max_cps_lent: Optional[int] = None        # guard: cps_lent before may not exceed this
    # guard of a share lent: in second ``cps_room[0]`` the owner's item may have started at most
    # ``cps_room[1]`` calls (what its limit leaves once the new shares are out), or a slot could start
    # its new share in a second the item has already used
    cps_room: Optional[Tuple[int, int]] = None


def owner_change(moves: Sequence[SlotMove], owner: Optional[Account] = None, now: Optional[int] = None,
                 lent: Optional[int] = None) -> OwnerChange:
    """``owner`` (as read) gives the limits a lending batch is guarded by (DynamoDB compares, it cannot
    add: the limit less what is lent is computed here). ``lent``: the owner's shares out before this
    batch (as read, plus what earlier batches of the pass lent); ``now``: the rebalancer's second."""
    sweep = sum((m.sweep for m in moves), ZERO)
    refill = sum((m.refill for m in moves), ZERO)
    recall = sum((m.recall for m in moves), ZERO)
    permits = sum(m.permits for m in moves)
    shares = sum(m.share for m in moves)
    need = refill - recall
    max_calls = owner.max_calls if owner is not None else None
    cps_limit = owner.cps_limit if owner is not None else None
    lending = shares > 0 and cps_limit is not None
    if lending and lent is None:
        lent = owner.cps_lent
    return OwnerChange(balance=-sweep, held=refill - recall - sweep, available=-need,
                       min_available=need if need > ZERO else None,
                       active_calls=permits, cps_lent=shares,
                       max_active_calls=max_calls - permits if permits > 0 and max_calls is not None else None,
                       max_cps_lent=min(lent, cps_limit - shares) if lending else None,
                       cps_room=(now, cps_limit - lent - shares) if lending and now is not None else None)


def _empty(slot: Slot) -> bool:
    """Nothing in it for its owner: a refill must (re-)list it in the owner's registry, which the idle
    and dry passes read; a slot with something in it is listed already (an entry is forgotten only
    after its slot has been empty for a day)."""
    return (slot.owner is None or (slot.available <= ZERO and not slot.spent and slot.permits <= 0
                                   and slot.share <= 0))


def _taken_back(owner_id: str, client_id: str, slot: Slot) -> SlotMove:
    """Everything a slot holds for its owner that no call is using: available money, free permits, the
    share; and its spent money swept."""
    return SlotMove(client_id, slot.distance, owner_id, sweep=slot.spent, recall=max(ZERO, slot.available),
                    permits=-max(0, slot.permits), share=-max(0, slot.share))


def plan_owner(owner: Account, wanted: Sequence[Tuple[str, Slot]], others: Sequence[Tuple[str, Slot]],
               recall_all: bool = False) -> Tuple[List[SlotMove], bool]:
    """Refill the slots that asked (``wanted``: client id, its slot for this owner) and sweep their
    spent money, but only from plenty: the owner must keep at least as much as it gives (RESERVE) of its
    money, and of its free call permits and unlent CPS where it has those limits. An owner that cannot,
    or is not active, is *dry*: it refills nothing and takes back its other slots' (``others``) money,
    permits and shares, so its last funds (and calls) are spent through its own item, where every hold
    is an exact conditional write (the 95% of the issue: nothing is stranded in idle slots).

    Returns the moves and whether the owner was dry."""
    moves: List[SlotMove] = []
    asks = [(client_id, slot, max(ZERO, REFILL_HOLDS * slot.need - slot.available),   # a late bill may leave it < 0
             max(0, REFILL_PERMITS - slot.permits) if owner.max_calls is not None else 0,
             max(0, SHARE - slot.share) if owner.cps_limit is not None else 0)
            for client_id, slot in wanted]
    money = sum((a[2] for a in asks), ZERO)
    permits = sum(a[3] for a in asks)
    shares = sum(a[4] for a in asks)
    stop = recall_all or owner.status != ACTIVE
    dry = (stop or money * (1 + RESERVE) > max(ZERO, owner.available)
           or (owner.max_calls is not None and permits * (1 + RESERVE) > owner.max_calls - owner.active_calls)
           or (owner.cps_limit is not None and shares * (1 + RESERVE) > owner.cps_limit - owner.cps_lent))
    for client_id, slot, ask, permit_ask, share_ask in asks:
        if stop and slot.owner is not None:
            moves.append(_taken_back(owner.id, client_id, slot))
        elif not dry:
            gives = bool(ask or permit_ask or share_ask)
            moves.append(SlotMove(client_id, slot.distance, owner.id, sweep=slot.spent, refill=ask,
                                  claim=gives, permits=permit_ask, share=share_ask,
                                  register=gives and _empty(slot)))
        elif slot.owner is not None and slot.spent:
            moves.append(SlotMove(client_id, slot.distance, owner.id, sweep=slot.spent))
    if dry:
        for client_id, slot in others:
            if slot.owner == owner.id and (slot.available > ZERO or slot.spent or slot.permits > 0 or slot.share > 0):
                moves.append(_taken_back(owner.id, client_id, slot))
    return [m for m in moves if not m.empty], dry


def plan_pools(owner: Account, pools: Sequence[Tuple[str, Optional[Slot]]],
               wanted: Optional[Decimal] = None) -> List[SlotMove]:
    """A dry top reseller that is still active spreads what its item has left over its pools (``pools``:
    pool id, its slot for the owner or None), levelling them up to equal shares: the calls under it then
    hold from POOLS items instead of one, and its last money is granted at the rate they arrive (the
    issue's 95%). At most POOLS x one hold can be stranded (each pool's remainder below a hold) until
    the next pass levels them again; a pool's spent money is swept on the way.

    ``wanted``: a top reseller with plenty whose calls keep missing their clients' slots (many clients
    that call rarely) keeps about that much in its pools, given only from plenty (RESERVE), so those
    calls meet 32 items rather than its one."""
    if owner.status != ACTIVE or owner.available <= ZERO or not pools:
        return []
    held = {pid: max(ZERO, slot.available) if slot is not None else ZERO for pid, slot in pools}
    spend = owner.available
    if wanted is not None:
        spend = min(max(ZERO, wanted - sum(held.values(), ZERO)), owner.available / (1 + RESERVE))
        if spend <= ZERO:
            return []
    # Water-filling: the level L that the owner's available lifts the poorest pools to (a pool above L
    # keeps its money): the first k pools (poorest first) such that L = (available + their sum) / k
    # does not exceed the next pool's.
    ordered = sorted(held.values())
    total = spend
    for k, amount in enumerate(ordered, start=1):
        total += amount
        if k == len(ordered) or total / k <= ordered[k]:
            break
    target = (total / k).quantize(Decimal("0.000001"), rounding=ROUND_DOWN)
    moves = []
    for pid, slot in pools:
        give = target - held[pid]
        if give > ZERO:
            moves.append(SlotMove(pid, 1, owner.id, refill=give, claim=True,
                                  sweep=slot.spent if slot is not None else ZERO,
                                  register=slot is None or _empty(slot)))
    return moves


def plan_idle(owner_id: str, client_id: str, slot: Slot) -> Optional[SlotMove]:
    """A slot no call has used for IDLE_AFTER seconds gives its escrow back (and its spent is swept)."""
    move = _taken_back(owner_id, client_id, slot)
    return None if move.empty else move


def slots_by_owner(slots: Sequence[Slot]) -> Dict[str, Slot]:
    return {s.owner: s for s in slots if s.owner is not None}


def pending_wants(client: Account) -> List[Slot]:
    """The refill requests a client item carries: slots whose ``wanted_by`` names an owner."""
    return [s for s in client.escrow if s.wanted_by is not None]


def wallet_lag(slots: Mapping[str, Sequence[Slot]], owner_id: str) -> Decimal:
    """How far an owner's item balance is ahead of its journal: spent money not yet swept."""
    return sum((s.spent for ss in slots.values() for s in ss if s.owner == owner_id), ZERO)
