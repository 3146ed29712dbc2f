"""infra/ synthesized offline (no credentials) and checked: tables equal the PynamoDB models, data is
protected, each function has only what it needs (the switch function nothing of the portal's), the
switch function is set up for switches, the portal's secrets and mail reach only its function, and
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


def synth(stage, workdir, defer_indexes=None):
    """Synthesize one stage offline into workdir: (Template, template path). Chalice's packager writes
    chalice.out/ into the cwd and sets the stage's variables in this process, so both are undone.
    Template.from_json refuses a template with a dependency cycle, which cfn-lint does not see when it
    passes through the SAM API's definition body (the REST API's URL in its own function's environment)."""
    from infra.app import build
    cwd, environ = os.getcwd(), dict(os.environ)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    try:
        os.chdir(workdir)
        name = getattr(stage, "name", stage)
        app = build(stage, outdir=str(workdir / name), defer_indexes=defer_indexes)
        stack = app.synth().get_stack_by_name(f"cascade-{name}")
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
            assert sorted(deployed["Projection"].get("NonKeyAttributes", [])) == \
                sorted(index["projection"].get("NonKeyAttributes", []))
        assert not schema["local_secondary_indexes"] and "LocalSecondaryIndexes" not in props
        ttl = TTL_ATTRIBUTES.get(model)
        assert props.get("TimeToLiveSpecification") == ({"AttributeName": ttl, "Enabled": True} if ttl else None)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_journal_replaces_the_ledger_and_core_has_the_portal_indexes(synthesized, stage):
    template, _ = synthesized[stage]
    names = {r["Properties"]["TableName"] for r in resources(template, "AWS::DynamoDB::Table").values()}
    assert names == {f"cascade-{stage}-{t}" for t in ("core", "journal")}      # a call record is its CDR
    journal = table(template, f"cascade-{stage}-journal")
    assert {i["IndexName"] for i in journal["GlobalSecondaryIndexes"]} == {"history", "peer_history"}
    core = table(template, f"cascade-{stage}-core")
    assert {i["IndexName"] for i in core["GlobalSecondaryIndexes"]} == {
        "held", "subtree", "listing", "wants", "client_calls", "tree_calls"}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_core_has_the_sparse_wants_index_the_rebalancer_queries(synthesized, stage):
    template, _ = synthesized[stage]
    core = table(template, f"cascade-{stage}-core")
    wants = next(i for i in core["GlobalSecondaryIndexes"] if i["IndexName"] == "wants")
    assert wants["KeySchema"] == [{"AttributeName": "want", "KeyType": "HASH"}]
    # keys and the discriminator only: a refill request changes no other projected attribute
    assert wants["Projection"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["kind"]}
    assert {"AttributeName": "want", "AttributeType": "S"} in core["AttributeDefinitions"]


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


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def _dynamodb_tables(statements) -> dict:
    """{table logical id, or "<table logical id>/index/<name>": set of dynamodb actions} granted by these
    statements."""
    out = {}
    for s in statements:
        actions = [a for a in _listed(s["Action"]) if a.startswith("dynamodb:")]
        for target in _listed(s["Resource"]):
            ref = json.dumps(target)
            for logical in ("CoreTable", "JournalTable", "LedgerTable"):
                if f'"{logical}"' in ref and actions:
                    suffix = target["Fn::Join"][1][-1] if "Fn::Join" in target else ""
                    out.setdefault(logical + suffix, set()).update(actions)
    return out


def _model_indexes(logical: str) -> set:
    model = next(m for m in ALL_MODELS if logical_name(m) == logical)
    return {i["index_name"] for i in model._get_schema()["global_secondary_indexes"]}


def _policies_by_role(template: Template) -> dict:
    return {role: _policy_of(template, role) for role in ("Api", "Switch", "Sweeper", "Rebalancer", "Importer",
                                                          "Reporter")}


