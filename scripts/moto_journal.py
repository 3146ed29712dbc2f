"""Make moto's TransactWriteItems cost what the transaction touches, not what the tables hold.

moto keeps a transaction's rollback by deep-copying the whole table once per item of the transaction
(moto 5.2.5, `DynamoDBBackend.transact_write_items`): a five-level settle (about 15 items) copies the
core, ledger and CDR tables 15 times each, so every call gets slower as the tables fill (FACTS: 10.8 ms
at 10 items, 221 ms at 5,000), and `make run` served under 4 calls a second with 300 accounts.

Here the rollback is an undo journal: before the transaction, a copy of each item it names (or "absent");
if moto cancels or raises, those items are put back. moto's own copy is made free by letting a Table
deep-copy to itself *during the transaction only*, so its restore step (`tables[name] = copy`) becomes
a no-op and the journal does the restoring. Nothing else changes: moto still checks every condition
and applies every action. Only for a moto that serves one request at a time (scripts/local_stack.py's
OneAtATime lock, tests/conftest.py's lock), as DynamoDB's per-request atomicity needs anyway.
"""
import copy
import threading

_in_transaction = threading.local()


def install() -> None:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    if getattr(DynamoDBBackend.transact_write_items, "journaled", False):
        return
    original = DynamoDBBackend.transact_write_items

    def table_deepcopy(self, memo):
        if getattr(_in_transaction, "active", False):
            return self     # the journal below restores what the transaction touched
        return copy._reconstruct(self, memo, *self.__reduce_ex__(4))   # what deepcopy does by default

    def key_of(table, op):
        attrs = op.get("Item") or op.get("Key") or {}
        if table.hash_key_attr not in attrs:
            return None
        hash_value = DynamoType(attrs[table.hash_key_attr])
        range_value = None
        if table.range_key_attr is not None:
            if table.range_key_attr not in attrs:
                return None
            range_value = DynamoType(attrs[table.range_key_attr])
        return hash_value, range_value

    def restore(table, hash_value, range_value, saved) -> None:
        if saved is None:
            table.delete_item(hash_value, range_value)
        elif range_value is not None:
            table.items[hash_value][range_value] = saved
        else:
            table.items[hash_value] = saved

    def journaled(self, transact_items):
        journal = []
        for entry in transact_items:
            op = next(iter(entry.values()), None) if isinstance(entry, dict) else None
            table = self.tables.get(op.get("TableName")) if isinstance(op, dict) else None
            key = key_of(table, op) if table is not None else None
            if key is not None:
                journal.append((table, *key, copy.deepcopy(table.get_item(*key))))
        _in_transaction.active = True
        try:
            return original(self, transact_items)
        except BaseException:
            for table, hash_value, range_value, saved in reversed(journal):
                restore(table, hash_value, range_value, saved)
            raise
        finally:
            _in_transaction.active = False

    journaled.journaled = True
    Table.__deepcopy__ = table_deepcopy
    DynamoDBBackend.transact_write_items = journaled
