"""Dialled digits -> E.164 digits without '+', under the tree's dial plan."""
import pytest
from hypothesis import given, settings, strategies as st

from chalicelib.domain.numbers import MAX_DIGITS, DialPlan, InvalidNumber, normalize

UK = DialPlan(country_code="44", international_prefixes=("00",), national_prefix="0", national_length=None)


# --------------------------------------------------------------------------- default (NANP) plan

@pytest.mark.parametrize("dialled", [
    "+44 20 7946 0958",
    "+44 (20) 7946-0958",
    "+44.20.7946.0958",
    "0044 20 7946 0958",
    "011 44 20 7946 0958",
    "011-44-20-7946-0958",
    "  +442079460958  ",
])
def test_international_forms_of_a_london_number_all_normalize_to_the_same_digits(dialled):
    """GIVEN the default plan WHEN a London number is dialled with '+', '00' or '011', with or without
    separators THEN it normalizes to 442079460958."""
    assert normalize(dialled) == "442079460958"


def test_nanp_ten_digit_national_number_gets_country_code_1():
    """GIVEN the default plan (country 1, 10-digit national numbers) WHEN 5551230001 is dialled
    THEN it becomes 15551230001."""
    assert normalize("5551230001") == "15551230001"
    assert normalize("(555) 123-0001") == "15551230001"


def test_nanp_eleven_digit_number_is_already_international():
    assert normalize("15551230001") == "15551230001"
    assert normalize("1 555 123 0001") == "15551230001"
    assert normalize("+1 555 123 0001") == "15551230001"


def test_other_lengths_are_taken_as_international():
    """GIVEN the default plan WHEN a 12-digit number without prefix is dialled THEN it is kept as is."""
    assert normalize("441632960961") == "441632960961"


def test_011_is_tried_before_00():
    """GIVEN both access codes '00' and '011' WHEN 011 44... is dialled THEN '011' (the longer) is stripped,
    not '00' leaving '1 44...'."""
    assert normalize("01144161496000") == "44161496000"


def test_a_plus_number_is_never_given_the_country_code():
    """GIVEN a '+' number of exactly national length THEN it stays international (no '1' in front)."""
    assert normalize("+4420794609") == "4420794609"


# --------------------------------------------------------------------------- a national-prefix plan

def test_uk_plan_replaces_the_trunk_zero_with_the_country_code():
    """GIVEN a UK plan (country 44, national prefix 0, access code 00) WHEN 020 7946 0958 is dialled
    THEN it becomes 442079460958."""
    assert normalize("020 7946 0958", UK) == "442079460958"
    assert normalize("0113 496 0000", UK) == "441134960000"


def test_uk_plan_international_access_code_wins_over_the_trunk_prefix():
    assert normalize("00 1 555 123 0001", UK) == "15551230001"
    assert normalize("+1 555 123 0001", UK) == "15551230001"


def test_uk_plan_number_without_trunk_prefix_is_taken_as_international():
    assert normalize("33142685300", UK) == "33142685300"


def test_national_prefix_plan_with_default_access_codes_still_handles_london():
    plan = DialPlan(country_code="44", national_prefix="0")
    assert normalize("020 7946 0958", plan) == "442079460958"
    assert normalize("0044 20 7946 0958", plan) == "442079460958"


def test_national_prefix_plan_does_not_treat_leeds_0113_as_the_nanp_access_code():
    plan = DialPlan.from_dict({"country_code": "44", "national_prefix": "0"})
    assert normalize("0113 496 0000", plan) == "441134960000"


# --------------------------------------------------------------------------- invalid numbers

@pytest.mark.parametrize("dialled", [
    "", "   ", "+", "00", "011", "abc", "+44 20 7946 095x", "44#2079", "*97", "1+555",
    "4420\t79460958", "\u0664\u0664\u0662\u0660",   # Arabic-Indic digits are digits, but not ASCII
])
def test_non_digits_raise_invalid_number(dialled):
    with pytest.raises(InvalidNumber):
        normalize(dialled)


def test_fifteen_digits_are_accepted_and_sixteen_are_not():
    assert normalize("+" + "4" * MAX_DIGITS) == "4" * MAX_DIGITS
    with pytest.raises(InvalidNumber):
        normalize("+" + "4" * (MAX_DIGITS + 1))
    with pytest.raises(InvalidNumber):
        normalize("00" + "4" * (MAX_DIGITS + 1))


def test_invalid_number_is_a_value_error():
    assert issubclass(InvalidNumber, ValueError)


# --------------------------------------------------------------------------- DialPlan.from_dict

def test_dial_plan_from_nothing_is_the_default_nanp_plan():
    assert DialPlan.from_dict(None) == DialPlan()
    assert DialPlan.from_dict({}) == DialPlan(country_code="1", international_prefixes=("00", "011"),
                                              national_prefix="", national_length=10)


def test_dial_plan_from_dict_reads_every_field():
    plan = DialPlan.from_dict({"country_code": 44, "international_prefixes": ["00"], "national_prefix": "0",
                               "national_length": None})
    assert plan == UK


# --------------------------------------------------------------------------- properties

digits = st.text(alphabet="0123456789", min_size=1, max_size=MAX_DIGITS)


@settings(max_examples=150, deadline=None)
@given(number=digits)
def test_property_a_plus_number_normalizes_to_its_digits(number):
    assert normalize("+" + number) == number
    assert normalize("00" + number) == number


@settings(max_examples=150, deadline=None)
@given(number=digits, seps=st.lists(st.sampled_from(" -.()"), max_size=20), data=st.data())
def test_property_separators_do_not_change_the_result(number, seps, data):
    text = list("+" + number)
    for sep in seps:
        text.insert(data.draw(st.integers(1, len(text))), sep)
    assert normalize("".join(text)) == number


@settings(max_examples=150, deadline=None)
@given(dialled=st.text(max_size=25))
def test_property_result_is_always_1_to_15_ascii_digits_or_invalid_number(dialled):
    try:
        result = normalize(dialled)
    except InvalidNumber:
        return
    assert result.isascii() and result.isdigit()
    assert 1 <= len(result) <= MAX_DIGITS
