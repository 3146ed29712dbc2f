"""DynamoDB tables built from the PynamoDB models: the models are the one definition of every table,
key and index; this file only adds what a deployment needs (billing, PITR, protection, encryption)."""
from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from chalicelib.adapters.dynamo.models import ALL_MODELS, TTL_ATTRIBUTES, logical_name


def _key_schema(entries):
    # CloudFormation wants HASH before RANGE; PynamoDB does not order them.
    ordered = sorted(entries, key=lambda e: e["KeyType"] != "HASH")
    return [dynamodb.CfnTable.KeySchemaProperty(attribute_name=e["AttributeName"], key_type=e["KeyType"])
            for e in ordered]


def model_tables(scope: Construct, prefix: str, production: bool) -> dict:
    """{logical name: CfnTable} for every model, named <prefix><logical>."""
    tables = {}
    for model in ALL_MODELS:
        schema = model._get_schema()     # what PynamoDB's own create_table sends
        logical = logical_name(model)
        ttl = TTL_ATTRIBUTES.get(model)
        table = dynamodb.CfnTable(
            scope, f"{logical.capitalize()}Table",
            table_name=prefix + logical,
            billing_mode="PAY_PER_REQUEST",
            key_schema=_key_schema(schema["key_schema"]),
            attribute_definitions=[
                dynamodb.CfnTable.AttributeDefinitionProperty(attribute_name=a["AttributeName"],
                                                              attribute_type=a["AttributeType"])
                for a in schema["attribute_definitions"]],
            global_secondary_indexes=[
                dynamodb.CfnTable.GlobalSecondaryIndexProperty(
                    index_name=index["index_name"], key_schema=_key_schema(index["key_schema"]),
                    projection=dynamodb.CfnTable.ProjectionProperty(
                        projection_type=index["projection"]["ProjectionType"],
                        non_key_attributes=index["projection"].get("NonKeyAttributes")))
                for index in schema["global_secondary_indexes"]] or None,
            point_in_time_recovery_specification=dynamodb.CfnTable.PointInTimeRecoverySpecificationProperty(
                point_in_time_recovery_enabled=True),
            sse_specification=dynamodb.CfnTable.SSESpecificationProperty(sse_enabled=True),
            deletion_protection_enabled=production,
            time_to_live_specification=dynamodb.CfnTable.TimeToLiveSpecificationProperty(
                attribute_name=ttl, enabled=True) if ttl else None,
        )
        table.apply_removal_policy(RemovalPolicy.RETAIN if production else RemovalPolicy.DESTROY)
        tables[logical] = table
    return tables
