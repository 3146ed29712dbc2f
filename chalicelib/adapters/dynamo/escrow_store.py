"""The rebalancer's storage: refill requests (the sparse ``wants`` index), the escrow registry and the
transactions that move money between an owner's item and the slots on its clients' items."""
import logging
from typing import Iterable, List, Sequence, Tuple

from pynamodb.exceptions import PutError, TransactWriteError

from chalicelib.domain.escrow import POOL, OwnerChange, SlotMove
from chalicelib.domain.ledger import BalanceChange
from chalicelib.services.ports import StoreBusy

from .keys import ESCROW_OWNERS, account_key, escrow_key, escrow_owner_key, escrow_partitions
from .models import WANT_SHARDS, AccountItem, EscrowItem, EscrowOwnerItem
from .writes import Tx, slot_update

log = logging.getLogger("cascade.escrow")


class DynamoEscrow:
    """services.rebalance.EscrowStore over the core table (mixed into DynamoStore)."""

    def wanting_clients(self) -> List[str]:
        ids = []
        for shard in range(WANT_SHARDS):
            for item in AccountItem.wants.query(f"WANT#{shard}"):
                ids.append(item.pk[len("ACC#"):])
        return ids

    def escrow_owners(self) -> List[Tuple[str, int]]:
        """Every account with escrow out, and its pending recall request (0: none)."""
        return [(item.sk, int(item.recall or 0)) for item in EscrowOwnerItem.query(ESCROW_OWNERS)]

    def escrow_slots(self, owner_id: str) -> List[Tuple[str, int, int]]:
        """(client id, distance, last refill) of every slot the registry lists for the owner."""
        return [(item.sk, int(item.distance), int(item.at))
                for partition in escrow_partitions(owner_id) for item in EscrowItem.query(partition)]

    def request_recall(self, owner_id: str, now: int) -> None:
        """Ask the rebalancer to bring all of an owner's escrow back (it stopped being active)."""
        EscrowOwnerItem(*escrow_owner_key(owner_id)).update(
            actions=[EscrowOwnerItem.recall.set(now), EscrowOwnerItem.kind.set(EscrowOwnerItem)])

    def clear_recall(self, owner_id: str, requested_at: int) -> None:
        try:
            EscrowOwnerItem(*escrow_owner_key(owner_id)).update(
                actions=[EscrowOwnerItem.recall.remove()], condition=EscrowOwnerItem.recall == requested_at)
        except Exception:   # noqa: BLE001 - a newer request arrived meanwhile: it stays for the next tick
            log.info("escrow: recall of %s re-requested meanwhile", owner_id)

    def apply_moves(self, owner_id: str, moves: Sequence[SlotMove], change: OwnerChange, now: int,
                    clear_wants: Iterable[str] = (), list_owner: bool = True) -> List[SlotMove]:
        """One transaction: the owner's item, each client slot, the registry entries of slots it fills from
        empty, and the owner's entry in the owners' list (``list_owner``: the caller did not find it
        there). Returns the moves refused
        (a call changed the slot meanwhile, or the owner's available fell): the whole transaction was
        then cancelled and nothing moved; the caller re-plans them."""
        tx = Tx()
        lends = change.min_available is not None or change.max_active_calls is not None \
            or change.max_cps_lent is not None
        tx.change(BalanceChange(owner_id, balance=change.balance, held=change.held, available=change.available,
                                active_calls=change.active_calls, cps_lent=change.cps_lent,
                                min_available=change.min_available, max_active_calls=change.max_active_calls,
                                max_cps_lent=change.max_cps_lent, cps_room=change.cps_room, active_only=lends,
                                what="escrow"),
                  must_exist=True)
        clear = set(clear_wants)
        for move in moves:
            actions, guards = slot_update(move.slot_change(now))
            a, k = AccountItem, move.distance
            if move.client_id in clear:
                actions += [getattr(a, f"e{k}w").remove(), getattr(a, f"e{k}n").remove(), a.want.remove()]
            condition = a.pk.exists()
            for g in guards:
                condition = condition & g
            tx.update(("slot", move.client_id), AccountItem(*account_key(move.client_id)), actions, condition)
            if move.register:
                # Kept after a recall too: calls held from the slot may still complete into it.
                tx.put(("registry", move.client_id), EscrowItem(*escrow_key(owner_id, move.client_id),
                                                              distance=move.distance, at=now))
        if list_owner and any(m.register for m in moves):
            tx.update(("owner_list", owner_id), EscrowOwnerItem(*escrow_owner_key(owner_id)),
                      [EscrowOwnerItem.kind.set(EscrowOwnerItem)])
        try:
            tx.commit(self._conn, f"escrow {owner_id}")
            return []
        except TransactWriteError as exc:
            refused = tx.refused(exc)
            if not refused:
                raise StoreBusy(str(exc)) from exc
            refused_clients = {c for what, c in refused if what == "slot"}
            if any(what == "escrow" for what, _ in refused):
                return list(moves)          # the owner could not fund them: all re-planned
            return [m for m in moves if m.client_id in refused_clients]

    def create_pools(self, owner_id: str, pool_ids: Iterable[str]) -> None:
        """The items of a top reseller's pools (domain.escrow.pool_id), empty: each carries one escrow
        slot for its owner and nothing the portal lists (no parent list, tree or search keys)."""
        for pid in pool_ids:
            try:
                AccountItem(*account_key(pid), id=pid, role=POOL, parent_id=owner_id).save(
                    condition=AccountItem.pk.does_not_exist())
            except PutError:
                pass            # created meanwhile: the rebalancer is one instance, so never in practice

    def forget_slots(self, owner_id: str, client_ids: Iterable[str]) -> None:
        """Drop registry entries of slots long empty (services.rebalance.REGISTRY_KEEP)."""
        with EscrowItem.batch_write() as batch:
            for client_id in client_ids:
                batch.delete(EscrowItem(*escrow_key(owner_id, client_id)))

    def touch_slots(self, owner_id: str, entries: Iterable[Tuple[str, int, int]]) -> None:
        """Registry entries of slots used since their last refill: dated to that use, so the idle pass
        looks at them again only IDLE_AFTER later."""
        with EscrowItem.batch_write() as batch:
            for client_id, distance, used_at in entries:
                batch.save(EscrowItem(*escrow_key(owner_id, client_id), distance=distance, at=used_at))

    def clear_wants(self, client_ids: Iterable[str]) -> None:
        """Requests that named no owner still needing them (served, or the tree changed)."""
        for client_id in client_ids:
            actions = [AccountItem.want.remove()]
            AccountItem(*account_key(client_id)).update(actions=actions)

