"""Tariffs: longest-prefix rates with dated versions, rate groups, and markup ("package") tariffs."""
from decimal import Decimal as D

import pytest
from hypothesis import given, settings, strategies as st

from chalicelib.domain.accounts import ADMIN, CLIENT, RESELLER, Account
from chalicelib.domain.authorization import price_chain
from chalicelib.domain.rating import call_cost
from chalicelib.domain.tariffs import (BUCKET_DIGITS, EPOCH, MAX_GROUP_DIGITS, GroupTooLarge, InvalidRate, Rate,
                                       Tariff, candidate_groups, group_of, in_force, layout, longest_match,
                                       marked_up)

NOW = "2025-06-15T12:00:00Z"
ZERO_PRICE = D("0")


def r(prefix, price, **kw):
    return Rate(prefix=prefix, price=D(price), **kw)


def book_of(*rates):
    book = {}
    for rate in rates:
        book.setdefault(rate.prefix, []).append(rate)
    return book


# --------------------------------------------------------------------------- longest match

BOOK = book_of(r("4", "1.00", name="Europe-ish"), r("44", "0.50", name="UK"),
               r("447", "0.80", name="UK mobile"), r("4479", "0.90", name="UK mobile 79"))


@pytest.mark.parametrize("number, name", [
    ("442079460958", "UK"),
    ("447700900123", "UK mobile"),
    ("447911123456", "UK mobile 79"),
    ("491701234567", "Europe-ish"),
    ("44", "UK"),
])
def test_longest_matching_prefix_wins(number, name):
    """GIVEN rates for 4, 44, 447 and 4479 WHEN rating a number THEN the longest prefix of it is used."""
    assert longest_match(BOOK, number, NOW).name == name


def test_no_matching_prefix_means_no_rate():
    assert longest_match(BOOK, "15551230001", NOW) is None
    assert longest_match({}, "442079460958", NOW) is None


def test_a_rate_longer_than_the_number_does_not_match():
    assert longest_match(book_of(r("44207", "0.1")), "4420", NOW) is None


# --------------------------------------------------------------------------- effective_from versions

V_OLD = r("44", "0.50", effective_from=EPOCH)
V_CURRENT = r("44", "0.40", effective_from="2025-01-01T00:00:00Z")
V_FUTURE = r("44", "0.30", effective_from="2026-01-01T00:00:00Z")


def test_newest_version_already_in_force_wins_and_a_future_one_is_ignored():
    """GIVEN 0.50 since 1970, 0.40 since 2025-01-01 and 0.30 from 2026-01-01 WHEN rating on 2025-06-15
    THEN 0.40 applies, whatever the order the versions are stored in."""
    assert longest_match({"44": [V_FUTURE, V_OLD, V_CURRENT]}, "442079460958", NOW).price == D("0.40")
    assert longest_match({"44": [V_CURRENT, V_FUTURE, V_OLD]}, "442079460958", NOW).price == D("0.40")


def test_a_future_version_takes_over_from_its_start():
    book = {"44": [V_OLD, V_CURRENT, V_FUTURE]}
    assert longest_match(book, "442079460958", "2025-12-31T23:59:59Z").price == D("0.40")
    assert longest_match(book, "442079460958", "2026-01-01T00:00:00Z").price == D("0.30")


def test_a_version_not_yet_in_force_falls_back_to_a_shorter_prefix():
    """GIVEN 44 at 0.50 and a 447 rate that only starts next year WHEN rating a 447 number today
    THEN the 44 rate applies."""
    book = book_of(r("44", "0.50"), r("447", "0.80", effective_from="2026-01-01T00:00:00Z"))
    assert longest_match(book, "447700900123", NOW).price == D("0.50")


def test_in_force_of_only_future_versions_is_none():
    assert in_force([V_FUTURE], NOW) is None
    assert in_force([], NOW) is None


# --------------------------------------------------------------------------- rate groups

def test_candidate_groups_of_a_long_number():
    assert BUCKET_DIGITS == 4 and MAX_GROUP_DIGITS == 6
    assert candidate_groups("442079460958") == ["4", "44", "442", "4420", "44207", "442079"]


def test_candidate_groups_of_a_short_number():
    assert candidate_groups("44") == ["4", "44"]
    assert candidate_groups("442") == ["4", "44", "442"]
    assert candidate_groups("4420") == ["4", "44", "442", "4420"]


def test_group_of_short_and_long_prefixes():
    assert group_of("4") == "4"
    assert group_of("442") == "442"
    assert group_of("4420") == "4420"
    assert group_of("44207946") == "4420"


