"""Keeping the report rows current (domain.reports): each call the stream says was just billed adds to
the rows of every seller on its chain, exactly once (adapters.dynamo.report_store)."""
from typing import Iterable, Tuple

from chalicelib.domain.reports import BilledCall, LevelCharge
from chalicelib.domain.settlement import charges_from_result

from .records import INBOUND, CallRecord


def billed(call: CallRecord, billed_at: str) -> BilledCall:
    charges = charges_from_result(call.result["levels"])
    return BilledCall(
        call_id=call.call_id, billed_at=billed_at, billsec=int(call.result["billsec"]),
        answered=call.result["disposition"] == "ANSWERED",
        levels=tuple(LevelCharge(c.account_id, c.cost, c.commission) for c in charges),
        did=call.number if call.direction == INBOUND else None)


def apply(store, records: Iterable[Tuple[str, CallRecord, str]]) -> dict:
    """(sequence number, call, billed at) in stream order, from one shard."""
    return store.apply_calls([(seq, billed(call, at)) for seq, call, at in records])
