"""PynamoDB models: the single source of truth for Cascade's tables (infra/ reads them too).

``core`` is a single table holding everything the switch path reads in one BatchGetItem: accounts,
caller identities, switch keys, tariffs and their rate groups, calls, and the identity service's counters.

    pk               sk            kind
    ACC#<id>         #             account     balance item: balance, held, available, counters
    ID#<name>        #             identity    SIP username or client id -> client + cached route
    KEY#<hmac>       #             switch_key  a switch API key, stored as HMAC-SHA256 only
    TRF#<id>         #             tariff      header: owner, kind, markup
    TRF#<id>         G#<group>     rate_group  rates whose prefix falls in the group (tariffs.layout)
    IMPORT#<id>      #             import      a deck imported through S3: progress and outcome
    EXPORT#<id>      #             cdr_export  CDRs exported to S3 by a background task: progress, file
    DID#<number>     #             did         a DID: its holders root first, each with its prices
    DID#<number>     H#<account>   did_holding one holder's place in its DID list (listing DIDS#<account>)
    DID#<number>     LOG#<rev>     did_event   the DID's history: created, assigned, unassigned, closed
    REP#<account>    <month>#<row>#<k> report_row a month's totals of calls at the account's level (reports)
    REP#<account>    <month>#M     report_money the month's wallet movements other than calls, by kind
    REPSEQ#<seq>     #             report_mark a run of stream records the report consumer applied (ttl)
    CALL#<h(call_id)> #            call        frozen levels, holds, status, switch; sparse HELD index

``journal`` holds one item per money movement other than a call, partitioned by account id. A call's
journal entry and its only CDR are its call record (the ``client_calls`` and ``tree_calls`` indexes list
them; ``services.records.level_view`` gives each level its view).
``h(text)`` is ``store.text_key``: 32 hex digits of SHA-256, for any key part a switch or caller chose.
"""
import json
import os
from decimal import Decimal

from pynamodb.attributes import (Attribute, BooleanAttribute, DiscriminatorAttribute, NumberAttribute,
                                 UnicodeAttribute)
from pynamodb.constants import NUMBER, STRING
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, IncludeProjection
from pynamodb.models import Model

from chalicelib.domain.ledger import ENTRY_KINDS

HELD_SHARDS = 32     # every call adds and removes an entry: 5,000 calls/s is ~310 WCU/s a shard
CDR_SHARDS = 16      # a tree's calls spread over this many index partitions (5,000 calls/s: ~310 each)
WANT_SHARDS = 8
ESCROW_SLOTS = 8     # domain.escrow.MAX_SLOTS


def table_name(logical: str) -> str:
    return os.environ.get("CASCADE_TABLE_PREFIX", "cascade-dev-") + logical


class _Meta:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    billing_mode = "PAY_PER_REQUEST"


class DecimalAttribute(Attribute[Decimal]):
    """A DynamoDB number read back as Decimal (PynamoDB's NumberAttribute goes through float)."""
    attr_type = NUMBER

    def serialize(self, value):
        if isinstance(value, float):
            raise TypeError("money must not be float")
        return str(value)

    def deserialize(self, value):
        return Decimal(value)


class JSONTextAttribute(Attribute[object]):
    """JSON kept as a string; numbers come back as Decimal, never float."""
    attr_type = STRING

    def serialize(self, value):
        return json.dumps(value, default=str, separators=(",", ":"))

    def deserialize(self, value):
        return json.loads(value, parse_float=Decimal)


class HeldIndex(GlobalSecondaryIndex):
    """Sparse: only calls still holding money carry held_shard, so the sweeper reads nothing else. Keys
    (and ``kind``) only: an index entry costs one write unit instead of the whole call's; the sweeper
    reads the few expired calls themselves."""
    class Meta:
        index_name = "held"
        projection = IncludeProjection(["kind"])
    held_shard = UnicodeAttribute(hash_key=True)
    expires_at = NumberAttribute(range_key=True)


# Narrow projections: an account item is written by every call (balance, held...), and an index projecting
# those attributes would be written with it, for nothing. These project only what the portal filters on
# (changed by portal edits alone) and read the items themselves after the Query.
class SubtreeIndex(GlobalSecondaryIndex):
    """Sparse (accounts only): a subtree is one Query, ``tree = root AND begins_with(path, prefix)``."""
    class Meta:
        index_name = "subtree"
        projection = IncludeProjection(["kind", "role", "status", "search_text"])
    tree = UnicodeAttribute(hash_key=True)
    path = UnicodeAttribute(range_key=True)