number_st = st.text(alphabet="0123456789", min_size=1, max_size=15)


@settings(max_examples=200, deadline=None)
@given(number=number_st, data=st.data())
def test_property_the_group_of_any_prefix_of_a_number_is_a_candidate_group(number, data):
    length = data.draw(st.integers(1, len(number)))
    prefix = number[:length]
    groups = candidate_groups(number)
    assert group_of(prefix) in groups
    assert len(groups) <= MAX_GROUP_DIGITS
    assert len(set(groups)) == len(groups)


def _small_layout(book):
    try:
        return layout(book, lambda members: len(members) <= 2)
    except GroupTooLarge:
        return layout(book, lambda members: True)


@settings(max_examples=150, deadline=None)
@given(number=number_st,
       prefixes=st.lists(st.text(alphabet="0123456789", min_size=1, max_size=8), max_size=30),
       extra=st.lists(st.integers(0, 14), max_size=5), split_none=st.booleans())
def test_property_reading_only_the_candidate_groups_finds_the_same_rate_as_the_whole_book(number, prefixes, extra,
                                                                                          split_none):
    """Storing a tariff by rate group and reading only candidate_groups(number) loses no match."""
    prefixes = prefixes + [number[:n + 1] for n in extra if n < len(number)]
    whole = book_of(*[r(p, "0.01", name=p) for p in prefixes])
    # whole regions, or items so small that every region of more than 2 prefixes splits, to the deepest level
    groups = layout(whole, lambda members: True) if split_none else _small_layout(whole)
    read = {}
    for g in candidate_groups(number):
        read.update(groups.get(g, {}))
    expected = longest_match(whole, number, NOW)
    found = longest_match(read, number, NOW)
    assert (found and found.name) == (expected and expected.name)


def test_layout_splits_a_region_too_large_for_one_item_by_one_more_digit_at_a_time():
    book = book_of(*[r(p, "0.01") for p in ("4420", "44201", "44202", "442011", "442012", "442013", "4", "44")])
    groups = layout(book, lambda members: len(members) <= 2)
    assert groups == {"4": {"4": book["4"]}, "44": {"44": book["44"]}, "4420": {"4420": book["4420"]},
                      "44202": {"44202": book["44202"]}, "44201": {"44201": book["44201"]},
                      "442011": {"442011": book["442011"]}, "442012": {"442012": book["442012"]},
                      "442013": {"442013": book["442013"]}}
    # the same book gives the same groups, and a region that fits stays whole
    assert layout(book, lambda members: len(members) <= 2) == groups
    assert layout(book, lambda members: True)["4420"].keys() == {"4420", "44201", "44202", "442011", "442012",
                                                                 "442013"}


def test_layout_refuses_a_group_that_cannot_split_further():
    book = book_of(*[r("442079" + str(n), "0.01") for n in range(5)])
    with pytest.raises(GroupTooLarge) as caught:
        layout(book, lambda members: len(members) <= 2)
    assert caught.value.group == "442079"


def test_an_ended_version_falls_back_to_a_shorter_prefix_and_a_later_version_revives_it():
    book = book_of(r("44", "0.10", name="UK"), r("447", "0.20", name="UK mobile"),
                   Rate("447", ZERO_PRICE, ended=True, effective_from="2026-06-01T00:00:00Z"),
                   r("447", "0.30", name="UK mobile again", effective_from="2026-09-01T00:00:00Z"))
    assert longest_match(book, "4479", "2026-05-31T23:59:59Z").name == "UK mobile"
    assert longest_match(book, "4479", "2026-06-01T00:00:00Z").name == "UK"
    assert longest_match(book, "4479", "2026-09-01T00:00:00Z").name == "UK mobile again"
    ended = Rate("447", ZERO_PRICE, ended=True)
    assert Rate.from_dict(ended.to_dict()) == ended and "ended" not in r("447", "0.2").to_dict()


# --------------------------------------------------------------------------- Rate validation

@pytest.mark.parametrize("kwargs, field", [
    (dict(prefix="+44", price=D("1")), "prefix"),
    (dict(prefix="", price=D("1")), "prefix"),
    (dict(prefix="44", price=D("-0.01")), "price"),
    (dict(prefix="44", price=D("1"), connect_fee=D("-0.01")), "price"),
    (dict(prefix="44", price=D("1"), initial=0), "increment"),
    (dict(prefix="44", price=D("1"), subsequent=0), "increment"),
    (dict(prefix="44", price=D("1"), minimum=-1), "minimum"),
])
def test_invalid_rates_are_refused_with_the_field_named(kwargs, field):
    with pytest.raises(InvalidRate) as exc:
        Rate(**kwargs)
    assert exc.value.field == field


