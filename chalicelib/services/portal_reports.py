"""The portal's reports, mixed into services.portal.Portal: CDRs at an account's level, and its month in
figures (its own totals and each child's, its sub-accounts, its DIDs), from the rows the stream consumer
keeps current (domain.reports): no report reads the month's calls.

Who sees what: an account's reports are read by the account and its ancestors (``walled``), always at
that account's level: what it paid, what its children paid it, its profit. A client's own figures come
from its parent's row about it, shown as what the client paid only; nothing priced above the account
reaches it.
"""
import re
import time
from typing import List, Optional, Tuple

from chalicelib.domain.access import Principal, within
from chalicelib.domain.accounts import CLIENT, Account
from chalicelib.domain.dids import Did
from chalicelib.domain.money import ZERO
from chalicelib.domain.reports import CHILD, DID, TOTAL

from .ports import CdrExport

MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
EXPORT_ID = re.compile(r"^exp_[0-9a-f]{24}$")


class NoSuchExport(Exception):
    """No CDR export of that id for that account."""


class ReportCases:
    """Needs ``store``, ``clock``, ``decks``, ``jobs``, ``walled`` and ``_now_iso`` from Portal."""

    def _month(self, month: Optional[str]) -> str:
        from .portal import InvalidInput
        if month is None:
            return time.strftime("%Y-%m", time.gmtime(self.clock()))
        if not MONTH.match(month):
            raise InvalidInput("month", "must be YYYY-MM")
        return month

    # --- CDRs ----------------------------------------------------------------------------------------

    def cdrs(self, principal: Principal, account_id: str, filters: dict, limit: int, cursor: Optional[str]):
        """Calls of the account's subtree (or of ``filters['account']`` in it) at the account's level,
        newest first. Period bounds are the index's key condition; the other filters are applied to the
        page read, so a page may hold fewer than ``limit`` rows and still have a next one."""
        from .portal import InvalidInput, NotFound
        viewer = self.walled(principal, account_id)
        scope = viewer
        if filters.get("account"):
            try:
                scope = self.walled(principal, filters["account"])
            except NotFound:
                raise InvalidInput("account", "must be the account or one below it") from None
            if not within(scope.path, viewer.path):
                raise InvalidInput("account", "must be the account or one below it")
        rows, next_cursor = self.store.call_history(viewer.id, scope, limit, cursor, filters.get("since"),
                                                    filters.get("until"))
        prefix, disposition, direction = filters.get("prefix"), filters.get("disposition"), filters.get("direction")
        kept = [r for r in rows if (not prefix or r.destination.startswith(prefix))
                and (not disposition or r.disposition == disposition)
                and (not direction or r.direction == direction)]
        return viewer, kept, next_cursor

    def cdr_pages(self, principal: Principal, account_id: str, filters: dict, page: int = 1000):
        """Every CDR the filters select, a page at a time (for the CSV export): never the whole period in
        memory."""
        viewer, rows, cursor = self.cdrs(principal, account_id, filters, page, None)
        yield viewer, rows
        while cursor:
            viewer, rows, cursor = self.cdrs(principal, account_id, filters, page, cursor)
            yield viewer, rows

    # --- large exports: a background task writes the CSV to S3 -----------------------------------

    def open_cdr_export(self, principal: Principal, account_id: str, filters: dict) -> CdrExport:
        """Queue an export of every CDR the filters select (checked now, as the listing checks them)."""
        from .portal import new_id
        viewer, _, _ = self.cdrs(principal, account_id, filters, 1, None)
        job = CdrExport(id=new_id("exp_"), account_id=viewer.id, by=principal.account_id,
                        filters={k: v for k, v in filters.items() if v is not None}, status="queued",
                        created_at=self._now_iso())
        self.store.create_export(job, self.clock())
        self.jobs.start_export(job.id)
        return self.store.export_job(job.id)

    def cdr_export(self, principal: Principal, account_id: str, export_id: str) -> Tuple[CdrExport, Optional[str]]:
        """The export and, once it is done, a download URL valid 15 minutes."""
        account = self.walled(principal, account_id)
        job = self.store.export_job(export_id) if isinstance(export_id, str) and EXPORT_ID.match(export_id) else None
        if job is None or job.account_id != account.id:
            raise NoSuchExport(export_id)
        return job, self.decks.download_url(job.object_key) if job.status == "done" else None

    def run_cdr_export(self, export_id: str, render) -> Optional[CdrExport]:
        """The background task: pages of 1,000 CDRs read as the account that asked would read them, turned
        into CSV by ``render`` and uploaded as they come (never the whole file in memory). Run again after
        a crash, it writes the file again from the start."""
        from .portal import InvalidInput, NotFound
        job = self.store.export_job(export_id)
        if job is None or job.status not in ("queued", "writing"):
            return job
        self.store.update_export(job.id, status="writing", updated_at=self._now_iso())
        asker = self.store.account(job.by)
        rows = [0]

        def counted(pages):
            for viewer, page in pages:
                rows[0] += len(page)
                yield viewer, page
        try:
            if asker is None:
                raise NotFound(job.by)
            principal = Principal(asker.id, asker.role, asker.path, status=asker.status)
            key = f"exports/{job.id}.csv"
            self.decks.put_stream(render(counted(self.cdr_pages(principal, job.account_id, job.filters))), key,
                                  f"{job.account_id}-cdrs.csv")
        except (NotFound, InvalidInput) as exc:
            self.store.update_export(job.id, status="failed", error=f"no longer allowed: {exc}",
                                     updated_at=self._now_iso())
            return self.store.export_job(job.id)
        self.store.update_export(job.id, status="done", rows=rows[0], object_key=key, updated_at=self._now_iso())
        return self.store.export_job(job.id)

    # --- the month in figures ------------------------------------------------------------------------

    def monthly(self, principal: Principal, account_id: str, month: Optional[str], limit: int,
                cursor: Optional[str]) -> dict:
        account = self.walled(principal, account_id)
        month = self._month(month)
        money = self.store.report_money(account.id, month).to_dict()
        fees = self._fees(account, month)
        if account.role == CLIENT:
            row = self.store.report_rows_of(account.parent_id, month, [CHILD + account.id])[CHILD + account.id]
            return {"account_id": account.id, "month": month, "role": account.role, "totals": row.as_buyer(),
                    "money": money, "fees": fees, "children": [], "next_cursor": None}
        own = self.store.report_rows_of(account.id, month, [TOTAL])[TOTAL]
        children, next_cursor = self.store.child_rows(account.id, month, limit, cursor)
        return {"account_id": account.id, "month": month, "role": account.role,
                "totals": own.to_dict(), "money": money, "fees": fees,
                "children": [dict(totals.to_dict(), account_id=child) for child, totals in sorted(children.items())],
                "next_cursor": next_cursor}

    def sub_accounts(self, principal: Principal, account_id: str, month: Optional[str], limit: int,
                     cursor: Optional[str]) -> Tuple[List[dict], Optional[str]]:
        """Every child (with or without calls this month): its status and balance, and what it brought
        the account this month."""
        account = self.walled(principal, account_id)
        month = self._month(month)
        children, next_cursor = self.store.children(account.id, limit, cursor)
        rows = self.store.report_rows_of(account.id, month, [CHILD + c.id for c in children]) if children else {}
        out = []
        for child in children:
            out.append({"account_id": child.id, "name": child.name, "role": child.role, "status": child.status,
                        "balance": child.balance, "available": child.available, "currency": child.currency,
                        "month": month, **rows[CHILD + child.id].to_dict()})
        return out, next_cursor

    def did_report(self, principal: Principal, account_id: str, month: Optional[str], limit: int,
                   cursor: Optional[str]) -> Tuple[List[dict], Optional[str]]:
        """The account's DIDs: the fees each records for the month and its inbound calls at the
        account's level (a client: what it paid)."""
        account = self.walled(principal, account_id)
        month = self._month(month)
        held, next_cursor = self.store.dids_of(account.id, limit, cursor)
        held = [d for d in held if d.depth_of(account.id) is not None]
        rows = self.store.report_rows_of(account.id, month, [DID + d.number for d in held]) if held else {}
        out = []
        for did in held:
            totals = rows[DID + did.number]
            below = did.holders[did.depth_of(account.id) + 1] if did.holder != account.id else None
            out.append({"number": did.number, "country": did.country, "assigned_to": below.account_id if below else None,
                        "holder": did.holder if below else None, **self._did_fees(did, account, month),
                        **(totals.as_client() if account.role == CLIENT else totals.to_dict())})
        return out, next_cursor

    # --- fees ------------------------------------------------------------------------------------------

    @staticmethod
    def _did_fees(did: Did, account: Account, month: str) -> dict:
        """What the DID's holding records for the month: its setup fee the month it was assigned, its
        monthly fee every month it is held. Recorded here; charged by invoicing (a later issue)."""
        own = did.holding(account.id)
        setup = own.prices.setup if own.since[:7] == month else ZERO
        monthly = own.prices.monthly if own.since[:7] <= month else ZERO
        return {"setup_fee": setup, "monthly_fee": monthly}

    def _fees(self, account: Account, month: str) -> dict:
        setup = monthly = ZERO
        cursor = None
        while True:
            held, cursor = self.store.dids_of(account.id, 100, cursor)
            for did in held:
                if did.depth_of(account.id) is None:
                    continue
                fees = self._did_fees(did, account, month)
                setup += fees["setup_fee"]
                monthly += fees["monthly_fee"]
            if not cursor:
                break
        return {"did_setup": setup, "did_monthly": monthly, "total": setup + monthly}
