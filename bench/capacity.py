"""DynamoDB capacity meter: write and read request units (WRU, RRU) per call, computed from the items
a call actually writes and reads, with DynamoDB's published sizing rules.

moto reports no real consumed capacity, so the units are computed here from botocore events:
``before-call.dynamodb`` (the serialized request) and ``after-call.dynamodb`` (the parsed response).
Sizes that neither carries (the item an UpdateItem leaves behind, the item a ConditionCheck checks,
the item a Put overwrites or a Delete removes) are read with a separate low-level client whose session
leaves out every non-botocore call hook (this meter's own and, say, bench.py's round-trip counter), so
the lookups are neither metered nor counted as round trips; a thread-local flag guards reentrancy too.

Usage::

    from capacity import install            # before any botocore session exists
    meter = install()
    ...
    meter.start(); authorize(...); usage = meter.stop()
    usage.wru, usage.rru, usage.by_table, usage.items_written, usage.calls

Rules (AWS DynamoDB developer guide: item sizes, read/write capacity, transactions, secondary indexes):

* item size = sum of UTF-8 attribute-name length + value size; see ``value_size``.
* PutItem / UpdateItem / DeleteItem / each BatchWriteItem request: ceil(size / 1 KB) WRU of the larger of
  the item before and after, at least 1. Inside TransactWriteItems every action costs twice that
  (ConditionCheck too, sized by the item checked), at least 2.
* A secondary index touched by a write costs a write on the index (1 KB units of the index entry: the
  projected attributes): 1 when the item enters, leaves or changes projected attributes in the index,
  2 when an index key value changes, 0 when the item is in the index neither before nor after. This is
  included in ``wru`` and shown apart as ``index_wru``. Assumption: index writes of a transaction are
  charged once (they are applied asynchronously, outside the two-phase transaction protocol).
* GetItem / each BatchGetItem key: ceil(size / 4 KB) RRU strongly consistent, half that eventually
  consistent; a key that does not exist still costs the minimum (1, or 0.5). TransactGetItems: 2x.
* Query / Scan: the summed size of the items the page evaluated (before any filter, whole items whatever
  the projection) rounded up to 4 KB, halved when eventually consistent; at least one unit.
* A single-item write refused by its condition is charged as the write it would have been (AWS: failed
  conditional writes consume write capacity). A cancelled transaction is NOT charged here (the docs give
  no figure); it is listed in ``Usage.failed``.

The figures are exact for calls made one at a time; under concurrency another writer could change an
item between a call and the meter's lookup of it.
"""
import base64
import json
import logging
import math
import re
import threading
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Dict, List, Optional, Tuple

import botocore.handlers
import botocore.session

log = logging.getLogger("capacity")

# On-demand request prices, us-east-1, as of 2026 (reduced in Nov 2024 from $1.25 / $0.25).
# Source: https://aws.amazon.com/dynamodb/pricing/on-demand/
DOLLARS_PER_MILLION_WRU = 0.625
DOLLARS_PER_MILLION_RRU = 0.125

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
TRANSACTION_FACTOR = 2


def dollars_per_million_calls(wru_per_call: float, rru_per_call: float) -> float:
    """What a million calls cost in on-demand request units, each call using the given units."""
    return wru_per_call * DOLLARS_PER_MILLION_WRU + rru_per_call * DOLLARS_PER_MILLION_RRU


# Lambda, arm64, us-east-1 (https://aws.amazon.com/lambda/pricing/): per GB-second and per request.
LAMBDA_DOLLARS_PER_GB_SECOND = 0.0000133334
LAMBDA_DOLLARS_PER_MILLION_REQUESTS = 0.20
# Billed duration of the switch function (1024 MB, infra/stages.py) per request. Not measurable here (no
# AWS): an estimate of 3 round trips of ~5 ms plus our code, to be replaced by the dev-stage load test's
# figures (docs/deploy.md, "Calibrating"). Switches call the function URL, which costs nothing more; the
# REST API would add $3.50 per million requests.
SWITCH_MEMORY_GB = 1.0
AUTHORIZE_BILLED_MS = 25
COMPLETE_BILLED_MS = 15


