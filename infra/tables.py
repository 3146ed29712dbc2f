"""DynamoDB tables built from the PynamoDB models: the models are the one definition of every table,
key and index; this file only adds what a deployment needs (billing, PITR, protection, encryption)."""
from typing import Iterable

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from chalicelib.adapters.dynamo.models import ALL_MODELS, TTL_ATTRIBUTES, logical_name


def _key_schema(entries):
    # CloudFormation wants HASH before RANGE; PynamoDB does not order them.
    ordered = sorted(entries, key=lambda e: e["KeyType"] != "HASH")
    return [dynamodb.CfnTable.KeySchemaProperty(attribute_name=e["AttributeName"], key_type=e["KeyType"])
            for e in ordered]


def model_tables(scope: Construct, prefix: str, production: bool, defer_indexes: Iterable[str] = ()) -> dict:
    """{logical name: CfnTable} for every model, named <prefix><logical>.

    defer_indexes: "table.index" names left out of this deploy. CloudFormation creates at most one
    global secondary index per table per update, so a stage whose existing table gains two indexes is
    upgraded in two deploys: the first defers one of them (docs/deploy.md, Updates)."""
    deferred = set(defer_indexes)
    known = {f"{logical_name(m)}.{i['index_name']}"
             for m in ALL_MODELS for i in m._get_schema()["global_secondary_indexes"]}
    if deferred - known:
        raise ValueError(f"defer_indexes: no such index {sorted(deferred - known)}; one of {sorted(known)}")
    tables = {}
    for model in ALL_MODELS:
        schema = model._get_schema()     # what PynamoDB's own create_table sends
        logical = logical_name(model)
        ttl = TTL_ATTRIBUTES.get(model)
        indexes = [i for i in schema["global_secondary_indexes"] if f"{logical}.{i['index_name']}" not in deferred]
        # An attribute definition is allowed only for a key of the table or of a deployed index.
        used = {e["AttributeName"] for e in schema["key_schema"]} | \
            {e["AttributeName"] for i in indexes for e in i["key_schema"]}
        table = dynamodb.CfnTable(
            scope, f"{logical.capitalize()}Table",
            table_name=prefix + logical,
            billing_mode="PAY_PER_REQUEST",
            key_schema=_key_schema(schema["key_schema"]),
            attribute_definitions=[
                dynamodb.CfnTable.AttributeDefinitionProperty(attribute_name=a["AttributeName"],
                                                              attribute_type=a["AttributeType"])
                for a in schema["attribute_definitions"] if a["AttributeName"] in used],
            global_secondary_indexes=[
                dynamodb.CfnTable.GlobalSecondaryIndexProperty(
                    index_name=index["index_name"], key_schema=_key_schema(index["key_schema"]),
                    projection=dynamodb.CfnTable.ProjectionProperty(
                        projection_type=index["projection"]["ProjectionType"],
                        non_key_attributes=index["projection"].get("NonKeyAttributes")))
                for index in indexes] or None,
            point_in_time_recovery_specification=dynamodb.CfnTable.PointInTimeRecoverySpecificationProperty(
                point_in_time_recovery_enabled=True),
            sse_specification=dynamodb.CfnTable.SSESpecificationProperty(sse_enabled=True),
            deletion_protection_enabled=production,
            time_to_live_specification=dynamodb.CfnTable.TimeToLiveSpecificationProperty(
                attribute_name=ttl, enabled=True) if ttl else None,
            stream_specification=dynamodb.CfnTable.StreamSpecificationProperty(
                stream_view_type=model.Meta.stream_view_type) if getattr(model.Meta, "stream_view_type", None) else None,
        )
        table.apply_removal_policy(RemovalPolicy.RETAIN if production else RemovalPolicy.DESTROY)
        tables[logical] = table
    return tables