class ListingIndex(GlobalSecondaryIndex):
    """Sparse: short lists read by a Query: an account's children (``CHILDREN#<parent>``, by id), the
    tariffs an account owns (``TARIFFS#<owner>``, by id) and the switch keys (``SWITCHKEYS``, by switch id)."""
    class Meta:
        index_name = "listing"
        projection = IncludeProjection(["kind"])
    list_pk = UnicodeAttribute(hash_key=True)
    list_sk = UnicodeAttribute(range_key=True)


class ClientCallsIndex(GlobalSecondaryIndex):
    """Sparse (finished calls): a client's calls by time, ``cdr_client = <client>``. With the call record
    being the call's only CDR, this and ``tree_calls`` are the CDR listings; one index write each."""
    class Meta:
        index_name = "client_calls"
        projection = IncludeProjection(["kind"])
    cdr_client = UnicodeAttribute(hash_key=True)
    cdr_at = UnicodeAttribute(range_key=True)


class TreeCallsIndex(GlobalSecondaryIndex):
    """Sparse (finished calls): a tree's calls by time over CDR_SHARDS partitions (``<root>#<shard>``),
    with the client's path, so a reseller lists its subtree's calls (``begins_with(cdr_path, ...)``)."""
    class Meta:
        index_name = "tree_calls"
        projection = IncludeProjection(["kind", "cdr_path"])
    cdr_tree = UnicodeAttribute(hash_key=True)
    cdr_at = UnicodeAttribute(range_key=True)


class WantsIndex(GlobalSecondaryIndex):
    """Sparse, keys (and ``kind``, which PynamoDB filters on) only: client items carrying an escrow refill
    request (``want`` = WANT#<shard>). A call sets it only when its slot runs low; setting it again
    changes no projected attribute, so the index is written once per request, and the rebalancer's
    REMOVE is the other write."""
    class Meta:
        index_name = "wants"
        projection = IncludeProjection(["kind"])
    want = UnicodeAttribute(hash_key=True)


class CoreItem(Model):
    class Meta(_Meta):
        logical_name = "core"
        table_name = table_name(logical_name)
        # The report consumer (entrypoints.reporter) reads finished calls from the table's stream.
        stream_view_type = "NEW_AND_OLD_IMAGES"
    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    kind = DiscriminatorAttribute()
    ttl = NumberAttribute(null=True)      # epoch seconds; the table's TTL attribute
    tree = UnicodeAttribute(null=True)    # accounts: the root's id
    path = UnicodeAttribute(null=True)    # accounts: materialised path root/.../id (domain.access)
    list_pk = UnicodeAttribute(null=True)
    list_sk = UnicodeAttribute(null=True)
    subtree = SubtreeIndex()
    listing = ListingIndex()