def lambda_dollars_per_million_calls(authorize_ms: float = AUTHORIZE_BILLED_MS,
                                     complete_ms: float = COMPLETE_BILLED_MS) -> float:
    """Two invocations per call (authorize, complete) at the switch function's memory."""
    seconds = (authorize_ms + complete_ms) / 1000
    return 2 * LAMBDA_DOLLARS_PER_MILLION_REQUESTS + seconds * SWITCH_MEMORY_GB * LAMBDA_DOLLARS_PER_GB_SECOND * 1e6


# --- item sizes --------------------------------------------------------------------------------------

def number_size(text) -> int:
    """(significant digits + 1) // 2 + 1 bytes: 1 byte per 2 significant digits plus 1 byte; leading
    and trailing zeros, sign, point and exponent do not count."""
    try:
        digits = Decimal(str(text)).as_tuple().digits
    except InvalidOperation:
        digits = tuple(int(c) for c in str(text) if c.isdigit())
    significant = "".join(map(str, digits)).strip("0")
    return (len(significant) + 1) // 2 + 1


def _binary_len(value) -> int:
    """Binary as parsed by botocore (bytes) or as on the wire (a base64 string)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    return len(base64.b64decode(value))


def value_size(value: dict) -> int:
    """Size in bytes of one typed attribute value ({"S": ...}, {"N": ...}, {"M": {...}}, ...)."""
    (kind, v), = value.items()
    if kind == "S":
        return len(v.encode("utf-8"))
    if kind == "N":
        return number_size(v)
    if kind == "B":
        return _binary_len(v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode("utf-8")) for s in v)
    if kind == "NS":
        return sum(number_size(n) for n in v)
    if kind == "BS":
        return sum(_binary_len(b) for b in v)
    if kind == "L":
        return 3 + sum(value_size(e) + 1 for e in v)
    if kind == "M":
        return 3 + sum(len(k.encode("utf-8")) + value_size(e) + 1 for k, e in v.items())
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(item: Optional[dict]) -> int:
    """Size in bytes of an item in DynamoDB's typed form ({name: {"S": "..."}, ...}); None is 0."""
    if not item:
        return 0
    return sum(len(name.encode("utf-8")) + value_size(v) for name, v in item.items())


def plain_item_size(item: dict) -> int:
    """item_size of an item given as plain Python values (boto3's resource layer form)."""
    from boto3.dynamodb.types import TypeSerializer
    serializer = TypeSerializer()
    return item_size({k: serializer.serialize(v) for k, v in item.items()})


def write_units(size: int) -> int:
    return max(1, math.ceil(size / WRITE_UNIT_BYTES))


def read_units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return units if consistent else units / 2


# --- results -----------------------------------------------------------------------------------------

@dataclass
class Usage:
    wru: float                      # write request units, secondary-index writes included
    rru: float                      # read request units
    by_table: Dict[str, Dict[str, float]]   # table -> {"wru", "rru", "index_wru"}
    items_written: Dict[str, int]   # table -> items put, updated or deleted (not condition checks)
    calls: List[str]                # operation names in order (failed ones end in "!")
    index_wru: float = 0.0          # the part of wru spent on secondary indexes
    failed: List[str] = field(default_factory=list)   # calls DynamoDB refused (see module doc)
    per_call: List[Tuple[str, float, float]] = field(default_factory=list)   # (operation, wru, rru) in order
    errors: List[str] = field(default_factory=list)   # the meter's own failures (should stay empty)

    def dollars_per_million(self) -> float:
        return dollars_per_million_calls(self.wru, self.rru)


# --- the raw lookup client ----------------------------------------------------------------------------

_CALL_EVENTS = ("before-call", "after-call", "response-received", "before-parameter-build",
                "provide-client-params", "needs-retry")


