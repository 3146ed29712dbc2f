"""Money movements: what changes on each account item, and the journal entry that records why.

Double entry. Every movement that changes a balance is one journal entry whose postings sum to zero.
The books an entry posts to:

    wallet:<id>   the account's balance with its parent (what its item's ``balance`` holds)
    sales:<id>    what the account took from its children's calls (a reseller's or the admin's takings)
    world         outside Cascade: cash a parent received from its child, the carrier, a write-off

so ``balance == sum of the postings to wallet:<id>`` for every account, and each entry sums to 0.

An entry's id is built from its business key (the call id, the payer's idempotency key, a seed run), so
a replay is refused by the ledger itself: the store writes an entry only where none has that id.

A call's journal entry is the call record itself (``call_entry``: the postings follow from its frozen
levels and the completion), so billing a call writes no ledger item of its own; a payment, a charge, a
transfer or a credit-limit change writes exactly one.

The domain decides the changes (``BalanceChange``) and the conditions that guard them; the storage
adapter applies any list of them in one conditional transaction without doing arithmetic of its own.
"""
import hashlib
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Iterable, List, Optional, Sequence, Tuple

from .accounts import EARLY, POSTPAID, Account
from .counters import CounterChange
from .escrow import SlotChange, pool_id
from .money import ZERO

WORLD = "world"

# Entry kinds
OPENING, CALL, PAYMENT, CHARGE, TRANSFER, CREDIT_LIMIT = (
    "opening", "call", "payment", "charge", "transfer", "credit_limit")
ENTRY_KINDS = (OPENING, CALL, PAYMENT, CHARGE, TRANSFER, CREDIT_LIMIT)


def wallet(account_id: str) -> str:
    return f"wallet:{account_id}"


def sales(account_id: str) -> str:
    return f"sales:{account_id}"


class Unbalanced(ValueError):
    """Postings that do not sum to zero: a bug, never a user error."""


class InvalidAmount(ValueError):
    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name} {message}")
        self.field = field_name


