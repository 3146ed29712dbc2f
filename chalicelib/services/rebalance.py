"""The rebalancer: refill escrow slots that asked, recall escrow that is idle or whose owner stopped being
active or ran dry, and sweep what slots spent into their owners' balances (domain.escrow).

It is the only writer that moves money between an owner's item and the slots on its clients' items, so
calls never write a hot owner's item while escrow covers them. One pass (``rebalance``):
1. refill requests: the clients in the sparse ``wants`` index, read strongly consistent; each request
   names its owner; per owner, ``escrow.plan_owner`` refills what the owner can afford. An owner that
   cannot meet every request is *dry*: its other slots' available money is recalled in the same pass, so
   its last funds are spent through its own item (exactly, by the calls' conditional holds).
2. recall requests: an owner suspended or closed (``request_recall``, set by the portal) gets all of its
   escrow back.
3. idle slots (``idle=True``, every ``IDLE_EVERY`` seconds): a slot no call has held from for
   ``IDLE_AFTER`` seconds gives its available money back and its spent money is swept (the registry
   entry is dated by refills, then by the uses the idle pass finds, so a busy slot is read once per
   IDLE_AFTER and never recalled).

Bounded times (with the deployed tick of 1 s): a request is served within one tick; a suspended owner's
escrow is back within one tick of the request; idle escrow within IDLE_AFTER + IDLE_EVERY seconds.
"""
import logging
from decimal import Decimal
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Protocol, Sequence, Set, Tuple

from chalicelib.domain.accounts import Account
from chalicelib.domain.escrow import (IDLE_AFTER, POOL_AFTER, POOL_PASSES, POOLS, Slot, SlotMove, is_pool,
                                      owner_change, pending_wants, plan_idle, plan_owner, plan_pools, pool_id,
                                      slot_for)

log = logging.getLogger("cascade.rebalance")

IDLE_EVERY = 60
DRY_RECALL_EVERY = 10.0
_dry_read_at: Dict[str, float] = {}      # the one rebalancer instance's memory (monotonic seconds)
clock = time.monotonic
# A registry entry outlives its slot's last refill by this long before an empty slot is forgotten: every
# call held from the slot has completed or been swept by then (max_duration + hold_grace is hours).
REGISTRY_KEEP = 86400
MOVES_PER_TRANSACTION = 45     # the owner's item + a client item and a registry item per move <= 100


class EscrowStore(Protocol):
    def wanting_clients(self) -> List[str]: ...
    def accounts(self, account_ids: List[str]) -> Dict[str, Account]: ...
    def escrow_owners(self) -> List[Tuple[str, int]]: ...
    def escrow_slots(self, owner_id: str) -> List[Tuple[str, int, int]]: ...
    def clear_recall(self, owner_id: str, requested_at: int) -> None: ...
    def clear_wants(self, client_ids: Sequence[str]) -> None: ...
    def forget_slots(self, owner_id: str, client_ids: Sequence[str]) -> None: ...
    def touch_slots(self, owner_id: str, entries: Sequence[Tuple[str, int, int]]) -> None: ...
    def create_pools(self, owner_id: str, pool_ids: Sequence[str]) -> None: ...
    def apply_moves(self, owner_id: str, moves: Sequence[SlotMove], change, now: int,
                    clear_wants: Sequence[str] = (), list_owner: bool = True) -> List[SlotMove]: ...


@dataclass
class Report:
    refilled: int = 0
    recalled: int = 0
    swept: int = 0
    dry: List[str] = field(default_factory=list)
    refused: int = 0
    pooled: int = 0

    def add(self, moves: Sequence[SlotMove]) -> None:
        self.refilled += sum(1 for m in moves if m.refill and not is_pool(m.client_id))   # pools: ``pooled``
        self.recalled += sum(1 for m in moves if m.recall)
        self.swept += sum(1 for m in moves if m.sweep)


def rebalance(store: EscrowStore, now: int, idle: bool = False) -> Report:
    report = Report()
    wanting = store.wanting_clients()
    clients = store.accounts(wanting) if wanting else {}
    wanted: Dict[str, List[Tuple[str, Slot]]] = {}
    for client in clients.values():
        for slot in pending_wants(client):
            if slot.owner is not None and slot.owner != slot.wanted_by:
                continue            # the slot belongs to another owner now (the tree changed): ignore
            wanted.setdefault(slot.wanted_by, []).append((client.id, slot))
    unserved = set(wanting) - {c for reqs in wanted.values() for c, _ in reqs}
    if unserved:
        store.clear_wants(sorted(unserved))
    listed = dict(store.escrow_owners())
    recalls = {owner: at for owner, at in listed.items() if at}
    owners = store.accounts(sorted(set(wanted) | set(recalls)))
    for owner_id in sorted(set(wanted) | set(recalls)):
        owner = owners.get(owner_id)
        if owner is None:
            continue
        refused_before = report.refused
        _serve_owner(store, owner, wanted.get(owner_id, []), owner_id in recalls, now, report,
                     listed=owner_id in listed)
        if owner_id in recalls and report.refused == refused_before:
            # A refused move (a call moved the slot, or started from its CPS share this second) keeps
            # the request for the next pass, which reads the slots afresh.
            store.clear_recall(owner_id, recalls[owner_id])
    if idle:
        _recall_idle(store, now, report)
    if report.refilled or report.recalled or report.dry:
        log.info("escrow: %d refilled, %d recalled, %d swept, dry: %s", report.refilled, report.recalled,
                 report.swept, ",".join(report.dry) or "-",
                 extra={"event": "escrow_rebalanced", "refilled": report.refilled, "recalled": report.recalled,
                        "dry": len(report.dry), "refused": report.refused})
    return report