class _QuietSession(botocore.session.Session):
    """A botocore session without the call hooks others added to BUILTIN_HANDLERS (meters, counters);
    request-level ones (moto's before-send stubber) stay, so lookups reach the same DynamoDB."""

    def _register_builtin_handlers(self, events):
        for spec in botocore.handlers.BUILTIN_HANDLERS:
            event_name, handler = spec[0], spec[1]
            module = getattr(handler, "__module__", "") or ""
            if event_name.startswith(_CALL_EVENTS) and not module.startswith("botocore"):
                continue
            if len(spec) == 2:
                self.register(event_name, handler)
            elif spec[2] is botocore.handlers.REGISTER_FIRST:
                self._events.register_first(event_name, handler)
            elif spec[2] is botocore.handlers.REGISTER_LAST:
                self._events.register_last(event_name, handler)


_local = threading.local()      # .busy: inside the meter (its own lookups); .clients: per-thread clients


def _lookup_client(region: Optional[str], endpoint: Optional[str], credentials=None):
    clients = getattr(_local, "clients", None)
    if clients is None:
        clients = _local.clients = {}
    cache_key = (region, endpoint, getattr(credentials, "access_key", None))
    if cache_key not in clients:
        kwargs = {}
        if credentials is not None and credentials.access_key:
            kwargs = dict(aws_access_key_id=credentials.access_key, aws_secret_access_key=credentials.secret_key,
                          aws_session_token=credentials.token)
        clients[cache_key] = _QuietSession().create_client(
            "dynamodb", region_name=region, endpoint_url=endpoint, **kwargs)
    return clients[cache_key]


def _api_value(value: dict) -> dict:
    """A wire-format key value (binary as base64 text) in botocore's parameter form (binary as bytes)."""
    (kind, v), = value.items()
    if kind == "B" and isinstance(v, str):
        return {"B": base64.b64decode(v)}
    return {kind: v}


def _canonical(key: dict) -> str:
    out = {}
    for name, value in key.items():
        (kind, v), = value.items()
        if kind == "B" and not isinstance(v, str):
            v = base64.b64encode(bytes(v)).decode()
        out[name] = {kind: v}
    return json.dumps(out, sort_keys=True)


@dataclass
class _Schema:
    key: Tuple[str, ...]                        # the table's key attributes
    indexes: List[Tuple[str, Tuple[str, ...], str, Tuple[str, ...]]]   # (name, keys, projection, non_key)


class _Lookups:
    """Reads with the raw client; table schemas cached per endpoint."""
    schemas: Dict[Tuple[Optional[str], str], _Schema] = {}
    lock = threading.Lock()

    def __init__(self, region, endpoint, credentials):
        self.region, self.endpoint, self.credentials = region, endpoint, credentials

    @property
    def client(self):
        return _lookup_client(self.region, self.endpoint, self.credentials)

    def schema(self, table: str) -> _Schema:
        cache_key = (self.endpoint, table)
        with self.lock:
            cached = self.schemas.get(cache_key)
        if cached is not None:
            return cached
        description = self.client.describe_table(TableName=table)["Table"]
        indexes = []
        for index in description.get("GlobalSecondaryIndexes", []) + description.get("LocalSecondaryIndexes", []):
            projection = index.get("Projection", {})
            indexes.append((index["IndexName"], tuple(k["AttributeName"] for k in index["KeySchema"]),
                            projection.get("ProjectionType", "ALL"), tuple(projection.get("NonKeyAttributes", ()))))
        schema = _Schema(tuple(k["AttributeName"] for k in description["KeySchema"]), indexes)
        with self.lock:
            self.schemas[cache_key] = schema
        return schema


    def key_of(self, table: str, item: dict) -> dict:
        return {name: item[name] for name in self.schema(table).key if name in item}

    def items(self, wanted: Dict[str, List[dict]]) -> Dict[Tuple[str, str], dict]:
        """{(table, canonical key): item} for the keys that exist, read strongly consistently."""
        found: Dict[Tuple[str, str], dict] = {}
        pending = []
        for table, keys in wanted.items():
            seen = set()
            for key in keys:
                c = _canonical(key)
                if c not in seen:
                    seen.add(c)
                    pending.append((table, {k: _api_value(v) for k, v in key.items()}))
        while pending:
            chunk, pending = pending[:100], pending[100:]
            request: Dict[str, dict] = {}
            for table, key in chunk:
                request.setdefault(table, {"Keys": [], "ConsistentRead": True})["Keys"].append(key)
            while request:
                answer = self.client.batch_get_item(RequestItems=request)
                for table, items in answer.get("Responses", {}).items():
                    for item in items:
                        found[(table, _canonical(self.key_of(table, item)))] = item
                request = answer.get("UnprocessedKeys") or {}
        return found

    def query_evaluated(self, operation: str, body: dict) -> List[dict]:
        """The items a Query/Scan page evaluated: the same page without filter and projection."""
        params = {k: v for k, v in body.items() if k not in (
            "FilterExpression", "ProjectionExpression", "Select", "AttributesToGet", "QueryFilter",
            "ScanFilter", "ConditionalOperator", "ReturnConsumedCapacity", "ExpressionAttributeNames",
            "ExpressionAttributeValues")}
        used = set(re.findall(r"[#:][A-Za-z0-9_]+", body.get("KeyConditionExpression", "")))
        names = {k: v for k, v in (body.get("ExpressionAttributeNames") or {}).items() if k in used}
        values = {k: _to_api_deep(v) for k, v in (body.get("ExpressionAttributeValues") or {}).items() if k in used}
        if names:
            params["ExpressionAttributeNames"] = names
        if values:
            params["ExpressionAttributeValues"] = values
        if "ExclusiveStartKey" in params:
            params["ExclusiveStartKey"] = {n: _to_api_deep(v) for n, v in params["ExclusiveStartKey"].items()}
        if "KeyConditions" in params:
            params["KeyConditions"] = {
                n: dict(c, AttributeValueList=[_to_api_deep(v) for v in c.get("AttributeValueList", [])])
                for n, c in params["KeyConditions"].items()}
        answer = getattr(self.client, "query" if operation == "Query" else "scan")(**params)
        return answer.get("Items", [])