def entry_id(kind: str, business_key: str) -> str:
    """Deterministic: the same business key always gives the same id (32 hex digits of SHA-256, so any
    text a payer chose has a fixed size in a key)."""
    return f"{kind}#" + hashlib.sha256(business_key.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Posting:
    book: str
    amount: Decimal


@dataclass(frozen=True)
class JournalEntry:
    id: str
    kind: str
    postings: Tuple[Posting, ...]
    subject: str                     # the account it is filed under (whose wallet it mainly moves)
    peer: Optional[str] = None       # a second account whose wallet it moves (a transfer's payer)
    ref: str = ""                    # the business reference (call id, payment reference...)
    description: str = ""
    by: Optional[str] = None         # the account that made it (a parent, the admin); None: the system
    late: bool = False               # a call billed after its hold was swept
    details: dict = field(default_factory=dict)   # e.g. a credit-limit change's old and new limits

    def __post_init__(self):
        total = sum((p.amount for p in self.postings), ZERO)
        if total != ZERO:
            raise Unbalanced(f"entry {self.id}: postings sum to {total}")

    def amount_for(self, book: str) -> Decimal:
        return sum((p.amount for p in self.postings if p.book == book), ZERO)


def balanced(postings: Iterable[Posting]) -> Tuple[Posting, ...]:
    """Merge postings to the same book and drop zeros (a free call moves nothing)."""
    merged = {}
    for p in postings:
        merged[p.book] = merged.get(p.book, ZERO) + p.amount
    return tuple(Posting(book, amount) for book, amount in merged.items() if amount != ZERO)


@dataclass(frozen=True)
class BalanceChange:
    """What one movement does to one account item, and what must hold for it to apply. Every field is a
    delta the store adds; ``available`` is derived here once, so no adapter repeats the arithmetic.

    Guards: ``min_available``: the item's available before the change must be at least this (DynamoDB
    compares, it cannot add); ``active_only``: the account must be active; ``below_max_calls``: its
    active_calls must be below its max_calls; ``credit_was``: optimistic check of the credit limit."""
    account_id: str
    balance: Decimal = ZERO
    held: Decimal = ZERO
    credit_limit: Decimal = ZERO
    available: Decimal = ZERO
    active_calls: int = 0
    min_available: Optional[Decimal] = None
    active_only: bool = False
    below_max_calls: bool = False
    credit_was: Optional[Decimal] = None
    what: str = "funds"              # what a refusal of this change means (for the caller's answer)
    slots: Tuple[SlotChange, ...] = ()   # escrow slots on this (client's) item: domain.escrow
    cps_lent: int = 0                    # CPS shares lent to escrow slots (the rebalancer)
    max_active_calls: Optional[int] = None   # guards of a lending rebalance: active_calls and cps_lent
    max_cps_lent: Optional[int] = None       # before may not exceed these (the limit less what it lends)
    cps_room: Optional[Tuple[int, int]] = None   # (second, n): the item started at most n calls in it
    counters: Tuple[CounterChange, ...] = ()   # CPS and spend counters on this item: domain.counters

    @property
    def empty(self) -> bool:
        return not (self.balance or self.held or self.credit_limit or self.available or self.active_calls or self.cps_lent
                    or any(not s.empty for s in self.slots) or bool(self.counters))


def available_delta(billing_type: str, balance: Decimal = ZERO, held: Decimal = ZERO,
                    credit_limit: Decimal = ZERO) -> Decimal:
    """How ``available`` (balance + credit for postpaid - held) moves with the other three."""
    return balance - held + (credit_limit if billing_type == POSTPAID else ZERO)


# --- the switch path ------------------------------------------------------------------------------

def hold(level) -> BalanceChange:
    """Authorize: set a level's money aside for the granted time and count the call.
    Early billing needs the whole hold available; late billing needs one second's charge."""
    need = None
    if level.guarded:
        need = level.hold if level.mode == EARLY else level.charge(1)
    return BalanceChange(level.account_id, held=level.hold, available=-level.hold, active_calls=1,
                         min_available=need, active_only=True, below_max_calls=level.max_calls is not None,
                         what="hold")


def release(level) -> BalanceChange:
    """The sweeper: a call whose completion never came gives its hold back (and its call slot)."""
    return BalanceChange(level.account_id, held=-level.hold, available=level.hold, active_calls=-1)


def debit(level, charge, was_held: bool) -> BalanceChange:
    """Completion: the balance loses the call's net charge and the hold (if still there) is released.
    Never guarded: the call happened, so the bill stands (a late one may go below the floor)."""
    return BalanceChange(level.account_id, balance=-charge.net, held=-charge.hold,
                         available=charge.hold - charge.net, active_calls=-1 if was_held else 0)


Counted = Sequence[Tuple[str, CounterChange]]


def _merged(changes: List[BalanceChange], client_id: str, slots: List[SlotChange],
            counters: Counted = ()) -> List[BalanceChange]:
    """DynamoDB allows one action per item in a transaction: slot changes ride on the client's change,
    counter changes on their account's."""
    extra = {}
    for account_id, counter in counters:
        extra.setdefault(account_id, []).append(counter)
    if slots:
        extra.setdefault(client_id, [])
    out = []
    for change in changes:
        more = extra.pop(change.account_id, None)
        if more is not None:
            change = replace(change, counters=change.counters + tuple(more),
                             slots=change.slots + (tuple(slots) if change.account_id == client_id else ()))
        out.append(change)
    for account_id, more in extra.items():
        out.insert(0, BalanceChange(account_id, counters=tuple(more),
                                    slots=tuple(slots) if account_id == client_id else ()))
    return out


def _pool(level, slot: SlotChange) -> BalanceChange:
    """A top reseller's hold, debit or release on its pool item (domain.escrow: the pool's one slot)."""
    return BalanceChange(pool_id(level.account_id, level.pool - 1), slots=(slot,), what="pool")


def holds(levels: Sequence, wants: Sequence[Tuple[int, str, Decimal]] = (), now: Optional[int] = None,
          counters: Counted = (), fresh: Sequence[int] = ()) -> List[BalanceChange]:
    """Authorize, every level: its own item's hold, or its slot's (``Level.escrow``) on the client's item
    (with a call permit and a CPS start where the owner has those limits; ``fresh``: the slots whose CPS
    counter starts a new second), with the refill requests (domain.escrow.place) on the client's item
    too, and the counters it counts against (domain.counters.reserved) on their items."""
    client_id = levels[0].account_id
    changes, slots = [], []
    for level in levels:
        if not level.charged:
            continue
        if level.escrow:
            permit = level.max_calls is not None
            slots.append(SlotChange(level.escrow, level.account_id, available=-level.hold,
                                    min_available=level.hold, used_at=now,
                                    permits=-1 if permit else 0, min_permits=1 if permit else None,
                                    start=now if level.cps_limit is not None else None,
                                    new_second=level.escrow in fresh))
        elif level.pool:
            changes.append(_pool(level, SlotChange(1, level.account_id, available=-level.hold,
                                                   min_available=level.hold, used_at=now)))
        else:
            changes.append(hold(level))
    for distance, owner, need in wants:
        slot = next((i for i, s in enumerate(slots) if s.distance == distance), None)
        if slot is None:
            slots.append(SlotChange(distance, owner, want=need))
        else:
            slots[slot] = replace(slots[slot], want=need)
    return _merged(changes, client_id, slots, counters)


def debits(levels: Sequence, charges: Sequence, was_held: bool, counters: Counted = ()) -> List[BalanceChange]:
    """Completion, every level: an escrowed level's slot gets its hold back less the charge, and the
    charge waits in the slot's ``spent`` until the rebalancer sweeps it into the owner's balance."""
    client_id = levels[0].account_id
    changes, slots = [], []
    for level, c in zip(levels, charges):
        if not level.charged:
            continue
        if level.escrow:
            # A late bill (the hold was already released) asks the rebalancer to look at the slot: its
            # registry entry may be gone, and its spent must still be swept.
            slots.append(SlotChange(level.escrow, level.account_id, available=c.hold - c.net, spent=c.net,
                                    want=None if was_held else ZERO,
                                    permits=1 if was_held and level.max_calls is not None else 0))
        elif level.pool:
            changes.append(_pool(level, SlotChange(1, level.account_id, available=c.hold - c.net, spent=c.net,
                                                   want=None if was_held else ZERO)))
        else:
            changes.append(debit(level, c, was_held))
    return _merged(changes, client_id, slots, counters)


def releases(levels: Sequence, counters: Counted = ()) -> List[BalanceChange]:
    """The sweeper, every level: holds go back to the item or slot they were taken from."""
    client_id = levels[0].account_id
    changes, slots = [], []
    for level in levels:
        if not level.charged:
            continue
        if level.escrow:
            slots.append(SlotChange(level.escrow, level.account_id, available=level.hold,
                                    permits=1 if level.max_calls is not None else 0))
        elif level.pool:
            changes.append(_pool(level, SlotChange(1, level.account_id, available=level.hold)))
        else:
            changes.append(release(level))
    return _merged(changes, client_id, slots, counters)


def call_postings(charges: Sequence) -> Tuple[Posting, ...]:
    """A finished call: each charged level's wallet pays its net charge into its parent's sales; the
    root's cost goes to the carrier outside Cascade (its sales pay the world)."""
    postings: List[Posting] = []
    for i, c in enumerate(charges):
        if c.charged and c.net:
            postings.append(Posting(wallet(c.account_id), -c.net))
            postings.append(Posting(sales(charges[i + 1].account_id), c.net))
    root = charges[-1]
    if root.cost:
        postings += [Posting(sales(root.account_id), -root.cost), Posting(WORLD, root.cost)]
    return balanced(postings)


def call_entry(call_id: str, client_id: str, number: str, charges: Sequence, late: bool) -> JournalEntry:
    return JournalEntry(id=entry_id(CALL, call_id), kind=CALL, postings=call_postings(charges),
                        subject=client_id, ref=call_id, late=late,
                        description=("late call to " if late else "call to ") + number)


# --- the portal -----------------------------------------------------------------------------------

def _positive(amount: Decimal, field_name: str = "amount") -> Decimal:
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= ZERO:
        raise InvalidAmount(field_name, "must be a positive amount")
    return amount


@dataclass(frozen=True)
class Movement:
    changes: Tuple[BalanceChange, ...]
    entry: JournalEntry


def opening(account: Account, run: str) -> Optional[Movement]:
    """A seed's opening balance: money that entered from outside."""
    if not account.balance:
        return None
    entry = JournalEntry(id=entry_id(OPENING, f"{run}:{account.id}"), kind=OPENING, subject=account.id,
                         postings=balanced([Posting(wallet(account.id), account.balance),
                                            Posting(WORLD, -account.balance)]),
                         ref=run, description="opening balance from seed")
    return Movement((), entry)


def payment(account: Account, amount: Decimal, key: str, by: str, ref: str = "", description: str = "") -> Movement:
    """A parent records money its child paid it (outside Cascade): the child's balance grows. The
    parent's own balance with its parent does not move: its cash came from outside, not from upstream."""
    amount = _positive(amount)
    entry = JournalEntry(id=entry_id(PAYMENT, key), kind=PAYMENT, subject=account.id, by=by, ref=ref,
                         description=description or "payment",
                         postings=(Posting(wallet(account.id), amount), Posting(WORLD, -amount)))
    change = BalanceChange(account.id, balance=amount, available=amount)
    return Movement((change,), entry)


def charge(account: Account, amount: Decimal, key: str, by: str, ref: str = "", description: str = "") -> Movement:
    """A manual charge (a fee, a correction): taken only from what is available, never from money held
    for calls in flight, whatever the billing type."""
    amount = _positive(amount)
    entry = JournalEntry(id=entry_id(CHARGE, key), kind=CHARGE, subject=account.id, by=by, ref=ref,
                         description=description or "charge",
                         postings=(Posting(wallet(account.id), -amount), Posting(WORLD, amount)))
    change = BalanceChange(account.id, balance=-amount, available=-amount, min_available=amount)
    return Movement((change,), entry)


def transfer(payer: Account, payee: Account, amount: Decimal, key: str, by: str, ref: str = "",
             description: str = "") -> Movement:
    """A reseller moves part of its own balance to a child: the payer's balance goes down by exactly
    what the child's goes up, limited by the payer's available (held money stays held)."""
    amount = _positive(amount)
    entry = JournalEntry(id=entry_id(TRANSFER, key), kind=TRANSFER, subject=payee.id, peer=payer.id, by=by,
                         ref=ref, description=description or f"transfer from {payer.id}",
                         postings=(Posting(wallet(payer.id), -amount), Posting(wallet(payee.id), amount)))
    return Movement((BalanceChange(payer.id, balance=-amount, available=-amount, min_available=amount),
                     BalanceChange(payee.id, balance=amount, available=amount)), entry)


def credit_limit_change(account: Account, new_limit: Decimal, key: str, by: str, description: str = "") -> Movement:
    """A new credit limit, ledgered as an entry with no postings (no money moves) and the old and new
    limits. Lowering it may not leave the account below its floor with money held for calls."""
    if not isinstance(new_limit, Decimal) or not new_limit.is_finite() or new_limit < ZERO:
        raise InvalidAmount("credit_limit", "must be an amount >= 0")
    delta = new_limit - account.credit_limit
    avail = available_delta(account.billing_type, credit_limit=delta)
    change = BalanceChange(account.id, credit_limit=delta, available=avail, credit_was=account.credit_limit,
                           min_available=-avail if avail < ZERO else None, what="credit_limit")
    entry = JournalEntry(id=entry_id(CREDIT_LIMIT, key), kind=CREDIT_LIMIT, subject=account.id, by=by,
                         postings=(), description=description or "credit limit change",
                         details={"old": str(account.credit_limit), "new": str(new_limit)})
    return Movement((change,), entry)


def billing_type_change(account: Account, new_type: str) -> BalanceChange:
    """Switching to or from postpaid adds or removes the credit limit from ``available``; switching away
    may not leave the account below zero available (money held for calls stays covered)."""
    before = available_delta(account.billing_type, credit_limit=account.credit_limit)
    after = available_delta(new_type, credit_limit=account.credit_limit)
    delta = after - before
    return BalanceChange(account.id, available=delta, credit_was=account.credit_limit,
                         min_available=-delta if delta < ZERO else None, what="billing_type")