def _serve_owner(store: EscrowStore, owner: Account, wanted: List[Tuple[str, Slot]], recall_all: bool,
                 now: int, report: Report, listed: bool = False) -> None:
    moves, dry = plan_owner(owner, wanted, (), recall_all=recall_all)
    if dry:
        report.dry.append(owner.id)
        # Recalling a dry owner's other slots reads its whole registry (every client holding its escrow):
        # at most once per DRY_RECALL_EVERY seconds while it stays dry; a recall request always does.
        last = _dry_read_at.get(owner.id)
        if recall_all or last is None or clock() - last >= DRY_RECALL_EVERY:
            _dry_read_at[owner.id] = clock()
            asked = {c for c, _ in wanted}
            # A dry owner's pools keep its last money; a stopped owner's come back like any slot
            others = [(c, slot) for c, slot, _ in _slots(store, owner.id, exclude=asked)
                      if recall_all or not is_pool(c)]
            moves, _ = plan_owner(owner, wanted, others, recall_all=recall_all)
    asked = {c for c, _ in wanted}
    idle_asks = asked - {m.client_id for m in moves}
    if idle_asks:
        store.clear_wants(sorted(idle_asks))     # nothing to give (a suspended owner): drop the request
    _apply(store, owner.id, moves, now, asked, report, owner, listed)
    if recall_all or owner.path.count("/") != 1:
        return                      # pools are a top reseller's (domain.escrow.pool_level)
    if dry:
        _fill_pools(store, owner.id, now, report, listed)
    elif len(wanted) >= POOL_AFTER:
        _fill_pools(store, owner.id, now, report, listed,
                    wanted=POOL_PASSES * sum((slot.need for _, slot in wanted), Decimal(0)))


def _fill_pools(store: EscrowStore, owner_id: str, now: int, report: Report, listed: bool,
                wanted: Optional[Decimal] = None) -> None:
    """A dry top reseller's item keeps nothing back: what it has left (after the recalls just applied)
    is spread over its pools (domain.escrow.plan_pools), which the calls under it read and hold from.
    With plenty (``wanted``), its pools are kept at about that much, so the calls that miss their slots
    do not all meet its one item."""
    ids = [pool_id(owner_id, k) for k in range(POOLS)]
    found = store.accounts([owner_id] + ids)
    owner = found.get(owner_id)
    if owner is None:
        return
    missing = [p for p in ids if p not in found]
    if missing:
        store.create_pools(owner_id, missing)
    pools = [(p, slot_for(found[p], 1, owner_id) if p in found else None) for p in ids]
    moves = plan_pools(owner, pools, wanted)
    if moves:
        report.pooled += sum(1 for m in moves if m.refill)
        _apply(store, owner_id, moves, now, set(), report, owner, listed)


def _slots(store: EscrowStore, owner_id: str, exclude: Set[str] = frozenset(),
           older_than: int = None) -> List[Tuple[str, Slot, int]]:
    """The owner's slots the registry lists (read from the clients' items, strongly consistent), with
    when each was last refilled."""
    listed = [(c, d, at) for c, d, at in store.escrow_slots(owner_id)
              if c not in exclude and (older_than is None or at < older_than)]
    clients = store.accounts([c for c, _, _ in listed]) if listed else {}
    out = []
    for client_id, distance, at in listed:
        client = clients.get(client_id)
        slot = slot_for(client, distance, owner_id) if client is not None else None
        if slot is not None:
            out.append((client_id, slot, at))
    return out


def _recall_idle(store: EscrowStore, now: int, report: Report) -> None:
    for owner_id, _ in store.escrow_owners():
        moves, forget, touched = [], [], []
        for client_id, slot, at in _slots(store, owner_id, older_than=now - IDLE_AFTER):
            if slot.used_at >= now - IDLE_AFTER:
                touched.append((client_id, slot.distance, slot.used_at))   # in use: not idle
                continue
            move = plan_idle(owner_id, client_id, slot)
            if move is not None:
                moves.append(move)
            elif at < now - REGISTRY_KEEP:
                forget.append(client_id)
        _apply(store, owner_id, moves, now, set(), report)
        if forget:
            store.forget_slots(owner_id, forget)
        if touched:
            store.touch_slots(owner_id, touched)


def _apply(store: EscrowStore, owner_id: str, moves: List[SlotMove], now: int, clear: Set[str],
           report: Report, owner: Optional[Account] = None, listed: bool = True) -> None:
    """``owner`` as read, when the moves may lend it (refills): its limits guard the lending. ``listed``:
    the owner is in the owners' list already (read this pass), so no refill writes that hot item."""
    lent = owner.cps_lent if owner is not None else None      # shares out, as this pass moves them
    for i in range(0, len(moves), MOVES_PER_TRANSACTION):
        batch = moves[i:i + MOVES_PER_TRANSACTION]
        refused = store.apply_moves(owner_id, batch, owner_change(batch, owner, now, lent), now,
                                    clear_wants=[m.client_id for m in batch if m.client_id in clear],
                                    list_owner=not listed)
        if refused:
            # A call moved a slot, or the owner spent, between our read and our write: apply the rest
            # now (one more try) and leave the refused ones to the next pass, which reads them afresh.
            report.refused += len(refused)
            rest = [m for m in batch if m not in refused]
            if rest and len(rest) < len(batch) and not store.apply_moves(
                    owner_id, rest, owner_change(rest, owner, now, lent), now,
                    clear_wants=[m.client_id for m in rest if m.client_id in clear], list_owner=not listed):
                report.add(rest)
                lent = None if lent is None else lent + sum(m.share for m in rest)
        else:
            report.add(batch)
            lent = None if lent is None else lent + sum(m.share for m in batch)