class AccountItem(CoreItem, discriminator="account"):
    id = UnicodeAttribute()
    role = UnicodeAttribute()
    parent_id = UnicodeAttribute(null=True)
    tariff_id = UnicodeAttribute(null=True)
    name = UnicodeAttribute(default="")
    status = UnicodeAttribute(default="active")
    billing_type = UnicodeAttribute(default="prepaid")
    billing_mode = UnicodeAttribute(null=True)
    balance = DecimalAttribute(default=Decimal)
    credit_limit = DecimalAttribute(default=Decimal)
    held = DecimalAttribute(default=Decimal)
    available = DecimalAttribute(default=Decimal)   # balance + credit (postpaid) - held, kept by every write
    active_calls = NumberAttribute(default=0)
    max_calls = NumberAttribute(null=True)
    cps_limit = NumberAttribute(null=True)
    daily_limit = DecimalAttribute(null=True)
    monthly_limit = DecimalAttribute(null=True)
    allow_loss = BooleanAttribute(default=False)
    reseller_model = UnicodeAttribute(default="margin")
    commission_percent = DecimalAttribute(default=Decimal)
    currency = UnicodeAttribute(default="USD")
    settings = JSONTextAttribute(null=True)            # root only: TreeSettings
    # The portal's view of the account (the switch path reads none of these).
    email = UnicodeAttribute(null=True)                # sign-in name, lower case, unique in the deployment
    timezone = UnicodeAttribute(null=True)
    billing_day = NumberAttribute(null=True)
    low_balance = DecimalAttribute(null=True)          # notify below this balance
    may_create = UnicodeAttribute(null=True)           # domain.access.CREATE_RIGHTS
    created_at = UnicodeAttribute(null=True)
    closed_at = UnicodeAttribute(null=True)
    search_text = UnicodeAttribute(null=True)          # lower-case name and e-mail, for the subtree search
    # Usage counters (domain.counters) of a level with a CPS or spend limit: the period each counts in
    # (epoch second, UTC day, UTC month) and its value (calls started; money spent + reserved).
    cps_at = UnicodeAttribute(null=True)
    cps_n = NumberAttribute(null=True)
    day_at = UnicodeAttribute(null=True)
    day_used = DecimalAttribute(null=True)
    month_at = UnicodeAttribute(null=True)
    month_used = DecimalAttribute(null=True)
    cps_lent = NumberAttribute(null=True)           # CPS shares lent to escrow slots (domain.escrow)
    # Escrow (domain.escrow), on client items: slot k (1..ESCROW_SLOTS) holds money of the ancestor at
    # distance k: e<k>o owner id, e<k>a available, e<k>s spent not yet swept, e<k>u last used; a refill request sets
    # e<k>w (the owner it asks), e<k>n (the hold it needed) and ``want`` (the sparse ``wants`` index).
    want = UnicodeAttribute(null=True)
    wants = WantsIndex()
    for _k in range(1, ESCROW_SLOTS + 1):
        locals()[f"e{_k}o"] = UnicodeAttribute(null=True)
        locals()[f"e{_k}a"] = DecimalAttribute(null=True)
        locals()[f"e{_k}s"] = DecimalAttribute(null=True)
        locals()[f"e{_k}w"] = UnicodeAttribute(null=True)
        locals()[f"e{_k}n"] = DecimalAttribute(null=True)
        locals()[f"e{_k}u"] = NumberAttribute(null=True)      # last hold from the slot (epoch s): idle aging
        locals()[f"e{_k}c"] = NumberAttribute(null=True)      # free call permits (owner with max_calls)
        locals()[f"e{_k}r"] = NumberAttribute(null=True)      # CPS share (owner with cps_limit) ...
        locals()[f"e{_k}t"] = UnicodeAttribute(null=True)     # ... the second its counter counts in
        locals()[f"e{_k}q"] = NumberAttribute(null=True)      # ... calls started from it in that second
    del _k


class IdentityItem(CoreItem, discriminator="identity"):
    name = UnicodeAttribute()
    client_id = UnicodeAttribute()
    # A SIP user's switch password, kept for the switch's registrar to read (a later issue); the portal
    # shows it once, on creation, and never returns it again. Encrypted at rest with the table.
    sip_secret = UnicodeAttribute(null=True)
    route = JSONTextAttribute()     # {"chain": [[account_id, tariff_id, limit flags], ...], "dial_plan": {...}}


class SwitchKeyItem(CoreItem, discriminator="switch_key"):
    key_id = UnicodeAttribute()
    name = UnicodeAttribute(default="")
    status = UnicodeAttribute(default="active")
    created_at = UnicodeAttribute(default="")


class TariffItem(CoreItem, discriminator="tariff"):
    id = UnicodeAttribute()
    owner = UnicodeAttribute()
    tariff_kind = UnicodeAttribute(default="table")
    name = UnicodeAttribute(default="")
    markup_fixed = DecimalAttribute(default=Decimal)
    markup_percent = DecimalAttribute(default=Decimal)
    increments = JSONTextAttribute(null=True)
    # Accounts charged by it now (kept with every assignment: a tariff in use cannot be deleted), and when
    # it was first assigned: before that no call was rated by it, so its history may still be written.
    used_by = NumberAttribute(null=True)
    used_since = UnicodeAttribute(null=True)
    rates_rev = NumberAttribute(null=True)   # bumped by every change of its rates: writers never interleave
    created_at = UnicodeAttribute(null=True)


class RateGroupItem(CoreItem, discriminator="rate_group"):
    tariff_id = UnicodeAttribute()
    rates = JSONTextAttribute()     # {prefix: [rate version dicts]}