def clear_schema_cache() -> None:
    with _Lookups.lock:
        _Lookups.schemas.clear()


def _to_api_deep(value: dict) -> dict:
    """A wire-format value of any type in botocore's parameter form."""
    (kind, v), = value.items()
    if kind == "B" and isinstance(v, str):
        return {"B": base64.b64decode(v)}
    if kind == "BS":
        return {"BS": [base64.b64decode(b) if isinstance(b, str) else b for b in v]}
    if kind == "L":
        return {"L": [_to_api_deep(e) for e in v]}
    if kind == "M":
        return {"M": {k: _to_api_deep(e) for k, e in v.items()}}
    return {kind: v}


# --- the meter ---------------------------------------------------------------------------------------

@dataclass
class _Write:
    table: str
    key: dict
    kind: str                   # Put, Update, Delete, ConditionCheck
    new: Optional[dict] = None  # Put: the item sent
    before: Optional[dict] = None
    after: Optional[dict] = None


_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
_READS = {"GetItem", "BatchGetItem", "TransactGetItems", "Query", "Scan"}


class CapacityMeter:
    def __init__(self):
        self._lock = threading.Lock()
        self._recording = False
        self._reset()

    def _reset(self):
        self._wru = self._rru = self._index_wru = 0.0
        self._by_table: Dict[str, Dict[str, float]] = {}
        self._written: Dict[str, int] = {}
        self._calls: List[str] = []
        self._per_call: List[Tuple[str, float, float]] = []
        self._failed: List[str] = []
        self._errors: List[str] = []

    # control

    def start(self) -> "CapacityMeter":
        with self._lock:
            self._reset()
            self._recording = True
        return self

    def stop(self) -> Usage:
        with self._lock:
            self._recording = False
        return self.usage()

    def usage(self) -> Usage:
        with self._lock:
            return Usage(wru=self._wru, rru=self._rru, by_table={t: dict(v) for t, v in self._by_table.items()},
                         items_written=dict(self._written), calls=list(self._calls), index_wru=self._index_wru,
                         failed=list(self._failed), errors=list(self._errors), per_call=list(self._per_call))

    # accounting

    def _charge(self, table: str, wru: float = 0.0, rru: float = 0.0, index_wru: float = 0.0, written: int = 0):
        with self._lock:
            row = self._by_table.setdefault(table, {"wru": 0.0, "rru": 0.0, "index_wru": 0.0})
            row["wru"] += wru + index_wru
            row["rru"] += rru
            row["index_wru"] += index_wru
            self._wru += wru + index_wru
            self._rru += rru
            self._index_wru += index_wru
            if written:
                self._written[table] = self._written.get(table, 0) + written

    # botocore hooks

    def before_call(self, model, params, request_signer=None, context=None, **_):
        if model.name in ("CreateTable", "DeleteTable", "UpdateTable"):
            clear_schema_cache()     # a table re-created under the same name may have other keys
        if not self._recording or getattr(_local, "busy", False) or context is None:
            return None
        _local.busy = True
        try:
            state = self._prepare(model.name, params, request_signer)
            context.setdefault("capacity_meter", {})[id(self)] = state
        except Exception as exc:   # the meter must never break the call it watches
            log.exception("capacity meter: %s", model.name)
            with self._lock:
                self._errors.append(f"{model.name}: {exc!r}")
        finally:
            _local.busy = False
        return None

    def after_call(self, model, parsed, http_response=None, context=None, **_):
        if getattr(_local, "busy", False) or context is None:
            return
        state = (context.get("capacity_meter") or {}).pop(id(self), None)
        if state is None:
            return
        _local.busy = True
        try:
            failed = bool(http_response is not None and http_response.status_code >= 300) or "Error" in (parsed or {})
            with self._lock:
                self._calls.append(model.name + ("!" if failed else ""))
                if failed:
                    self._failed.append(f"{model.name}: {(parsed or {}).get('Error', {}).get('Code')}")
            with self._lock:
                wru, rru = self._wru, self._rru
            self._settle(model.name, state, parsed or {}, failed)
            with self._lock:   # exact when calls are measured one at a time (module doc)
                self._per_call.append((model.name + ("!" if failed else ""), self._wru - wru, self._rru - rru))
        except Exception as exc:
            log.exception("capacity meter: %s", model.name)
            with self._lock:
                self._errors.append(f"{model.name}: {exc!r}")
        finally:
            _local.busy = False

    # before: parse the request, read what will be overwritten

    def _prepare(self, op: str, params: dict, signer) -> dict:
        raw = params.get("body") or b"{}"
        body = json.loads(raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw)
        url = params.get("url") or ""
        endpoint = "/".join(url.split("/")[:3]) if "://" in url else None
        credentials = None
        if signer is not None and getattr(signer, "_credentials", None) is not None:
            try:
                credentials = signer._credentials.get_frozen_credentials()
            except Exception:
                credentials = None
        lookups = _Lookups(getattr(signer, "region_name", None), endpoint, credentials)
        state = {"body": body, "lookups": lookups, "writes": []}
        if op not in _WRITES:
            return state
        writes: List[_Write] = []
        if op == "PutItem":
            writes.append(_Write(body["TableName"], lookups.key_of(body["TableName"], body["Item"]), "Put",
                                 new=body["Item"]))
        elif op in ("UpdateItem", "DeleteItem"):
            writes.append(_Write(body["TableName"], body["Key"], op[:-4]))
        elif op == "BatchWriteItem":
            for table, requests in body.get("RequestItems", {}).items():
                for request in requests:
                    if "PutRequest" in request:
                        item = request["PutRequest"]["Item"]
                        writes.append(_Write(table, lookups.key_of(table, item), "Put", new=item))
                    else:
                        writes.append(_Write(table, request["DeleteRequest"]["Key"], "Delete"))
        elif op == "TransactWriteItems":
            for action in body.get("TransactItems", []):
                (kind, spec), = action.items()
                if kind == "Put":
                    writes.append(_Write(spec["TableName"], lookups.key_of(spec["TableName"], spec["Item"]), "Put",
                                         new=spec["Item"]))
                else:
                    writes.append(_Write(spec["TableName"], spec["Key"], kind))
        wanted: Dict[str, List[dict]] = {}
        for w in writes:
            wanted.setdefault(w.table, []).append(w.key)
        found = lookups.items(wanted)
        for w in writes:
            w.before = found.get((w.table, _canonical(w.key)))
        state["writes"] = writes
        return state

    # after: size what was written and read

    def _settle(self, op: str, state: dict, parsed: dict, failed: bool) -> None:
        body, lookups, writes = state["body"], state["lookups"], state["writes"]
        if op in _WRITES:
            if failed:
                if op == "TransactWriteItems":
                    return           # cancelled: not charged (module doc)
                if op in ("PutItem", "UpdateItem", "DeleteItem") and \
                        (parsed.get("Error") or {}).get("Code") == "ConditionalCheckFailedException":
                    w = writes[0]
                    self._charge(w.table, wru=write_units(max(item_size(w.before), item_size(w.new))))
                return
            if op == "BatchWriteItem":
                unprocessed = {(t, _canonical(lookups.key_of(t, r.get("PutRequest", {}).get("Item")
                                                                or r.get("DeleteRequest", {}).get("Key"))))
                               for t, rs in (parsed.get("UnprocessedItems") or {}).items() for r in rs}
                writes = [w for w in writes if (w.table, _canonical(w.key)) not in unprocessed]
            updates = [w for w in writes if w.kind == "Update"]
            if op == "UpdateItem" and body.get("ReturnValues") == "ALL_NEW" and "Attributes" in parsed:
                updates[0].after = parsed["Attributes"]
            elif updates:
                wanted: Dict[str, List[dict]] = {}
                for w in updates:
                    wanted.setdefault(w.table, []).append(w.key)
                found = lookups.items(wanted)
                for w in updates:
                    w.after = found.get((w.table, _canonical(w.key)))
            factor = TRANSACTION_FACTOR if op == "TransactWriteItems" else 1
            for w in writes:
                if w.kind == "Put":
                    w.after = w.new
                size = max(item_size(w.before), item_size(w.after))
                index = 0 if w.kind == "ConditionCheck" else \
                    self._index_units(lookups.schema(w.table), w.before, w.after)
                self._charge(w.table, wru=factor * write_units(size), index_wru=index,
                             written=0 if w.kind == "ConditionCheck" else 1)
            return
        if failed or op not in _READS:
            return
        if op == "GetItem":
            item = parsed.get("Item")
            if item is not None and _projected(body):
                table = body["TableName"]
                item = lookups.items({table: [body["Key"]]}).get((table, _canonical(body["Key"])))
            self._charge(body["TableName"], rru=read_units(item_size(item), bool(body.get("ConsistentRead"))))
        elif op == "BatchGetItem":
            unprocessed = parsed.get("UnprocessedKeys") or {}
            for table, request in body.get("RequestItems", {}).items():
                consistent = bool(request.get("ConsistentRead"))
                skipped = {_canonical(k) for k in unprocessed.get(table, {}).get("Keys", [])}
                keys = [k for k in request.get("Keys", []) if _canonical(k) not in skipped]
                if _projected(request):
                    found = lookups.items({table: keys})
                    sizes = {c: item_size(i) for (t, c), i in found.items()}
                else:
                    sizes = {_canonical(lookups.key_of(table, i)): item_size(i)
                             for i in parsed.get("Responses", {}).get(table, [])}
                for key in keys:      # a missing key costs the minimum read
                    self._charge(table, rru=read_units(sizes.get(_canonical(key), 0), consistent))
        elif op == "TransactGetItems":
            responses = parsed.get("Responses") or []
            for i, action in enumerate(body.get("TransactItems", [])):
                spec = action["Get"]
                item = responses[i].get("Item") if i < len(responses) else None
                if item is not None and _projected(spec):
                    item = lookups.items({spec["TableName"]: [spec["Key"]]}).get(
                        (spec["TableName"], _canonical(spec["Key"])))
                self._charge(spec["TableName"], rru=TRANSACTION_FACTOR * read_units(item_size(item), True))
        else:   # Query, Scan
            items = parsed.get("Items", [])
            if _projected(body) or any(k in body for k in ("FilterExpression", "QueryFilter", "ScanFilter")) \
                    or body.get("Select") == "COUNT":
                items = lookups.query_evaluated(op, body)
            total = sum(item_size(i) for i in items)
            self._charge(body["TableName"], rru=read_units(total, bool(body.get("ConsistentRead"))))

    @staticmethod
    def _index_units(schema: _Schema, before: Optional[dict], after: Optional[dict]) -> int:
        units = 0
        for _, keys, projection, non_key in schema.indexes:
            def entry(item):
                if item is None or any(k not in item for k in keys):
                    return None     # not in this (sparse) index
                if projection == "ALL":
                    return item
                names = set(schema.key) | set(keys) | (set(non_key) if projection == "INCLUDE" else set())
                return {n: v for n, v in item.items() if n in names}
            old, new = entry(before), entry(after)
            if old is None and new is None:
                continue
            if old is None or new is None:
                units += write_units(item_size(old or new))
            elif any(_canonical({k: old[k]}) != _canonical({k: new[k]}) for k in keys):
                units += write_units(item_size(old)) + write_units(item_size(new))
            elif _canonical_item(old) != _canonical_item(new):
                units += write_units(max(item_size(old), item_size(new)))
        return units