def test_rate_round_trips_through_its_dict():
    rate = Rate(prefix="44", price=D("0.012"), name="UK", connect_fee=D("0.05"), minimum=30, initial=30,
                subsequent=6, effective_from="2025-01-01T00:00:00Z")
    data = rate.to_dict()
    assert data["price"] == "0.012" and data["connect_fee"] == "0.05"
    assert Rate.from_dict(data) == rate


def test_rate_from_dict_defaults_to_60_60_from_the_epoch():
    rate = Rate.from_dict({"prefix": "44", "price": "0.5"})
    assert (rate.initial, rate.subsequent, rate.minimum) == (60, 60, 0)
    assert rate.connect_fee == D("0") and rate.effective_from == EPOCH
    assert rate.price == D("0.500000")


@pytest.mark.parametrize("data, field", [
    ({"price": "1"}, "prefix"),
    ({"prefix": "44"}, "price"),
    ({"prefix": "44", "price": 0.1}, "rate"),          # a float has already lost the cents
    ({"prefix": "44", "price": "abc"}, "rate"),
    ({"prefix": "44", "price": "NaN"}, "rate"),
    ({"prefix": "44", "price": True}, "rate"),
    ({"prefix": "44", "price": "1", "initial": "x"}, "rate"),
    ({"prefix": "44", "price": "1", "minimum": None}, "rate"),
    ({"prefix": "44", "price": "-1"}, "price"),
    ({"prefix": "4a", "price": "1"}, "prefix"),
])
def test_rate_from_bad_dict_raises_invalid_rate(data, field):
    with pytest.raises(InvalidRate) as exc:
        Rate.from_dict(data)
    assert exc.value.field == field


def test_rate_from_dict_with_an_absurdly_large_price_raises_invalid_rate():
    with pytest.raises(InvalidRate):
        Rate.from_dict({"prefix": "44", "price": "1e30"})


def test_tariff_kind_must_be_table_or_markup():
    with pytest.raises(InvalidRate) as exc:
        Tariff(id="t", owner="admin", kind="percent")
    assert exc.value.field == "kind"


# --------------------------------------------------------------------------- markup tariffs

def test_voipms_markup_cost_plus_nothing_plus_20_percent():
    """GIVEN the owner pays 0.01/min WHEN a package marks up by fixed 0 and 20% THEN the price is 0.012."""
    assert marked_up(r("1", "0.01"), D("0"), D("20")).price == D("0.012")


def test_markup_adds_the_fixed_amount_before_the_percentage():
    """0.01 + 0.005 = 0.015, +20% = 0.018."""
    assert marked_up(r("1", "0.01"), D("0.005"), D("20")).price == D("0.018")


def test_markup_scales_the_connect_fee_by_the_percentage_only():
    rate = marked_up(r("1", "0.01", connect_fee=D("0.10")), D("0.005"), D("20"))
    assert rate.connect_fee == D("0.12")


def test_markup_keeps_the_base_increments_unless_the_package_overrides_them():
    base = r("1", "0.01", minimum=30, initial=30, subsequent=6)
    kept = marked_up(base, D("0"), D("20"))
    assert (kept.minimum, kept.initial, kept.subsequent) == (30, 30, 6)
    pulsed = marked_up(base, D("0"), D("20"), increments=(0, 1, 1))
    assert (pulsed.minimum, pulsed.initial, pulsed.subsequent) == (0, 1, 1)
    assert pulsed.prefix == "1" and pulsed.price == D("0.012")


def test_markup_price_is_quantized_to_six_places():
    """0.0123456 x 1.2 = 0.01481472 -> 0.014815 (half up)."""
    assert marked_up(r("1", "0.0123456"), D("0"), D("20")).price == D("0.014815")


PACKAGE = Tariff(id="pkg", owner="reseller", kind="markup", markup_percent=D("20"))
OWNER_RATE = r("1", "0.01", initial=1, subsequent=1)


def test_markup_tariff_without_an_override_prices_from_the_owner_rate():
    assert PACKAGE.price({}, "15551230001", NOW, OWNER_RATE).price == D("0.012")


def test_markup_tariff_without_an_owner_rate_has_no_rate():
    assert PACKAGE.price({}, "15551230001", NOW, None) is None