class ImportItem(CoreItem, discriminator="import"):
    """IMPORT#<id> / #: a deck import through S3 (services.deck_import), its progress and its outcome.
    Expires (``ttl``) 30 days after it was opened."""
    account_id = UnicodeAttribute()
    tariff_id = UnicodeAttribute()
    by = UnicodeAttribute()
    mode = UnicodeAttribute()
    effective_from = UnicodeAttribute(null=True)
    dry_run = BooleanAttribute(default=False)
    status = UnicodeAttribute()         # awaiting_upload, queued, reading, applying, done, failed
    rows = NumberAttribute(default=0)
    written = NumberAttribute(default=0)    # transactions written ...
    to_write = NumberAttribute(default=0)   # ... of how many
    result = JSONTextAttribute(null=True)   # the change (DeckChange), or the refusal (errors by line)
    created_at = UnicodeAttribute()
    started_at = UnicodeAttribute(null=True)    # rows dated before it are in the past
    updated_at = UnicodeAttribute(null=True)


class DidItem(CoreItem, discriminator="did"):
    """DID#<number> / #: read by an inbound authorize (with the holders' accounts) and by the portal."""
    number = UnicodeAttribute()
    country = UnicodeAttribute()
    tree = UnicodeAttribute()
    did_status = UnicodeAttribute(default="active")
    holders = JSONTextAttribute()           # [{account, since, setup, monthly, per_minute}], root first
    offer = JSONTextAttribute()             # {setup, monthly, per_minute}: the root's default prices
    description = UnicodeAttribute(default="")
    increments = JSONTextAttribute(null=True)
    rev = NumberAttribute(default=0)
    created_at = UnicodeAttribute(default="")


class DidHoldingItem(CoreItem, discriminator="did_holding"):
    """DID#<number> / H#<account>: in the ``listing`` index as DIDS#<account>, by number."""
    account_id = UnicodeAttribute()


class DidEventItem(CoreItem, discriminator="did_event"):
    """DID#<number> / LOG#<rev>: one change, shown to ``receiver``'s path and its ancestors."""
    event = UnicodeAttribute()
    by = UnicodeAttribute(null=True)
    receiver = UnicodeAttribute()
    receiver_path = UnicodeAttribute()
    prices = JSONTextAttribute(null=True)
    at = UnicodeAttribute()


class ExportItem(CoreItem, discriminator="cdr_export"):
    """EXPORT#<id> / #: a CDR export written to S3 by a background task (services.portal_reports), its
    progress and where the file is. Expires (``ttl``) 2 days after it was asked for, as its file does."""
    account_id = UnicodeAttribute()
    by = UnicodeAttribute()
    filters = JSONTextAttribute()
    status = UnicodeAttribute()         # queued, writing, done, failed
    rows = NumberAttribute(default=0)
    object_key = UnicodeAttribute(null=True)
    error = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute(null=True)


class CallItem(CoreItem, discriminator="call"):
    call_id = UnicodeAttribute()
    status = UnicodeAttribute()     # held -> done, or held -> expired -> done
    account = UnicodeAttribute()
    client_id = UnicodeAttribute()
    destination = UnicodeAttribute()
    number = UnicodeAttribute()
    caller_id = UnicodeAttribute(null=True)
    direction = UnicodeAttribute(null=True)         # "inbound" (to a DID: number); absent: outbound
    switch_id = UnicodeAttribute(null=True)         # key id of the switch that authorized it
    authorized_at = NumberAttribute()
    max_duration = NumberAttribute()
    # Compact JSON (call_codec.py): the frozen levels, and once billed the charges; the answer and the
    # result are rebuilt from them.
    levels = UnicodeAttribute()
    result = UnicodeAttribute(null=True)
    held_shard = UnicodeAttribute(null=True)
    expires_at = NumberAttribute(null=True)
    held_index = HeldIndex()
    # Set when billed: the call record is the call's CDR, at every level (reads.cdr_view).
    cdr_client = UnicodeAttribute(null=True)
    cdr_tree = UnicodeAttribute(null=True)
    cdr_at = UnicodeAttribute(null=True)            # <ISO time billed>#<h(call_id)>
    cdr_path = UnicodeAttribute(null=True)          # root/.../client
    client_calls = ClientCallsIndex()
    tree_calls = TreeCallsIndex()


