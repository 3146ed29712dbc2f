"""infra/ synthesized offline (no credentials) and checked: tables equal the PynamoDB models, data is
protected, each function has only what it needs, the switch function is set up for switches, and
cfn-lint finds nothing."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("aws_cdk", reason="infra/requirements.txt is installed by make test")
from aws_cdk.assertions import Match, Template  # noqa: E402

from chalicelib.adapters.dynamo.models import ALL_MODELS, TTL_ATTRIBUTES, logical_name  # noqa: E402
from infra.stages import STAGES  # noqa: E402


def synth(stage, workdir):
    """Synthesize one stage offline into workdir: (Template, template path). Chalice's packager writes
    chalice.out/ into the cwd and sets the stage's variables in this process, so both are undone."""
    from infra.app import build
    cwd, environ = os.getcwd(), dict(os.environ)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    try:
        os.chdir(workdir)
        name = getattr(stage, "name", stage)
        stack = build(stage, outdir=str(workdir / name)).synth().get_stack_by_name(f"cascade-{name}")
        return Template.from_json(stack.template), workdir / name / stack.template_file
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    """{stage: (Template, template path)}"""
    work = tmp_path_factory.mktemp("synth")
    return {name: synth(name, work) for name in ("dev", "prod")}


def resources(template: Template, kind: str) -> dict:
    return template.find_resources(kind)


def table(template: Template, name: str) -> dict:
    found = [r["Properties"] for r in resources(template, "AWS::DynamoDB::Table").values()
             if r["Properties"]["TableName"] == name]
    assert len(found) == 1, name
    return found[0]


def normalized(entries):
    return sorted((e["AttributeName"], e.get("KeyType") or e.get("AttributeType")) for e in entries)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_table_and_index_equals_its_pynamodb_model(synthesized, stage):
    template, _ = synthesized[stage]
    assert len(resources(template, "AWS::DynamoDB::Table")) == len(ALL_MODELS)
    for model in ALL_MODELS:
        schema = model._get_schema()
        props = table(template, f"cascade-{stage}-{logical_name(model)}")
        assert normalized(props["KeySchema"]) == normalized(schema["key_schema"])
        assert props["KeySchema"][0]["KeyType"] == "HASH"
        assert normalized(props["AttributeDefinitions"]) == normalized(schema["attribute_definitions"])
        indexes = {i["IndexName"]: i for i in props.get("GlobalSecondaryIndexes", [])}
        assert set(indexes) == {i["index_name"] for i in schema["global_secondary_indexes"]}
        for index in schema["global_secondary_indexes"]:
            deployed = indexes[index["index_name"]]
            assert normalized(deployed["KeySchema"]) == normalized(index["key_schema"])
            assert deployed["Projection"]["ProjectionType"] == index["projection"]["ProjectionType"]
        assert not schema["local_secondary_indexes"] and "LocalSecondaryIndexes" not in props
        ttl = TTL_ATTRIBUTES.get(model)
        assert props.get("TimeToLiveSpecification") == ({"AttributeName": ttl, "Enabled": True} if ttl else None)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_tables_are_on_demand_recoverable_encrypted_and_protected_in_production(synthesized, stage):
    template, _ = synthesized[stage]
    for logical_id, resource in resources(template, "AWS::DynamoDB::Table").items():
        props = resource["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"] == {"SSEEnabled": True}
        assert props["DeletionProtectionEnabled"] is STAGES[stage].production
        assert resource["DeletionPolicy"] == ("Retain" if STAGES[stage].production else "Delete"), logical_id


def test_no_policy_grants_wildcard_actions_or_wildcard_data_resources(synthesized):
    template, _ = synthesized["prod"]
    policies = resources(template, "AWS::IAM::Policy")
    assert policies
    for logical_id, policy in policies.items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all("*" not in action for action in actions), (logical_id, actions)
            targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            assert "*" not in targets, (logical_id, statement)


def _policy_of(template: Template, role_prefix: str) -> list:
    for logical_id, policy in resources(template, "AWS::IAM::Policy").items():
        if logical_id.startswith(role_prefix + "RoleDefaultPolicy"):
            return policy["Properties"]["PolicyDocument"]["Statement"]
    raise AssertionError(role_prefix)


