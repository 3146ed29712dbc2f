"""The portal's DID use cases, mixed into services.portal.Portal: the admin creates and closes DIDs; an
account that holds a DID assigns it to an account below it at its own prices, or takes it back.

Who may: a DID is shown to the accounts that hold it, each at its own level (what it pays, what it
charges the holder below); it is assigned and unassigned by its holder itself or an ancestor acting for
it, never by a client. The rules are domain.dids'.
"""
from typing import List, Optional, Tuple

from chalicelib.domain import dids
from chalicelib.domain.access import Principal, within
from chalicelib.domain.accounts import ACTIVE, CLOSED, Account
from chalicelib.domain.dids import Did, DidEvent, DidRefused, InvalidDid, Prices

from .ports import AlreadyExists, Refused

ATTEMPTS = 3          # a change refused because the DID changed meanwhile is planned again this often


class NoSuchDid(Exception):
    """No DID of that number held by that account (the account itself is inside the caller's wall)."""


class DidCases:
    """Needs ``store``, ``walled``, ``_seller`` and ``_now_iso`` from Portal."""

    def _did(self, number) -> Optional[Did]:
        try:
            return self.store.did(dids.did_number(number))
        except InvalidDid:
            return None

    def _held(self, account: Account, number) -> Did:
        did = self._did(number)
        if did is None or did.status != dids.ACTIVE or did.depth_of(account.id) is None:
            raise NoSuchDid(number)
        return did

    def _admin(self, principal: Principal, account_id: str) -> Account:
        from .portal import Forbidden
        account = self.walled(principal, account_id)
        if not principal.is_admin or account.parent_id is not None or account.id != principal.account_id:
            raise Forbidden("admin_only", "only the admin creates and closes DIDs, in its own account")
        if principal.status != ACTIVE:
            raise Forbidden("caller_not_active", "a suspended or closed account cannot change DIDs")
        return account

    def _event(self, did: Did, event: str, receiver: Account, by: Principal, prices: Optional[Prices] = None):
        return DidEvent(event=event, receiver=receiver.id, receiver_path=receiver.path, at=self._now_iso(),
                        by=by.account_id, prices=prices, seq=did.rev)

    # --- the admin's inventory ----------------------------------------------------------------------

    def create_did(self, principal: Principal, account_id: str, fields: dict) -> Did:
        from .portal import Conflict, InvalidInput
        root = self._admin(principal, account_id)
        increments = fields.get("increments") or {}
        try:
            fresh = dids.create(fields["number"], fields.get("country", ""), root.id, Prices.of(fields.get("cost")),
                                Prices.of(fields), self._now_iso(), fields.get("description", ""),
                                increments.get("initial", 60), increments.get("subsequent", 60))
        except InvalidDid as exc:
            raise InvalidInput(exc.field, exc.message) from exc
        existing = self.store.did(fresh.number)
        if existing is not None and existing.status == dids.ACTIVE:
            raise Conflict("already_exists", "this DID exists", {"field": "number"})
        if existing is not None and existing.tree != root.id:
            raise Conflict("already_exists", "this DID exists", {"field": "number"})
        did = dids.reopen(existing, fresh) if existing is not None else fresh
        try:
            self.store.save_did(existing, did, did.holders, (), [self._event(did, dids.CREATED, root, principal,
                                                                              did.holders[0].prices)])
        except (AlreadyExists, Refused) as exc:
            raise Conflict("already_exists", "this DID exists", {"field": "number"}) from exc
        return did

    def close_did(self, principal: Principal, account_id: str, number: str) -> Did:
        root = self._admin(principal, account_id)
        return self._change(principal, root, number, lambda did: (dids.close(did), (), did.holders[:1]),
                            dids.CLOSED_EVENT, lambda did, ended: (root, None))

    # --- holders ------------------------------------------------------------------------------------

    def dids(self, principal: Principal, account_id: str, limit: int, cursor: Optional[str]) -> Tuple[Account, List[Did], Optional[str]]:
        account = self.walled(principal, account_id)
        found, next_cursor = self.store.dids_of(account.id, limit, cursor)
        return account, [d for d in found if d.depth_of(account.id) is not None], next_cursor

    def did(self, principal: Principal, account_id: str, number: str) -> Tuple[Account, Did]:
        account = self.walled(principal, account_id)
        return account, self._held(account, number)

    def assign_did(self, principal: Principal, account_id: str, number: str, fields: dict) -> Did:
        """Give the DID to ``fields['to']``, any account below ``account_id`` (the accounts in between hold
        it at the same prices), at the prices given (default: what ``account_id`` pays, or the DID's
        offer for the admin)."""
        from .portal import Conflict, InvalidInput, NotFound
        giver = self._seller(principal, account_id)
        try:
            target = self.walled(principal, fields["to"])
        except NotFound:
            raise InvalidInput("to", "must be an account below the one assigning") from None
        if not within(target.path, giver.path) or target.id == giver.id:
            raise InvalidInput("to", "must be an account below the one assigning")
        if target.status == CLOSED:
            raise Conflict("account_closed", "a closed account cannot receive a DID")
        path_down = target.path[len(giver.path) + 1:].split("/")

        def plan(did: Did):
            default = did.offer if did.depth_of(giver.id) == 0 else did.holding(giver.id).prices
            try:
                prices = Prices.of(fields, default)
            except InvalidDid as exc:
                raise InvalidInput(exc.field, exc.message) from exc
            if dids.below_cost(did, giver.id, prices) and not (giver.allow_loss or giver.is_commission_reseller):
                raise Conflict("below_cost", "per_minute is below what the account pays for this DID "
                                             "(allow_loss lets it sell at a loss)")
            after = dids.assign(did, giver.id, path_down, prices, self._now_iso())
            return after, after.holders[len(did.holders):], ()
        return self._change(principal, giver, number, plan, dids.ASSIGNED,
                            lambda did, ended: (target, did.holders[-1].prices))

    def unassign_did(self, principal: Principal, account_id: str, number: str) -> Did:
        """Back to ``account_id``'s pool, with every holding below it."""
        holder = self._seller(principal, account_id)

        def plan(did: Did):
            after, ended = dids.unassign(did, holder.id)
            return after, (), ended
        return self._change(principal, holder, number, plan, dids.UNASSIGNED,
                            lambda did, ended: (self.store.account(ended[-1].account_id), None))

    def did_history(self, principal: Principal, account_id: str, number: str) -> List[DidEvent]:
        """The events whose receiver is the account or below it: nothing priced above it, and no account
        above the caller named as the one who made it."""
        account = self.walled(principal, account_id)
        did = self._did(number)
        mine = did is not None and did.tree == account.path.split("/")[0]
        events = self.store.did_events(did.number) if mine else []
        seen = [dids.seen_by(e, principal.account_id) for e in events if dids.visible(e.receiver_path, account.path)]
        if not seen:
            raise NoSuchDid(number)
        return seen

    def _change(self, principal: Principal, account: Account, number: str, plan, event: str, receiver_of) -> Did:
        """Read, plan (domain.dids), write on condition the DID is unchanged; again if it changed."""
        from .portal import Conflict
        for _ in range(ATTEMPTS):
            before = self._held(account, number)
            try:
                after, added, ended = plan(before)
            except DidRefused as exc:
                raise Conflict(exc.code, exc.message) from exc
            receiver, prices = receiver_of(after, ended)
            try:
                self.store.save_did(before, after, added, ended,
                                    [self._event(after, event, receiver, principal, prices)])
                return after
            except Refused:
                continue
        raise Conflict("changed_meanwhile", "the DID kept changing: try again")
