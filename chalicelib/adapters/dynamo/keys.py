"""Every DynamoDB key Cascade builds, in one place (the layout is drawn in models.py)."""
import hashlib
import zlib
from datetime import datetime, timezone
from typing import Tuple

from .models import CDR_SHARDS, HELD_SHARDS, WANT_SHARDS

ROOT = "#"
SWITCH_KEYS_LIST = "SWITCHKEYS"


def account_key(account_id: str) -> Tuple[str, str]:
    return f"ACC#{account_id}", ROOT


def children_list(parent_id: str) -> str:
    return f"CHILDREN#{parent_id}"


def tariff_list(owner_id: str) -> str:
    return f"TARIFFS#{owner_id}"


def identity_key(name: str) -> Tuple[str, str]:
    return f"ID#{name}", ROOT


def switch_key_key(digest: str) -> Tuple[str, str]:
    return f"KEY#{digest}", ROOT


def tariff_key(tariff_id: str) -> Tuple[str, str]:
    return f"TRF#{tariff_id}", ROOT


def rate_group_key(tariff_id: str, group: str) -> Tuple[str, str]:
    return f"TRF#{tariff_id}", f"G#{group}"


def import_key(job_id: str) -> Tuple[str, str]:
    return f"IMPORT#{job_id}", ROOT


def export_key(job_id: str) -> Tuple[str, str]:
    return f"EXPORT#{job_id}", ROOT


def did_key(number: str) -> Tuple[str, str]:
    return f"DID#{number}", ROOT


def did_holding_key(number: str, account_id: str) -> Tuple[str, str]:
    return f"DID#{number}", f"H#{account_id}"


def did_list(account_id: str) -> str:
    return f"DIDS#{account_id}"


def report_pk(account_id: str) -> str:
    """An account's report rows (domain.reports): ``row_sk`` per month, row and copy; ``money_sk`` per month."""
    return f"REP#{account_id}"


def row_sk(month: str, row: str, shard: int) -> str:
    return f"{month}#{row}#{shard}"


def money_sk(month: str) -> str:
    return f"{month}#M"


def mark_key(name: str) -> Tuple[str, str]:
    """A report consumer's mark (adapters.dynamo.report_store): records already applied."""
    return f"REPSEQ#{name}", ROOT


def text_key(text: str) -> str:
    """A key part for text a switch or caller chose (a SIP Call-ID): 32 hex digits of its SHA-256, so
    every key that embeds it has a fixed size whatever the text (DynamoDB refuses sort keys over
    1,024 bytes) and cannot contain the '#' that separates key parts. The text itself is an attribute."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def call_key(call_id: str) -> Tuple[str, str]:
    return f"CALL#{text_key(call_id)}", ROOT


def idempotency_key(caller: str, key: str) -> Tuple[str, str]:
    return f"IDEM#{caller}", text_key(key)


def iso_ms(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def hash_shard(call_id: str) -> int:
    return zlib.crc32(call_id.encode("utf-8")) % HELD_SHARDS


def want_key(client_id: str) -> str:
    """The ``wants`` index partition a client's refill request goes to (sharded: many clients ask at once)."""
    return f"WANT#{zlib.crc32(client_id.encode('utf-8')) % WANT_SHARDS}"


ESCROW_REGISTRY_SHARDS = 16   # an owner's registry is written per refill and per use found idle-passing


def escrow_key(owner_id: str, client_id: str) -> Tuple[str, str]:
    return f"ESC#{owner_id}#{zlib.crc32(client_id.encode('utf-8')) % ESCROW_REGISTRY_SHARDS}", client_id


def escrow_partitions(owner_id: str):
    return [f"ESC#{owner_id}#{shard}" for shard in range(ESCROW_REGISTRY_SHARDS)]


ESCROW_OWNERS = "ESCOWNERS"


def escrow_owner_key(owner_id: str) -> Tuple[str, str]:
    return ESCROW_OWNERS, owner_id


def cdr_at(call_id: str, billed_at: float) -> str:
    """A finished call's place in the CDR listings: when it was billed, then its id's hash."""
    return f"{iso_ms(billed_at)}#{text_key(call_id)}"


def cdr_tree(root_id: str, call_id: str) -> str:
    return f"{root_id}#{zlib.crc32(call_id.encode('utf-8')) % CDR_SHARDS}"


def cdr_trees(root_id: str):
    return [f"{root_id}#{shard}" for shard in range(CDR_SHARDS)]
