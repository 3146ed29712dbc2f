"""Report rows (domain.reports) in the core table, and the exactly-once apply of the stream's calls.

    REP#<account>   <month>#<row>#<k>   report_row   calls, answered, seconds, revenue, cost, commission
    REP#<account>   <month>#M           report_money m_<kind>: the wallet's non-call movements that month
    REPSEQ#<mark>   #                   report_mark  records already applied, up to ``last`` (ttl 3 days)

Exactly once, without knowing the stream shard (Lambda does not say): a batch from one shard is applied in
transactions, each with a mark named after the first stream record it covers (sequence numbers are unique
in a stream) and holding the last. A retried batch starts at the same record, in the same order (the
shard's order; the event source mapping must not bisect batches), perhaps with more records after: what a
mark covers is skipped, the rest is applied under new marks. Client rows go in runs of consecutive records
(``L#<seq>``); the rows many calls share are added up over the batch and written once per batch
(``S#<seq>#<part>``, as many parts as 99-row transactions need). ``k`` spreads hot rows (the admin's, a
top reseller's) over ROW_SHARDS items; the mark's name picks it.

Access patterns: a row is read by exact key, every shard of it in one BatchGetItem (an account's totals,
a page of children's or DIDs' rows), the money row by GetItem, and the children's rows of a month by a
Query on begins_with(sk, "<month>#C#"), paged.
"""
import time
import zlib
from decimal import Decimal
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from pynamodb.exceptions import TransactWriteError

from chalicelib.domain.ledger import ENTRY_KINDS
from chalicelib.services.ports import CdrExport
from chalicelib.domain.reports import (ROW_SHARDS, BilledCall, Key, Money, Totals, add_up, batches, contributions,
                                      leaf_key)

from .keys import export_key, mark_key, money_sk, report_pk, row_sk
from .models import CoreItem, ExportItem, ReportMarkItem, ReportMoneyItem, ReportRowItem
from .writes import Tx, set_fields

EXPORT_DAYS = 2            # the bucket deletes exports after 2 days (infra DECK_DAYS): the record goes too
RUN_ITEMS = 99            # a transaction holds 100 items: the mark and 99 rows
MARK_DAYS = 3             # longer than a stream keeps records (24 h)


def _parse_sk(sk: str) -> Tuple[str, str]:
    """(month, row) of a row's sort key."""
    return sk[:7], sk[8:sk.rindex("#")]


def row_update(key: Key, shard: int, totals: Totals):
    account, month, row = key
    item = ReportRowItem(report_pk(account), row_sk(month, row, shard))
    a = ReportRowItem
    actions = [a.calls.add(totals.calls), a.answered.add(totals.answered), a.seconds.add(totals.seconds),
               a.revenue.add(totals.revenue), a.cost.add(totals.cost), a.commission.add(totals.commission),
               a.kind.set(ReportRowItem)]
    return item, actions


def money_updates(postings: Dict[str, Decimal], kind: str, at: str) -> list:
    """The journal entry's wallet postings as (label, item, actions, condition) for DynamoWrites.post:
    each wallet's month row adds the amount under the entry's kind, in the entry's own transaction."""
    out = []
    for book, amount in postings.items():
        if not book.startswith("wallet:") or not amount or kind not in ENTRY_KINDS:
            continue
        account = book[len("wallet:"):]
        item = ReportMoneyItem(report_pk(account), money_sk(at[:7]))
        out.append((("report", account), item,
                    [getattr(ReportMoneyItem, f"m_{kind}").add(amount), ReportMoneyItem.kind.set(ReportMoneyItem)],
                    None))
    return out


