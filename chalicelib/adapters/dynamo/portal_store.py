"""The portal's storage: accounts created and edited, lists by Query on designed indexes (never a Scan),
journal entries and history. Mixed into DynamoStore (store.py).

Access patterns (docs/architecture.md, "Tables"):
    an account                 GetItem ACC#<id>
    an account's children      Query listing: list_pk = CHILDREN#<parent>, by id
    a subtree (search)         Query subtree: tree = <root> AND begins_with(path, <path>/), filters on top
    a client's SIP users       Query listing: list_pk = SIPUSERS#<client>, by name
    an account's history       Query journal.history (account_id, at_id) + journal.peer_history (peer_id,
                               at_id) + its calls: core.client_calls (a client) or the tree's shards of
                               core.tree_calls filtered by path (an account with a subtree), merged
                               newest first
    a journal entry            GetItem journal (account_id, entry_id)
"""
import base64
import json
from typing import Dict, List, Optional, Sequence, Tuple

from pynamodb.exceptions import TransactWriteError

from chalicelib.domain.accounts import Account
from chalicelib.domain.ledger import BalanceChange
from pynamodb.exceptions import DeleteError, PutError, QueryError, UpdateError

from chalicelib.services.ports import AlreadyExists, BadCursor, Refused, StoreBusy
from chalicelib.services.records import Route, level_view

from chalicelib.domain.tariffs import Rate, Tariff

from .keys import account_key, cdr_trees, children_list, idempotency_key, identity_key, tariff_key, tariff_list
from .models import AccountItem, CallItem, CoreItem, IdempotencyItem, IdentityItem, JournalItem, RateGroupItem, TariffItem
from .reads import to_account, to_call, to_tariff
from .tariff_store import assignment
from .writes import Tx, account_item, change_update, search_text

SIP_USERS_LIST = "SIPUSERS#"


def encode_cursor(data) -> Optional[str]:
    if data is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: Optional[str]):
    """A cursor is a JSON object of DynamoDB keys ({"name": {"S": "..."}}) or, for the merged history,
    of such objects per source; anything else is refused before it reaches DynamoDB."""
    if not text:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadCursor("cursor") from exc
    if not isinstance(data, dict) or not data or not all(_key_shaped(v) or (isinstance(v, dict) and all(
            _key_shaped(x) for x in v.values())) or v == "done" for v in data.values()):
        raise BadCursor("cursor")
    return data


def _key_shaped(value) -> bool:
    return isinstance(value, dict) and list(value) == ["S"] and isinstance(value["S"], str) and 0 < len(value["S"]) <= 1024


def _expect(start: Optional[dict], names: set, **fixed: str) -> Optional[dict]:
    """A cursor must be a key of this very list: the index's key attributes, nothing else, and the
    list's own partition (DynamoDB refuses other keys; moto fails on them, so check before asking)."""
    if start is None:
        return None
    if not isinstance(start, dict) or set(start) != names or not all(_key_shaped(v) for v in start.values()):
        raise BadCursor("cursor")
    for name, value in fixed.items():
        if start[name]["S"] != value:
            raise BadCursor("cursor")
    return start


def _checked(run):
    """Run a Query page; a cursor DynamoDB refuses (well-formed, but of another list) is a BadCursor."""
    try:
        return run()
    except QueryError as exc:
        if getattr(exc, "cause_response_code", None) == "ValidationException":
            raise BadCursor("cursor") from exc
        raise


def _page(result_iterator, limit: int) -> Tuple[list, Optional[dict]]:
    items = []
    for item in result_iterator:
        items.append(item)
        if len(items) >= limit:
            break
    return items, result_iterator.last_evaluated_key if len(items) >= limit else None


def full_items(keys_only: list) -> list:
    """The whole items behind index entries that project only keys (models.py says why), in order."""
    if not keys_only:
        return []
    found = {(i.pk, i.sk): i for i in CoreItem.batch_get([(i.pk, i.sk) for i in keys_only], consistent_read=True)}
    return [found[(i.pk, i.sk)] for i in keys_only if (i.pk, i.sk) in found]


def identity_item(name: str, client_id: str, route: Route, secret: Optional[str] = None) -> IdentityItem:
    return IdentityItem(*identity_key(name), name=name, client_id=client_id, route=route.to_dict(),
                        list_pk=SIP_USERS_LIST + client_id, list_sk=name, sip_secret=secret)