def _canonical_item(item: dict) -> str:
    def norm(value):
        (kind, v), = value.items()
        if kind == "B" and not isinstance(v, str):
            return {"B": base64.b64encode(bytes(v)).decode()}
        if kind == "BS":
            return {"BS": sorted(base64.b64encode(bytes(b)).decode() if not isinstance(b, str) else b for b in v)}
        if kind in ("SS", "NS"):
            return {kind: sorted(v)}
        if kind == "L":
            return {"L": [norm(e) for e in v]}
        if kind == "M":
            return {"M": {k: norm(e) for k, e in v.items()}}
        return {kind: v}
    return json.dumps({k: norm(v) for k, v in item.items()}, sort_keys=True)


def _projected(spec: dict) -> bool:
    return "ProjectionExpression" in spec or "AttributesToGet" in spec or \
        spec.get("Select") in ("SPECIFIC_ATTRIBUTES", "ALL_PROJECTED_ATTRIBUTES")


# --- installation ------------------------------------------------------------------------------------

METER = CapacityMeter()
_meters: List[CapacityMeter] = []
_installed = False
_install_lock = threading.Lock()


def _before_call(model=None, params=None, request_signer=None, context=None, **kwargs):
    for meter in list(_meters):
        meter.before_call(model, params, request_signer=request_signer, context=context, **kwargs)
    return None     # a value here would be taken as the response and short-circuit the call


