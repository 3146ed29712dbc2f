"""One stack per stage: the Chalice app (API Gateway + the switch, sweeper, rebalancer, importer and reporter
Lambdas, the reporter on the core table's stream),
the tables, the rate-deck bucket, the pepper and token-signing secrets, one least-privilege role per
function, alarms and a dashboard."""
import pathlib
import re
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

from aws_cdk import Aws, CfnOutput, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from chalice.cdk import Chalice
from constructs import Construct

from infra.stages import Stage
from infra.tables import model_tables

ROOT = pathlib.Path(__file__).resolve().parent.parent
ALL_INDEXES = "*"     # every index the table's model defines, each named in the policy (no wildcard ARN)
REBALANCE_FAILED = "escrow rebalance tick failed"     # what entrypoints/rebalancer.py logs for a failed tick


class Access(NamedTuple):
    """What a function may do to one table: `actions` on the table itself, and Query on `indexes`
    (names from the model, or ALL_INDEXES)."""
    actions: Tuple[str, ...]
    indexes: object = ()


def union(*accesses: Dict[str, Access]) -> Dict[str, Access]:
    """A function that serves several paths gets the union of their access, table by table."""
    out: Dict[str, Access] = {}
    for access in accesses:
        for table, (actions, indexes) in access.items():
            had = out.get(table, Access(()))
            merged = ALL_INDEXES if ALL_INDEXES in (had.indexes, indexes) else \
                tuple(sorted(set(had.indexes) | set(indexes)))
            out[table] = Access(tuple(sorted(set(had.actions) | set(actions))), merged)
    return out


