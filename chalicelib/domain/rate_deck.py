"""Rate decks: CSV in and out, and what applying a deck (or one rate) to a tariff changes.

Pure: no I/O. A deck is read row by row from any iterable of lines (a request body, an S3 stream), so the
file itself is never held whole; the rates it names are, grouped by prefix, while the change is planned.

The rules a change follows, whatever its size (one rate or 100,000):
- a change is a new *version* of a prefix with its ``effective_from``; nothing in force is rewritten. A
  version already in force cannot be replaced; a scheduled one (still in the future) can;
- ``effective_from`` earlier than now is refused, except in a tariff nobody is charged by (no call was
  ever rated by it, so it has no history to rewrite: a clone or a fresh import);
- a row equal to the version it would follow changes nothing, so importing a deck twice is a no-op;
- ``replace`` (a whole deck) also ends, at the deck's ``effective_from``, every prefix the deck leaves
  out; ``merge`` only adds and changes.
"""
import csv
import sys
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from .money import ZERO
from .tariffs import InvalidRate, Rate, Tariff, in_force, longest_match

COLUMNS = ("prefix", "name", "price", "connect_fee", "minimum", "initial", "subsequent", "effective_from", "ended")
MAX_ERRORS = 100              # a deck with more errors reports the first 100 (and how many lines failed)
MAX_NAME = 128
MAX_PRICE = Decimal(1_000_000)
MAX_FIELD = 256               # no CSV field is longer (csv.field_size_limit is 128 KB)
REPLACE, MERGE = "replace", "merge"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")   # a spreadsheet would run these as formulas
TRUE, FALSE = ("yes", "true", "1"), ("", "no", "false", "0")


@dataclass(frozen=True)
class LineError:
    line: int
    field: str
    message: str

    def to_dict(self) -> dict:
        return {"line": self.line, "field": self.field, "message": self.message}


class DeckInvalid(ValueError):
    """The deck was refused as a whole: nothing was applied."""

    def __init__(self, errors: Sequence[LineError], failed_lines: int):
        super().__init__(f"{failed_lines} line(s) refused")
        self.errors, self.failed_lines = list(errors), failed_lines


def check_name(name: str) -> Optional[str]:
    if len(name) > MAX_NAME:
        return f"must be at most {MAX_NAME} characters"
    if name.startswith(FORMULA_START) or any(ord(c) < 32 for c in name):
        return "must not start with = + - @ or hold control characters"
    return None


