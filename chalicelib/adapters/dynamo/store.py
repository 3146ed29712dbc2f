"""The DynamoDB adapter as one object: reads (reads.py) and writes (writes.py) over the keys in keys.py.

Round trips: authorize = BatchGetItem(identity, key) + BatchGetItem(chain, tariffs, rate groups, call)
+ TransactWriteItems(holds). complete = BatchGetItem(call, key) + TransactWriteItems(debits).
"""
from typing import Optional

from pynamodb.connection import Connection

from .keys import (ROOT, account_key, call_key, hash_shard, identity_key, iso_ms, rate_group_key,  # noqa: F401
                   switch_key_key, tariff_key, text_key)
from .did_store import DidStore
from .escrow_store import DynamoEscrow
from .portal_store import PortalStore
from .report_store import ExportStore, ReportStore
from .tariff_store import ImportStore, TariffStore
from .reads import DynamoReads, key_check, to_account, to_call, to_tariff  # noqa: F401
from .writes import RETRYABLE, DynamoWrites, condition_failed, with_retries  # noqa: F401


class DynamoStore(DynamoReads, DynamoWrites, PortalStore, TariffStore, ImportStore, DidStore, ReportStore,
                  ExportStore, DynamoEscrow):
    """Implements services.ports.Directory and BalanceStore (and the portal's reads and journal)."""

    def __init__(self, connection: Optional[Connection] = None):
        DynamoWrites.__init__(self, connection)