def test_markup_override_wins_over_the_markup():
    """GIVEN a package with a 1555 override at 0.05 WHEN a 1555 number is priced THEN 0.05, not 0.012;
    another number still gets the markup."""
    book = book_of(r("1555", "0.05"))
    assert PACKAGE.price(book, "15551230001", NOW, OWNER_RATE).price == D("0.05")
    assert PACKAGE.price(book, "12125550100", NOW, OWNER_RATE).price == D("0.012")


def test_markup_override_wins_even_when_shorter_than_the_owner_match():
    """As documented: an override wins *whenever one matches the number*, however short it is."""
    book = book_of(r("1", "0.02"))
    assert PACKAGE.price(book, "15551230001", NOW, r("1555", "0.01")).price == D("0.02")


def test_future_markup_override_is_ignored():
    book = book_of(r("1555", "0.05", effective_from="2026-01-01T00:00:00Z"))
    assert PACKAGE.price(book, "15551230001", NOW, OWNER_RATE).price == D("0.012")


def test_table_tariff_ignores_the_owner_rate():
    table = Tariff(id="t", owner="admin")
    assert table.price({}, "15551230001", NOW, OWNER_RATE) is None
    assert table.price(book_of(r("1", "0.03")), "15551230001", NOW, OWNER_RATE).price == D("0.03")


# --------------------------------------------------------------------------- markup through price_chain

def voipms_tree():
    admin = Account("admin", ADMIN, None, "provider")
    reseller = Account("reseller", RESELLER, "admin", "wholesale", balance=D("100"))
    client = Account("client", CLIENT, "reseller", "pkg", balance=D("10"))
    tariffs = {
        "provider": Tariff(id="provider", owner="admin"),
        "wholesale": Tariff(id="wholesale", owner="admin"),
        "pkg": Tariff(id="pkg", owner="reseller", kind="markup", markup_percent=D("20")),
    }
    books = {
        "provider": book_of(r("1", "0.005", initial=1, subsequent=1)),
        "wholesale": book_of(r("1", "0.01", initial=1, subsequent=1)),
        "pkg": book_of(r("1555", "0.05", initial=1, subsequent=1)),
    }
    return [client, reseller, admin], tariffs, books


def test_voipms_markup_via_price_chain_prices_from_the_parent_level_cost():
    """GIVEN a reseller paying 0.01/min and a client on the reseller's +20% package
    WHEN the chain is priced for a 1212 number THEN the client pays 0.012/min, the reseller 0.01, the
    operator's provider cost 0.005; a 60 s call costs the client 0.012."""
    chain, tariffs, books = voipms_tree()
    rates = price_chain(chain, tariffs, books, "12125550100", NOW)
    assert [x.price for x in rates] == [D("0.012"), D("0.01"), D("0.005")]
    assert call_cost(rates[0], 60) == D("0.012")
    assert call_cost(rates[0], 1) == D("0.000200")


def test_voipms_markup_override_via_price_chain_wins_over_the_markup():
    chain, tariffs, books = voipms_tree()
    rates = price_chain(chain, tariffs, books, "15551230001", NOW)
    assert [x.price for x in rates] == [D("0.05"), D("0.01"), D("0.005")]


def test_markup_tariff_whose_owner_is_not_above_the_level_has_no_rate():
    """A markup tariff must price from an account above the level it is assigned to."""
    chain, tariffs, books = voipms_tree()
    tariffs["pkg"] = Tariff(id="pkg", owner="client", kind="markup", markup_percent=D("20"))
    assert price_chain(chain, tariffs, books, "12125550100", NOW)[0] is None
    tariffs["pkg"] = Tariff(id="pkg", owner="someone-else", kind="markup", markup_percent=D("20"))
    assert price_chain(chain, tariffs, books, "12125550100", NOW)[0] is None


def test_markup_can_price_from_the_root_provider_cost():
    """GIVEN the operator's own package marking up its provider cost by 100% THEN 0.005 -> 0.01."""
    chain, tariffs, books = voipms_tree()
    tariffs["wholesale"] = Tariff(id="wholesale", owner="admin", kind="markup", markup_percent=D("100"))
    books["wholesale"] = {}
    rates = price_chain(chain, tariffs, books, "12125550100", NOW)
    assert [x.price for x in rates] == [D("0.012"), D("0.01"), D("0.005")]


def test_unknown_tariff_leaves_the_level_unpriced():
    chain, tariffs, books = voipms_tree()
    del tariffs["wholesale"]
    rates = price_chain(chain, tariffs, books, "12125550100", NOW)
    assert rates[1] is None and rates[0] is None and rates[2].price == D("0.005")
