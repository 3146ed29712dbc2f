"""scripts/moto_journal.py: moto's transactions roll back from an undo journal of the items they name
instead of whole-table copies. A cancelled transaction must still write nothing, a committed one
everything, and a table copied outside a transaction must still be a copy."""
import copy

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from scripts import moto_journal


@pytest.fixture
def table():
    moto_journal.install()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                                  {"AttributeName": "sk", "AttributeType": "S"}])
        client.put_item(TableName="t", Item={"pk": {"S": "a"}, "sk": {"S": "#"}, "n": {"N": "1"}})
        client.put_item(TableName="t", Item={"pk": {"S": "c"}, "sk": {"S": "#"}, "n": {"N": "0"}})
        yield client


def items(client):
    return sorted((i["pk"]["S"], i["n"]["N"]) for i in client.scan(TableName="t")["Items"])


def ops(condition_on_c: str):
    return [
        {"Update": {"TableName": "t", "Key": {"pk": {"S": "a"}, "sk": {"S": "#"}},
                    "UpdateExpression": "ADD n :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}},
        {"Put": {"TableName": "t", "Item": {"pk": {"S": "b"}, "sk": {"S": "#"}, "n": {"N": "7"}},
                 "ConditionExpression": "attribute_not_exists(pk)"}},
        {"Update": {"TableName": "t", "Key": {"pk": {"S": "c"}, "sk": {"S": "#"}},
                    "UpdateExpression": "ADD n :one", "ConditionExpression": condition_on_c,
                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":zero": {"N": "0"}}}},
    ]


def test_a_cancelled_transaction_writes_nothing(table):
    with pytest.raises(ClientError) as raised:
        table.transact_write_items(TransactItems=ops("n > :zero"))      # c has n = 0: refused
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert items(table) == [("a", "1"), ("c", "0")]                       # a not bumped, b not created


def test_a_committed_transaction_writes_everything(table):
    table.transact_write_items(TransactItems=ops("n = :zero"))
    assert items(table) == [("a", "2"), ("b", "7"), ("c", "1")]


def test_a_table_copied_outside_a_transaction_is_still_a_copy(table):
    from moto.dynamodb.models import dynamodb_backends
    backend = dynamodb_backends["123456789012"]["us-east-1"]
    original = backend.tables["t"]
    clone = copy.deepcopy(original)
    assert clone is not original and clone.items is not original.items and len(clone.items) == len(original.items)
