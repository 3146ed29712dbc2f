"""Tariffs and their rates as the portal changes them. Mixed into DynamoStore.

Access patterns (docs/architecture.md, "Tables"):
    a tariff                 GetItem TRF#<id> / #
    all its rates            Query TRF#<id>, sk begins_with G#
    one region's rates       Query TRF#<id>, sk begins_with G#<4 digits> (a shorter prefix: GetItem G#<prefix>)
    an owner's tariffs       Query listing, list_pk = TARIFFS#<owner>

A change of rates is written region by region (``domain.tariffs.layout``: a region is one item, or several
when split). Each TransactWriteItems carries whole regions, never half of one, and bumps the header's
``rates_rev`` on condition that it is still what the change was planned from: two writers never
interleave, the second is refused and plans again from what the first wrote. A deck larger than one
transaction is written in several, in prefix order; a crash between them leaves a prefix of the deck
applied, and applying the same deck again completes it (a row already there changes nothing).
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set

from pynamodb.exceptions import DeleteError, TransactWriteError, UpdateError

from chalicelib.domain.rate_deck import merged
from chalicelib.domain.tariffs import GroupTooLarge, Rate, Tariff, layout, region_of
from chalicelib.services.ports import ImportJob, Refused, StoreBusy, TariffHeader

from .keys import import_key, rate_group_key, tariff_key, tariff_list
from .models import CoreItem, ImportItem, RateGroupItem, TariffItem
from .reads import to_tariff
from .writes import Tx, set_fields

MAX_GROUP_BYTES = 350_000     # DynamoDB items stop at 400 KB; keep room for keys and attribute names
TX_ITEMS = 99                 # 100 actions per transaction, one of them the header
TX_BYTES = 3_500_000          # 4 MB per transaction


def group_json(members: Mapping[str, Sequence[Rate]]) -> dict:
    return {p: [r.to_dict() for r in versions] for p, versions in members.items()}


def group_bytes(members: Mapping[str, Sequence[Rate]]) -> int:
    return len(RateGroupItem.rates.serialize(group_json(members)))


def fits(members: Mapping[str, Sequence[Rate]]) -> bool:
    return group_bytes(members) <= MAX_GROUP_BYTES


def group_item(tariff_id: str, group: str, members: Mapping[str, Sequence[Rate]]) -> RateGroupItem:
    return RateGroupItem(*rate_group_key(tariff_id, group), tariff_id=tariff_id, rates=group_json(members))


def header_item(tariff: Tariff, used_by: int = 0, used_since: Optional[str] = None,
                created_at: Optional[str] = None) -> TariffItem:
    return TariffItem(*tariff_key(tariff.id), id=tariff.id, owner=tariff.owner, tariff_kind=tariff.kind,
                      name=tariff.name, markup_fixed=tariff.markup_fixed, markup_percent=tariff.markup_percent,
                      increments=list(tariff.increments) if tariff.increments else None,
                      list_pk=tariff_list(tariff.owner), list_sk=tariff.id, used_by=used_by or None,
                      used_since=used_since, created_at=created_at)


def tariff_items(tariff: Tariff, rates: Iterable[Rate], used_by: int = 0, used_since: Optional[str] = None,
                 created_at: Optional[str] = None) -> List:
    """A whole tariff as items: its header and its rate groups (split where a region is too large)."""
    book: Dict[str, List[Rate]] = {}
    for rate in rates:
        book.setdefault(rate.prefix, []).append(rate)
    return [header_item(tariff, used_by, used_since, created_at)] + [
        group_item(tariff.id, g, m) for g, m in sorted(layout(book, fits).items())]


@dataclass
class RatesRead:
    """A tariff's rates (or some regions of them) as read, with the revision a change is planned from."""
    rev: int
    book: Dict[str, List[Rate]] = field(default_factory=dict)
    groups: Dict[str, Set[str]] = field(default_factory=dict)       # stored group -> its prefixes


def _read_groups(items, read: RatesRead) -> None:
    for item in items:
        group = item.sk[len("G#"):]
        read.groups[group] = set(item.rates)
        for prefix, versions in item.rates.items():
            read.book[prefix] = [Rate.from_dict(v) for v in versions]


