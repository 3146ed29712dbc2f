"""Rate decks: CSV rows in and out, line-numbered errors, and what a deck changes in a tariff."""
import io
from decimal import Decimal as D

import pytest
from hypothesis import given, settings, strategies as st

from chalicelib.domain.rate_deck import (MAX_ERRORS, MERGE, REPLACE, DeckInvalid, VersionInForce, deck_lines,
                                         flatten, merged, plan, read_deck)
from chalicelib.domain.tariffs import EPOCH, Rate, Tariff, longest_match

NOW = "2026-12-01T10:00:00Z"
NEXT_MONTH = "2027-01-01T00:00:00Z"
HEADER = "prefix,name,price,connect_fee,minimum,initial,subsequent,effective_from,ended\r\n"


def rows(text: str, default=NOW, earliest=NOW):
    return list(read_deck(io.StringIO(text), default, earliest))


def errors_of(text: str, default=NOW, earliest=NOW):
    with pytest.raises(DeckInvalid) as caught:
        rows(text, default, earliest)
    return [(e.line, e.field) for e in caught.value.errors], caught.value.failed_lines


# --- reading ---------------------------------------------------------------------------------------------

def test_a_deck_with_only_the_required_columns_takes_defaults_and_the_imports_effective_time():
    got = rows("prefix,price\n44,0.0125\n1,0.01\n")
    assert got == [(2, Rate("44", D("0.012500"), effective_from=NOW)), (3, Rate("1", D("0.01"), effective_from=NOW))]
    assert got[0][1].initial == 60 and got[0][1].subsequent == 60 and got[0][1].connect_fee == 0


def test_every_bad_line_is_reported_with_its_number_and_field_and_nothing_is_returned():
    deck = ("prefix,name,price,initial,effective_from\n"
            "44,UK,0.01,6,\n"             # 2 fine
            "4x,Bad,0.01,6,\n"            # 3 prefix
            "45,Denmark,-1,6,\n"          # 4 price
            "46,Sweden,0.1234567,6,\n"    # 5 more than 6 decimals
            "47,Norway,0.01,0,\n"         # 6 increment
            "48,Germany,0.01,6,2020-01-01\n"   # 7 in the past
            "49,=HYPERLINK(1),0.01,6,\n"  # 8 formula
            "44,UK again,0.02,6,\n"       # 9 same prefix and time as line 2
            "50,Short\n")                 # 10 field count
    found, failed = errors_of(deck)
    assert found == [(3, "prefix"), (4, "price"), (5, "price"), (6, "increment"), (7, "effective_from"),
                     (8, "name"), (9, "prefix"), (10, "row")]
    assert failed == 8


def test_the_header_is_checked_first():
    assert errors_of("prefix,cost\n44,1\n")[0] == [(1, "header")]
    assert errors_of("name,price\nUK,1\n")[0] == [(1, "header")]
    assert errors_of("")[0] == [(1, "header")]


def test_a_deck_with_many_bad_lines_reports_the_first_hundred_and_counts_them_all():
    deck = "prefix,price\n" + "".join(f"x{n},1\n" for n in range(250))
    found, failed = errors_of(deck)
    assert len(found) == MAX_ERRORS and found[0] == (2, "prefix") and failed == 250


def test_an_overlong_line_is_refused_without_being_parsed():
    found, _ = errors_of("prefix,name,price\n44," + "x" * 100_000 + ",1\n")
    assert found == [(2, "row")]


def test_past_versions_are_accepted_where_there_is_no_history_to_rewrite():
    assert rows("prefix,price,effective_from\n44,1,2020-01-01\n", earliest=None)[0][1].effective_from == \
        "2020-01-01T00:00:00Z"


names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40).filter(
    lambda n: not n.startswith(("=", "+", "-", "@", "\t", "\r")) and all(ord(c) >= 32 for c in n))
amounts = st.decimals(min_value=0, max_value=D("999999.999999"), places=6, allow_nan=False, allow_infinity=False)
moments = st.datetimes(min_value=__import__("datetime").datetime(1970, 1, 1)).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ"))
rates = st.one_of(
    st.builds(Rate, prefix=st.text("0123456789", min_size=1, max_size=20), name=names, price=amounts,
              connect_fee=amounts, minimum=st.integers(0, 99999), initial=st.integers(1, 99999),
              subsequent=st.integers(1, 99999), effective_from=moments),
    st.builds(lambda p, t: Rate(p, D("0"), effective_from=t, ended=True),
              st.text("0123456789", min_size=1, max_size=20), moments))


@settings(max_examples=300, deadline=None)
@given(rate=rates)
def test_property_a_row_survives_the_csv_round_trip_exactly(rate):
    text = "".join(deck_lines([rate]))
    assert rows(text, earliest=None) == [(2, rate)]


# --- planning ----------------------------------------------------------------------------------------------