def _amount(text: str, name: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise InvalidRate(name, "must be an amount such as 0.0125") from exc
    if not value.is_finite() or value < 0 or value >= MAX_PRICE or value.as_tuple().exponent < -6:
        raise InvalidRate(name, "must be an amount from 0 below 1,000,000 with at most 6 decimals")
    return value.quantize(Decimal("0.000001"))


def _seconds(text: str, name: str, default: int) -> int:
    if text == "":
        return default
    if not text.isdigit() or len(text) > 5:
        raise InvalidRate(name, "must be whole seconds (at most 99999)")
    return int(text)


def rate_of_row(row: Mapping[str, str], default_from: str, earliest: Optional[str]) -> Rate:
    """One row (column -> text) to a Rate, or InvalidRate naming the field."""
    prefix = row.get("prefix", "").strip()
    if not prefix.isdigit() or len(prefix) > 20:
        raise InvalidRate("prefix", "must be 1 to 20 digits")
    flag = row.get("ended", "").strip().lower()
    if flag not in TRUE + FALSE:
        raise InvalidRate("ended", "must be yes or empty")
    when = row.get("effective_from", "").strip() or default_from
    ended = flag in TRUE
    if ended:
        rate = Rate(prefix=prefix, price=ZERO, effective_from=when, ended=True)
    else:
        name = row.get("name", "")
        problem = check_name(name)
        if problem:
            raise InvalidRate("name", problem)
        price = row.get("price", "").strip()
        if price == "":
            raise InvalidRate("price", "is required")
        rate = Rate(prefix=prefix, name=sys.intern(name), price=_amount(price, "price"),
                    connect_fee=_amount(row.get("connect_fee", "").strip() or "0", "connect_fee"),
                    minimum=_seconds(row.get("minimum", "").strip(), "minimum", 0),
                    initial=_seconds(row.get("initial", "").strip(), "initial", 60),
                    subsequent=_seconds(row.get("subsequent", "").strip(), "subsequent", 60),
                    effective_from=when)
    if earliest is not None and rate.effective_from < earliest:
        raise InvalidRate("effective_from", "is in the past: a version in force is never rewritten")
    return rate


def read_deck(lines: Iterable[str], default_from: str, earliest: Optional[str]) -> Iterator[Tuple[int, Rate]]:
    """(line number, Rate) for each data row; a header row names the columns (``COLUMNS``, any order,
    ``prefix`` and ``price`` required). Raises DeckInvalid after reading every line if any was refused,
    with the first MAX_ERRORS errors, so a bad deck is reported whole in one answer."""
    reader = csv.reader(_bounded(lines))
    errors: List[LineError] = []
    failed = 0
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise DeckInvalid([LineError(1, "header", f"is not CSV: {exc}")], 1) from exc
    if header is None:
        raise DeckInvalid([LineError(1, "header", "the deck is empty: a header row is required")], 1)
    columns = [h.strip().lower().lstrip("\ufeff") for h in header]
    unknown = [c for c in columns if c not in COLUMNS]
    missing = [c for c in ("prefix", "price") if c not in columns]
    if unknown or missing or len(set(columns)) != len(columns):
        what = f"unknown column {unknown[0]!r}" if unknown else (
            f"column {missing[0]!r} is required" if missing else "a column is named twice")
        raise DeckInvalid([LineError(1, "header", f"{what}; columns are {', '.join(COLUMNS)}")], 1)
    seen: Dict[Tuple[str, str], int] = {}
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except (FieldTooLong, UnicodeDecodeError) as exc:   # the line source stops here: report it, read no further
            failed += 1
            if len(errors) < MAX_ERRORS:
                errors.append(LineError(reader.line_num + 1, "row", "is not UTF-8 text" if
                                        isinstance(exc, UnicodeDecodeError) else str(exc)))
            break
        except csv.Error as exc:
            failed += 1
            if len(errors) < MAX_ERRORS:
                errors.append(LineError(reader.line_num, "row", f"is not valid CSV: {exc}"))
            continue
        line = reader.line_num
        if not values or all(v.strip() == "" for v in values):
            continue
        if len(values) != len(columns):
            failed += 1
            if len(errors) < MAX_ERRORS:
                errors.append(LineError(line, "row", f"has {len(values)} fields, the header {len(columns)}"))
            continue
        try:
            rate = rate_of_row(dict(zip(columns, values)), default_from, earliest)
        except InvalidRate as exc:
            failed += 1
            if len(errors) < MAX_ERRORS:
                errors.append(LineError(line, exc.field, str(exc).split(": ", 1)[-1]))
            continue
        first = seen.setdefault((rate.prefix, rate.effective_from), line)
        if first != line:
            failed += 1
            if len(errors) < MAX_ERRORS:
                errors.append(LineError(line, "prefix", f"{rate.prefix} from {rate.effective_from} is also on line "
                                                        f"{first}"))
            continue
        if not errors:
            yield line, rate
    if errors:
        raise DeckInvalid(errors, failed)


class FieldTooLong(ValueError):
    pass


def _bounded(lines: Iterable[str]) -> Iterator[str]:
    """Lines as they come, refusing one longer than a row can be (a 1 GB line of garbage is not read
    into memory first)."""
    for text in lines:
        if len(text) > MAX_FIELD * len(COLUMNS) + 64:
            raise FieldTooLong("the line is too long")
        yield text


def row_of(rate: Rate) -> List[str]:
    if rate.ended:
        return [rate.prefix, "", "", "", "", "", "", rate.effective_from, "yes"]
    return [rate.prefix, rate.name, str(rate.price), str(rate.connect_fee), str(rate.minimum), str(rate.initial),
            str(rate.subsequent), rate.effective_from, ""]


class _Line:
    """csv.writer target that hands back the line it was given."""
    def write(self, text):
        return text


def deck_lines(rates: Iterable[Rate]) -> Iterator[str]:
    """The header, then one line per rate (streamed: nothing is joined here)."""
    writer = csv.writer(_Line(), lineterminator="\r\n")
    yield writer.writerow(COLUMNS)
    for rate in rates:
        yield writer.writerow(row_of(rate))


# --- planning a change -------------------------------------------------------------------------------

@dataclass
class Plan:
    """What a deck would change. ``versions`` holds, per prefix touched, the new versions to add."""
    added: List[str] = field(default_factory=list)       # prefixes with no rate in force before
    changed: List[str] = field(default_factory=list)
    ended: List[str] = field(default_factory=list)
    unchanged: int = 0
    versions: Dict[str, List[Rate]] = field(default_factory=dict)

    def summary(self, sample: int = 20) -> dict:
        return {"added": len(self.added), "changed": len(self.changed), "ended": len(self.ended),
                "unchanged": self.unchanged,
                "sample": {"added": sorted(self.added)[:sample], "changed": sorted(self.changed)[:sample],
                           "ended": sorted(self.ended)[:sample]}}


class VersionInForce(ValueError):
    def __init__(self, prefix: str, when: str):
        super().__init__(f"{prefix} already has a version from {when}, in force: it cannot be replaced")
        self.prefix, self.when = prefix, when


def plan(current: Mapping[str, Sequence[Rate]], deck: Iterable[Rate], effective_from: str, mode: str,
         now: str, history_free: bool) -> Plan:
    """The change ``deck`` makes to ``current`` (prefix -> versions)."""
    out = Plan()
    named = set()
    incoming: Dict[str, List[Rate]] = {}
    for rate in deck:
        incoming.setdefault(rate.prefix, []).append(rate)
    for prefix, rates in incoming.items():
        named.add(prefix)
        versions = list(current.get(prefix, ()))
        kinds = set()
        for rate in sorted(rates, key=lambda r: r.effective_from):
            same_time = next((v for v in versions if v.effective_from == rate.effective_from), None)
            if same_time is not None:
                if same_time.terms() == rate.terms():
                    continue
                if same_time.effective_from <= now and not history_free:
                    raise VersionInForce(prefix, rate.effective_from)
                versions.remove(same_time)            # a scheduled version, rescheduled: stored in its place
            before = in_force(versions, rate.effective_from)
            if same_time is None and before is not None and before.terms() == rate.terms():
                continue
            live_before = before is not None and not before.ended
            if rate.ended and not live_before and same_time is None:
                continue                              # ending what has no rate then changes nothing
            kinds.add("ended" if rate.ended else ("changed" if live_before or same_time else "added"))
            versions.append(rate)
            out.versions.setdefault(prefix, []).append(rate)
        _count(out, prefix, kinds)
    if mode == REPLACE:
        for prefix, versions in current.items():
            if prefix in named:
                continue
            live = in_force(versions, effective_from)
            if live is not None and not live.ended:
                out.versions[prefix] = [Rate(prefix=prefix, price=ZERO, effective_from=effective_from, ended=True)]
                out.ended.append(prefix)
    return out


def _count(out: Plan, prefix: str, kinds: set) -> None:
    if not kinds:
        out.unchanged += 1
    elif "added" in kinds:
        out.added.append(prefix)
    elif "changed" in kinds:
        out.changed.append(prefix)
    else:
        out.ended.append(prefix)


def merged(versions: Sequence[Rate], new: Sequence[Rate]) -> List[Rate]:
    """A prefix's versions with ``new`` applied (a version at the same time is replaced), oldest first."""
    by_time = {v.effective_from: v for v in versions}
    for rate in new:
        by_time[rate.effective_from] = rate
    return [by_time[t] for t in sorted(by_time)]


# --- what an account is charged -----------------------------------------------------------------------

def flatten(tariff: Tariff, book: Mapping[str, Sequence[Rate]], owner_prices: Optional[Mapping[str, Rate]],
            now: str) -> Dict[str, Rate]:
    """Prefix -> the rate ``tariff`` charges now, for every prefix it prices. A markup tariff prices the
    prefixes of its overrides and of what its owner is charged (``owner_prices``, flattened the same way
    one level up); longest-prefix lookups over the result give exactly what the tariff charges, so a
    reseller can read and clone the prices it is charged without seeing its parent's cost."""
    if tariff.kind == "table":
        prefixes = set(book)
    else:
        prefixes = set(book) | set(owner_prices or {})
    owner_book = {p: [r] for p, r in (owner_prices or {}).items()}
    out = {}
    for prefix in sorted(prefixes):
        owner_rate = longest_match(owner_book, prefix, now) if tariff.kind == "markup" else None
        rate = tariff.price(book, prefix, now, owner_rate)
        if rate is not None:
            out[prefix] = Rate(prefix=prefix, name=rate.name, price=rate.price, connect_fee=rate.connect_fee,
                               minimum=rate.minimum, initial=rate.initial, subsequent=rate.subsequent,
                               effective_from=rate.effective_from)
    return out