class TariffStore:
    """Mixed into DynamoStore, which supplies ``_conn``."""

    def tariff_header(self, tariff_id: str) -> Optional[TariffHeader]:
        item = self._header_item(tariff_id)
        if item is None:
            return None
        return TariffHeader(to_tariff(item), int(item.used_by or 0), item.used_since, item.created_at)

    def _header_item(self, tariff_id: str) -> Optional[TariffItem]:
        try:
            return TariffItem.get(*tariff_key(tariff_id), consistent_read=True)
        except TariffItem.DoesNotExist:
            return None

    def read_rates(self, tariff_id: str, regions: Optional[Iterable[str]] = None) -> Optional[RatesRead]:
        """The tariff's rates (all, or the given regions') and its revision; None if there is no such tariff.
        The header is read first: a change written meanwhile bumps it, so the plan is refused, not lost."""
        header = self._header_item(tariff_id)
        if header is None:
            return None
        read = RatesRead(rev=int(header.rates_rev or 0))
        pk = tariff_key(tariff_id)[0]
        if regions is None:
            _read_groups(RateGroupItem.query(pk, RateGroupItem.sk.startswith("G#"), consistent_read=True), read)
            return read
        short = [r for r in set(regions) if len(r) < 4]
        if short:
            _read_groups(RateGroupItem.batch_get([rate_group_key(tariff_id, r) for r in short], consistent_read=True),
                         read)
        for region in sorted(set(regions) - set(short)):
            _read_groups(RateGroupItem.query(pk, RateGroupItem.sk.startswith(f"G#{region}"), consistent_read=True),
                         read)
        return read

    def write_rates(self, tariff_id: str, read: RatesRead, changes: Mapping[str, Sequence[Rate]],
                    progress: Optional[Callable[[int, int], None]] = None) -> int:
        """Add the new versions ``changes`` names to the tariff as ``read``; returns the new revision.
        Refused (services.ports.Refused) if the tariff changed since it was read. ``progress(done, of)``
        is told after each transaction."""
        by_region: Dict[str, Dict[str, List[Rate]]] = {}
        for prefix, versions in read.book.items():
            by_region.setdefault(region_of(prefix), {})[prefix] = versions
        groups_of: Dict[str, Set[str]] = {}
        for group in read.groups:
            groups_of.setdefault(region_of(group), set()).add(group)
        touched: Dict[str, List[str]] = {}
        for prefix in changes:
            touched.setdefault(region_of(prefix), []).append(prefix)
        work = []                                   # per region: (items to put, groups to delete, bytes)
        for region in sorted(touched):
            members = dict(by_region.get(region, {}))
            for prefix in touched[region]:
                members[prefix] = merged(members.get(prefix, []), changes[prefix])
            new = layout(members, fits)
            puts = [group_item(tariff_id, g, m) for g, m in sorted(new.items())]
            size = sum(len(RateGroupItem.rates.serialize(i.rates)) for i in puts)
            stale = sorted(groups_of.get(region, set()) - set(new))
            if len(puts) + len(stale) > TX_ITEMS or size > TX_BYTES:
                raise GroupTooLarge(region)
            work.append((puts, stale, size))
        batches: List[List] = [[]]
        count = size = 0
        for puts, stale, region_size in work:
            if batches[-1] and (count + len(puts) + len(stale) > TX_ITEMS or size + region_size > TX_BYTES):
                batches.append([])
                count = size = 0
            batches[-1].append((puts, stale))
            count += len(puts) + len(stale)
            size += region_size
        rev = read.rev
        for done, batch in enumerate(b for b in batches if b):
            rev = self._commit_rates(tariff_id, rev, batch)
            if progress is not None:
                progress(done + 1, len(batches))
        return rev

    def _commit_rates(self, tariff_id: str, rev: int, regions) -> int:
        tx = Tx()
        for puts, stale in regions:
            for group in stale:
                tx.delete(("group", group), RateGroupItem(*rate_group_key(tariff_id, group)))
            for item in puts:
                tx.put(("group", item.sk), item)
        guard = (TariffItem.rates_rev == rev) if rev else TariffItem.rates_rev.does_not_exist()
        tx.update(("tariff", tariff_id), TariffItem(*tariff_key(tariff_id)), [TariffItem.rates_rev.set(rev + 1)],
                  condition=TariffItem.pk.exists() & guard)
        try:
            tx.commit(self._conn, f"rates of {tariff_id}")
        except TransactWriteError as exc:
            if tx.refused(exc):
                raise Refused(tariff_id, "rates changed meanwhile") from exc
            raise StoreBusy(str(exc)) from exc
        return rev + 1

    def create_tariff(self, tariff: Tariff, rates: Iterable[Rate], created_at: str) -> None:
        """Rate groups first, then the header (on condition the id is new): a tariff is reachable only
        through its header, so a crash in between leaves nothing anyone can see."""
        items = tariff_items(tariff, rates, created_at=created_at)
        with RateGroupItem.batch_write() as batch:
            for item in items[1:]:
                batch.save(item)
        items[0].save(condition=TariffItem.pk.does_not_exist())

    def update_tariff(self, tariff_id: str, values: Mapping[str, object]) -> None:
        actions = [getattr(TariffItem, name).set(value) if value is not None else getattr(TariffItem, name).remove()
                   for name, value in values.items()]
        try:
            TariffItem(*tariff_key(tariff_id)).update(actions=actions, condition=TariffItem.pk.exists())
        except UpdateError as exc:
            if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
                raise Refused(tariff_id, "gone") from exc
            raise StoreBusy(str(exc)) from exc

    def delete_tariff(self, tariff_id: str) -> None:
        """Only while no account is charged by it (``used_by``, kept with every assignment); its rate
        groups go after the header, unreachable from then on."""
        try:
            TariffItem(*tariff_key(tariff_id)).delete(
                condition=TariffItem.pk.exists() & (TariffItem.used_by.does_not_exist() | (TariffItem.used_by <= 0)))
        except DeleteError as exc:
            if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
                raise Refused(tariff_id, "in use") from exc
            raise StoreBusy(str(exc)) from exc
        keys = [(i.pk, i.sk) for i in CoreItem.query(tariff_key(tariff_id)[0], CoreItem.sk.startswith("G#"),
                                                      attributes_to_get=["pk", "sk"])]
        with RateGroupItem.batch_write() as batch:
            for pk, sk in keys:
                batch.delete(RateGroupItem(pk, sk))