def test_each_function_has_its_own_role_with_only_the_tables_it_uses(synthesized):
    template, _ = synthesized["prod"]
    functions = resources(template, "AWS::Serverless::Function")
    roles = {name: json.dumps(f["Properties"]["Role"]) for name, f in functions.items()}
    assert set(roles) == {"APIHandler", "Switch", "Sweeper", "Rebalancer", "Importer", "Reporter"}
    assert len(set(roles.values())) == 6                      # no shared role
    assert "SwitchRole" in roles["Switch"] and "SweeperRole" in roles["Sweeper"] and "ApiRole" in roles["APIHandler"]
    assert "RebalancerRole" in roles["Rebalancer"]
    assert not [r for r in resources(template, "AWS::IAM::Role") if "DefaultRole" in r]   # Chalice's broad role is gone
    sweeper_policy = json.dumps(_policy_of(template, "Sweeper"))
    assert '"/index/held"' in sweeper_policy and "/index/*" not in sweeper_policy   # the one index it queries
    sweeper = _dynamodb_tables(_policy_of(template, "Sweeper"))
    assert set(sweeper) == {"CoreTable", "CoreTable/index/held"} and "dynamodb:PutItem" not in sweeper["CoreTable"]
    assert sweeper["CoreTable/index/held"] == {"dynamodb:Query"} and "dynamodb:Query" not in sweeper["CoreTable"]
    # The switch path writes no journal entry and queries nothing.
    switch = _dynamodb_tables(_policy_of(template, "Switch"))
    assert set(switch) == {"CoreTable"}
    assert not {"dynamodb:DeleteItem", "dynamodb:Scan", "dynamodb:Query"} & set().union(*switch.values())


def test_the_rest_api_function_has_switch_and_portal_access_and_nothing_scans(synthesized):
    from infra.stack import PORTAL_ACCESS, SWITCH_ACCESS
    template, _ = synthesized["prod"]
    api = _dynamodb_tables(_policy_of(template, "Api"))
    for logical, access in (("core", SWITCH_ACCESS["core"]), ("core", PORTAL_ACCESS["core"]),
                            ("journal", PORTAL_ACCESS["journal"])):
        assert set(access.actions) <= api[f"{logical.capitalize()}Table"], logical
    for logical in ("core", "journal"):
        assert "dynamodb:Query" in api[f"{logical.capitalize()}Table"], logical
        for index in _model_indexes(logical):          # every index by name, no /index/* wildcard
            assert api[f"{logical.capitalize()}Table/index/{index}"] == {"dynamodb:Query"}, (logical, index)
    assert api["CoreTable"] == {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem", "dynamodb:Query",
                                "dynamodb:BatchWriteItem", "dynamodb:DescribeTable"}
    assert api["JournalTable"] == {"dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Query",
                                   "dynamodb:ConditionCheckItem", "dynamodb:DescribeTable"}
    assert "LedgerTable" not in json.dumps(template.to_json())
    for role, statements in _policies_by_role(template).items():
        granted = {a for s in statements for a in _listed(s["Action"])}
        assert not {a for a in granted if a.lower() in ("dynamodb:scan", "dynamodb:*")}, role
        assert "dynamodb:DeleteItem" not in granted or role in ("Api", "Importer"), role
    everything = {a for p in resources(template, "AWS::IAM::Policy").values()
                  for s in p["Properties"]["PolicyDocument"]["Statement"] for a in _listed(s["Action"])}
    assert "dynamodb:scan" not in {a.lower() for a in everything}      # no policy at all, not only the roles'


def test_the_rebalancer_is_one_instance_with_its_own_least_privilege_role(synthesized):
    from chalicelib.entrypoints.rebalancer import RUN_FOR
    from infra.stack import REBALANCER_ACCESS
    for stage in ("dev", "prod"):
        template, _ = synthesized[stage]
        props = resources(template, "AWS::Serverless::Function")["Rebalancer"]["Properties"]
        # the only writer moving money between owners and slots (entrypoints/rebalancer.py)
        assert props["ReservedConcurrentExecutions"] == 1
        assert props["MemorySize"] == 512 and props["Timeout"] == 70 and props["Architectures"] == ["arm64"]
        assert props["FunctionName"] == f"cascade-{stage}-rebalancer"
        assert RUN_FOR < props["Timeout"]              # a run ends by itself, not as a timeout
        # an event throttled behind the running instance is dropped, not replayed for hours
        assert props["EventInvokeConfig"] == {"MaximumEventAgeInSeconds": 60, "MaximumRetryAttempts": 0}
        schedules = [e["Properties"]["Schedule"] for e in props["Events"].values() if e["Type"] == "Schedule"]
        assert schedules == ["rate(1 minute)"]
        assert not {"CASCADE_TOKEN_KEY_SECRET", "CASCADE_MAIL_FROM"} & set(props["Environment"]["Variables"])
    template, _ = synthesized["prod"]
    others = resources(template, "AWS::Serverless::Function")
    assert [name for name, f in others.items() if "ReservedConcurrentExecutions" in f["Properties"]] == ["Rebalancer"]
    statements = _policy_of(template, "Rebalancer")
    rebalancer = _dynamodb_tables(statements)
    # core only, Query on `wants` by name (no /index/* wildcard) and on the table (the escrow registry)
    assert set(rebalancer) == {"CoreTable", "CoreTable/index/wants"}
    assert rebalancer["CoreTable/index/wants"] == {"dynamodb:Query"}
    assert rebalancer["CoreTable"] == set(REBALANCER_ACCESS["core"].actions) == {
        "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem",
        "dynamodb:BatchWriteItem", "dynamodb:DescribeTable"}
    granted = {a for s in statements for a in _listed(s["Action"])}
    assert not {"dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:*"} & granted
    assert '"/index/wants"' in json.dumps(statements) and "/index/*" not in json.dumps(statements)
    for role in ("Switch", "Sweeper"):         # of the others, only the portal (every index) may query it
        assert "/index/wants" not in json.dumps(_policy_of(template, role)), role