class ReportStore:
    """Mixed into DynamoStore (``_conn``)."""

    # --- writing: the stream consumer ------------------------------------------------------------

    def apply_calls(self, records: Sequence[Tuple[str, BilledCall]], now: Optional[float] = None) -> dict:
        """Apply (sequence number, call) records of one shard, in order, exactly once. Returns counts.

        Two passes, each with its own marks. Client rows (one per call: its parent's row about it) go in
        runs of consecutive records. The shared rows (totals, resellers' rows about resellers, DIDs) are
        added up over the rest of the batch and written once, in as many transactions as they need: a
        hot row is written once per batch, not once per run."""
        expires = int(time.time() if now is None else now) + MARK_DAYS * 86400
        leaves, shared = [], []
        for _, call in records:
            delta = contributions(call)
            leaf = leaf_key(call)
            leaves.append({k: v for k, v in delta.items() if k == leaf})
            shared.append({k: v for k, v in delta.items() if k != leaf})
        stats = {"records": len(records), "skipped": 0, "runs": 0, "rows": 0}
        self._runs(records, leaves, expires, stats)
        self._groups(records, shared, expires, stats)
        return stats

    def _runs(self, records, deltas, expires: int, stats: dict) -> None:
        i = 0
        while i < len(records):
            last = self._mark(f"L#{records[i][0]}")
            if last is not None:
                j = _after(records, i, last)
                stats["skipped"] += j - i
                i = j
                continue
            _, end = batches(deltas[i:], lambda d: list(d), RUN_ITEMS)[0]
            end += i
            if self._commit(f"L#{records[i][0]}", records[end - 1][0], _summed(deltas[i:end]), records[i][0],
                            expires, stats):
                i = end

    def _groups(self, records, deltas, expires: int, stats: dict) -> None:
        i = 0
        while i < len(records):
            last = self._mark(f"S#{records[i][0]}#0")
            end = _after(records, i, last) if last is not None else len(records)
            rows = sorted(_summed(deltas[i:end]).items())
            parts = [rows[k:k + RUN_ITEMS] for k in range(0, len(rows), RUN_ITEMS)] or [[]]
            for k, part in enumerate(parts):
                name = f"S#{records[i][0]}#{k}"
                if k and self._mark(name) is not None:
                    continue
                if k == 0 and last is not None:
                    continue
                if not self._commit(name, records[end - 1][0], dict(part), f"{records[i][0]}#{k}", expires, stats):
                    return self._groups(records[i:], deltas[i:], expires, stats)   # applied meanwhile: again
            i = end

    def _commit(self, name: str, last: str, rows: Dict[Key, Totals], spread: str, expires: int, stats: dict) -> bool:
        """One transaction: the mark ``name`` (covering records up to ``last``) and the rows. False when
        the mark was written meanwhile (a duplicate delivery)."""
        shard = zlib.crc32(spread.encode()) % ROW_SHARDS
        tx = Tx().put(("mark", name), ReportMarkItem(*mark_key(name), last=last, ttl=expires),
                      condition=ReportMarkItem.pk.does_not_exist())
        for key, totals in sorted(rows.items()):
            item, actions = row_update(key, shard, totals)
            tx.update(("row", key), item, actions)
        try:
            tx.commit(self._conn, f"report {name}")
        except TransactWriteError as exc:
            if ("mark", name) in tx.refused(exc):
                return False
            raise
        stats["runs"] += 1
        stats["rows"] += len(rows)
        return True

    def _mark(self, name: str) -> Optional[str]:
        try:
            return ReportMarkItem.get(*mark_key(name), consistent_read=True).last
        except ReportMarkItem.DoesNotExist:
            return None

    # --- reading ---------------------------------------------------------------------------------

    def report_rows_of(self, account_id: str, month: str, rows: Sequence[str]) -> Dict[str, Totals]:
        """Rows by exact key, every shard of each, in BatchGetItems (an account's totals, a page of its
        children's or DIDs' rows): no Query."""
        keys = _row_keys(account_id, month, rows)
        found: List[Tuple[str, Totals]] = []
        for start in range(0, len(keys), 100):
            for item in ReportRowItem.batch_get(keys[start:start + 100], consistent_read=True):
                found.append((_parse_sk(item.sk)[1], _totals(item)))
        totals = add_up(found)
        return {row: totals.get(row, Totals()) for row in rows}

    def report_money(self, account_id: str, month: str) -> Money:
        try:
            return _money(ReportMoneyItem.get(report_pk(account_id), money_sk(month), consistent_read=True))
        except ReportMoneyItem.DoesNotExist:
            return Money()

    def child_rows(self, account_id: str, month: str, limit: int, cursor: Optional[str]):
        """The rows of the account's children that month, a page at a time (a child's shards are read
        together: a page ends between two children)."""
        from .portal_store import _checked, _expect, decode_cursor, encode_cursor
        pk = report_pk(account_id)
        start = _expect(decode_cursor(cursor), {"pk", "sk"}, pk=pk)
        result = CoreItem.query(pk, CoreItem.sk.startswith(f"{month}#C#"), consistent_read=True,
                                last_evaluated_key=start)
        rows: Dict[str, Totals] = {}
        last = None

        def fill():
            nonlocal last
            for item in result:
                _, row = _parse_sk(item.sk)
                child = row[2:]
                if child not in rows and len(rows) >= limit:
                    return
                rows.setdefault(child, Totals()).add(_totals(item))
                last = {"pk": {"S": item.pk}, "sk": {"S": item.sk}}
            last = None
        _checked(fill)
        return rows, encode_cursor(last)


def _seq(sequence: str) -> int:
    return int(sequence)


def _after(records, i: int, last: str) -> int:
    """The index of the first record after ``last`` (a mark's), from ``i`` on."""
    j = i
    while j < len(records) and _seq(records[j][0]) <= _seq(last):
        j += 1
    return j


def _summed(deltas) -> Dict[Key, Totals]:
    out: Dict[Key, Totals] = {}
    for delta in deltas:
        for key, totals in delta.items():
            out.setdefault(key, Totals()).add(totals)
    return out


def _totals(item) -> Totals:
    return Totals(calls=int(item.calls or 0), answered=int(item.answered or 0), seconds=int(item.seconds or 0),
                  revenue=item.revenue or Decimal(0), cost=item.cost or Decimal(0),
                  commission=item.commission or Decimal(0))


def _money(item) -> Money:
    return Money({kind: getattr(item, f"m_{kind}") for kind in ENTRY_KINDS if getattr(item, f"m_{kind}", None)})


def _row_keys(account_id: str, month: str, rows: Iterable[str]) -> List[Tuple[str, str]]:
    return [(report_pk(account_id), row_sk(month, row, k)) for row in rows for k in range(ROW_SHARDS)]


class ExportStore:
    """CDR exports (services.portal_reports): one item each, read and updated by id."""

    def create_export(self, job: CdrExport, now: float) -> None:
        ExportItem(*export_key(job.id), account_id=job.account_id, by=job.by, filters=job.filters, status=job.status,
                   created_at=job.created_at, ttl=int(now) + EXPORT_DAYS * 86400).save(
            condition=ExportItem.pk.does_not_exist())

    def export_job(self, job_id: str) -> Optional[CdrExport]:
        try:
            item = ExportItem.get(*export_key(job_id), consistent_read=True)
        except ExportItem.DoesNotExist:
            return None
        return CdrExport(id=job_id, account_id=item.account_id, by=item.by, filters=dict(item.filters or {}),
                         status=item.status, rows=int(item.rows or 0), object_key=item.object_key, error=item.error,
                         created_at=item.created_at, updated_at=item.updated_at)

    def update_export(self, job_id: str, expect_status: Optional[Sequence[str]] = None, **values) -> bool:
        return set_fields(ExportItem(*export_key(job_id)), ExportItem, expect_status, **values)