# DynamoDB actions per function, per table. TransactWriteItems is authorized item by item through
# PutItem / UpdateItem / DeleteItem / ConditionCheckItem, so those are what a transaction needs. No
# function may Scan.
# The switch path (authorize, complete) reads and writes core only: a call's journal entry and its only
# CDR are its call record. It queries nothing.
SWITCH_ACCESS = {
    "core": Access(("dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                    "dynamodb:ConditionCheckItem", "dynamodb:DescribeTable")),
}
# The sweeper reads expired holds from the sparse `held` index and releases them.
SWEEPER_ACCESS = {
    "core": Access(("dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:UpdateItem",
                    "dynamodb:ConditionCheckItem", "dynamodb:DescribeTable"), indexes=("held",)),
}
# The rebalancer finds refill requests on the sparse `wants` index and the escrow registry by Query on
# core itself (ESCOWNERS, ESC#<owner>#<shard>), reads accounts strongly consistent, and moves money in
# transactions (account items updated, registry items put). It deletes registry entries only by
# BatchWriteItem (escrow_store.forget_slots), never by DeleteItem, and reads no single item.
REBALANCER_ACCESS = {
    "core": Access(("dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem",
                    "dynamodb:BatchWriteItem", "dynamodb:DescribeTable"), indexes=("wants",)),
}
# The portal: accounts, sign-in items and keys in core (lists by Query on the subtree and listing
# indexes), journal entries it posts and reads back, the history (journal indexes and core's call indexes).
# Tariffs are written with their rate groups by BatchWriteItem (a new tariff, a deleted one's groups).
PORTAL_ACCESS = {
    "core": Access(("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem", "dynamodb:Query",
                    "dynamodb:BatchWriteItem", "dynamodb:DescribeTable"), indexes=ALL_INDEXES),
    "journal": Access(("dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:ConditionCheckItem",
                       "dynamodb:DescribeTable"), indexes=ALL_INDEXES),
}
# The importer runs the background tasks. A large deck (services.portal_tariffs.run_import): it reads the
# tariff, its import item and its rate groups (by Query on core itself), and writes regions in transactions.
# A CDR export (services.portal_reports.run_cdr_export): it lists calls on the CDR indexes and reads them.
IMPORTER_ACCESS = {
    "core": Access(("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem",
                    "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem",
                    "dynamodb:DescribeTable"), indexes=("client_calls", "tree_calls")),
}
# The report consumer reads the core table's stream (granted on the stream itself, below), reads its run
# marks and writes marks and report rows in transactions.
REPORTER_ACCESS = {
    "core": Access(("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem",
                    "dynamodb:DescribeTable")),
}
# Only the transition of a call item into "done" is a bill; the filter drops every other record of core
# (account updates, holds...) before the function is invoked, so they cost no invocation.
REPORTER_FILTER = {"dynamodb": {"NewImage": {"kind": {"S": ["call"]}, "status": {"S": ["done"]}}}}
# Each function: Chalice's logical id, memory in MB (a Stage attribute name, or a number), timeout in s,
# data access, whether it serves the portal (token key, mail). The REST API (Chalice's APIHandler) serves
# the switch routes, /health and the portal; the switch function (function URL) serves switches only.
FUNCTIONS = {
    "api": ("APIHandler", "api_memory_mb", 10, union(SWITCH_ACCESS, PORTAL_ACCESS), True),
    "switch": ("Switch", "switch_memory_mb", 10, SWITCH_ACCESS, False),
    "sweeper": ("Sweeper", 512, 300, SWEEPER_ACCESS, False),
    # An invocation ticks for 55 s (entrypoints/rebalancer.RUN_FOR); the 15 s beyond are for a last tick
    # that is slow (DynamoDB retries), so it ends in its own run rather than as a timeout.
    "rebalancer": ("Rebalancer", 512, 70, REBALANCER_ACCESS, False),
    # A 100,000-row deck is planned in memory (make bench: deck_import) and written in a few minutes.
    "importer": ("Importer", 1024, 900, IMPORTER_ACCESS, False),
    # A batch of 1,000 calls is a few dozen transactions; the timeout leaves room for throttling retries.
    "reporter": ("Reporter", 512, 300, REPORTER_ACCESS, False),
}
DECK_DAYS = 2        # uploaded decks and large exports are deleted after this many days
# Functions with a fixed number of instances: the rebalancer is the only writer moving money between an
# owner's item and its slots, and it plans each pass assuming no other instance moves the same money.
RESERVED = {"rebalancer": 1}


class CascadeStack(Stack):
    def __init__(self, scope: Construct, stage: Stage, alarm_email: Optional[str] = None,
                 defer_indexes: Sequence[str] = (), **kwargs):
        super().__init__(scope, f"cascade-{stage.name}", **kwargs)
        self.stage = stage
        prefix = f"cascade-{stage.name}-"
        keep = RemovalPolicy.RETAIN if stage.production else RemovalPolicy.DESTROY
        self.tables = model_tables(self, prefix, stage.production, defer_indexes)
        self.deferred = set(defer_indexes)

        # The functions get this name (a literal, not the secret's ARN token) and read the value themselves.
        self.pepper_name = f"cascade/{stage.name}/switch-key-pepper"
        self.pepper = secretsmanager.Secret(
            self, "KeyPepper", secret_name=self.pepper_name,
            description="HMAC pepper for switch API keys (keys are stored only as HMAC-SHA256 under it)",
            generate_secret_string=secretsmanager.SecretStringGenerator(password_length=48,
                                                                        exclude_punctuation=True),
            removal_policy=keep)
        # The portal's access-token signing key. A generated value is one bare key (no ':' or ','), which
        # the tokens adapter reads as key id "k1"; rotation writes `kid:key,...` (docs/deploy.md).
        self.token_key_name = f"cascade/{stage.name}/token-signing-key"
        self.token_key = secretsmanager.Secret(
            self, "TokenSigningKey", secret_name=self.token_key_name,
            description="HS256 key(s) for portal access tokens: one bare key, or kid:key[,kid:key] (first signs)",
            generate_secret_string=secretsmanager.SecretStringGenerator(password_length=64,
                                                                        exclude_punctuation=True),
            removal_policy=keep)
        self.mail_from = stage.sender
        if not re.fullmatch(r"[^@<>\s,]+@[^@<>\s,]+\.[^@<>\s,]+", self.mail_from):
            # ses:FromAddress is the bare address: a display name ("Cascade <...>") would never match it.
            raise ValueError(f"stage {stage.name}: mail_from must be a bare e-mail address, not {self.mail_from!r}")

        # Rate decks: uploads (presigned POST) and exports too large for an answer (presigned GET).
        self.decks = s3.Bucket(
            self, "Decks", block_public_access=s3.BlockPublicAccess.BLOCK_ALL, enforce_ssl=True,
            encryption=s3.BucketEncryption.S3_MANAGED, versioned=False,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(DECK_DAYS))],
            removal_policy=keep)
        names = {fn: f"{prefix}{fn}" for fn in FUNCTIONS}
        self.log_groups, self.roles = {}, {}
        for fn, (_, _, _, access, portal) in FUNCTIONS.items():
            self.log_groups[fn] = logs.LogGroup(self, f"{fn.capitalize()}Logs", log_group_name=f"/aws/lambda/{names[fn]}",
                                                retention=logs.RetentionDays[stage.log_retention], removal_policy=keep)
            self.roles[fn] = self._role(fn, access, self.log_groups[fn], portal)

        self.app = Chalice(self, "App", source_dir=str(ROOT), stage_config={
            "api_gateway_stage": "api",
            "environment_variables": {
                "CASCADE_TABLE_PREFIX": prefix,
                "CASCADE_KEY_PEPPER_SECRET": self.pepper_name,
                # EMF metrics (entrypoints/metrics.py) land next to the log metric filters' metrics.
                "CASCADE_METRICS_NAMESPACE": f"Cascade/{stage.name}",
                "POWERTOOLS_SERVICE_NAME": "cascade",
                "POWERTOOLS_LOG_LEVEL": "INFO",
            },
            "manage_iam_role": False,
            "iam_role_arn": self.roles["api"].role_arn,
            "lambda_timeout": 10,
            **({"api_gateway_custom_domain": {"domain_name": stage.api_domain,
                                              "certificate_arn": stage.api_certificate_arn}}
               if stage.api_domain else {}),
        })
        # Chalice reads per-function settings only from .chalice/config.json's own stages, so each
        # function's role, memory and timeout are set on the packaged resources instead.
        for fn, (logical, memory, timeout, _, portal) in FUNCTIONS.items():
            function = self.app.get_resource(logical)
            function.add_property_override("FunctionName", names[fn])
            function.add_property_override("Role", self.roles[fn].role_arn)
            function.add_property_override("MemorySize", getattr(stage, memory) if isinstance(memory, str) else memory)
            function.add_property_override("Timeout", timeout)
            # Pure-Python dependencies only (pynamodb, powertools): Graviton is cheaper per GB-second.
            function.add_property_override("Architectures", ["arm64"])
            function.add_resource_dependency(self.log_groups[fn].node.default_child)   # retention set before logs
            if portal:
                # Only the portal's function gets these (Chalice's environment_variables go to every function).
                for key, value in self._portal_environment().items():
                    function.add_property_override(f"Environment.Variables.{key}", value)
                function.add_property_override("Environment.Variables.CASCADE_IMPORTER_FUNCTION", names["importer"])
            if fn in ("api", "importer"):
                function.add_property_override("Environment.Variables.CASCADE_DECK_BUCKET", self.decks.bucket_name)
        for fn, reserved in RESERVED.items():
            self.app.get_resource(FUNCTIONS[fn][0]).add_property_override("ReservedConcurrentExecutions", reserved)
        rebalancer = self.app.get_resource(FUNCTIONS["rebalancer"][0])
        # A schedule event that finds the one instance still busy is throttled, and Lambda would queue it
        # and retry it (like a failed run) for up to 6 hours; the next minute's event starts a fresh run
        # anyway, so stale events are dropped instead of piling up behind it.
        rebalancer.add_property_override("EventInvokeConfig", {"MaximumEventAgeInSeconds": 60,
                                                               "MaximumRetryAttempts": 0})
        switch = self.app.get_resource("Switch")
        # SAM publishes a version per deploy behind the alias `live`; the function URL points at the
        # alias, so warm (provisioned) instances serve switches and a deploy swaps them atomically.
        switch.add_property_override("AutoPublishAlias", "live")
        switch.add_property_override("FunctionUrlConfig", {"AuthType": "NONE"})   # X-Api-Key is checked in the app
        if stage.switch_provisioned:
            switch.add_property_override("ProvisionedConcurrencyConfig",
                                         {"ProvisionedConcurrentExecutions": stage.switch_provisioned})

        self.alarm_topic = sns.Topic(self, "Alarms", topic_name=f"{prefix}alarms")
        if alarm_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        self._report_stream(names)
        self._alarms_and_dashboard(names)

        CfnOutput(self, "SwitchUrl", value=Fn.get_att("SwitchUrl", "FunctionUrl").to_string(),
                  description="Base URL for switches (CASCADE_URL, without the trailing /)")
        CfnOutput(self, "ApiUrl", value=Fn.sub("https://${RestAPI}.execute-api.${AWS::Region}.${AWS::URLSuffix}/api/"),
                  description="The REST API (the switch routes, /health and the portal)")
        CfnOutput(self, "PepperSecretName", value=self.pepper_name)
        CfnOutput(self, "TokenKeySecretName", value=self.token_key_name)
        CfnOutput(self, "MailFrom", value=self.mail_from,
                  description="Portal e-mail sender: verify it (or its domain) in SES in this region")
        CfnOutput(self, "AlarmTopicArn", value=self.alarm_topic.topic_arn)
        CfnOutput(self, "DeckBucket", value=self.decks.bucket_name,
                  description="Rate decks: uploads and large exports, deleted after 2 days")

    def _report_stream(self, names: dict) -> None:
        """The reporter reads the core table's stream: batches of up to 1,000 billed calls, in shard order,
        never bisected (a retried batch must start where the failed one did: report_store's marks rely on
        it), retried until the records expire (24 h; ReporterIteratorAge alarms long before)."""
        import json
        from aws_cdk import aws_lambda as lambda_
        core = self.tables["core"]
        self.roles["reporter"].add_to_policy(iam.PolicyStatement(
            actions=["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator",
                     "dynamodb:ListStreams"],
            resources=[core.attr_stream_arn]))
        mapping = lambda_.CfnEventSourceMapping(
            self, "ReporterStream", function_name=names["reporter"], event_source_arn=core.attr_stream_arn,
            starting_position="TRIM_HORIZON", batch_size=1000, maximum_batching_window_in_seconds=1,
            bisect_batch_on_function_error=False, maximum_retry_attempts=-1, parallelization_factor=1,
            filter_criteria=lambda_.CfnEventSourceMapping.FilterCriteriaProperty(filters=[
                lambda_.CfnEventSourceMapping.FilterProperty(pattern=json.dumps(REPORTER_FILTER))]))
        mapping.add_dependency(self.app.get_resource(FUNCTIONS["reporter"][0]))
        # Lambda checks the role may read the stream when the mapping is created: the policy comes first.
        mapping.add_dependency(self.roles["reporter"].node.find_child("DefaultPolicy").node.default_child)

    def _portal_environment(self) -> dict:
        env = {"CASCADE_TOKEN_KEY_SECRET": self.token_key_name, "CASCADE_MAIL_FROM": self.mail_from}
        if self.stage.portal_link_base:
            env["CASCADE_PORTAL_URL"] = self.stage.portal_link_base
        return env

    def _role(self, fn: str, access: Dict[str, Access], log_group: logs.LogGroup, portal: bool) -> iam.Role:
        role = iam.Role(self, f"{fn.capitalize()}Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                        description=f"cascade {self.stage.name} {fn} function: only what it uses")
        for logical, (actions, indexes) in access.items():
            if "dynamodb:Scan" in actions:
                raise ValueError(f"{fn}: no function may Scan ({logical})")
            table = self.tables[logical]
            defined = [index.index_name for index in table.global_secondary_indexes or []]
            chosen = defined if indexes == ALL_INDEXES else list(indexes)
            # An index left out of this deploy (defer_indexes) is granted by the deploy that adds it;
            # until then the function's queries on it fail, as they would without the grant.
            deferred = {name for name in chosen if f"{logical}.{name}" in self.deferred}
            unknown = set(chosen) - set(defined) - deferred
            if unknown:
                raise ValueError(f"{fn}: {logical} has no index {sorted(unknown)} (models.py)")
            chosen = [name for name in chosen if name not in deferred]
            role.add_to_policy(iam.PolicyStatement(actions=list(actions), resources=[table.attr_arn]))
            if chosen:
                role.add_to_policy(iam.PolicyStatement(
                    actions=["dynamodb:Query"],
                    resources=[f"{table.attr_arn}/index/{name}" for name in chosen]))
        role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[log_group.log_group_arn]))
        self.pepper.grant_read(role)
        if fn == "importer":
            role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"],
                                                   resources=[self.decks.arn_for_objects("imports/*")]))
            # CDR exports are uploaded in parts as they are written.
            role.add_to_policy(iam.PolicyStatement(actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                                                   resources=[self.decks.arn_for_objects("exports/*")]))
        if portal:
            # Presigned uploads are signed by this role (PutObject on imports/), it checks an upload is
            # there (HeadObject needs GetObject), writes large exports and signs their download URLs.
            role.add_to_policy(iam.PolicyStatement(
                actions=["s3:PutObject", "s3:GetObject"],
                resources=[self.decks.arn_for_objects("imports/*"), self.decks.arn_for_objects("exports/*")]))
            role.add_to_policy(iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[f"arn:{Aws.PARTITION}:lambda:{Aws.REGION}:{Aws.ACCOUNT_ID}:function:"
                           f"cascade-{self.stage.name}-importer"]))
            role.add_to_policy(iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"],
                                                   resources=[self.token_key.secret_arn]))
            # SES authorizes a send against the sender's identity and, in the sandbox, the recipients'
            # identities too, so the resource is this account's identities in this region and the
            # condition pins the From address.
            role.add_to_policy(iam.PolicyStatement(
                actions=["ses:SendEmail", "ses:SendRawEmail"],
                resources=[f"arn:{Aws.PARTITION}:ses:{Aws.REGION}:{Aws.ACCOUNT_ID}:identity/*"],
                conditions={"StringEquals": {"ses:FromAddress": self.mail_from}}))
        return role

    def _switch_event_metrics(self) -> dict:
        """Metrics counted from the switch path's JSON log lines (the `event` field the services log),
        on both functions that serve the switch routes. Log metric filters keep the switch Lambda's
        imports as they are (no metrics library) and cost nothing per request."""
        namespace = f"Cascade/{self.stage.name}"
        # metric name -> (filter pattern, value): money as whole micro-units, never a float
        filters = {
            "LateCompletions": ('{ $.event = "late_completion" }', "1"),
            "LateBelowFloorMicros": ('{ $.event = "late_completion" && $.below_floor_micros > 0 }',
                                     "$.below_floor_micros"),
            "CompletionConflicts": ('{ $.event = "completion_conflict" }', "1"),
            "CallIdReuses": ('{ $.event = "call_id_reused" }', "1"),
        }
        metrics = {}
        for metric_name, (pattern, value) in filters.items():
            for fn in ("switch", "api"):
                logs.MetricFilter(self, f"{fn.capitalize()}{metric_name}Filter", log_group=self.log_groups[fn],
                                  metric_namespace=namespace, metric_name=metric_name, metric_value=value,
                                  filter_pattern=logs.FilterPattern.literal(pattern), default_value=None)
            metrics[metric_name] = cloudwatch.Metric(namespace=namespace, metric_name=metric_name, statistic="Sum",
                                                     period=Duration.minutes(5))
        return metrics

    def _emf_metrics(self) -> dict:
        """Metrics the functions write as EMF log lines (entrypoints/metrics.py), dimension ``service``."""
        namespace = f"Cascade/{self.stage.name}"
        services = {"Grants": "switch", "HoldRetries": "switch", "SignIns": "portal", "SignInFailures": "portal",
                    "LockOuts": "portal", "Payments": "portal"}
        return {name: cloudwatch.Metric(namespace=namespace, metric_name=name, statistic="Sum",
                                        dimensions_map={"service": service}, period=Duration.minutes(5))
                for name, service in services.items()}

    def _rebalance_failures_alarm(self, action) -> cloudwatch.Alarm:
        """The rebalancer logs a failed tick and goes on (the next tick reads everything afresh), so its
        Errors metric stays at zero while every tick fails (a denied action, a broken item). A tick may
        fail now and then (a transaction conflict with calls); failing in each of five minutes running
        is the rebalancer being down."""
        namespace = f"Cascade/{self.stage.name}"
        # The message as a phrase, not a JSON field: it matches whichever handler formats the line.
        logs.MetricFilter(self, "RebalanceFailuresFilter", log_group=self.log_groups["rebalancer"],
                          metric_namespace=namespace, metric_name="RebalanceFailures", metric_value="1",
                          filter_pattern=logs.FilterPattern.literal(f'"{REBALANCE_FAILED}"'), default_value=None)
        metric = cloudwatch.Metric(namespace=namespace, metric_name="RebalanceFailures", statistic="Sum",
                                   period=Duration.minutes(1))
        alarm = cloudwatch.Alarm(
            self, "RebalanceFailures", metric=metric, threshold=1, evaluation_periods=5, datapoints_to_alarm=5,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_name=f"cascade-{self.stage.name}-RebalanceFailures",
            alarm_description="escrow rebalance ticks failing for 5 minutes running: slots are not refilled "
                              "or recalled, calls fall back to the owners' own items (see the rebalancer's log)")
        alarm.add_alarm_action(action)
        return alarm

    def _alarms_and_dashboard(self, names: dict) -> None:
        def fn_metric(fn, metric, statistic="Sum"):
            return cloudwatch.Metric(namespace="AWS/Lambda", metric_name=metric, statistic=statistic,
                                     dimensions_map={"FunctionName": names[fn]}, period=Duration.minutes(5))

        def table_metric(logical, metric, operation=None):
            # Throttle events and conflicts are published per table; SystemErrors per table and operation.
            dimensions = {"TableName": self.tables[logical].table_name}
            if operation:
                dimensions["Operation"] = operation
            return cloudwatch.Metric(namespace="AWS/DynamoDB", metric_name=metric, statistic="Sum",
                                     dimensions_map=dimensions, period=Duration.minutes(5))

        action = cloudwatch_actions.SnsAction(self.alarm_topic)
        events = self._switch_event_metrics()
        specs = [
            ("SwitchErrors", fn_metric("switch", "Errors"), 1, "the switch function raised (authorize/complete failed closed)"),
            ("SwitchThrottles", fn_metric("switch", "Throttles"), 1, "switch requests throttled: raise concurrency"),
            ("SwitchP99", fn_metric("switch", "Duration", "p99"), self.stage.authorize_p99_ms,
             f"switch p99 above {self.stage.authorize_p99_ms} ms"),
            ("ApiErrors", fn_metric("api", "Errors"), 1, "the REST API function (switch routes, portal) raised"),
            ("SweeperErrors", fn_metric("sweeper", "Errors"), 1, "expired holds are not being released"),
            ("RebalancerErrors", fn_metric("rebalancer", "Errors"), 1,
             "escrow is not being refilled or recalled: calls fall back to the owners' own items"),
            ("ImporterErrors", fn_metric("importer", "Errors"), 1,
             "a rate-deck import crashed (Lambda retries it twice; its import stays in 'applying')"),
            ("ReporterErrors", fn_metric("reporter", "Errors"), 1,
             "the report consumer failed a batch (it is retried from the same record; reports lag meanwhile)"),
            ("ReporterIteratorAge", fn_metric("reporter", "IteratorAge", "Maximum"), 15 * 60 * 1000,
             "reports lag the calls by more than 15 minutes (the stream keeps records 24 h)"),
        ]
        for logical in self.tables:
            name = logical.capitalize()
            specs += [
                (f"{name}ReadThrottles", table_metric(logical, "ReadThrottleEvents"), 1, f"{logical}: reads throttled"),
                (f"{name}WriteThrottles", table_metric(logical, "WriteThrottleEvents"), 1, f"{logical}: writes throttled"),
                (f"{name}TransactionConflicts", table_metric(logical, "TransactionConflict"),
                 self.stage.conflicts_per_5min, f"{logical}: transactions cancelled by conflicts (a hot reseller item?)"),
            ]
        specs += [(f"Core{op}SystemErrors", table_metric("core", "SystemErrors", op), 1, f"core: DynamoDB errors on {op}")
                  for op in ("BatchGetItem", "TransactWriteItems")]
        specs += [
            ("LateCompletions", events["LateCompletions"], self.stage.late_completions_per_5min,
             "completions arrived after their holds were swept (a switch reported late: outage, lost spool?)"),
            ("LateBelowFloor", events["LateBelowFloorMicros"], 1,
             "a late completion took an account below its floor (micro-units of currency); it is blocked until paid"),
            ("CompletionConflicts", events["CompletionConflicts"], 1,
             "a switch reported a call again with another billsec or disposition"),
            ("CallIdReuses", events["CallIdReuses"], self.stage.call_id_reuses_per_5min,
             "authorize requests reused a call id of another request (replays, or a switch sending caller-chosen ids)"),
        ]
        emf = self._emf_metrics()
        specs += [
            ("LockOuts", emf["LockOuts"], self.stage.lockouts_per_5min,
             "portal sign-ins refused because a login or an address is locked (password guessing?)"),
            ("HoldRetries", emf["HoldRetries"], self.stage.hold_retries_per_5min,
             "holds refused and re-decided because funds or limits moved meanwhile (a hot reseller item?)"),
        ]
        alarms = []
        for name, metric, threshold, description in specs:
            alarm = cloudwatch.Alarm(
                self, name, metric=metric, threshold=threshold, evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_name=f"cascade-{self.stage.name}-{name}", alarm_description=description)
            alarm.add_alarm_action(action)
            alarms.append(alarm)
        alarms.append(self._rebalance_failures_alarm(action))

        dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=f"cascade-{self.stage.name}")
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Switch requests and errors",
                                   left=[fn_metric("switch", "Invocations"), fn_metric("switch", "Errors")]),
            cloudwatch.GraphWidget(title="Switch duration (ms)",
                                   left=[fn_metric("switch", "Duration", s) for s in ("p50", "p99")]),
            cloudwatch.GraphWidget(title="Concurrency and throttles",
                                   left=[fn_metric("switch", "ConcurrentExecutions", "Maximum"),
                                         fn_metric("switch", "Throttles")]),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Late completions, conflicts, reused call ids",
                                   left=[events[m] for m in ("LateCompletions", "CompletionConflicts", "CallIdReuses")]),
            cloudwatch.GraphWidget(title="Money taken below floors by late completions (micro-units)",
                                   left=[events["LateBelowFloorMicros"]]),
        )
        namespace = f"Cascade/{self.stage.name}"
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Authorizations: grants, denials by reason, hold retries",
                                   left=[emf["Grants"], emf["HoldRetries"],
                                         cloudwatch.MathExpression(
                                             expression=f"SEARCH('{{{namespace},reason,service}} MetricName=\"Denials\"', 'Sum', 300)",
                                             label="Denials", period=Duration.minutes(5))]),
            cloudwatch.GraphWidget(title="Portal: sign-ins, failures, lock-outs, payments",
                                   left=[emf[m] for m in ("SignIns", "SignInFailures", "LockOuts", "Payments")]),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="DynamoDB conflicts and throttles",
                                   left=[table_metric(t, m) for t in self.tables
                                         for m in ("TransactionConflict", "WriteThrottleEvents")]),
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=alarms),
        )