class PortalStore:
    """Mixed into DynamoStore, which supplies ``_conn``."""

    # --- accounts ---------------------------------------------------------------------------------

    def create_account(self, account: Account, identities: Sequence[Tuple[str, Route]]) -> None:
        """The account and its switch identities (the client id itself, for a client), all new, at once."""
        tx = Tx().put(("account", account.id), account_item(account),
                      condition=AccountItem.pk.does_not_exist())
        assignment(tx, None, account.tariff_id, account.parent_id, account.created_at or "")
        for name, route in identities:
            tx.put(("identity", name), identity_item(name, account.id, route), condition=IdentityItem.pk.does_not_exist())
        try:
            tx.commit(self._conn, f"create {account.id}")
        except TransactWriteError as exc:
            refused = tx.refused(exc)
            if refused and refused[0][0] == "tariff":
                raise Refused(account.id, "tariff gone") from exc
            if refused:
                raise AlreadyExists(refused[0][0]) from exc
            raise StoreBusy(str(exc)) from exc

    def remove_new_account(self, account_id: str, identity_names: Sequence[str]) -> None:
        """Undo create_account when the rest of the creation failed (the e-mail was taken): only an
        account that never held or moved money can go."""
        from pynamodb.transactions import TransactWrite
        with TransactWrite(connection=self._conn()) as tx:
            tx.delete(AccountItem(*account_key(account_id)),
                      condition=(AccountItem.balance == 0) & (AccountItem.active_calls == 0) & (AccountItem.held == 0))
            for name in identity_names:
                tx.delete(IdentityItem(*identity_key(name)), condition=IdentityItem.client_id == account_id)

    def update_account(self, account_id: str, values: Dict[str, object], expect_status: Optional[Sequence[str]] = None,
                       change: Optional[BalanceChange] = None, search: Optional[Tuple[str, str]] = None,
                       tariff_move: Optional[Tuple[Optional[str], Optional[str], str, str]] = None) -> None:
        """Set attributes (and apply a balance change the domain decided) on an existing account,
        optionally only while its status is one of ``expect_status``. Refused if not. ``tariff_move``
        (old, new, seller, when) counts a new tariff assignment on both tariffs in the same transaction."""
        actions = [getattr(AccountItem, name).set(value) if value is not None else getattr(AccountItem, name).remove()
                   for name, value in values.items()]
        if search is not None:
            actions.append(AccountItem.search_text.set(search_text(*search)))
        condition = AccountItem.pk.exists()
        if change is not None and not change.empty:
            more, guard = change_update(change)
            actions += more
            if guard is not None:
                condition &= guard
        if expect_status:
            condition &= AccountItem.status.is_in(*expect_status)
        if tariff_move is not None and tariff_move[0] != tariff_move[1]:
            old, new, seller, at = tariff_move
            condition &= (AccountItem.tariff_id == old) if old else AccountItem.tariff_id.does_not_exist()
            tx = assignment(Tx().update(("account", account_id), AccountItem(*account_key(account_id)), actions,
                                        condition), old, new, seller, at)
            try:
                tx.commit(self._conn, f"assign {new} to {account_id}")
            except TransactWriteError as exc:
                if tx.refused(exc):
                    raise Refused(account_id, "update") from exc
                raise StoreBusy(str(exc)) from exc
            return
        try:
            AccountItem(*account_key(account_id)).update(actions=actions, condition=condition)
        except UpdateError as exc:
            if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
                raise Refused(account_id, "update") from exc
            raise StoreBusy(str(exc)) from exc

    def children(self, parent_id: str, limit: int, cursor: Optional[str]) -> Tuple[List[Account], Optional[str]]:
        start = _expect(decode_cursor(cursor), {"pk", "sk", "list_pk", "list_sk"}, list_pk=children_list(parent_id))
        result = CoreItem.listing.query(children_list(parent_id), limit=limit, last_evaluated_key=start)
        items, last = _checked(lambda: _page(result, limit))
        return [to_account(i) for i in full_items(items) if isinstance(i, AccountItem)], encode_cursor(last)

    def tariffs(self, owner_id: str, limit: int, cursor: Optional[str]) -> Tuple[List[Tariff], Optional[str]]:
        """The tariffs an account owns, by id (the ``listing`` index, ``TARIFFS#<owner>``)."""
        start = _expect(decode_cursor(cursor), {"pk", "sk", "list_pk", "list_sk"}, list_pk=tariff_list(owner_id))
        result = CoreItem.listing.query(tariff_list(owner_id), limit=limit, last_evaluated_key=start)
        items, last = _checked(lambda: _page(result, limit))
        return [to_tariff(i) for i in full_items(items) if isinstance(i, TariffItem)], encode_cursor(last)

    def rate_page(self, tariff_id: str, limit: int, cursor: Optional[str]) -> Tuple[Dict[str, List[Rate]], Optional[str]]:
        """Rate versions by prefix, whole rate groups at a time in prefix order (a group key sorts as its
        prefixes do), until at least ``limit`` versions: a 100,000-row tariff is never one answer."""
        pk = tariff_key(tariff_id)[0]
        start = _expect(decode_cursor(cursor), {"pk", "sk"}, pk=pk)
        if start is not None and not start["sk"]["S"].startswith("G#"):
            raise BadCursor("cursor")
        result = RateGroupItem.query(pk, RateGroupItem.sk.startswith("G#"), consistent_read=True,
                                     last_evaluated_key=start)
        book: Dict[str, List[Rate]] = {}
        count, last = 0, None

        def fill():
            nonlocal count, last
            for item in result:
                for prefix, versions in item.rates.items():
                    book[prefix] = [Rate.from_dict(v) for v in versions]
                    count += len(versions)
                if count >= limit:
                    last = {"pk": {"S": item.pk}, "sk": {"S": item.sk}}
                    return
        _checked(fill)
        return book, encode_cursor(last)

    def subtree(self, tree: str, path: str, limit: int, cursor: Optional[str], role: Optional[str] = None,
                status: Optional[str] = None, text: Optional[str] = None) -> Tuple[List[Account], Optional[str]]:
        """Descendants of ``path`` (not the account itself), filtered. The filter runs after the read,
        so a page may hold fewer than ``limit`` items while a cursor is still returned."""
        condition = None
        for part in ((AccountItem.role == role) if role else None, (AccountItem.status == status) if status else None,
                     AccountItem.search_text.contains(text.lower()) if text else None):
            if part is not None:
                condition = part if condition is None else condition & part
        start = _expect(decode_cursor(cursor), {"pk", "sk", "tree", "path"}, tree=tree)
        if start is not None and not start["path"]["S"].startswith(path + "/"):
            raise BadCursor("cursor")
        result = CoreItem.subtree.query(tree, CoreItem.path.startswith(path + "/"), filter_condition=condition,
                                        limit=limit, last_evaluated_key=start)
        def page():
            items = []
            for item in result:
                items.append(item)
                if len(items) >= limit:
                    return items, result.last_evaluated_key
            return items, result.last_evaluated_key
        items, last = _checked(page)
        return [to_account(i) for i in full_items(items) if isinstance(i, AccountItem)], encode_cursor(last)

    # --- SIP users --------------------------------------------------------------------------------

    def add_identity(self, name: str, client_id: str, route: Route, secret: Optional[str] = None) -> None:
        try:
            identity_item(name, client_id, route, secret).save(condition=IdentityItem.pk.does_not_exist())
        except PutError as exc:
            if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
                raise AlreadyExists("identity") from exc
            raise StoreBusy(str(exc)) from exc

    def identities(self, client_id: str) -> List[IdentityItem]:
        return [i for i in full_items(list(CoreItem.listing.query(SIP_USERS_LIST + client_id)))
                if isinstance(i, IdentityItem)]

    def remove_identity(self, name: str, client_id: str) -> bool:
        try:
            IdentityItem(*identity_key(name)).delete(condition=IdentityItem.client_id == client_id)
            return True
        except DeleteError as exc:
            if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
                return False
            raise StoreBusy(str(exc)) from exc

    # --- journal ----------------------------------------------------------------------------------

    def journal_entry(self, account_id: str, entry_id: str) -> Optional[JournalItem]:
        try:
            return JournalItem.get(account_id, entry_id, consistent_read=True)
        except JournalItem.DoesNotExist:
            return None

    def entry_for_key(self, caller: str, key: str) -> Optional[JournalItem]:
        """The journal entry a caller's idempotency key made, if it made one."""
        try:
            marker = IdempotencyItem.get(*idempotency_key(caller, key), consistent_read=True)
        except IdempotencyItem.DoesNotExist:
            return None
        return self.journal_entry(marker.entry_account, marker.entry_id)

    def history(self, account_id: str, limit: int, cursor: Optional[str], since: Optional[str] = None,
                until: Optional[str] = None, calls: bool = True, entries: bool = True,
                path: Optional[str] = None, role: Optional[str] = None,
                scope: Optional[str] = None) -> Tuple[list, Optional[str]]:
        """The account's movements newest first: its journal entries (filed under it or naming it as
        peer) and its calls, as its level sees them (``records.CallView``). A client's calls are one
        Query of ``client_calls``; an account with a subtree reads its tree's CDR_SHARDS partitions of
        ``tree_calls`` filtered by path. All the Queries are merged; the cursor keeps each one's position.
        ``scope`` (with its ``path`` and ``role``): list the calls of that account of the subtree instead,
        still at ``account_id``'s level."""
        scope = scope or account_id
        if calls and (path is None or role is None):
            account = self.account(account_id)
            path, role = (account.path, account.role) if account else (account_id, "client")
        low, high = since or "0", (until or "9999") + "~"
        state = decode_cursor(cursor) or {}
        shapes = {"own": {"account_id", "entry_id", "at_id"}, "peer": {"account_id", "entry_id", "at_id", "peer_id"},
                  "calls": {"pk", "sk", "cdr_client", "cdr_at"}}
        trees = cdr_trees(path.split("/")[0]) if calls and role != "client" else []
        shapes.update({f"calls{i}": {"pk", "sk", "cdr_tree", "cdr_at"} for i in range(len(trees))})
        for name, value in state.items():
            if name not in shapes:
                raise BadCursor("cursor")
            if value != "done":
                fixed = {"peer_id": account_id} if name == "peer" else {"cdr_client": scope} \
                    if name == "calls" else {"cdr_tree": trees[int(name[5:])]} if name.startswith("calls") \
                    else {"account_id": account_id}
                _expect(value, shapes[name], **fixed)
        sources = {}
        if entries:
            sources["own"] = lambda start: JournalItem.history.query(
                account_id, JournalItem.at_id.between(low, high), scan_index_forward=False, limit=limit,
                last_evaluated_key=start)
            sources["peer"] = lambda start: JournalItem.peer_history.query(
                account_id, JournalItem.at_id.between(low, high), scan_index_forward=False, limit=limit,
                last_evaluated_key=start)
        if calls and role == "client":
            sources["calls"] = lambda start: CallItem.client_calls.query(
                scope, CallItem.cdr_at.between(low, high), scan_index_forward=False, limit=limit,
                last_evaluated_key=start)
        for i, tree in enumerate(trees):
            sources[f"calls{i}"] = lambda start, tree=tree: CallItem.tree_calls.query(
                tree, CallItem.cdr_at.between(low, high), filter_condition=CallItem.cdr_path.startswith(path + "/"),
                scan_index_forward=False, limit=limit, last_evaluated_key=start)
        rows = []
        for name, query in sources.items():
            if state.get(name) == "done":
                continue
            def fetch():
                out = []
                for item in query(state.get(name)):
                    out.append(((item.at_id if isinstance(item, JournalItem) else item.cdr_at), name, item))
                    if len(out) >= limit:
                        break
                return out
            rows += _checked(fetch)
        rows.sort(key=lambda r: r[0], reverse=True)
        page = rows[:limit]
        next_state = dict(state)
        more = len(rows) > limit
        for name in sources:
            if next_state.get(name) == "done":
                continue
            used = [item for _, source, item in page if source == name]
            fetched = [item for _, source, item in rows if source == name]
            if len(used) < len(fetched):
                more = True
            if used:
                last = used[-1]
                next_state[name] = _key_of(last)
            elif not fetched:
                next_state[name] = "done"
            if len(fetched) >= limit:
                more = True
        out = self._views([item for _, _, item in page], account_id)
        if all(next_state.get(n) == "done" for n in sources) or not more:
            return out, None
        return out, encode_cursor(next_state)

    def call_history(self, viewer_id: str, scope: Account, limit: int, cursor: Optional[str],
                     since: Optional[str] = None, until: Optional[str] = None) -> Tuple[list, Optional[str]]:
        """The calls of ``scope`` (an account of the viewer's subtree, or the viewer) at the viewer's level."""
        return self.history(viewer_id, limit, cursor, since, until, entries=False, path=scope.path,
                            role=scope.role, scope=scope.id)

    @staticmethod
    def _views(items: list, account_id: str) -> list:
        """Journal items as they are; a call's index entry becomes the account's view of the call
        record (read back whole: the indexes project keys only)."""
        keys = [(i.pk, i.sk) for i in items if isinstance(i, CallItem)]
        full = {(c.pk, c.sk): c for c in CallItem.batch_get(keys)} if keys else {}
        out = []
        for item in items:
            if isinstance(item, CallItem):
                record = full.get((item.pk, item.sk))
                view = level_view(to_call(record), account_id, record.cdr_at) if record is not None else None
                if view is not None:
                    out.append(view)
            else:
                out.append(item)
        return out


def _key_of(item) -> dict:
    """The LastEvaluatedKey a Query on that item's index would return (base keys + index keys)."""
    if isinstance(item, JournalItem):
        key = {"account_id": {"S": item.account_id}, "entry_id": {"S": item.entry_id}, "at_id": {"S": item.at_id}}
        if item.peer_id:
            key["peer_id"] = {"S": item.peer_id}
        return key
    key = {"pk": {"S": item.pk}, "sk": {"S": item.sk}, "cdr_at": {"S": item.cdr_at}}
    if item.cdr_tree:
        key["cdr_tree"] = {"S": item.cdr_tree}
    else:
        key["cdr_client"] = {"S": item.cdr_client}
    return key