def _dynamodb_tables(statements) -> dict:
    """{table logical id: set of dynamodb actions} granted by these statements."""
    out = {}
    for s in statements:
        actions = [a for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
                   if a.startswith("dynamodb:")]
        for target in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]):
            ref = json.dumps(target)
            for logical in ("CoreTable", "LedgerTable", "CdrsTable"):
                if f'"{logical}"' in ref and actions:
                    out.setdefault(logical, set()).update(actions)
    return out


def test_each_function_has_its_own_role_with_only_the_tables_it_uses(synthesized):
    template, _ = synthesized["prod"]
    functions = resources(template, "AWS::Serverless::Function")
    roles = {name: json.dumps(f["Properties"]["Role"]) for name, f in functions.items()}
    assert set(roles) == {"APIHandler", "Switch", "Sweeper"}
    assert len(set(roles.values())) == 3                      # no shared role
    assert "SwitchRole" in roles["Switch"] and "SweeperRole" in roles["Sweeper"] and "ApiRole" in roles["APIHandler"]
    assert not [r for r in resources(template, "AWS::IAM::Role") if "DefaultRole" in r]   # Chalice's broad role is gone
    sweeper_policy = json.dumps(_policy_of(template, "Sweeper"))
    assert '"/index/held"' in sweeper_policy and "/index/*" not in sweeper_policy   # the one index it queries
    sweeper = _dynamodb_tables(_policy_of(template, "Sweeper"))
    assert set(sweeper) == {"CoreTable"} and "dynamodb:PutItem" not in sweeper["CoreTable"]
    switch = _dynamodb_tables(_policy_of(template, "Switch"))
    assert set(switch) == {"CoreTable", "LedgerTable", "CdrsTable"}
    assert not {"dynamodb:DeleteItem", "dynamodb:Scan"} & set().union(*switch.values())


def test_the_switch_function_is_arm64_warm_behind_a_function_url_and_reads_its_pepper_from_a_secret(synthesized):
    for stage in ("dev", "prod"):
        template, _ = synthesized[stage]
        settings = STAGES[stage]
        props = resources(template, "AWS::Serverless::Function")["Switch"]["Properties"]
        assert props["Architectures"] == ["arm64"] and props["MemorySize"] == settings.switch_memory_mb
        assert props["AutoPublishAlias"] == "live" and props["FunctionUrlConfig"] == {"AuthType": "NONE"}
        assert props.get("ProvisionedConcurrencyConfig", {}).get("ProvisionedConcurrentExecutions", 0) == \
            settings.switch_provisioned
        assert props["Handler"].startswith("chalicelib.entrypoints.switch.")   # not app.py: a light cold start
        env = props["Environment"]["Variables"]
        assert env["CASCADE_TABLE_PREFIX"] == f"cascade-{stage}-"
        assert env["CASCADE_KEY_PEPPER_SECRET"] == f"cascade/{stage}/switch-key-pepper"
        assert "CASCADE_KEY_PEPPER" not in env
    template, _ = synthesized["prod"]
    assert STAGES["prod"].switch_provisioned > 0
    template.has_resource_properties("AWS::SecretsManager::Secret", {
        "Name": "cascade/prod/switch-key-pepper", "GenerateSecretString": Match.object_like({"PasswordLength": 48})})
    template.has_output("SwitchUrl", {"Value": {"Fn::GetAtt": ["SwitchUrl", "FunctionUrl"]}})


def test_the_sweeper_runs_every_minute(synthesized):
    template, _ = synthesized["prod"]
    events = resources(template, "AWS::Serverless::Function")["Sweeper"]["Properties"]["Events"]
    schedules = [e["Properties"]["Schedule"] for e in events.values() if e["Type"] == "Schedule"]
    assert schedules == ["rate(1 minute)"]


