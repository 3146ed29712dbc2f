"""bench/capacity.py: WRU and RRU per call from the items actually written and read, over moto.

The meter hooks botocore through BUILTIN_HANDLERS, which only reaches sessions created afterwards: it is
installed when this module is imported (collection, before any test runs) and every test makes its own
fresh boto3 session / PynamoDB model inside the test.
"""
from decimal import Decimal

import boto3
import botocore.handlers
import pytest
from moto import mock_aws
from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from bench import capacity
from bench.capacity import (CapacityMeter, dollars_per_million_calls, item_size, number_size, plain_item_size,
                            value_size)

meter = capacity.install(CapacityMeter())

# A round-trip counter registered the way bench.py registers its own: it must see the calls the code
# under test makes and none of the meter's lookups.
SEEN = []
COUNTING = {"on": False}
botocore.handlers.BUILTIN_HANDLERS.append(
    ("before-call.dynamodb", lambda model, **kw: SEEN.append(model.name) if COUNTING["on"] else None))

REGION = "us-east-1"


def S(text):
    return {"S": text}


@pytest.fixture
def ddb():
    """A fresh boto3 session's client (made after install) and three tables: ``cap`` (hash key only),
    ``capq`` (hash + range) and ``capi`` (a sparse GSI on ``g``, all attributes projected)."""
    with mock_aws():
        client = boto3.session.Session().client("dynamodb", region_name=REGION)
        client.create_table(TableName="cap", BillingMode="PAY_PER_REQUEST",
                            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        client.create_table(TableName="capq", BillingMode="PAY_PER_REQUEST",
                            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                       {"AttributeName": "sk", "KeyType": "RANGE"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                                  {"AttributeName": "sk", "AttributeType": "S"}])
        client.create_table(TableName="capi", BillingMode="PAY_PER_REQUEST",
                            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                                  {"AttributeName": "g", "AttributeType": "S"}],
                            GlobalSecondaryIndexes=[{"IndexName": "by_g",
                                                     "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                                                     "Projection": {"ProjectionType": "ALL"}}])
        yield client
    meter.stop()


def measured(fn):
    meter.start()
    fn()
    usage = meter.stop()
    assert usage.errors == []
    return usage


# --- item sizes, by hand ------------------------------------------------------------------------------

def test_item_size_of_strings_is_name_plus_utf8_bytes():
    assert item_size({"s": S("héllo")}) == 1 + 6          # é is two bytes
    assert item_size({"pk": S("a"), "data": S("x" * 1500)}) == 3 + 1504


def test_number_size_is_one_byte_per_two_significant_digits_plus_one():
    assert number_size("123.45") == 4        # 5 digits: 3 + 1
    assert number_size("100") == 2           # trailing zeros trimmed: 1 digit
    assert number_size("-0.0012") == 2       # leading zeros, sign and point do not count: 2 digits
    assert number_size("0") == 1
    assert number_size("12345678901234567890123456789012345678") == 20   # 38 digits
    assert item_size({"n": {"N": "123.45"}}) == 1 + 4


def test_item_size_of_booleans_nulls_binaries_and_sets():
    assert item_size({"b": {"BOOL": True}, "z": {"NULL": True}}) == 2 + 2
    assert item_size({"bin": {"B": b"\x00\x01\x02"}}) == 3 + 3
    assert value_size({"B": "AAEC"}) == 3                  # the wire form: base64 text
    assert item_size({"ss": {"SS": ["a", "bc"]}, "ns": {"NS": ["1", "22", "333"]}}) == 2 + 3 + 2 + (2 + 2 + 3)


def test_item_size_of_maps_and_lists_is_3_bytes_plus_elements_plus_1_each():
    # M: 3 + ("ab" 2 + "xyz" 3 + 1) + ("c" 1 + number 7 -> 2 + 1) = 13, plus the name "m"
    assert item_size({"m": {"M": {"ab": S("xyz"), "c": {"N": "7"}}}}) == 14
    # L: 3 + ("ab" 2 + 1) + (BOOL 1 + 1) + (empty list 3 + 1) = 12, plus the name "l"
    assert item_size({"l": {"L": [S("ab"), {"BOOL": False}, {"L": []}]}}) == 13
    assert item_size({"e": {"M": {}}}) == 1 + 3
    nested = {"o": {"M": {"k": {"L": [{"N": "1"}, {"M": {"x": {"NULL": True}}}]}}}}
    # inner M: 3 + (1 + 1 + 1) = 6; L: 3 + (2 + 1) + (6 + 1) = 13; outer M: 3 + (1 + 13 + 1) = 18
    assert item_size(nested) == 1 + 18


def test_plain_item_size_serializes_python_values_first():
    assert plain_item_size({"pk": "a", "n": Decimal("10"), "ok": True}) == (2 + 1) + (1 + 2) + (2 + 1)


def test_prices():
    assert capacity.DOLLARS_PER_MILLION_WRU == 0.625 and capacity.DOLLARS_PER_MILLION_RRU == 0.125
    assert dollars_per_million_calls(10, 4) == pytest.approx(6.75)


# --- writes -----------------------------------------------------------------------------------------

def big_item(pk, chars=1500):
    return {"pk": S(pk), "data": S("x" * chars)}     # 3 + 4 + chars bytes


def test_put_of_a_1_5_kb_item_costs_2_wru(ddb):
    usage = measured(lambda: ddb.put_item(TableName="cap", Item=big_item("a")))
    assert (usage.wru, usage.rru) == (2, 0)
    assert usage.calls == ["PutItem"]
    assert usage.items_written == {"cap": 1}
    assert usage.by_table == {"cap": {"wru": 2, "rru": 0, "index_wru": 0}}


def test_put_over_a_bigger_item_costs_the_larger_of_before_and_after(ddb):
    ddb.put_item(TableName="cap", Item=big_item("a", 2500))          # 2507 bytes: 3 KB started
    usage = measured(lambda: ddb.put_item(TableName="cap", Item={"pk": S("a")}))
    assert usage.wru == 3


def test_the_same_put_inside_a_transaction_costs_4(ddb):
    usage = measured(lambda: ddb.transact_write_items(TransactItems=[{"Put": {"TableName": "cap",
                                                                              "Item": big_item("a")}}]))
    assert usage.wru == 4
    assert usage.calls == ["TransactWriteItems"]


def test_an_update_that_grows_an_item_past_1_kb_counts_the_size_after(ddb):
    ddb.put_item(TableName="cap", Item=big_item("u", 500))            # 507 bytes
    COUNTING["on"] = True
    SEEN.clear()
    try:
        usage = measured(lambda: ddb.update_item(TableName="cap", Key={"pk": S("u")},
                                                 UpdateExpression="SET #d = :d",
                                                 ExpressionAttributeNames={"#d": "data"},
                                                 ExpressionAttributeValues={":d": S("y" * 1200)}))
    finally:
        COUNTING["on"] = False
    assert usage.wru == 2                                             # 1207 bytes after
    assert usage.calls == ["UpdateItem"]
    assert SEEN == ["UpdateItem"], "the meter's own lookups must not reach other call hooks"


def test_an_update_that_shrinks_an_item_counts_the_size_before(ddb):
    ddb.put_item(TableName="cap", Item=big_item("u", 2100))           # 2107 bytes
    usage = measured(lambda: ddb.update_item(TableName="cap", Key={"pk": S("u")}, UpdateExpression="REMOVE #d",
                                             ExpressionAttributeNames={"#d": "data"}))
    assert usage.wru == 3


def test_a_delete_costs_the_item_deleted(ddb):
    ddb.put_item(TableName="cap", Item=big_item("d", 3000))           # 3007 bytes
    usage = measured(lambda: ddb.delete_item(TableName="cap", Key={"pk": S("d")}))
    assert usage.wru == 3 and usage.items_written == {"cap": 1}


def test_a_condition_check_in_a_transaction_costs_2(ddb):
    ddb.put_item(TableName="cap", Item={"pk": S("c"), "n": {"N": "5"}})
    usage = measured(lambda: ddb.transact_write_items(TransactItems=[{"ConditionCheck": {
        "TableName": "cap", "Key": {"pk": S("c")}, "ConditionExpression": "n > :z",
        "ExpressionAttributeValues": {":z": {"N": "0"}}}}]))
    assert usage.wru == 2
    assert usage.items_written == {}                                  # a check writes nothing


def test_a_condition_check_is_sized_by_the_item_checked(ddb):
    ddb.put_item(TableName="cap", Item=big_item("c", 1500))
    usage = measured(lambda: ddb.transact_write_items(TransactItems=[
        {"ConditionCheck": {"TableName": "cap", "Key": {"pk": S("c")}, "ConditionExpression": "attribute_exists(pk)"}},
        {"Update": {"TableName": "cap", "Key": {"pk": S("small")}, "UpdateExpression": "SET n = :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}}}}]))
    assert usage.wru == 2 * 2 + 2 * 1
    assert usage.items_written == {"cap": 1}


def test_batch_write_costs_each_item_like_a_put(ddb):
    usage = measured(lambda: ddb.batch_write_item(RequestItems={"cap": [
        {"PutRequest": {"Item": big_item("b1")}}, {"PutRequest": {"Item": {"pk": S("b2")}}}]}))
    assert usage.wru == 2 + 1 and usage.items_written == {"cap": 2}


def test_a_refused_conditional_put_is_still_charged_and_a_cancelled_transaction_is_listed(ddb):
    ddb.put_item(TableName="cap", Item=big_item("x"))
    put = lambda: ddb.put_item(TableName="cap", Item={"pk": S("x")}, ConditionExpression="attribute_not_exists(pk)")
    meter.start()
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException):
        put()
    with pytest.raises(ddb.exceptions.TransactionCanceledException):
        ddb.transact_write_items(TransactItems=[{"Put": {"TableName": "cap", "Item": {"pk": S("x")},
                                                         "ConditionExpression": "attribute_not_exists(pk)"}}])
    usage = meter.stop()
    assert usage.wru == 2                                             # the existing 1.5 KB item
    assert usage.calls == ["PutItem!", "TransactWriteItems!"]
    assert usage.per_call == [("PutItem!", 2, 0), ("TransactWriteItems!", 0, 0)]
    assert usage.items_written == {}
    assert len(usage.failed) == 2


def test_index_writes_follow_the_items_entering_changing_and_leaving_a_sparse_index(ddb):
    usage = measured(lambda: ddb.put_item(TableName="capi", Item={"pk": S("a"), "g": S("one")}))
    assert (usage.wru, usage.index_wru) == (2, 1)                     # table + index entry
    usage = measured(lambda: ddb.update_item(TableName="capi", Key={"pk": S("a")}, UpdateExpression="SET g = :g",
                                             ExpressionAttributeValues={":g": S("two")}))
    assert (usage.wru, usage.index_wru) == (3, 2)                     # index key changed: delete + put
    usage = measured(lambda: ddb.update_item(TableName="capi", Key={"pk": S("a")}, UpdateExpression="SET v = :v",
                                             ExpressionAttributeValues={":v": S("z")}))
    assert (usage.wru, usage.index_wru) == (2, 1)                     # a projected attribute changed
    usage = measured(lambda: ddb.update_item(TableName="capi", Key={"pk": S("a")}, UpdateExpression="REMOVE g"))
    assert (usage.wru, usage.index_wru) == (2, 1)                     # leaves the index
    usage = measured(lambda: ddb.put_item(TableName="capi", Item={"pk": S("b")}))
    assert (usage.wru, usage.index_wru) == (1, 0)                     # never in the index
    assert usage.by_table == {"capi": {"wru": 1, "rru": 0, "index_wru": 0}}


# --- reads ------------------------------------------------------------------------------------------

def test_get_of_a_5_kb_item_costs_1_eventually_consistent_and_2_strongly(ddb):
    ddb.put_item(TableName="cap", Item=big_item("g", 5000))           # 5007 bytes: 2 x 4 KB
    usage = measured(lambda: ddb.get_item(TableName="cap", Key={"pk": S("g")}))
    assert (usage.wru, usage.rru) == (0, 1.0)
    usage = measured(lambda: ddb.get_item(TableName="cap", Key={"pk": S("g")}, ConsistentRead=True))
    assert usage.rru == 2


def test_get_of_a_missing_item_costs_the_minimum(ddb):
    assert measured(lambda: ddb.get_item(TableName="cap", Key={"pk": S("none")})).rru == 0.5
    assert measured(lambda: ddb.get_item(TableName="cap", Key={"pk": S("none")}, ConsistentRead=True)).rru == 1


def test_a_projected_get_costs_the_whole_item(ddb):
    ddb.put_item(TableName="cap", Item=big_item("g", 5000))
    usage = measured(lambda: ddb.get_item(TableName="cap", Key={"pk": S("g")}, ProjectionExpression="pk"))
    assert usage.rru == 1.0


def test_batch_get_with_one_missing_key_adds_half_a_unit(ddb):
    ddb.put_item(TableName="cap", Item=big_item("g", 5000))
    keys = [{"pk": S("g")}, {"pk": S("missing")}]
    usage = measured(lambda: ddb.batch_get_item(RequestItems={"cap": {"Keys": keys}}))
    assert usage.rru == 1.0 + 0.5
    assert usage.calls == ["BatchGetItem"]
    usage = measured(lambda: ddb.batch_get_item(RequestItems={"cap": {"Keys": keys, "ConsistentRead": True}}))
    assert usage.rru == 2 + 1


def test_transact_get_costs_double_strongly_consistent(ddb):
    ddb.put_item(TableName="cap", Item=big_item("g", 5000))
    usage = measured(lambda: ddb.transact_get_items(TransactItems=[
        {"Get": {"TableName": "cap", "Key": {"pk": S("g")}}}, {"Get": {"TableName": "cap", "Key": {"pk": S("no")}}}]))
    assert usage.rru == 2 * 2 + 2 * 1


def test_query_costs_the_page_summed_and_filtered_items_still_count(ddb):
    for i in range(3):
        ddb.put_item(TableName="capq", Item={"pk": S("q"), "sk": S(f"{i}"), "data": S("x" * 2000)})   # 2011 bytes
    query = dict(TableName="capq", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": S("q")})
    assert measured(lambda: ddb.query(**query)).rru == 1.0          # 6033 bytes: 2 x 4 KB, halved
    assert measured(lambda: ddb.query(**query, ConsistentRead=True)).rru == 2
    filtered = dict(query, FilterExpression="#d = :no", ExpressionAttributeNames={"#d": "data"},
                    ExpressionAttributeValues={":p": S("q"), ":no": S("nothing")})
    usage = measured(lambda: ddb.query(**filtered))
    assert usage.rru == 1.0 and usage.calls == ["Query"]
    assert measured(lambda: ddb.query(**dict(query, ExpressionAttributeValues={":p": S("none")}))).rru == 0.5


def test_nothing_is_recorded_outside_start_and_stop(ddb):
    meter.start()
    usage = meter.stop()
    ddb.put_item(TableName="cap", Item=big_item("a"))
    assert meter.usage() == usage and usage.wru == 0 and usage.calls == []


# --- PynamoDB -----------------------------------------------------------------------------------------

class Tiny(Model):
    class Meta:
        table_name = "cap-tiny"
        region = REGION
        billing_mode = "PAY_PER_REQUEST"
    pk = UnicodeAttribute(hash_key=True)
    note = UnicodeAttribute(default="")
    n = NumberAttribute(null=True)


def test_pynamodb_save_transact_write_and_get_are_metered():
    with mock_aws():
        Tiny._connection = None        # a connection (and botocore session) made inside this test
        Tiny.create_table(wait=True)
        usage = measured(lambda: Tiny("p1", note="x" * 1100).save())  # 2 + 2 + 4 + 1100 = 1108 bytes
        assert (usage.wru, usage.calls, usage.items_written) == (2, ["PutItem"], {"cap-tiny": 1})
        Tiny("p3").save()

        def transaction():
            with TransactWrite(connection=Tiny._get_connection().connection) as tx:
                tx.save(Tiny("p2"))                                   # small: 2
                tx.update(Tiny("p1"), [Tiny.n.add(1)])                # 1108 -> 1111 bytes: 2 x 2
                tx.condition_check(Tiny, "p3", condition=Tiny.pk.exists())   # 2
        usage = measured(transaction)
        assert usage.wru == 2 + 4 + 2
        assert usage.calls == ["TransactWriteItems"]
        assert usage.items_written == {"cap-tiny": 2}

        usage = measured(lambda: Tiny.get("p1"))                      # eventually consistent, under 4 KB
        assert (usage.rru, usage.calls) == (0.5, ["GetItem"])
        usage = measured(lambda: list(Tiny.batch_get(["p1", "p2", "nope"])))
        assert usage.rru == 1.5 and usage.per_call == [("BatchGetItem", 0, 1.5)]
        Tiny._connection = None


def test_install_is_idempotent_and_attach_hooks_a_session_made_without_the_meter(ddb):
    capacity.install(meter)
    assert sum(1 for spec in botocore.handlers.BUILTIN_HANDLERS if spec[1] is capacity._before_call) == 1
    unhooked = capacity._QuietSession().create_client("dynamodb", region_name=REGION)   # leaves our hooks out
    assert measured(lambda: unhooked.put_item(TableName="cap", Item=big_item("a"))).wru == 0
    capacity.attach(unhooked)
    assert measured(lambda: unhooked.put_item(TableName="cap", Item=big_item("a"))).wru == 2