def test_only_the_portal_function_reads_the_token_key_and_sends_mail(synthesized):
    template, _ = synthesized["prod"]
    secrets = {logical: r["Properties"] for logical, r in resources(template, "AWS::SecretsManager::Secret").items()}
    token_key = next(logical for logical, p in secrets.items() if p["Name"] == "cascade/prod/token-signing-key")
    policies = _policies_by_role(template)
    reads = [s for s in policies["Api"] if json.dumps(s["Resource"]) == json.dumps({"Ref": token_key})]
    assert [s["Action"] for s in reads] == ["secretsmanager:GetSecretValue"]
    for role in ("Switch", "Sweeper", "Rebalancer", "Importer"):
        assert token_key not in json.dumps(policies[role]), role
        assert not [s for s in policies[role] if any(a.startswith("ses:") for a in _listed(s["Action"]))], role
    mail = [s for s in policies["Api"] if any(a.startswith("ses:") for a in _listed(s["Action"]))]
    assert len(mail) == 1
    assert sorted(_listed(mail[0]["Action"])) == ["ses:SendEmail", "ses:SendRawEmail"]
    assert mail[0]["Condition"] == {"StringEquals": {"ses:FromAddress": STAGES["prod"].sender}}
    assert mail[0]["Resource"] != "*" and json.dumps(mail[0]["Resource"]).endswith(':identity/*"]]}')


def test_the_token_key_is_generated_in_a_format_the_tokens_adapter_accepts(synthesized):
    import secrets as random
    import string
    from chalicelib.adapters.tokens import MIN_KEY_BYTES, parse_keys
    template, _ = synthesized["prod"]
    secret = next(r for r in resources(template, "AWS::SecretsManager::Secret").values()
                  if r["Properties"]["Name"] == "cascade/prod/token-signing-key")
    assert secret["DeletionPolicy"] == "Retain"          # a new key would sign every user out
    generator = secret["Properties"]["GenerateSecretString"]
    assert generator["ExcludePunctuation"] is True and "SecretStringTemplate" not in generator
    assert generator["PasswordLength"] >= max(48, MIN_KEY_BYTES)
    # What Secrets Manager generates: letters and digits only, so no ':' or ',' -> one key, id "k1".
    value = "".join(random.choice(string.ascii_letters + string.digits) for _ in range(generator["PasswordLength"]))
    assert parse_keys(value) == [("k1", value)]
    template.has_output("TokenKeySecretName", {"Value": "cascade/prod/token-signing-key"})


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_portal_settings_reach_the_rest_api_function_only(synthesized, stage):
    template, _ = synthesized[stage]
    functions = resources(template, "AWS::Serverless::Function")
    env = {name: f["Properties"]["Environment"]["Variables"] for name, f in functions.items()}
    portal_only = {"CASCADE_TOKEN_KEY_SECRET", "CASCADE_MAIL_FROM", "CASCADE_PORTAL_URL", "CASCADE_TOKEN_KEY",
                   "CASCADE_MAIL_VERIFY_SENDER", "CASCADE_SCRYPT_N"}
    assert env["APIHandler"]["CASCADE_TOKEN_KEY_SECRET"] == f"cascade/{stage}/token-signing-key"
    assert env["APIHandler"]["CASCADE_MAIL_FROM"] == STAGES[stage].sender
    # Never on AWS: a key in plain text, the test-only scrypt cost, or moto's sender verification.
    assert not {"CASCADE_TOKEN_KEY", "CASCADE_MAIL_VERIFY_SENDER", "CASCADE_SCRYPT_N"} & set(env["APIHandler"])
    assert ("CASCADE_PORTAL_URL" in env["APIHandler"]) is bool(STAGES[stage].portal_link_base)
    for name in ("Switch", "Sweeper", "Rebalancer"):
        assert not portal_only & set(env[name]), name
    for name, variables in env.items():        # EMF metrics share the log metric filters' namespace
        assert variables["CASCADE_METRICS_NAMESPACE"] == f"Cascade/{stage}", name
    # scrypt at 128 MiB per hash, and CPU in proportion to memory (adapters/passwords.py)
    assert functions["APIHandler"]["Properties"]["MemorySize"] >= 512


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
    for name in ("SwitchErrors", "SwitchThrottles", "SwitchP99", "SweeperErrors", "RebalancerErrors",
                 "RebalanceFailures", "CoreTransactionConflicts", "CoreReadThrottles", "CoreWriteThrottles",
                 "CoreTransactWriteItemsSystemErrors"):
        assert f"cascade-prod-{name}" in alarms, name
    rebalancer = alarms["cascade-prod-RebalancerErrors"]
    assert (rebalancer["Namespace"], rebalancer["MetricName"], rebalancer["Threshold"]) == ("AWS/Lambda", "Errors", 1)
    assert rebalancer["Dimensions"] == [{"Name": "FunctionName", "Value": "cascade-prod-rebalancer"}]
    assert "escrow" in rebalancer["AlarmDescription"]
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


