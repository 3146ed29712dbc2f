"""A bad seed is refused before anything is written, naming the field."""
import json

import pytest

from chalicelib.services.seed import InvalidSeed, parse_seed


def seed(**changes):
    data = {
        "settings": {},
        "tariffs": [{"id": "cost", "owner": "admin", "rates": [{"prefix": "1", "price": "0.1"}]},
                    {"id": "retail", "owner": "admin", "kind": "markup", "markup_percent": "10"}],
        "accounts": [{"id": "admin", "role": "admin", "tariff": "cost"},
                     {"id": "c", "role": "client", "parent": "admin", "tariff": "retail", "balance": "5",
                      "sip_users": ["100"]}],
    }
    for path, value in changes.items():
        target = data
        *parents, last = path.split(".")
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        target[int(last) if last.isdigit() else last] = value
    return json.dumps(data)


def test_a_seeded_did_is_handed_down_with_its_history():
    parsed = parse_seed(seed(dids=[{"number": "+1 555 000 1111", "country": "us", "cost": {"per_minute": "0.01"},
                                    "holders": [{"account": "c", "per_minute": "0.02", "monthly": "3"}]}]))
    (did, events), = parsed.dids
    assert (did.number, did.country, did.holder) == ("15550001111", "US", "c")
    assert [str(h.prices.per_minute) for h in did.holders] == ["0.010000", "0.020000"]
    assert [(e.event, e.receiver, e.seq) for e in events] == [("created", "admin", 0), ("assigned", "c", 1)]


def test_a_good_seed_parses():
    parsed = parse_seed(seed())
    assert [a.id for a in parsed.accounts] == ["admin", "c"] and parsed.identities == {"c": "c", "100": "c"}


@pytest.mark.parametrize("change, field", [
    ({"settings.max_depth": "five"}, "settings.max_depth"),
    ({"settings.billing_mode": "lately"}, "settings.billing_mode"),
    ({"settings.dial_plan": {"country_code": "+1"}}, "settings.dial_plan.country_code"),
    ({"tariffs.1.increments": [0, 0, 6]}, "tariffs[1].increments"),
    ({"tariffs.1.owner": "nobody"}, "tariffs[1].owner"),
    ({"tariffs.1.id": "cost"}, "tariffs[1].id"),
    ({"tariffs.0.rates": [{"prefix": "1", "price": "-0.1"}]}, "tariffs[0].price"),
    ({"accounts.1.parent": "ghost"}, "accounts[1].parent"),
    ({"accounts.1.balance": "ten"}, "accounts[1].balance"),
    ({"accounts.1.billing_type": "credit"}, "accounts[1].billing_type"),
    ({"accounts.1.tariff": "missing"}, "accounts[1].tariff"),
    ({"accounts.1.commission_percent": "100"}, "accounts[1].commission_percent"),
    ({"accounts.1.max_calls": -1}, "accounts[1].max_calls"),
    ({"accounts.1.id": "top~3"}, "accounts[1].id"),        # '~' names a top reseller's pools
    ({"accounts.1.id": "a/b"}, "accounts[1].id"),
    ({"accounts.1.id": "a#b"}, "accounts[1].id"),
    ({"accounts.1.id": 7}, "accounts[1].id"),
    ({"dids": [{"number": "0123", "country": "US"}]}, "dids[0].number"),
    ({"dids": [{"number": "15550001111", "country": "USA"}]}, "dids[0].country"),
    ({"dids": [{"number": "15550001111", "country": "US", "cost": {"per_minute": "-1"}}]}, "dids[0].per_minute"),
    ({"dids": [{"number": "15550001111", "country": "US", "holders": [{"account": "admin"}]}]},
     "dids[0].holders[0].account"),
    ({"dids": [{"number": "15550001111", "country": "US"}, {"number": "+1 555 000 1111", "country": "US"}]}, "dids"),
])
def test_a_bad_field_is_named(change, field):
    with pytest.raises(InvalidSeed) as err:
        parse_seed(seed(**change))
    assert err.value.field == field
