"""DIDs in the core table (domain.dids): the DID item the switch path reads, one holding item per holder
for the ``listing`` index, and the history under the DID's partition. Mixed into DynamoStore.

Access patterns (docs/architecture.md):
    a DID                    GetItem DID#<number> / #  (inbound authorize: in its BatchGetItem)
    an account's DIDs        Query listing: list_pk = DIDS#<account>, by number; then BatchGetItem the DIDs
    a DID's history          Query DID#<number>, begins_with(sk, "LOG#"), oldest first
"""
from typing import List, Optional, Sequence, Tuple

from pynamodb.exceptions import TransactWriteError

from chalicelib.domain.dids import Did, DidEvent, Holding, Prices
from chalicelib.services.ports import AlreadyExists, Refused, StoreBusy

from .keys import did_holding_key, did_key, did_list
from .models import CoreItem, DidEventItem, DidHoldingItem, DidItem
from .writes import Tx


def to_did(item: DidItem) -> Did:
    increments = item.increments or [60, 60]
    return Did(number=item.number, country=item.country, tree=item.tree,
               holders=tuple(Holding.from_dict(h) for h in item.holders), offer=Prices.from_dict(item.offer),
               status=item.did_status, description=item.description or "", initial=int(increments[0]),
               subsequent=int(increments[1]), rev=int(item.rev or 0), created_at=item.created_at or "")


def did_item(did: Did) -> DidItem:
    return DidItem(*did_key(did.number), number=did.number, country=did.country, tree=did.tree,
                   did_status=did.status, holders=[h.to_dict() for h in did.holders], offer=did.offer.to_dict(),
                   description=did.description, increments=[did.initial, did.subsequent], rev=did.rev,
                   created_at=did.created_at)


def holding_item(number: str, account_id: str) -> DidHoldingItem:
    pk, sk = did_holding_key(number, account_id)
    return DidHoldingItem(pk, sk, account_id=account_id, list_pk=did_list(account_id), list_sk=number)


def event_item(number: str, event: DidEvent) -> DidEventItem:
    return DidEventItem(did_key(number)[0], f"LOG#{event.seq:010d}", event=event.event, by=event.by,
                        receiver=event.receiver, receiver_path=event.receiver_path,
                        prices=event.prices.to_dict() if event.prices else None, at=event.at)


def to_event(item: DidEventItem) -> DidEvent:
    return DidEvent(event=item.event, receiver=item.receiver, receiver_path=item.receiver_path, at=item.at,
                    by=item.by, prices=Prices.from_dict(item.prices) if item.prices else None,
                    seq=int(item.sk.split("#", 1)[1]))


class DidStore:
    """Every change is one transaction: the DID (on condition its revision is the one read), the
    holdings it adds or ends, and its history events."""

    def did(self, number: str) -> Optional[Did]:
        try:
            return to_did(DidItem.get(*did_key(number), consistent_read=True))
        except DidItem.DoesNotExist:
            return None

    def save_did(self, before: Optional[Did], after: Did, added: Sequence[Holding], ended: Sequence[Holding],
                 events: Sequence[DidEvent]) -> None:
        """``before`` None: a new number (refused if it exists); else ``before.rev`` must still be stored."""
        tx = Tx()
        for h in ended:
            tx.delete(("holding", h.account_id), holding_item(after.number, h.account_id))
        if before is None:
            tx.put(("did", after.number), did_item(after), condition=DidItem.pk.does_not_exist())
        else:
            tx.put(("did", after.number), did_item(after), condition=DidItem.rev == before.rev)
        for h in added:
            tx.put(("holding", h.account_id), holding_item(after.number, h.account_id))
        for event in events:
            tx.put(("event", event.seq), event_item(after.number, event))
        try:
            tx.commit(self._conn, f"did {after.number}")
        except TransactWriteError as exc:
            refused = tx.refused(exc)
            if ("did", after.number) in refused:
                if before is None:
                    raise AlreadyExists("did") from exc
                raise Refused(after.number, "changed") from exc
            raise StoreBusy(str(exc)) from exc

    def dids_of(self, account_id: str, limit: int, cursor: Optional[str]) -> Tuple[List[Did], Optional[str]]:
        """The DIDs an account holds (assigned onward or not), by number."""
        from .portal_store import _checked, _expect, _page, decode_cursor, encode_cursor
        start = _expect(decode_cursor(cursor), {"pk", "sk", "list_pk", "list_sk"}, list_pk=did_list(account_id))
        result = CoreItem.listing.query(did_list(account_id), limit=limit, last_evaluated_key=start)
        items, last = _checked(lambda: _page(result, limit))
        keys = [did_key(i.pk.split("#", 1)[1]) for i in items]
        found = {i.number: to_did(i) for i in DidItem.batch_get(keys, consistent_read=True)} if keys else {}
        return [found[k[0].split("#", 1)[1]] for k in keys if k[0].split("#", 1)[1] in found], encode_cursor(last)

    def did_events(self, number: str) -> List[DidEvent]:
        return [to_event(i) for i in DidEventItem.query(did_key(number)[0], DidEventItem.sk.startswith("LOG#"),
                                                         consistent_read=True)]
