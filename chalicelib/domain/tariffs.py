"""Tariffs: what an account pays its parent per destination.

A *table* tariff lists rates by prefix. A *markup* tariff (VoIP.ms "package") prices every destination
from its owner's own cost: price = (owner's price + fixed) x (1 + percent/100); its own rates are
per-destination overrides that win over the markup whenever one matches the number.

Storage splits a tariff into *rate groups* so a lookup reads a bounded number of items whatever the
tariff's size: prefixes shorter than ``BUCKET_DIGITS`` are one group each, longer ones are grouped by
their first ``BUCKET_DIGITS`` digits (their *region*). A region too large for one item is split by one
more digit, down to ``MAX_GROUP_DIGITS`` (``layout``): a group is always a prefix of the numbers it can
rate, so a number of any length touches at most ``MAX_GROUP_DIGITS`` groups per tariff
(``candidate_groups``), read by key in the same round trip whatever the deck.

A rate is never rewritten: a change is a new version with its ``effective_from``, and ending a rate is a
version marked ``ended`` (the number then falls back to a shorter prefix).
"""
import sys
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from .money import ZERO, money

ZERO_PRICE = Decimal("0.000000")
BUCKET_DIGITS = 4
MAX_GROUP_DIGITS = 6
EPOCH = "1970-01-01T00:00:00Z"