def test_failed_rebalance_ticks_are_counted_from_its_log_and_alarmed_when_they_persist(synthesized):
    """A failed tick is logged and swallowed (entrypoints/rebalancer.run), so Errors never sees it."""
    from infra.stack import REBALANCE_FAILED
    source = (pathlib.Path(__file__).resolve().parents[2] / "chalicelib/entrypoints/rebalancer.py").read_text()
    assert f'log.exception("{REBALANCE_FAILED}")' in source
    template, _ = synthesized["prod"]
    groups = {logical: p["Properties"]["LogGroupName"] for logical, p in resources(template, "AWS::Logs::LogGroup").items()}
    rows = [f["Properties"] for f in resources(template, "AWS::Logs::MetricFilter").values()
            if f["Properties"]["MetricTransformations"][0]["MetricName"] == "RebalanceFailures"]
    assert len(rows) == 1 and groups[rows[0]["LogGroupName"]["Ref"]] == "/aws/lambda/cascade-prod-rebalancer"
    assert rows[0]["FilterPattern"] == f'"{REBALANCE_FAILED}"'
    assert rows[0]["MetricTransformations"][0]["MetricNamespace"] == "Cascade/prod"
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()}
    alarm = alarms["cascade-prod-RebalanceFailures"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Threshold"], alarm["Period"]) == \
        ("Cascade/prod", "RebalanceFailures", 1, 60)
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 5       # every minute for 5 minutes
    assert alarm["AlarmActions"] and alarm["TreatMissingData"] == "notBreaching"
    body = json.dumps(next(iter(resources(template, "AWS::CloudWatch::Dashboard").values()))["Properties"]["DashboardBody"])
    assert "RebalanceFailures" in body and "RebalancerErrors" in body          # the dashboard's alarm status


def test_switch_path_events_are_counted_from_both_switch_functions_logs_and_alarmed(synthesized):
    template, _ = synthesized["prod"]
    groups = {logical: p["Properties"]["LogGroupName"] for logical, p in resources(template, "AWS::Logs::LogGroup").items()}
    filters = [f["Properties"] for f in resources(template, "AWS::Logs::MetricFilter").values()]
    by_metric = {}
    for f in filters:
        if groups[f["LogGroupName"]["Ref"]] == "/aws/lambda/cascade-prod-rebalancer":
            continue             # its failed ticks (test_failed_rebalance_ticks_are_counted_...)
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


def test_a_stage_with_a_custom_domain_maps_the_rest_api_to_it_and_mails_from_it(tmp_path):
    import dataclasses
    edge = dataclasses.replace(STAGES["prod"], name="edge", api_domain="api.example.com",
                               api_certificate_arn="arn:aws:acm:us-east-1:111122223333:certificate/abc")
    template, _ = synth(edge, tmp_path)
    template.has_resource_properties("AWS::ApiGateway::DomainName", Match.object_like({"DomainName": "api.example.com"}))
    template.resource_count_is("AWS::ApiGateway::BasePathMapping", 1)
    env = resources(template, "AWS::Serverless::Function")["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert env["CASCADE_MAIL_FROM"] == "no-reply@api.example.com"
    assert env["CASCADE_PORTAL_URL"] == "https://api.example.com"
    template.has_resource_properties("AWS::IAM::Policy", Match.object_like({"PolicyDocument": Match.object_like({
        "Statement": Match.array_with([Match.object_like({
            "Condition": {"StringEquals": {"ses:FromAddress": "no-reply@api.example.com"}}})])})}))


def test_an_upgrade_can_defer_an_index_and_the_settings_override_the_defaults(tmp_path):
    """CloudFormation adds one index per table per update: a core table from before the portal gains
    subtree, listing, wants, client_calls and tree_calls in five deploys, the first deferring the last
    four. A function that names a deferred index (the rebalancer, wants) is granted it by the deploy
    adding it."""
    import dataclasses
    step = dataclasses.replace(STAGES["dev"], name="step", mail_from="billing@mail.example.org",
                               portal_url="https://portal.example.org/")
    template, path = synth(step, tmp_path, defer_indexes="core.listing,core.wants,core.client_calls,core.tree_calls")
    core = table(template, "cascade-step-core")
    assert {i["IndexName"] for i in core["GlobalSecondaryIndexes"]} == {"held", "subtree"}
    assert not {"list_pk", "list_sk", "want", "cdr_client", "cdr_tree", "cdr_at"} & {
        a["AttributeName"] for a in core["AttributeDefinitions"]}
    api = _dynamodb_tables(_policy_of(template, "Api"))
    assert "CoreTable/index/listing" not in api and api["CoreTable/index/subtree"] == {"dynamodb:Query"}
    assert "CoreTable/index/wants" not in api
    rebalancer = _dynamodb_tables(_policy_of(template, "Rebalancer"))
    assert set(rebalancer) == {"CoreTable"} and "dynamodb:BatchGetItem" in rebalancer["CoreTable"]
    env = resources(template, "AWS::Serverless::Function")["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert env["CASCADE_MAIL_FROM"] == "billing@mail.example.org"
    assert env["CASCADE_PORTAL_URL"] == "https://portal.example.org/"
    cfn_lint = pathlib.Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bad_settings_are_refused_before_anything_is_packaged(tmp_path):
    import dataclasses
    with pytest.raises(ValueError, match="defer_indexes"):
        synth("dev", tmp_path, defer_indexes="ledger.history")
    named = dataclasses.replace(STAGES["dev"], name="named", mail_from="Cascade <no-reply@example.com>")
    with pytest.raises(ValueError, match="bare e-mail address"):
        synth(named, tmp_path)


def test_the_emf_metrics_the_functions_write_are_alarmed_and_on_the_dashboard(synthesized):
    # the metric names and the service dimension entrypoints/metrics.py writes (namespace Cascade/<stage>)
    template, _ = synthesized["prod"]
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()}
    for name, service, threshold in (("LockOuts", "portal", STAGES["prod"].lockouts_per_5min),
                                     ("HoldRetries", "switch", STAGES["prod"].hold_retries_per_5min)):
        alarm = alarms[f"cascade-prod-{name}"]
        assert (alarm["Namespace"], alarm["MetricName"], alarm["Threshold"]) == ("Cascade/prod", name, threshold)
        assert alarm["Dimensions"] == [{"Name": "service", "Value": service}] and alarm["AlarmActions"]
    body = json.dumps(next(iter(resources(template, "AWS::CloudWatch::Dashboard").values()))["Properties"]["DashboardBody"])
    for metric in ("Grants", "Denials", "HoldRetries", "SignIns", "SignInFailures", "LockOuts", "Payments"):
        assert metric in body, metric


def _s3_grants(statements) -> dict:
    """{action: [object key patterns]} granted on the deck bucket."""
    out = {}
    for s in statements:
        for action in [a for a in _listed(s["Action"]) if a.startswith("s3:")]:
            for target in _listed(s["Resource"]):
                parts = target["Fn::Join"][1] if isinstance(target, dict) and "Fn::Join" in target else [target]
                assert "Decks" in json.dumps(parts), target
                out.setdefault(action, []).append(parts[-1])
    return out


def test_rate_decks_have_a_private_bucket_the_portal_signs_for_and_only_the_importer_reads(synthesized):
    for stage in ("dev", "prod"):
        template, _ = synthesized[stage]
        buckets = resources(template, "AWS::S3::Bucket")
        assert len(buckets) == 1
        props = next(iter(buckets.values()))["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                                           "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
        assert props["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 2
        functions = resources(template, "AWS::Serverless::Function")
        importer = functions["Importer"]["Properties"]
        assert importer["Timeout"] == 900 and importer["MemorySize"] == 1024
        assert "CASCADE_DECK_BUCKET" in importer["Environment"]["Variables"]
        api = functions["APIHandler"]["Properties"]["Environment"]["Variables"]
        assert api["CASCADE_IMPORTER_FUNCTION"] == f"cascade-{stage}-importer" and "CASCADE_DECK_BUCKET" in api
        for name in ("Switch", "Sweeper", "Rebalancer"):
            assert "CASCADE_DECK_BUCKET" not in json.dumps(functions[name]["Properties"].get("Environment", {}))
    template, _ = synthesized["prod"]
    policies = _policies_by_role(template)
    assert _s3_grants(policies["Importer"]) == {"s3:GetObject": ["/imports/*"], "s3:PutObject": ["/exports/*"],
                                                "s3:AbortMultipartUpload": ["/exports/*"]}
    assert _s3_grants(policies["Api"]) == {"s3:PutObject": ["/imports/*", "/exports/*"],
                                           "s3:GetObject": ["/imports/*", "/exports/*"]}
    for role in ("Switch", "Sweeper", "Rebalancer", "Reporter"):
        assert _s3_grants(policies[role]) == {}, role
    invoke = [s for s in policies["Api"] if "lambda:InvokeFunction" in _listed(s["Action"])]
    assert len(invoke) == 1 and "cascade-prod-importer" in json.dumps(invoke[0]["Resource"])
    importer = _dynamodb_tables(policies["Importer"])
    # decks: core itself; CDR exports: the two CDR indexes, nothing else
    assert set(importer) == {"CoreTable", "CoreTable/index/client_calls", "CoreTable/index/tree_calls"}
    assert "dynamodb:Scan" not in importer["CoreTable"]


def test_the_reporter_reads_only_billed_calls_from_the_core_stream_in_order_and_never_bisects(synthesized):
    """report_store's exactly-once marks need a retried batch to start where the failed one did."""
    from infra.stack import REPORTER_FILTER
    template, _ = synthesized["prod"]
    core = resources(template, "AWS::DynamoDB::Table")["CoreTable"]["Properties"]
    assert core["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    (mapping,) = resources(template, "AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["FunctionName"] == "cascade-prod-reporter" and props["EventSourceArn"] == {
        "Fn::GetAtt": ["CoreTable", "StreamArn"]}
    assert (props["BisectBatchOnFunctionError"], props["ParallelizationFactor"], props["MaximumRetryAttempts"]) == \
        (False, 1, -1)
    assert json.loads(props["FilterCriteria"]["Filters"][0]["Pattern"]) == REPORTER_FILTER
    assert any("ReporterRoleDefaultPolicy" in d for d in mapping["DependsOn"])
    # the filter lets through what stream.billed_calls keeps
    from chalicelib.adapters.dynamo.stream import billed_calls
    assert billed_calls([{"dynamodb": {"NewImage": {"kind": {"S": "account"}, "status": {"S": "done"}},
                                       "SequenceNumber": "1"}}]) == []
    reporter = _dynamodb_tables(_policy_of(template, "Reporter"))
    assert set(reporter) == {"CoreTable", "CoreTable/StreamArn"} or set(reporter) >= {"CoreTable"}
    assert not {"dynamodb:Query", "dynamodb:DeleteItem", "dynamodb:Scan"} & reporter["CoreTable"]
    stream_grants = [s for s in _policy_of(template, "Reporter") if "dynamodb:GetRecords" in _listed(s["Action"])]
    assert len(stream_grants) == 1 and "StreamArn" in json.dumps(stream_grants[0]["Resource"])
    alarms = {a["Properties"]["AlarmName"] for a in resources(template, "AWS::CloudWatch::Alarm").values()}
    assert {"cascade-prod-ReporterErrors", "cascade-prod-ReporterIteratorAge"} <= alarms