def _after_call(model=None, parsed=None, http_response=None, context=None, **kwargs):
    for meter in list(_meters):
        meter.after_call(model, parsed, http_response=http_response, context=context, **kwargs)


def install(meter: Optional[CapacityMeter] = None) -> CapacityMeter:
    """Hook every botocore session created from now on (boto3 and PynamoDB alike) and return the meter
    (the module's METER unless one is given). Sessions that already exist are not hooked: call this
    before the first client is made, or ``attach`` them. Idempotent."""
    global _installed
    meter = meter or METER
    with _install_lock:
        if not _installed:
            botocore.handlers.BUILTIN_HANDLERS.append(("before-call.dynamodb", _before_call))
            botocore.handlers.BUILTIN_HANDLERS.append(("after-call.dynamodb", _after_call))
            _installed = True
        if meter not in _meters:
            _meters.append(meter)
    return meter


def attach(events_owner) -> None:
    """Hook a session or client created before ``install`` (anything with ``.register`` or
    ``.meta.events``)."""
    events = events_owner.meta.events if hasattr(events_owner, "meta") else events_owner
    events.register("before-call.dynamodb", _before_call, unique_id="capacity-meter-before")
    events.register("after-call.dynamodb", _after_call, unique_id="capacity-meter-after")


def uninstall(meter: CapacityMeter) -> None:
    """Stop feeding ``meter`` (the hooks stay in BUILTIN_HANDLERS and do nothing without meters)."""
    with _install_lock:
        if meter in _meters:
            _meters.remove(meter)
