"""Rate versions compare in UTC whatever form their effective_from was written in."""
from decimal import Decimal as D

import pytest

from chalicelib.domain.tariffs import InvalidRate, Rate, in_force


@pytest.mark.parametrize("written, utc", [
    ("2026-03-01", "2026-03-01T00:00:00Z"),
    ("2026-03-01T02:30:00+02:00", "2026-03-01T00:30:00Z"),
    ("2026-03-01T00:30:00.750Z", "2026-03-01T00:30:00Z"),
    ("2026-02-28T23:00:00-05:00", "2026-03-01T04:00:00Z"),
])
def test_effective_from_is_kept_in_utc(written, utc):
    assert Rate("44", D("0.01"), effective_from=written).effective_from == utc


def test_a_version_written_with_an_offset_starts_at_its_real_moment():
    old = Rate("44", D("0.01"))
    new = Rate("44", D("0.02"), effective_from="2026-03-01T08:00:00+08:00")   # midnight UTC
    assert in_force([old, new], "2026-02-28T23:59:59Z") == old
    assert in_force([old, new], "2026-03-01T00:00:00Z") == new


def test_a_malformed_effective_from_names_the_field():
    with pytest.raises(InvalidRate) as err:
        Rate("44", D("0.01"), effective_from="next tuesday")
    assert err.value.field == "effective_from"