def test_operator_alarms_notify_the_topic_and_a_dashboard_exists(synthesized):
    template, _ = synthesized["prod"]
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()}
    for name in ("SwitchErrors", "SwitchThrottles", "SwitchP99", "SweeperErrors", "CoreTransactionConflicts",
                 "CoreReadThrottles", "CoreWriteThrottles", "CoreTransactWriteItemsSystemErrors"):
        assert f"cascade-prod-{name}" in alarms, name
    assert alarms["cascade-prod-SwitchP99"]["ExtendedStatistic"] == "p99"
    assert alarms["cascade-prod-SwitchP99"]["Threshold"] == STAGES["prod"].authorize_p99_ms
    assert all(a["AlarmActions"] for a in alarms.values())
    assert alarms["cascade-prod-CoreTransactionConflicts"]["Threshold"] == STAGES["prod"].conflicts_per_5min
    # Only metrics DynamoDB publishes with exactly these dimensions can ever leave INSUFFICIENT_DATA.
    dims = {a["MetricName"]: sorted(d["Name"] for d in a["Dimensions"]) for a in alarms.values()
            if a.get("Namespace") == "AWS/DynamoDB"}
    assert dims == {"ReadThrottleEvents": ["TableName"], "WriteThrottleEvents": ["TableName"],
                    "TransactionConflict": ["TableName"], "SystemErrors": ["Operation", "TableName"]}
    template.resource_count_is("AWS::CloudWatch::Dashboard", 1)
    template.resource_count_is("AWS::SNS::Topic", 1)


def test_switch_path_events_are_counted_from_both_switch_functions_logs_and_alarmed(synthesized):
    template, _ = synthesized["prod"]
    groups = {logical: p["Properties"]["LogGroupName"] for logical, p in resources(template, "AWS::Logs::LogGroup").items()}
    filters = [f["Properties"] for f in resources(template, "AWS::Logs::MetricFilter").values()]
    by_metric = {}
    for f in filters:
        transformation = f["MetricTransformations"][0]
        assert transformation["MetricNamespace"] == "Cascade/prod"
        by_metric.setdefault(transformation["MetricName"], []).append(
            (groups[f["LogGroupName"]["Ref"]], f["FilterPattern"], transformation["MetricValue"]))
    expected_groups = ["/aws/lambda/cascade-prod-api", "/aws/lambda/cascade-prod-switch"]
    assert sorted(by_metric) == ["CallIdReuses", "CompletionConflicts", "LateBelowFloorMicros", "LateCompletions"]
    for metric, rows in by_metric.items():
        assert sorted(g for g, _, _ in rows) == expected_groups, metric
    # the fields the services log (complete_call._report_late, _already_applied; authorize_call._repeat)
    assert by_metric["LateBelowFloorMicros"][0][1:] == (
        '{ $.event = "late_completion" && $.below_floor_micros > 0 }', "$.below_floor_micros")
    assert by_metric["CompletionConflicts"][0][1] == '{ $.event = "completion_conflict" }'
    assert by_metric["CallIdReuses"][0][1] == '{ $.event = "call_id_reused" }'
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()}
    for name, metric, threshold in (("LateCompletions", "LateCompletions", STAGES["prod"].late_completions_per_5min),
                                    ("LateBelowFloor", "LateBelowFloorMicros", 1),
                                    ("CompletionConflicts", "CompletionConflicts", 1),
                                    ("CallIdReuses", "CallIdReuses", STAGES["prod"].call_id_reuses_per_5min)):
        alarm = alarms[f"cascade-prod-{name}"]
        assert (alarm["Namespace"], alarm["MetricName"], alarm["Threshold"]) == ("Cascade/prod", metric, threshold)
        assert alarm["AlarmActions"] and alarm["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_cfn_lint_finds_nothing(synthesized, stage):
    _, path = synthesized[stage]
    cfn_lint = pathlib.Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_packaged_code_has_no_compiled_modules_so_arm64_is_safe(synthesized):
    import zipfile
    _, path = synthesized["prod"]
    zips = list(path.parent.glob("asset.*.zip"))
    assert zips, "the Chalice deployment package is not in the assembly"
    for bundle in zips:
        names = zipfile.ZipFile(bundle).namelist()
        assert any(n.startswith("chalicelib/entrypoints/switch") for n in names)
        assert not [n for n in names if n.endswith((".so", ".pyd", ".dylib"))], bundle
        assert not [n for n in names if n.startswith(("infra/", "tests/", "integrations/"))], bundle


def test_a_stage_with_a_custom_domain_maps_the_rest_api_to_it(tmp_path):
    import dataclasses
    edge = dataclasses.replace(STAGES["prod"], name="edge", api_domain="api.example.com",
                               api_certificate_arn="arn:aws:acm:us-east-1:111122223333:certificate/abc")
    template, _ = synth(edge, tmp_path)
    template.has_resource_properties("AWS::ApiGateway::DomainName", Match.object_like({"DomainName": "api.example.com"}))
    template.resource_count_is("AWS::ApiGateway::BasePathMapping", 1)
