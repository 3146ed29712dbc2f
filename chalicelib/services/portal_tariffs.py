"""The portal's tariff use cases, mixed into services.portal.Portal: the price lists an account sells with
(create, edit, clone, delete), their rates (add, change, end, scheduled by ``effective_from``), rate decks
as CSV (import with a dry run, export), and the prices an account is charged.

Who may: an account's tariffs are read by the account and its ancestors (``walled``) and changed by the
account itself or an ancestor acting for it (the admin for a reseller), never by a client: a client sells
to nobody. The rules of a change are domain.rate_deck's.
"""
import logging
from decimal import Decimal
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from chalicelib.domain.accounts import ACTIVE, CLIENT, CLOSED, Account
from chalicelib.domain.access import Principal
from chalicelib.domain.rate_deck import MERGE, REPLACE, DeckInvalid, Plan, deck_lines, flatten, plan, read_deck
from chalicelib.domain.money import ZERO
from chalicelib.domain.tariffs import EPOCH, GroupTooLarge, InvalidRate, Rate, Tariff, in_force, region_of, utc_iso

from .ports import ImportJob, Refused

log = logging.getLogger("cascade.portal")

ATTEMPTS = 3          # a change refused because the tariff changed meanwhile is planned again this often


class TariffCases:
    """Needs ``store``, ``clock``, ``walled``, ``_chain_of`` and ``_now_iso`` from Portal."""

    # --- who may ---------------------------------------------------------------------------------

    def _seller(self, principal: Principal, account_id: str) -> Account:
        from .portal import Conflict, Forbidden
        account = self.walled(principal, account_id)        # itself or an ancestor: the wall lets no one else in
        if principal.status != ACTIVE:
            raise Forbidden("caller_not_active", "a suspended or closed account cannot change tariffs")
        if account.role == CLIENT:
            raise Forbidden("clients_sell_nothing", "a client has no price lists: tariffs belong to its sellers")
        if account.status == CLOSED:
            raise Conflict("account_closed", "a closed account's tariffs cannot be changed")
        return account

    def _header(self, tariff_id: str):
        """The tariff's header, or None. Ids are at most 64 characters (the schema's tariff_id): a longer
        one is never looked up, as DynamoDB refuses such keys (a 500)."""
        known = isinstance(tariff_id, str) and 0 < len(tariff_id) <= 64
        return self.store.tariff_header(tariff_id) if known else None

    def _owned(self, account: Account, tariff_id: str):
        """The tariff's header if ``account`` owns it, else NoSuchTariff."""
        from .portal import NoSuchTariff
        header = self._header(tariff_id)
        if header is None or header.tariff.owner != account.id:
            raise NoSuchTariff(tariff_id)
        return header

    # --- tariffs -----------------------------------------------------------------------------------

    def create_tariff(self, principal: Principal, account_id: str, fields: dict) -> Tariff:
        """A new price list of the account's, empty, with the rates given, or cloned from one it owns or
        from the one it is charged by (as the prices it is charged now: never its parent's cost)."""
        from .portal import InvalidInput, new_id
        account = self._seller(principal, account_id)
        rates: List[Rate] = []
        base = Tariff(id="", owner=account.id)
        if fields.get("clone_from"):
            base, rates = self._clone_source(account, fields["clone_from"])
        kind = fields.get("kind", base.kind)
        increments = fields.get("increments")
        tariff = Tariff(id=new_id("t_"), owner=account.id, kind=kind, name=fields.get("name", base.name),
                        markup_fixed=fields.get("markup_fixed", base.markup_fixed),
                        markup_percent=fields.get("markup_percent", base.markup_percent),
                        increments=_increments(increments) if increments is not None else base.increments)
        self._check_markup(account, tariff, fields)
        if fields.get("rates"):
            rates = rates + self._inline_rates(fields["rates"])
        seen = set()
        for i, rate in enumerate(rates):
            if (rate.prefix, rate.effective_from) in seen:
                raise InvalidInput(f"rates[{i}].prefix", f"{rate.prefix} from {rate.effective_from} is given twice")
            seen.add((rate.prefix, rate.effective_from))
        self.store.create_tariff(tariff, rates, self._now_iso())
        log.info("tariff %s created for %s by %s (%d rates)", tariff.id, account.id, principal.account_id, len(rates),
                 extra={"event": "tariff_created", "tariff_id": tariff.id, "by": principal.account_id})
        return tariff

    def edit_tariff(self, principal: Principal, account_id: str, tariff_id: str, fields: dict) -> Tariff:
        from .portal import Conflict
        account = self._seller(principal, account_id)
        current = self._owned(account, tariff_id).tariff
        values = dict(fields)
        if "increments" in values and values["increments"] is not None:
            values["increments"] = list(_increments(values["increments"]))
        self._check_markup(account, Tariff(id=current.id, owner=account.id, kind=current.kind), fields)
        try:
            self.store.update_tariff(tariff_id, values)
        except Refused as exc:
            raise Conflict("changed_meanwhile", "the tariff was deleted meanwhile") from exc
        return self.store.tariff_header(tariff_id).tariff

    def delete_tariff(self, principal: Principal, account_id: str, tariff_id: str) -> None:
        from .portal import Conflict
        account = self._seller(principal, account_id)
        header = self._owned(account, tariff_id)
        try:
            self.store.delete_tariff(tariff_id)
        except Refused as exc:
            raise Conflict("tariff_in_use", "accounts are charged by this tariff: assign them another first",
                           {"used_by": header.used_by}) from exc
        log.info("tariff %s deleted by %s", tariff_id, principal.account_id,
                 extra={"event": "tariff_deleted", "tariff_id": tariff_id, "by": principal.account_id})

    # --- rates -------------------------------------------------------------------------------------

    def add_rate(self, principal: Principal, account_id: str, tariff_id: str, fields: dict) -> Tuple[Rate, dict]:
        """A new rate, or a new version of one, in force from ``effective_from`` (default: now)."""
        account = self._seller(principal, account_id)
        header = self._owned(account, tariff_id)
        now = self._now_iso()
        data = dict(fields)
        data.setdefault("effective_from", now)
        rate = _rate(data)
        self._not_past(rate.effective_from, now, header)
        return rate, self._apply(tariff_id, header, [rate], rate.effective_from, MERGE, now, dry_run=False)

    def end_rate(self, principal: Principal, account_id: str, tariff_id: str, prefix: str,
                 effective_from: Optional[str]) -> Tuple[Rate, dict]:
        """From ``effective_from`` (default: now) the prefix has no rate of its own in this tariff: its
        numbers fall back to a shorter prefix. Ending a prefix with no rate is refused (a typo is not a no-op)."""
        from .portal import InvalidInput
        account = self._seller(principal, account_id)
        header = self._owned(account, tariff_id)
        if not (isinstance(prefix, str) and prefix.isdigit() and len(prefix) <= 20):
            raise InvalidInput("prefix", "must be 1 to 20 digits")
        now = self._now_iso()
        when = _when(effective_from or now)
        self._not_past(when, now, header)
        rate = Rate(prefix=prefix, price=ZERO, effective_from=when, ended=True)
        read = self.store.read_rates(tariff_id, [region_of(prefix)])
        live = in_force(read.book.get(prefix, ()), when) if read else None
        if live is None or live.ended:
            raise InvalidInput("prefix", f"{prefix} has no rate in force at {when}")
        return rate, self._apply(tariff_id, header, [rate], when, MERGE, now, dry_run=False)

    # --- decks -------------------------------------------------------------------------------------

    def import_deck(self, principal: Principal, account_id: str, tariff_id: str, lines: Iterable[str],
                    mode: str = REPLACE, effective_from: Optional[str] = None, dry_run: bool = False) -> dict:
        """Apply a CSV deck all or nothing: every line is validated first (DeckInvalid lists the bad
        ones, by line number, and nothing is written); ``dry_run`` reports what it would add, change and
        end without writing. Rows without ``effective_from`` take the import's (default: now)."""
        account = self._seller(principal, account_id)
        header = self._owned(account, tariff_id)
        now = self._now_iso()
        when = _when(effective_from or now)
        self._not_past(when, now, header)
        free = header.used_since is None
        deck = [rate for _, rate in read_deck(lines, when, None if free else now)]
        return self._apply(tariff_id, header, deck, when, mode, now, dry_run)

    def export_deck(self, principal: Principal, account_id: str, tariff_id: str,
                    at: Optional[str] = None) -> Iterator[str]:
        """CSV lines of every version (importing them into a fresh tariff gives the same tariff), or, with
        ``at``, of the rates in force then."""
        account = self.walled(principal, account_id)
        self._owned(account, tariff_id)
        read = self.store.read_rates(tariff_id)
        return deck_lines(_rows(read.book if read else {}, _when(at) if at else None))

    def charged_prices(self, principal: Principal, account_id: str, at: Optional[str] = None) -> Iterator[str]:
        """CSV lines of the prices the account is charged now (or ``at``), one per prefix: a markup
        tariff is flattened over its owner's own prices, so nothing above the account's own price shows."""
        account = self.walled(principal, account_id)
        when = _when(at) if at else self._now_iso()
        prices = self._charged(self._chain_of(account), when)
        return deck_lines(prices[p] for p in sorted(prices))

    # --- large decks, through S3 and a background task ---------------------------------------------

    def open_import(self, principal: Principal, account_id: str, tariff_id: str, fields: dict) -> Tuple[ImportJob, dict]:
        """An import waiting for its deck: the answer carries a presigned upload (a multipart POST to S3)."""
        from .portal import new_id
        account = self._seller(principal, account_id)
        self._owned(account, tariff_id)
        when = _when(fields["effective_from"]) if fields.get("effective_from") else None
        job = ImportJob(id=new_id("imp_"), account_id=account.id, tariff_id=tariff_id, by=principal.account_id,
                        mode=fields.get("mode", REPLACE), effective_from=when, dry_run=bool(fields.get("dry_run")),
                        status="awaiting_upload", created_at=self._now_iso())
        self.store.create_import(job, self.clock())
        return job, self.decks.upload_form(job.id)

    def start_import(self, principal: Principal, account_id: str, tariff_id: str, import_id: str) -> ImportJob:
        """Queue the uploaded deck for the background task; starting it again is a no-op."""
        from .portal import Conflict
        account = self._seller(principal, account_id)
        self._owned(account, tariff_id)
        job = self._job(account, tariff_id, import_id)
        if job.status != "awaiting_upload":
            return job
        if not self.decks.uploaded(job.id):
            raise Conflict("deck_not_uploaded", "upload the deck to the import's upload URL first")
        now = self._now_iso()
        when = job.effective_from or now
        header = self._owned(account, tariff_id)
        self._not_past(when, now, header)
        if self.store.update_import(job.id, expect_status=("awaiting_upload",), status="queued", started_at=now,
                                    effective_from=when, updated_at=now):
            self.jobs.start_import(job.id)
        return self.store.import_job(job.id)

    def import_status(self, principal: Principal, account_id: str, tariff_id: str, import_id: str) -> ImportJob:
        account = self.walled(principal, account_id)
        self._owned(account, tariff_id)
        return self._job(account, tariff_id, import_id)

    def run_import(self, import_id: str) -> Optional[ImportJob]:
        """The background task. Reads the deck from S3 line by line, validates every line, plans and
        writes, recording progress; a failure is recorded on the import (never raised to the caller,
        who polls). Run again after a crash, it plans from what is stored: rows already written change
        nothing."""
        job = self.store.import_job(import_id)
        if job is None or job.status not in ("queued", "reading", "applying"):
            return job
        now = self._now_iso()
        self.store.update_import(job.id, status="reading", updated_at=now)
        header = self.store.tariff_header(job.tariff_id)
        if header is None or header.tariff.owner != job.account_id:
            return self._finish(job.id, "failed", {"error": "tariff_gone", "message": "the tariff was deleted"})
        free = header.used_since is None
        rows = [0]

        def counted(lines):
            for line in lines:
                rows[0] += 1
                if rows[0] % 20000 == 0:
                    self.store.update_import(job.id, rows=rows[0], updated_at=self._now_iso())
                yield line
        try:
            deck = [rate for _, rate in read_deck(counted(self.decks.deck_lines(job.id)), job.effective_from,
                                                  None if free else job.started_at)]
        except DeckInvalid as exc:
            return self._finish(job.id, "failed", {"error": "invalid_deck", "failed_lines": exc.failed_lines,
                                                   "errors": [e.to_dict() for e in exc.errors]}, rows=rows[0])
        self.store.update_import(job.id, status="applying", rows=rows[0], updated_at=self._now_iso())

        def progress(done: int, of: int) -> None:
            self.store.update_import(job.id, written=done, to_write=of, updated_at=self._now_iso())
        from .portal import Conflict
        try:
            summary = self._apply(job.tariff_id, header, deck, job.effective_from, job.mode, job.started_at,
                                  job.dry_run, progress)
        except Conflict as exc:
            return self._finish(job.id, "failed", {"error": exc.code, "message": exc.message, **exc.details})
        except GroupTooLarge as exc:
            return self._finish(job.id, "failed", {"error": "invalid_request", "message": str(exc)})
        return self._finish(job.id, "done", summary)

    def _finish(self, job_id: str, status: str, result: dict, **more) -> ImportJob:
        self.store.update_import(job_id, status=status, result=result, updated_at=self._now_iso(), **more)
        log.info("import %s %s", job_id, status, extra={"event": f"import_{status}", "import_id": job_id})
        return self.store.import_job(job_id)

    def _job(self, account: Account, tariff_id: str, import_id: str) -> ImportJob:
        from .portal import NoSuchImport
        known = isinstance(import_id, str) and 0 < len(import_id) <= 64
        job = self.store.import_job(import_id) if known else None
        if job is None or (job.account_id, job.tariff_id) != (account.id, tariff_id):
            raise NoSuchImport(import_id)
        return job

    # --- internals ---------------------------------------------------------------------------------

    def _charged(self, chain: List[Account], when: str) -> Dict[str, Rate]:
        """Prefix -> price for chain[0], walking up only as far as markups need."""
        account = chain[0]
        if account.tariff_id is None:
            return {}
        header = self.store.tariff_header(account.tariff_id)
        if header is None:
            return {}
        tariff = header.tariff
        owner_prices = self._charged(chain[1:], when) if tariff.kind == "markup" and len(chain) > 1 else None
        return flatten(tariff, self.store.read_rates(tariff.id).book, owner_prices, when)

    def _clone_source(self, account: Account, source_id: str) -> Tuple[Tariff, List[Rate]]:
        from .portal import InvalidInput
        header = self._header(source_id)
        if header is not None and header.tariff.owner == account.id:
            book = self.store.read_rates(source_id).book
            return header.tariff, [v for p in sorted(book) for v in book[p]]
        if header is not None and source_id == account.tariff_id:
            prices = self._charged(self._chain_of(account), self._now_iso())
            base = Tariff(id="", owner=account.id, name=f"Copy of {header.tariff.name}".strip()[:128])
            return base, [Rate(prefix=r.prefix, name=r.name, price=r.price, connect_fee=r.connect_fee,
                               minimum=r.minimum, initial=r.initial, subsequent=r.subsequent)
                          for _, r in sorted(prices.items())]
        raise InvalidInput("clone_from", "must be one of the account's tariffs or the one it is charged by")

    def _check_markup(self, account: Account, tariff: Tariff, fields: dict) -> None:
        from .portal import InvalidInput
        if tariff.kind == "markup" and account.tariff_id is None:
            raise InvalidInput("kind", "a markup prices from the account's own price, and it is charged by no tariff")
        if tariff.kind == "table":
            for name in ("markup_fixed", "markup_percent", "increments"):
                if fields.get(name) not in (None, 0):
                    raise InvalidInput(name, "only a markup tariff has a markup")

    def _inline_rates(self, rows: List[dict]) -> List[Rate]:
        out = []
        for i, row in enumerate(rows):
            data = dict(row)
            data.setdefault("effective_from", EPOCH)    # a new tariff has no history: its rates hold from the start
            out.append(_rate(data, f"rates[{i}]."))
        return out

    def _not_past(self, when: str, now: str, header) -> None:
        from .portal import InvalidInput
        if when < now and header.used_since is not None:
            raise InvalidInput("effective_from", "is in the past: a version in force is never rewritten")

    def _apply(self, tariff_id: str, header, deck: List[Rate], when: str, mode: str, now: str, dry_run: bool,
               progress=None) -> dict:
        from .portal import Conflict
        from chalicelib.domain.rate_deck import VersionInForce
        free = header.used_since is None
        regions = None if mode == REPLACE else sorted({region_of(r.prefix) for r in deck})
        for _ in range(ATTEMPTS):
            read = self.store.read_rates(tariff_id, regions)
            if read is None:
                raise Conflict("changed_meanwhile", "the tariff was deleted meanwhile")
            try:
                change: Plan = plan(read.book, deck, when, mode, now, free)
            except VersionInForce as exc:
                raise Conflict("version_in_force", str(exc), {"prefix": exc.prefix}) from exc
            summary = dict(change.summary(), effective_from=when, mode=mode, dry_run=dry_run)
            if dry_run or not change.versions:
                return summary
            try:
                self.store.write_rates(tariff_id, read, change.versions, progress)
            except Refused:
                continue
            log.info("tariff %s: %d added, %d changed, %d ended from %s", tariff_id, len(change.added),
                     len(change.changed), len(change.ended), when,
                     extra={"event": "rates_changed", "tariff_id": tariff_id})
            return summary
        raise Conflict("changed_meanwhile", "the tariff kept changing meanwhile; try again")