def book(*rates):
    out = {}
    for rate in rates:
        out.setdefault(rate.prefix, []).append(rate)
    return out


UK = Rate("44", D("0.01"), name="UK")
DK = Rate("45", D("0.02"), name="Denmark")


def test_a_deck_adds_changes_ends_and_leaves_alone():
    current = book(UK, DK, Rate("46", D("0.03"), name="Sweden"))
    deck = [Rate("44", D("0.01"), name="UK", effective_from=NEXT_MONTH),        # same terms: unchanged
            Rate("45", D("0.025"), name="Denmark", effective_from=NEXT_MONTH),  # changed
            Rate("47", D("0.04"), name="Norway", effective_from=NEXT_MONTH)]    # added; 46 left out: ended
    change = plan(current, deck, NEXT_MONTH, REPLACE, NOW, history_free=False)
    assert (change.added, change.changed, change.ended, change.unchanged) == (["47"], ["45"], ["46"], 1)
    assert change.versions["46"] == [Rate("46", D("0"), effective_from=NEXT_MONTH, ended=True)]
    assert set(change.versions) == {"45", "46", "47"}
    # merge mode ends nothing
    assert plan(current, deck, NEXT_MONTH, MERGE, NOW, False).ended == []


def test_importing_the_same_deck_twice_changes_nothing_the_second_time():
    deck = [Rate("45", D("0.025"), name="Denmark", effective_from=NEXT_MONTH)]
    first = plan(book(UK, DK), deck, NEXT_MONTH, REPLACE, NOW, False)
    after = {p: merged(book(UK, DK).get(p, []), first.versions.get(p, [])) for p in {"44", "45"}}
    second = plan(after, deck, NEXT_MONTH, REPLACE, NOW, False)
    assert second.versions == {} and second.unchanged == 1


def test_a_scheduled_version_may_be_replaced_but_one_in_force_may_not():
    scheduled = Rate("45", D("0.03"), name="Denmark", effective_from=NEXT_MONTH)
    change = plan(book(DK, scheduled), [Rate("45", D("0.02"), name="Denmark", effective_from=NEXT_MONTH)],
                  NEXT_MONTH, MERGE, NOW, False)
    # rescheduled back to the old price: the scheduled version is replaced, not left in place
    assert change.versions == {"45": [Rate("45", D("0.02"), name="Denmark", effective_from=NEXT_MONTH)]}
    assert merged([DK, scheduled], change.versions["45"])[-1].price == D("0.02")
    with pytest.raises(VersionInForce):
        plan(book(DK), [Rate("45", D("0.09"), name="Denmark", effective_from=EPOCH)], EPOCH, MERGE, NOW, False)
    # a tariff nobody is charged by has no history: its versions may be rewritten
    assert plan(book(DK), [Rate("45", D("0.09"), effective_from=EPOCH)], EPOCH, MERGE, NOW, True).changed == ["45"]


def test_ending_a_rate_that_is_not_in_force_changes_nothing():
    change = plan(book(UK), [Rate("99", D("0"), effective_from=NEXT_MONTH, ended=True)], NEXT_MONTH, MERGE, NOW,
                  False)
    assert change.versions == {} and change.unchanged == 1


# --- what an account is charged --------------------------------------------------------------------------

def test_a_markup_tariff_flattens_to_the_prices_it_charges():
    cost = {"44": Rate("44", D("0.010000"), name="UK"), "447": Rate("447", D("0.050000"), name="UK mobile")}
    package = Tariff("pkg", owner="r", kind="markup", markup_percent=D("10"), markup_fixed=D("0.001"))
    overrides = book(Rate("4479", D("0.2"), name="Special"))
    prices = flatten(package, overrides, cost, NOW)
    assert {p: r.price for p, r in prices.items()} == {"44": D("0.012100"), "447": D("0.056100"),
                                                        "4479": D("0.200000")}


@settings(max_examples=100, deadline=None)
@given(cost=st.dictionaries(st.text("0123456789", min_size=1, max_size=5), amounts, max_size=12),
       overrides=st.dictionaries(st.text("0123456789", min_size=1, max_size=5), amounts, max_size=6),
       percent=st.decimals(min_value=0, max_value=100, places=2), number=st.text("0123456789", min_size=1,
                                                                                max_size=8))
def test_property_the_flattened_list_prices_every_number_as_the_tariff_does(cost, overrides, percent, number):
    owner = {p: Rate(p, v) for p, v in cost.items()}
    package = Tariff("pkg", owner="r", kind="markup", markup_percent=percent)
    own = book(*[Rate(p, v) for p, v in overrides.items()])
    flat = flatten(package, own, owner, NOW)
    direct = package.price(own, number, NOW, longest_match({p: [r] for p, r in owner.items()}, number, NOW))
    via_flat = longest_match({p: [r] for p, r in flat.items()}, number, NOW)
    assert (direct and direct.price) == (via_flat and via_flat.price)