class InvalidRate(ValueError):
    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def utc_iso(text: str) -> str:
    """Any ISO-8601 date or time -> 'YYYY-MM-DDTHH:MM:SSZ' in UTC (naive means UTC), so versions and
    the clock compare correctly as text."""
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRate("effective_from", f"{text!r} is not an ISO-8601 date or time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)     # slots: a 100,000-row deck is held as Rates while it is planned
class Rate:
    prefix: str
    price: Decimal                      # per minute
    name: str = ""
    connect_fee: Decimal = ZERO
    minimum: int = 0                    # seconds billed at least, once answered
    initial: int = 60                   # first increment, seconds
    subsequent: int = 60                # every later increment, seconds
    effective_from: str = EPOCH         # ISO-8601 UTC; the newest version already in force wins
    ended: bool = False                 # from effective_from on, the prefix has no rate here

    def __post_init__(self):
        object.__setattr__(self, "effective_from", sys.intern(utc_iso(self.effective_from)))
        if self.ended:                  # an end has no price: one shape for every ended version
            for name, value in (("price", ZERO_PRICE), ("connect_fee", ZERO_PRICE), ("name", ""), ("minimum", 0),
                                ("initial", 60), ("subsequent", 60)):
                object.__setattr__(self, name, value)
        if not self.prefix.isdigit():
            raise InvalidRate("prefix", f"{self.prefix!r} must be digits")
        if self.price < 0 or self.connect_fee < 0:
            raise InvalidRate("price", "must not be negative")
        if self.initial < 1 or self.subsequent < 1:
            raise InvalidRate("increment", "increments must be at least 1 second")
        if self.minimum < 0:
            raise InvalidRate("minimum", "must not be negative")
        if len(self.prefix) > 20:
            raise InvalidRate("prefix", "must be at most 20 digits")

    def terms(self) -> tuple:
        """What a version says, without when: two versions with the same terms price alike."""
        return (self.ended,) if self.ended else (self.name, self.price, self.connect_fee, self.minimum,
                                                  self.initial, self.subsequent)

    def to_dict(self) -> dict:
        return {
            "prefix": self.prefix, "name": self.name, "price": str(self.price),
            "connect_fee": str(self.connect_fee), "minimum": self.minimum, "initial": self.initial,
            "subsequent": self.subsequent, "effective_from": self.effective_from,
            **({"ended": True} if self.ended else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "Rate":
        try:
            return cls(
                prefix=str(data["prefix"]), name=str(data.get("name", "")),
                price=money(data["price"]), connect_fee=money(data.get("connect_fee", "0")),
                minimum=int(data.get("minimum", 0)), initial=int(data.get("initial", 60)),
                subsequent=int(data.get("subsequent", 60)),
                effective_from=str(data.get("effective_from", EPOCH)), ended=data.get("ended") is True,
            )
        except KeyError as exc:
            raise InvalidRate(exc.args[0], "is required") from exc
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidRate):
                raise
            raise InvalidRate("rate", str(exc)) from exc


RateBook = Mapping[str, Sequence[Rate]]   # prefix -> versions (any subset holding the number's prefixes)


def group_of(prefix: str) -> str:
    """The region a prefix belongs to (its group unless the region is split: ``layout``)."""
    return prefix if len(prefix) < BUCKET_DIGITS else prefix[:BUCKET_DIGITS]


region_of = group_of


def candidate_groups(number: str) -> List[str]:
    """The rate groups that can hold a prefix of ``number``: its own prefixes up to MAX_GROUP_DIGITS."""
    return [number[:n] for n in range(1, min(len(number), MAX_GROUP_DIGITS) + 1)]


class GroupTooLarge(ValueError):
    def __init__(self, group: str):
        super().__init__(f"the rates of prefixes starting {group} do not fit one storage item")
        self.group = group


def layout(book: Mapping[str, Sequence], fits: Callable[[Mapping[str, Sequence]], bool]) -> Dict[str, dict]:
    """Group -> {prefix: versions}: each region in one group while ``fits`` says it fits one item, else
    split by one more digit (a prefix as long as its group stays in it), down to MAX_GROUP_DIGITS.
    Deterministic: the same book always gives the same groups."""
    regions: Dict[str, dict] = {}
    for prefix, versions in book.items():
        regions.setdefault(group_of(prefix), {})[prefix] = versions
    out: Dict[str, dict] = {}
    pending = sorted(regions.items())
    while pending:
        group, members = pending.pop()
        if len(group) < BUCKET_DIGITS or fits(members):
            out[group] = members
            continue
        if len(group) >= MAX_GROUP_DIGITS:
            raise GroupTooLarge(group)
        kept = {p: v for p, v in members.items() if len(p) == len(group)}
        deeper: Dict[str, dict] = {}
        for p, v in members.items():
            if len(p) > len(group):
                deeper.setdefault(p[:len(group) + 1], {})[p] = v
        if kept:
            out[group] = kept
        pending += sorted(deeper.items())
    return out


def in_force(versions: Iterable[Rate], now_iso: str) -> Optional[Rate]:
    """The version in force at ``now_iso`` (an ended one included): the newest not in the future."""
    live = [v for v in versions if v.effective_from <= now_iso]
    return max(live, key=lambda v: v.effective_from) if live else None


def longest_match(book: RateBook, number: str, now_iso: str) -> Optional[Rate]:
    for length in range(len(number), 0, -1):
        versions = book.get(number[:length])
        if versions:
            rate = in_force(versions, now_iso)
            if rate is not None and not rate.ended:
                return rate
    return None


@dataclass(frozen=True)
class Tariff:
    id: str
    owner: str
    kind: str = "table"                 # "table" | "markup"
    markup_fixed: Decimal = ZERO
    markup_percent: Decimal = ZERO
    increments: Optional[tuple] = None  # markup pulse (minimum, initial, subsequent) overriding the base's
    name: str = ""

    def __post_init__(self):
        if self.kind not in ("table", "markup"):
            raise InvalidRate("kind", "must be 'table' or 'markup'")

    def price(self, book: RateBook, number: str, now_iso: str, owner_rate: Optional[Rate]) -> Optional[Rate]:
        """This tariff's rate for ``number``; ``owner_rate`` is what the owner itself pays for it."""
        override = longest_match(book, number, now_iso)
        if self.kind == "table" or override is not None:
            return override
        if owner_rate is None:
            return None
        return marked_up(owner_rate, self.markup_fixed, self.markup_percent, self.increments)


def marked_up(base: Rate, fixed: Decimal, percent: Decimal, increments: Optional[tuple] = None) -> Rate:
    factor = 1 + percent / 100
    rate = replace(base, price=money((base.price + fixed) * factor),
                   connect_fee=money(base.connect_fee * factor))
    if increments:
        minimum, initial, subsequent = increments
        rate = replace(rate, minimum=minimum, initial=initial, subsequent=subsequent)
    return rate
