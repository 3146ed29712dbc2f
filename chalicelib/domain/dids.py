"""DIDs: numbers the operator rents from carriers and hands down the tree, and what inbound calls to them cost.

A DID belongs to one tree. Its *holders* run from the root down to whoever has it now, one per level of
the tree with no gap: the root (the admin) holds every DID it created; assigning gives it to a child
(or to any account below: the levels in between pass it on at the price they pay), unassigning takes
it back with everything below. Each holding carries what that holder is charged by the one above it:
setup and monthly fees (recorded here, charged by invoicing) and a per-minute price for inbound calls.
The root's holding carries the DID's cost to the operator.

An inbound call to a DID is billed like an outbound one (domain.authorization): every level pays its
parent at its own per-minute price, the client at the bottom first. Only a DID that ends at a client
takes calls.
"""
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import List, Mapping, Optional, Sequence, Tuple

from .money import money
from .tariffs import Rate

ACTIVE, CLOSED = "active", "closed"
INBOUND, OUTBOUND = "inbound", "outbound"
MIN_DIGITS, MAX_DIGITS = 6, 15         # E.164 allows 15 digits; nothing shorter than 6 is a public number
MAX_PRICE = Decimal("1000000")
NO_FEE = Decimal("0.000000")           # inbound calls have no connect fee (written as amounts are)

# Denial reasons an inbound authorize adds to domain.authorization's.
DID_UNKNOWN = "did_unknown"
DID_CLOSED = "did_closed"
DID_UNASSIGNED = "did_unassigned"

# Events of a DID's history.
CREATED, ASSIGNED, UNASSIGNED, CLOSED_EVENT = "created", "assigned", "unassigned", "closed"


class InvalidDid(ValueError):
    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name} {message}")
        self.field, self.message = field_name, message


class DidRefused(Exception):
    """A change the DID's state does not allow (``code`` names why: the portal answers 409)."""
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def did_number(text) -> str:
    """A DID as E.164 digits: '+', '00' and spaces, dashes, dots and brackets a carrier or a person
    may write are dropped; what is left must be 6 to 15 digits."""
    if not isinstance(text, str):
        raise InvalidDid("number", "must be a string of digits in E.164 form")
    digits = text.strip()
    for c in " -.()":
        digits = digits.replace(c, "")
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    if not digits.isdigit() or not digits.isascii() or not MIN_DIGITS <= len(digits) <= MAX_DIGITS \
            or digits[0] == "0":
        raise InvalidDid("number", f"must be an E.164 number: {MIN_DIGITS} to {MAX_DIGITS} digits, "
                                   "country code first")
    return digits


