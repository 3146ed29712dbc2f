"""A spend limit's reservation follows the call: reserved at authorize, released by the sweeper,
turned into spend at completion (also when the completion comes after the sweep)."""
from decimal import Decimal as D

from chalicelib.adapters.dynamo.models import AccountItem
from chalicelib.adapters.dynamo.store import DynamoStore
from chalicelib.services.authorize_call import AuthorizeRequest
from tests.integration.helpers import authorize_http as authorize_call
from chalicelib.services.complete_call import complete_call
from chalicelib.services.sweep_holds import sweep_expired_holds
from chalicelib.services.switch_keys import key_hash
from tests.conftest import DEMO_KEY, demo_seed, load

T0 = 1_795_000_000


def day_counter(account_id):
    """The day's spend counter on the account item: (its day, money spent + reserved)."""
    item = AccountItem.get(f"ACC#{account_id}", "#")
    return item.day_at, item.day_used


def test_reservation_is_released_by_the_sweeper_and_becomes_spend_on_a_late_completion(aws):
    seed = demo_seed()
    next(a for a in seed["accounts"] if a["id"] == "acme")["daily_limit"] = "5.00"
    load(seed)
    store, digest = DynamoStore(), key_hash(DEMO_KEY)

    # GIVEN acme (20.00, daily limit 5.00, 2.00/min 1/1) is granted 150 s: 5.00 reserved for the day
    answer = authorize_call(store, AuthorizeRequest("1001", "15551230001", "lim-1"), digest, clock=lambda: T0)
    assert answer.body["max_duration"] == 150
    assert day_counter("acme") == ("2026-11-18", D("5.00"))
    # AND a second call the same day is refused: the limit is taken by the call in flight
    refused = authorize_call(store, AuthorizeRequest("1001", "15551230001", "lim-2"), digest, clock=lambda: T0 + 1)
    assert refused.body == {"authorized": False, "reason": "daily_limit"}

    # WHEN the sweeper expires the call, THEN the reservation is released
    assert sweep_expired_holds(store, clock=lambda: T0 + 150 + 3600 + 1) == 1
    assert day_counter("acme") == ("2026-11-18", D("0"))

    # WHEN its completion arrives after all (42 s), THEN exactly its cost is counted as spent
    result = complete_call(store, "lim-1", 42, "ANSWERED", digest, clock=lambda: T0 + 3900)
    assert result["late"] is True and result["charged"] == "1.400000"
    assert day_counter("acme") == ("2026-11-18", D("1.40"))
