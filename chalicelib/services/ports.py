"""What the services need from storage. The DynamoDB adapter implements both; the balance half is a
port of its own because how hot resellers are held is expected to change."""
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Protocol, Tuple

from chalicelib.domain.accounts import Account
from chalicelib.domain.settlement import LevelCharge
from chalicelib.domain.tariffs import Tariff

from .records import CallRecord, DidLookup, KeyCheck, Lookup, Route, Snapshot


class Refused(Exception):
    """The store refused a hold: ``account_id`` failed its condition (funds, status, a limit)."""
    def __init__(self, account_id: Optional[str], what: str):
        super().__init__(f"{what} refused at {account_id}")
        self.account_id, self.what = account_id, what


class DuplicateCall(Exception):
    """The call id already has a record: the first answer stands."""


class DuplicateEntry(Exception):
    """A journal entry with this id exists: the movement was already made (a replay)."""


class AlreadyExists(Exception):
    """An item a write needed to be new exists (an account id, a SIP username); ``what`` says which."""
    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


@dataclass(frozen=True)
class TariffHeader:
    """A tariff as the portal manages it: how many accounts it charges now, and since when it has
    charged anyone (None: never, so no call was rated by it and its history may still be written)."""
    tariff: Tariff
    used_by: int = 0
    used_since: Optional[str] = None
    created_at: Optional[str] = None


@dataclass(frozen=True)
class ImportJob:
    """A deck imported through S3 by a background task (services.deck_import)."""
    id: str
    account_id: str
    tariff_id: str
    by: str
    mode: str
    effective_from: Optional[str]
    dry_run: bool
    status: str                       # awaiting_upload, queued, reading, applying, done, failed
    created_at: str
    rows: int = 0
    written: int = 0
    to_write: int = 0
    result: Optional[dict] = None
    started_at: Optional[str] = None
    updated_at: Optional[str] = None


@dataclass(frozen=True)
class CdrExport:
    """CDRs written to S3 as CSV by a background task (services.portal_reports)."""
    id: str
    account_id: str
    by: str                           # the account that asked: the export sees what it may see
    filters: dict
    status: str                       # queued, writing, done, failed
    created_at: str
    rows: int = 0
    object_key: Optional[str] = None
    error: Optional[str] = None
    updated_at: Optional[str] = None


class BadCursor(ValueError):
    """A pagination cursor this store did not hand out (malformed, or of another list)."""


class AlreadySettled(Exception):
    """Another completion of this call won the race."""


class StoreBusy(Exception):
    """Conflicts or throttling outlasted the retry budget."""


class Directory(Protocol):
    def lookup(self, account_ref: str, key_hash: str) -> Lookup: ...
    def resolve_route(self, client_id: str) -> Optional[Route]: ...
    def lookup_did(self, number: str, key_hash: str) -> DidLookup: ...
    def remember_did(self, did) -> None: ...
    def forget_did(self, number: str) -> None: ...
    def load(self, route: Route, number: str, call_id: str, now: int, did: Optional[str] = None) -> Snapshot: ...
    def find_call(self, call_id: str, key_hash: Optional[str]) -> Tuple[Optional[CallRecord], KeyCheck]: ...
    def expired_calls(self, now: int) -> Iterable[CallRecord]: ...
    def accounts(self, account_ids: List[str]) -> Dict[str, Account]: ...


class BalanceStore(Protocol):
    def place_holds(self, call: CallRecord, refresh: Optional[Tuple[str, Route]] = None) -> None: ...
    def settle(self, call: CallRecord, charges: List[LevelCharge], billsec: int, disposition: str,
               result: dict, now: int) -> None: ...
    def release(self, call: CallRecord, now: int) -> bool: ...


class SwitchStore(Directory, BalanceStore, Protocol):
    """What the switch path's services take: today one DynamoDB adapter implements both halves."""