class EscrowItem(CoreItem, discriminator="escrow"):
    """ESC#<owner>#<shard> / <client>: a slot the rebalancer opened (its distance, when it last refilled it), so
    idle escrow and a suspended owner's escrow can be found and recalled."""
    distance = NumberAttribute()
    at = NumberAttribute()


class EscrowOwnerItem(CoreItem, discriminator="escrow_owner"):
    """ESCOWNERS / <owner>: an account that has escrow out; ``recall`` (epoch s) asks the rebalancer to
    bring all of it back (set by the portal when the account stops being active)."""
    recall = NumberAttribute(null=True)


class IdempotencyItem(CoreItem, discriminator="idempotency"):
    """IDEM#<caller> / <h(key)>: which journal entry a caller's idempotency key made. Written with the
    entry, so a key is spent once whatever account or kind a retry names."""
    entry_account = UnicodeAttribute()
    entry_id = UnicodeAttribute()


class ReportRowItem(CoreItem, discriminator="report_row"):
    """REP#<account> / <month>#<row>#<k>: a report row (domain.reports, adapters.dynamo.report_store)."""
    calls = NumberAttribute(default=0)
    answered = NumberAttribute(default=0)
    seconds = NumberAttribute(default=0)
    revenue = DecimalAttribute(default=Decimal)
    cost = DecimalAttribute(default=Decimal)
    commission = DecimalAttribute(default=Decimal)


class ReportMoneyItem(CoreItem, discriminator="report_money"):
    """The month's wallet movements other than calls, one attribute per journal entry kind."""
    for _kind in ENTRY_KINDS:
        locals()[f"m_{_kind}"] = DecimalAttribute(null=True)
    del _kind


class ReportMarkItem(CoreItem, discriminator="report_mark"):
    last = UnicodeAttribute()


class CounterItem(CoreItem, discriminator="counter"):
    """A counter with a TTL (the identity service's failed sign-ins per IP and window). The switch path's
    CPS and spend counters are attributes of the account item (domain.counters)."""
    n = NumberAttribute(null=True)


class HistoryIndex(GlobalSecondaryIndex):
    """An account's entries in time order (the table's sort key is the entry's id, for replays)."""
    class Meta:
        index_name = "history"
        projection = AllProjection()
    account_id = UnicodeAttribute(hash_key=True)
    at_id = UnicodeAttribute(range_key=True)


class PeerHistoryIndex(GlobalSecondaryIndex):
    """Sparse: the entries that also move a second account's wallet (a transfer's payer)."""
    class Meta:
        index_name = "peer_history"
        projection = AllProjection()
    peer_id = UnicodeAttribute(hash_key=True)
    at_id = UnicodeAttribute(range_key=True)


class JournalItem(Model):
    """One item per money movement other than a call (a call's entry is its call record): its postings
    sum to zero (domain.ledger). Filed under the account whose wallet it moves; the id comes from the
    movement's business key, so writing it where none has that id refuses a replay."""
    class Meta(_Meta):
        logical_name = "journal"
        table_name = table_name(logical_name)
    account_id = UnicodeAttribute(hash_key=True)
    entry_id = UnicodeAttribute(range_key=True)      # <kind>#<h(business key)>
    at_id = UnicodeAttribute()                       # <ISO time>#<entry_id>: the history indexes' order
    entry_kind = UnicodeAttribute()                  # opening, payment, charge, transfer, credit_limit
    postings = JSONTextAttribute()                   # {book: "amount"}, summing to zero
    peer_id = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    ref = UnicodeAttribute(default="")
    description = UnicodeAttribute(default="")
    by = UnicodeAttribute(null=True)                 # the account that made it (None: the system)
    details = JSONTextAttribute(null=True)
    history = HistoryIndex()
    peer_history = PeerHistoryIndex()


ALL_MODELS = (CoreItem, JournalItem)
TTL_ATTRIBUTES = {CoreItem: "ttl"}     # counters expire on their own


def logical_name(model) -> str:
    """'core', 'journal': the table's name without the stage prefix."""
    return model.Meta.logical_name


def create_tables() -> None:
    """Local stack and tests; deployed stages get the same tables from infra/."""
    for model in ALL_MODELS:
        if not model.exists():
            model.create_table(wait=True)
    for model, attribute in TTL_ATTRIBUTES.items():
        model._get_connection().update_time_to_live(attribute)