@dataclass(frozen=True)
class Prices:
    """What a holder is charged for a DID: once, every month, and per minute of inbound calls."""
    setup: Decimal = Decimal("0.000000")
    monthly: Decimal = Decimal("0.000000")
    per_minute: Decimal = Decimal("0.000000")

    def __post_init__(self):
        for name in ("setup", "monthly", "per_minute"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or value < 0 or value >= MAX_PRICE:
                raise InvalidDid(name, "must be an amount from 0 to below 1,000,000")

    @classmethod
    def of(cls, values: Optional[Mapping], default: Optional["Prices"] = None) -> "Prices":
        base = default or cls()
        values = values or {}
        return cls(**{name: money(values[name]) if values.get(name) is not None else getattr(base, name)
                      for name in ("setup", "monthly", "per_minute")})

    def to_dict(self) -> dict:
        return {"setup": str(self.setup), "monthly": str(self.monthly), "per_minute": str(self.per_minute)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Prices":
        return cls(money(d["setup"]), money(d["monthly"]), money(d["per_minute"]))


@dataclass(frozen=True)
class Holding:
    account_id: str
    prices: Prices          # what this holder pays the one above it (the root: the DID's cost)
    since: str              # ISO-8601 UTC

    def to_dict(self) -> dict:
        return {"account": self.account_id, "since": self.since, **self.prices.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Holding":
        return cls(d["account"], Prices.from_dict(d), d["since"])


@dataclass(frozen=True)
class Did:
    number: str
    country: str
    tree: str                                   # the root's id
    holders: Tuple[Holding, ...]                # root first
    offer: Prices = field(default_factory=Prices)   # what the root charges by default when it assigns
    status: str = ACTIVE
    description: str = ""
    initial: int = 60                           # billing increments of inbound minutes (seconds)
    subsequent: int = 60
    rev: int = 0                                # bumped by every change: writers never interleave
    created_at: str = ""

    def __post_init__(self):
        if not self.holders or self.holders[0].account_id != self.tree:
            raise InvalidDid("holders", "must start at the tree's root")
        if self.initial < 1 or self.subsequent < 1:
            raise InvalidDid("increments", "must be at least 1 second")

    @property
    def holder(self) -> str:
        """Who has the DID now (the root while it is in its pool)."""
        return self.holders[-1].account_id

    def holding(self, account_id: str) -> Optional[Holding]:
        return next((h for h in self.holders if h.account_id == account_id), None)

    def depth_of(self, account_id: str) -> Optional[int]:
        return next((i for i, h in enumerate(self.holders) if h.account_id == account_id), None)

    def route(self) -> List[str]:
        """The holders client first, like a call's chain."""
        return [h.account_id for h in reversed(self.holders)]


def create(number: str, country: str, root_id: str, cost: Prices, offer: Prices, now: str,
           description: str = "", initial: int = 60, subsequent: int = 60) -> Did:
    country = (country or "").strip().upper()
    if len(country) != 2 or not country.isalpha() or not country.isascii():
        raise InvalidDid("country", "must be a two-letter ISO 3166 code")
    return Did(number=did_number(number), country=country, tree=root_id, holders=(Holding(root_id, cost, now),),
               offer=offer, description=description, initial=initial, subsequent=subsequent, created_at=now)


def assign(did: Did, giver_id: str, path_down: Sequence[str], prices: Prices, now: str) -> Did:
    """``giver_id`` hands the DID to the last account of ``path_down`` (the accounts from the giver's child
    down to the receiver). The accounts in between hold it too, paying and charging ``prices``."""
    if did.status != ACTIVE:
        raise DidRefused("did_closed", "the DID is closed")
    if did.holder != giver_id:
        if did.depth_of(giver_id) is None:
            raise DidRefused("not_held", "the account does not hold this DID")
        raise DidRefused("did_assigned", "the DID is already assigned below this account: unassign it first")
    if not path_down:
        raise InvalidDid("to", "must be an account below the one assigning")
    return replace(did, holders=did.holders + tuple(Holding(a, prices, now) for a in path_down), rev=did.rev + 1)


def unassign(did: Did, account_id: str) -> Tuple[Did, Tuple[Holding, ...]]:
    """Back to ``account_id``'s pool: every holding below it ends. Returns the DID and the holdings ended."""
    depth = did.depth_of(account_id)
    if depth is None:
        raise DidRefused("not_held", "the account does not hold this DID")
    if depth == len(did.holders) - 1:
        raise DidRefused("not_assigned", "the DID is not assigned below this account")
    return replace(did, holders=did.holders[:depth + 1], rev=did.rev + 1), did.holders[depth + 1:]


def close(did: Did) -> Did:
    if did.status != ACTIVE:
        raise DidRefused("did_closed", "the DID is closed already")
    if len(did.holders) > 1:
        raise DidRefused("did_assigned", "an assigned DID cannot be closed: unassign it first")
    return replace(did, status=CLOSED, rev=did.rev + 1)


def reopen(closed: Did, fresh: Did) -> Did:
    """A closed number created again: new terms, its revision kept counting (history stays)."""
    return replace(fresh, rev=closed.rev + 1)


def inbound_rates(did: Did, chain_ids: Sequence[str]) -> Optional[List[Rate]]:
    """Each level's rate for an inbound call (``chain_ids`` client first, root last), or None when the
    chain is not the DID's holders."""
    if list(chain_ids) != did.route():
        return None
    name = f"Inbound {did.country} {did.number}"
    return [Rate(prefix=did.number, price=did.holding(a).prices.per_minute, name=name, connect_fee=NO_FEE,
                 initial=did.initial, subsequent=did.subsequent) for a in chain_ids]


def below_cost(did: Did, giver_id: str, prices: Prices) -> bool:
    """Would the giver sell inbound minutes for less than it pays (its holding's per-minute)?"""
    own = did.holding(giver_id)
    return own is not None and prices.per_minute < own.prices.per_minute


def seen_by(event: "DidEvent", viewer_id: str) -> "DidEvent":
    """The event as ``viewer_id`` may read it: who made it only when that account is the viewer or below
    it (an ancestor acting for a reseller is above the wall, like every id there)."""
    parts = event.receiver_path.split("/")
    below = parts[parts.index(viewer_id):] if viewer_id in parts else []
    return event if event.by in below else replace(event, by=None)


def visible(receiver_path: str, viewer_path: str) -> bool:
    """An event of a DID's history is shown to the receiver and its ancestors: the prices in it are
    the receiver's (what it was charged) or its sellers' below the viewer, never a level above."""
    return receiver_path == viewer_path or receiver_path.startswith(viewer_path + "/")


@dataclass(frozen=True)
class DidEvent:
    """One line of a DID's history: what happened, who did it, to whom, at which prices."""
    event: str
    receiver: str               # the account that got (or lost) the DID; the root for created/closed
    receiver_path: str
    at: str
    by: Optional[str] = None
    prices: Optional[Prices] = None
    seq: int = 0                # the DID's revision it made: the history's order

    def to_dict(self) -> dict:
        return {"event": self.event, "account_id": self.receiver, "at": self.at, "by": self.by,
                **({"prices": self.prices.to_dict()} if self.prices else {})}