def _when(text: str) -> str:
    from .portal import InvalidInput
    try:
        return utc_iso(text)
    except InvalidRate as exc:
        raise InvalidInput("effective_from", "must be an ISO 8601 date or time") from exc


def _increments(value: dict) -> tuple:
    from .portal import InvalidInput
    minimum, initial, subsequent = (int(value.get(k, d)) for k, d in (("minimum", 0), ("initial", 60),
                                                                       ("subsequent", 60)))
    if initial < 1 or subsequent < 1 or minimum < 0:
        raise InvalidInput("increments", "initial and subsequent must be at least 1 second, minimum not negative")
    return minimum, initial, subsequent


def _rate(data: dict, where: str = "") -> Rate:
    from .portal import InvalidInput
    from chalicelib.domain.rate_deck import check_name
    problem = check_name(str(data.get("name", "")))
    if problem:
        raise InvalidInput(f"{where}name", problem)
    for name in ("price", "connect_fee"):
        value = data.get(name)
        if value is not None and not isinstance(value, (str, int, Decimal)):
            raise InvalidInput(f"{where}{name}", "must be an amount")
        if value is not None and isinstance(value, (str, Decimal)):
            try:
                exact = Decimal(str(value))
            except ArithmeticError as exc:
                raise InvalidInput(f"{where}{name}", "must be an amount") from exc
            if not exact.is_finite() or exact.as_tuple().exponent < -6 or abs(exact) >= 1_000_000:
                raise InvalidInput(f"{where}{name}", "must be an amount below 1,000,000 with at most 6 decimals")
    try:
        return Rate.from_dict(data)
    except InvalidRate as exc:
        raise InvalidInput(f"{where}{exc.field}", str(exc).split(": ", 1)[-1]) from exc


def _rows(book, at: Optional[str]) -> Iterator[Rate]:
    for prefix in sorted(book):
        if at is None:
            yield from sorted(book[prefix], key=lambda v: v.effective_from)
        else:
            live = in_force(book[prefix], at)
            if live is not None and not live.ended:
                yield live