def assignment(tx: Tx, old: Optional[str], new: Optional[str], seller: Optional[str], at: str) -> Tx:
    """Count an account's tariff moving from ``old`` to ``new`` (owned by ``seller``, its parent) in the
    transaction that changes the account, so a tariff in use is never deleted under it."""
    if old == new:
        return tx
    if new is not None:
        tx.update(("tariff", new), TariffItem(*tariff_key(new)),
                  [TariffItem.used_by.add(1), TariffItem.used_since.set(TariffItem.used_since | at)],
                  condition=TariffItem.owner == seller)
    if old is not None:
        tx.update(("tariff", old), TariffItem(*tariff_key(old)), [TariffItem.used_by.add(-1)],
                  condition=TariffItem.pk.exists())
    return tx


IMPORT_DAYS = 30


class ImportStore:
    """Deck imports through S3 (services.deck_import): one item each, read and updated by id."""

    def create_import(self, job: ImportJob, now: float) -> None:
        ImportItem(*import_key(job.id), account_id=job.account_id, tariff_id=job.tariff_id, by=job.by, mode=job.mode,
                   effective_from=job.effective_from, dry_run=job.dry_run, status=job.status,
                   created_at=job.created_at, ttl=int(now) + IMPORT_DAYS * 86400).save(
            condition=ImportItem.pk.does_not_exist())

    def import_job(self, job_id: str) -> Optional[ImportJob]:
        try:
            item = ImportItem.get(*import_key(job_id), consistent_read=True)
        except ImportItem.DoesNotExist:
            return None
        return ImportJob(id=job_id, account_id=item.account_id, tariff_id=item.tariff_id, by=item.by, mode=item.mode,
                         effective_from=item.effective_from, dry_run=bool(item.dry_run), status=item.status,
                         rows=int(item.rows or 0), written=int(item.written or 0), to_write=int(item.to_write or 0),
                         result=item.result, created_at=item.created_at, started_at=item.started_at,
                         updated_at=item.updated_at)

    def update_import(self, job_id: str, expect_status: Optional[Sequence[str]] = None, **values) -> bool:
        """Set fields of a job; with ``expect_status``, only from one of those states (False if not)."""
        return set_fields(ImportItem(*import_key(job_id)), ImportItem, expect_status, **values)
