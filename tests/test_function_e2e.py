"""The deployed function, end to end, on this machine: the real entry point served by
functions-framework, the real Baltimore table in a BigQuery emulator, artifacts in
fake-gcs-server, CloudEvents posted over HTTP and messages published to the official Pub/Sub
emulator and pushed by a push subscription, as terraform/triggers.tf deploys it, and every
result read back through the unmodified Google clients. Faults the emulators never produce (a
lost response, a rate limit, a refused write) come from tests.emulators.FaultProxy.

One function server serves most tests; every test measures what it needs (history rows, the
clusters table, latest/) just before its own event and compares just after, so the tests do not
depend on their order. Tests that need another configuration (a missing bucket, a bucket that
fails mid-run) start their own server.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from google.cloud import bigquery, storage

from clustering.adapters.claims import LOCK_KEY, Claim
from clustering.analysis.assign import BORDERLINE_MARGIN
from clustering.analysis.transitions import columns
from clustering.cloud.logs import OUTCOMES, Outcome
from clustering.cloud.sender import bigquery_log_entry, pubsub_event, table_change_event
from clustering.settings import DEFAULT_CLUSTERING_FEATURES
from clustering.table import CLUSTER_COLUMNS, table_schema
from tests import emulators
from tests.helpers import (
    ARTIFACTS,
    CITY_FEATURES,
    CITY_KEY,
    CITY_POPULATION,
    CITY_SETTINGS,
    MANIFEST,
    REPO,
    city_table,
    move_rows,
    real_table,
    terraform_clusters_schema,
)
from tests.test_handler import FailingLoadJobs

CSV_TRANSITIONS = "neighborhood_cluster_transitions.csv"

pytestmark = pytest.mark.e2e

PROJECT = emulators.DEFAULT_PROJECT
DATASET = "analytics"
FEATURES = f"{PROJECT}.{DATASET}.neighborhood_features"
CLUSTERS = f"{PROJECT}.{DATASET}.neighborhood_clusters"
RUNS = f"{PROJECT}.{DATASET}.cluster_runs"
TRANSITIONS = f"{PROJECT}.{DATASET}.neighborhood_cluster_transitions"
SERVICE_ACCOUNT = f"recluster@{PROJECT}.iam.gserviceaccount.com"
PREFIX = "e2e"
MAIN = REPO / "main.py"

# Bounds on waits, never expectations: a run of 279 rows takes 2-4 s (10 s when cold).
RESPONSE_TIMEOUT_S = 180.0
LOG_DEADLINE_S = 120.0
# A storage outage is waited out by the storage client for the run's remaining budget (the
# timeout below minus the handler's margin), then the release for a few seconds more.
OUTAGE_RESPONSE_TIMEOUT_S = 240.0
# The function timeout the tests configure, as Terraform passes it: the run's budget.
FUNCTION_TIMEOUT_S = 120


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(
    check: Callable[[], object],
    what: str,
    deadline_s: float = LOG_DEADLINE_S,
    interval_s: float = 0.05,
):
    """Poll check() until it returns something truthy, which is returned; fail past the bound."""
    deadline = time.monotonic() + deadline_s
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {deadline_s:.0f} s")
        time.sleep(interval_s)
    return result


# --- What the function says and does --------------------------------------------------------


def parse_log(text: str) -> tuple[list[dict], list[str]]:
    """(JSON entries, other lines) of function output."""
    entries, others = [], []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            entries.append(entry)
        elif line.strip():
            others.append(line)
    return entries, others


@dataclass
class Delivery:
    """One POST of a CloudEvent: the HTTP answer and the log entries written meanwhile."""

    status: int
    body: str
    entries: list[dict]

    @property
    def acked(self) -> bool:
        return 200 <= self.status < 300

    @property
    def answer(self) -> dict:
        """The function's JSON decision: event, action, reason, run_id."""
        return json.loads(self.body)

    def messages(self, severity: str | None = None) -> list[str]:
        return [e["message"] for e in self.entries if severity is None or e["severity"] == severity]

    def one(self, start: str) -> dict:
        found = [e for e in self.entries if e["message"].startswith(start)]
        assert len(found) == 1, f"expected one log entry starting {start!r}, got {self.entries}"
        return found[0]


@dataclass
class Function:
    """A functions-framework server running main.py's `recluster`."""

    server: emulators.FunctionServer

    def log_size(self) -> int:
        return self.server.log_path.stat().st_size if self.server.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        with self.server.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def post(self, event: dict, timeout: float = RESPONSE_TIMEOUT_S) -> Delivery:
        """POST in structured mode (as clustering.cloud.sender.post_event does, but without any
        proxy from the environment) and collect the log lines the request produced."""
        offset = self.log_size()
        request = urllib.request.Request(
            self.server.url,
            data=json.dumps(event).encode(),
            headers={"Content-Type": "application/cloudevents+json"},
            method="POST",
        )
        try:
            with emulators.LOCAL_HTTP.open(request, timeout=timeout) as response:
                status, body = response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read().decode(errors="replace")
        # Requests are handled one at a time here, so what was appended is this event's.
        return Delivery(status, body, parse_log(self.log_since(offset))[0])


# The push subscription of the log sink's own topic (triggers.tf), which the function takes
# table changes from; the sink_topic fixture creates it on the Pub/Sub emulator.
SINK_PUSH = unique("neighborhood-clusters-table-changes-push")
TABLE_CHANGES_SUBSCRIPTION = f"projects/{emulators.DEFAULT_PROJECT}/subscriptions/{SINK_PUSH}"


def function_env(bigquery_emulator, storage_endpoint: str, artifacts: str) -> dict[str, str]:
    """The function's configuration, as Terraform sets it, pointed at the emulators."""
    return {
        "FEATURES_SOURCE": f"bq://{FEATURES}",
        "ARTIFACTS_DEST": artifacts,
        "CLUSTERS_TABLE": f"bq://{CLUSTERS}",
        "RUNS_TABLE": f"bq://{RUNS}",
        "TRANSITIONS_TABLE": f"bq://{TRANSITIONS}",
        "FUNCTION_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
        "TABLE_CHANGES_SUBSCRIPTION": TABLE_CHANGES_SUBSCRIPTION,
        "FUNCTION_TIMEOUT_SECONDS": str(FUNCTION_TIMEOUT_S),
        # The tests load the features table and trigger at once; settling (SETTLE_SECONDS) is
        # tested on its own in tests/test_hardening.py.
        "SETTLE_SECONDS": "0",
        "BIGQUERY_EMULATOR_HOST": bigquery_emulator.endpoint,
        "STORAGE_EMULATOR_HOST": storage_endpoint,
    }


@contextlib.contextmanager
def serve(env: dict[str, str], log_path: Path) -> Iterator[Function]:
    with emulators.functions_framework_server(MAIN, env=env, log_path=log_path) as server:
        yield Function(server)


# --- What is in BigQuery and Cloud Storage ---------------------------------------------------


def load_features(bq: bigquery.Client, frame: pd.DataFrame) -> None:
    """Replace the features table with a CSV load job, as an analyst would (no labels: not
    ours), with an explicit schema: neighborhood STRING, population INTEGER, the rest FLOAT."""
    types = {"neighborhood": "STRING", "population": "INTEGER"}
    config = bigquery.LoadJobConfig(
        schema=[bigquery.SchemaField(c, types.get(c, "FLOAT")) for c in frame.columns],
        source_format=bigquery.SourceFormat.CSV,
        skip_leading_rows=1,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
    )
    csv = io.BytesIO(frame.to_csv(index=False).encode())
    bq.load_table_from_file(csv, FEATURES, job_config=config).result()


def history(bq: bigquery.Client) -> list[dict]:
    return [dict(row) for row in bq.list_rows(RUNS)]


def rows_of(bq: bigquery.Client, event_id: str) -> list[dict]:
    return [row for row in history(bq) if row["event_id"] == event_id]


@dataclass(frozen=True)
class TableState:
    schema: tuple[tuple[str, str], ...]
    rows: tuple[tuple, ...]


def clusters_state(bq: bigquery.Client) -> TableState:
    # Names and types only: local-bigquery drops REQUIRED modes on loads (test_emulators.py).
    table = bq.get_table(CLUSTERS)
    rows = sorted(tuple(row.values()) for row in bq.list_rows(table))
    return TableState(tuple((f.name, f.field_type) for f in table.schema), tuple(rows))


@dataclass(frozen=True)
class Stored:
    sha256: str
    content_type: str
    generation: int
    content: bytes = field(repr=False, compare=False)


def objects(gcs: storage.Client, bucket: str, prefix: str) -> dict[str, Stored]:
    """Every object under gs://bucket/prefix, by name relative to the prefix."""
    found = {}
    for blob in gcs.list_blobs(bucket, prefix=prefix):
        content = blob.download_as_bytes()
        found[blob.name[len(prefix) :]] = Stored(
            hashlib.sha256(content).hexdigest(), blob.content_type, blob.generation, content
        )
    return found


def names(gcs: storage.Client, bucket: str, prefix: str) -> set[str]:
    """Names of the objects under gs://bucket/prefix, relative to the prefix."""
    return {blob.name[len(prefix) :] for blob in gcs.list_blobs(bucket, prefix=prefix)}


@dataclass(frozen=True)
class Published:
    """Everything a run may change, to compare before and after an event."""

    history_rows: int
    table: TableState
    latest: dict[str, Stored]
    runs: frozenset[str]
    claims: frozenset[str]


def latest_run_id(state: Published) -> str | None:
    pointer = state.latest.get(MANIFEST)
    return json.loads(pointer.content)["run_id"] if pointer else None


def assert_table_and_latest_agree(state: Published) -> None:
    """After every completed event the table holds the run latest/ points to, whose folder
    is complete: readers of either see the same run."""
    run_id = latest_run_id(state)
    assert {row[-2] for row in state.table.rows} == {run_id}  # the run_id column
    assert run_id in state.runs
    # Beside the pointer, copies of exactly that run's files.
    files = json.loads(state.latest[MANIFEST].content)["outputs"]["files"]
    assert set(state.latest) == set(files)


def published(bq: bigquery.Client, gcs: storage.Client, bucket: str) -> Published:
    return Published(
        history_rows=len(history(bq)),
        table=clusters_state(bq),
        latest=objects(gcs, bucket, f"{PREFIX}/latest/"),
        runs=frozenset(name.split("/")[0] for name in names(gcs, bucket, f"{PREFIX}/runs/")),
        claims=frozenset(names(gcs, bucket, f"{PREFIX}/claims/")),
    )


def create_outputs(
    bq: bigquery.Client, features: str, tables: tuple[str, str, str], key: str, population: str
) -> None:
    """The clusters, runs and transitions tables as Terraform creates them: the clusters table
    with the features table's columns, the placeholders filled with the key and population."""
    own = [f.to_api_repr() for f in bq.get_table(features).schema]
    for table_id, fields in zip(
        tables,
        (
            terraform_clusters_schema(own, key, population, boundaries=False),
            table_schema("runs_table"),
            table_schema("transitions_table", key, population),
        ),
        strict=True,
    ):
        schema = [bigquery.SchemaField.from_api_repr(f) for f in fields]
        bq.create_table(bigquery.Table(table_id, schema=schema))


# --- Fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bq(bigquery_emulator) -> Iterator[bigquery.Client]:
    client = emulators.bigquery_client(bigquery_emulator)
    yield client
    client.close()


@pytest.fixture(scope="module")
def gcs(gcs_emulator) -> Iterator[storage.Client]:
    client = emulators.storage_client(gcs_emulator)
    yield client
    client.close()


@pytest.fixture(scope="module")
def cloud(bq, gcs) -> Iterator[str]:
    """The dataset as Terraform leaves it (both tables created from the code's schema files),
    the real features loaded, and an empty artifacts bucket, whose name is yielded."""
    bq.delete_dataset(f"{PROJECT}.{DATASET}", delete_contents=True, not_found_ok=True)
    bq.create_dataset(f"{PROJECT}.{DATASET}")
    load_features(bq, real_table())
    create_outputs(bq, FEATURES, (CLUSTERS, RUNS, TRANSITIONS), "neighborhood", "population")
    bucket = gcs.create_bucket(unique("artifacts"))
    yield bucket.name
    bq.delete_dataset(f"{PROJECT}.{DATASET}", delete_contents=True, not_found_ok=True)


@pytest.fixture(scope="module")
def function(cloud, bigquery_emulator, gcs_emulator, tmp_path_factory) -> Iterator[Function]:
    env = function_env(bigquery_emulator, gcs_emulator.endpoint, f"gs://{cloud}/{PREFIX}")
    log_path = tmp_path_factory.mktemp("function") / "functions-framework.log"
    with serve(env, log_path) as server:
        yield server


@pytest.fixture
def restore_features(bq) -> Iterator[None]:
    """Put the real features table back after a test that loads bad data."""
    yield
    load_features(bq, real_table())


@dataclass(frozen=True)
class FirstRun:
    event: dict
    delivery: Delivery
    history_row: dict
    table: TableState
    table_frame: pd.DataFrame
    run_objects: dict[str, Stored]
    latest: dict[str, Stored]


@pytest.fixture(scope="module")
def first_run(function, bq, gcs, cloud) -> FirstRun:
    """A manual publish on the freshly deployed function, and what it published."""
    event = pubsub_event({"reason": "e2e first run"})
    delivery = function.post(event)
    assert delivery.acked, (delivery.status, delivery.body, delivery.entries)
    rows = rows_of(bq, event["id"])
    assert len(rows) == 1, rows
    run_id = rows[0]["run_id"]
    frame = pd.DataFrame([dict(row) for row in bq.list_rows(CLUSTERS)])
    return FirstRun(
        event=event,
        delivery=delivery,
        history_row=rows[0],
        table=clusters_state(bq),
        table_frame=frame,
        run_objects=objects(gcs, cloud, f"{PREFIX}/runs/{run_id}/"),
        latest=objects(gcs, cloud, f"{PREFIX}/latest/"),
    )


# --- A manual publish ------------------------------------------------------------------------


def test_a_manual_publish_replaces_the_clusters_table_with_the_declared_schema(first_run, bq):
    assert first_run.delivery.acked
    features = {f.name: f.field_type for f in bq.get_table(FEATURES).schema}
    declared = {f["name"]: f["type"] for f in table_schema("clusters_table")}
    # The rule (DESIGN.md): every features column in its order, then the cluster columns; the
    # features keep their type (the real table has 8 of the 15 default features), the key, the
    # population and the cluster columns have the declared one. Terraform created the table
    # with the same columns (tests.helpers.terraform_clusters_schema).
    expected = [*features, *CLUSTER_COLUMNS]
    assert len(expected) == 22
    assert first_run.table.schema == tuple(
        (name, declared.get(name) or features[name]) for name in expected
    )

    frame = first_run.table_frame
    real = real_table()
    assert len(frame) == 279 == len(real)
    assert frame["neighborhood"].is_unique
    assert set(frame["neighborhood"]) == set(real["neighborhood"])
    # Every features column is copied as it was read.
    merged = frame.merge(real, on="neighborhood", suffixes=("", "_input"))
    for column in list(features)[1:]:
        pd.testing.assert_series_equal(
            merged[column], merged[f"{column}_input"], check_names=False, check_dtype=False
        )
    # The notebook lost Harbor Point; the product keeps every row.
    harbor_point = frame.set_index("neighborhood").loc["Harbor Point"]
    assert harbor_point["excluded_type"] == "Institutional/Industrial"
    assert harbor_point["top_cluster"] == -1 and harbor_point["sub_cluster"] == -1

    row = first_run.history_row
    assert frame["run_id"].unique().tolist() == [row["run_id"]]
    assert frame["_clustered_at"].unique().tolist() == [pd.Timestamp(row["started_at"])]
    types = frame["excluded_type"].value_counts()
    assert types["Residential"] == row["residential_rows"]
    assert types.drop("Residential").sum() == row["excluded_rows"]
    residential = frame[frame["excluded_type"] == "Residential"]
    assert set(residential["top_cluster_label"]) == {"Stable", "Distressed"}
    assert residential["excluded_cluster"].isna().all()
    # Cohorts are named and scored; excluded rows keep their group name and have no score.
    assert residential["cohort_name"].str.match(r"^(Stable|Distressed): \S").all()
    assert residential["cohort_stability"].between(0, 1).all()
    excluded = frame[frame["excluded_type"] != "Residential"]
    assert (excluded["cohort_name"] == excluded["cluster_label"]).all()
    assert excluded["cohort_stability"].isna().all()
    # Each residential row's fit and runner-up; none for excluded rows.
    assert residential["fit_margin"].between(-1, 1).all()
    assert (residential["runner_up_cluster"] != residential["sub_cluster"]).all()
    assert residential["runner_up_name"].notna().all()
    assert excluded[["fit_margin", "runner_up_cluster", "runner_up_name"]].isna().all().all()


def test_a_manual_publish_appends_its_run_to_the_history(first_run, cloud):
    row = first_run.history_row
    real = real_table()
    run_id = row["run_id"]
    assert row["status"] == "succeeded" and row["error"] is None
    assert row["trigger"] == "pubsub"
    assert row["event_id"] == first_run.event["id"]
    assert row["reason"] == "e2e first run"
    assert row["source_table"] == f"bq://{FEATURES}"
    assert row["input_rows"] == row["output_rows"] == 279
    assert row["residential_rows"] + row["excluded_rows"] == 279
    assert row["residential_rows"] > 200
    assert 2 <= row["best_k"] <= 10
    assert 2 <= row["stable_sub_k"] <= 5 and 2 <= row["distressed_sub_k"] <= 5
    present = [f for f in DEFAULT_CLUSTERING_FEATURES if f in real.columns]
    assert json.loads(row["features_used"]) == present
    assert json.loads(row["features_missing"]) == [
        f for f in DEFAULT_CLUSTERING_FEATURES if f not in real.columns
    ]
    assert list(json.loads(row["silhouette_by_k"])) == [str(k) for k in range(2, 11)]
    assert row["silhouette_sample_size"] is None
    assert row["artifact_prefix"] == f"gs://{cloud}/{PREFIX}/runs/{run_id}/"
    assert row["started_at"] <= row["finished_at"]


def test_a_manual_publish_writes_its_artifacts_then_latest(first_run, cloud):
    run_id = first_run.history_row["run_id"]
    stored = first_run.run_objects
    assert sorted(stored) == sorted(ARTIFACTS)
    expected_types = {
        ".csv": "text/csv",
        ".png": "image/png",
        ".json": "application/json",
        ".html": "text/html; charset=utf-8",
    }
    for name, item in stored.items():
        assert item.content_type == expected_types[Path(name).suffix], name
    for name in ARTIFACTS:
        if name.endswith(".png"):
            assert stored[name].content.startswith(b"\x89PNG\r\n\x1a\n"), name
    # latest/ is the pointer, this run's manifest byte for byte, and copies of its files.
    assert set(first_run.latest) == set(stored)
    for name, item in stored.items():
        assert first_run.latest[name].sha256 == item.sha256, name
    assert first_run.latest[MANIFEST].content_type == "application/json"

    manifest = json.loads(stored[MANIFEST].content)
    assert manifest["run_id"] == run_id
    assert manifest["trigger"] == "pubsub"
    assert manifest["event_id"] == first_run.event["id"]
    assert manifest["input"]["rows"] == 279
    assert manifest["outputs"]["artifacts"] == f"gs://{cloud}/{PREFIX}/runs/{run_id}/"
    assert manifest["outputs"]["clusters_table"] == f"bq://{CLUSTERS}"
    assert manifest["outputs"]["files"] == list(ARTIFACTS)

    csv = pd.read_csv(io.BytesIO(stored["neighborhood_clusters.csv"].content))
    assert list(csv.columns) == [name for name, _ in first_run.table.schema]
    assert len(csv) == 279 and csv["run_id"].unique().tolist() == [run_id]


def test_the_run_logs_json_lines_with_its_run_id_and_trigger(first_run):
    delivery = first_run.delivery
    run_id = first_run.history_row["run_id"]
    starting = delivery.one("run starting")
    done = delivery.one("run succeeded")
    for entry in (starting, done):
        assert entry["severity"] == "INFO"
        assert entry["run_id"] == run_id and entry["trigger"] == "pubsub"
        assert entry["event_id"] == first_run.event["id"]
    assert "artifacts gs://" in done["message"] and run_id in done["message"]


def test_the_load_job_carries_the_app_label(first_run, bq):
    # local-bigquery lists jobs with their configuration and labels, as BigQuery does; the
    # audit logs copy these labels, which is how the function recognises its own jobs.
    loads = [job for job in bq.list_jobs() if job.job_type == "load"]
    ours = [
        job
        for job in loads
        if job.destination and job.destination.table_id == "neighborhood_clusters"
    ]
    assert ours, [(job.job_id, job.destination, job.labels) for job in loads]
    assert all(job.labels == {"app": "neighborhood-clusters"} for job in ours)
    # The test's own loads of the features table carry no label.
    assert all(
        job.labels == {} for job in loads if job.destination.table_id == "neighborhood_features"
    )


# --- Which events run, which are skipped ------------------------------------------------------


def test_a_duplicate_delivery_runs_once(function, bq, gcs, cloud, first_run):
    event = pubsub_event({"reason": "delivered twice"})
    before = published(bq, gcs, cloud)

    first = function.post(event)
    assert first.acked and first.one("run succeeded")
    after_first = published(bq, gcs, cloud)
    second = function.post(event)

    assert second.acked
    duplicate = second.one("duplicate delivery skipped")
    assert duplicate["idempotency_key"] == event["id"]
    assert "run starting" not in " ".join(second.messages())
    assert len(rows_of(bq, event["id"])) == 1
    assert len(after_first.runs - before.runs) == 1
    assert published(bq, gcs, cloud) == after_first


def test_a_change_of_the_features_table_runs(function, bq, gcs, cloud, first_run):
    job_id = f"bqjob_{uuid.uuid4().hex[:16]}"
    event = table_change_event(FEATURES, job_id=job_id)
    before = published(bq, gcs, cloud)

    delivery = function.post(event)

    assert delivery.acked
    assert delivery.one("run starting")["trigger"] == "table-change"
    rows = rows_of(bq, f"projects/{PROJECT}/jobs/{job_id}")
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "succeeded" and row["trigger"] == "table-change"
    assert f"data change of the watched table {FEATURES}" in row["reason"]
    after = published(bq, gcs, cloud)
    assert after.runs - before.runs == {row["run_id"]}
    assert json.loads(after.latest[MANIFEST].content)["run_id"] == row["run_id"]
    assert {r[-2] for r in after.table.rows} == {row["run_id"]}  # the run_id column
    # The same data, clustered the same way: only run_id and _clustered_at differ, so every
    # id, cohort name and stability is as it was, and no neighborhood is reported as moved.
    assert [r[:-2] for r in after.table.rows] == [r[:-2] for r in before.table.rows]
    previous = json.loads(before.latest[MANIFEST].content)["run_id"]
    assert row["previous_run_id"] == previous
    assert (row["moved_neighborhoods"], row["appeared_neighborhoods"]) == (0, 0)
    listed = pd.read_csv(io.BytesIO(after.latest[CSV_TRANSITIONS].content))
    assert listed.empty and list(listed.columns) == list(columns("neighborhood"))
    assert transitions_of(bq, row["run_id"]) == []


def transitions_of(bq: bigquery.Client, run_id: str) -> list[dict]:
    return [dict(r) for r in bq.list_rows(TRANSITIONS) if r["run_id"] == run_id]


def cohorts_of(bq: bigquery.Client) -> pd.DataFrame:
    frame = pd.DataFrame([dict(row) for row in bq.list_rows(CLUSTERS)])
    return frame.set_index("neighborhood").sort_index()[
        ["sub_cluster", "cohort_name", "fit_margin"]
    ]


def test_moved_neighborhoods_are_listed_and_appended_then_move_back(
    function, bq, gcs, cloud, first_run, restore_features
):
    before = cohorts_of(bq)
    residential = before[before["sub_cluster"] >= 0]
    cohort = residential["sub_cluster"].iloc[0]
    moved = residential.index[residential["sub_cluster"] == cohort][:3].tolist()
    donor = residential.index[residential["sub_cluster"] != cohort][0]
    load_features(bq, move_rows(real_table(), moved, like=donor))

    delivery = function.post(table_change_event(FEATURES))

    assert delivery.one("run succeeded")
    after = cohorts_of(bq)
    changed = sorted(after.index[after["sub_cluster"] != before["sub_cluster"]])
    assert set(moved) <= set(changed)
    run_id = delivery.one("run succeeded")["run_id"]
    latest = objects(gcs, cloud, f"{PREFIX}/latest/")
    listed = pd.read_csv(io.BytesIO(latest[CSV_TRANSITIONS].content))
    assert listed["neighborhood"].tolist() == changed
    assert set(listed["change"]) == {"moved"} and set(listed["run_id"]) == {run_id}
    appended = transitions_of(bq, run_id)
    assert sorted(r["neighborhood"] for r in appended) == changed
    for r in appended:
        assert r["previous_sub_cluster"] == before.loc[r["neighborhood"], "sub_cluster"]
        assert r["sub_cluster"] == after.loc[r["neighborhood"], "sub_cluster"]
        assert r["cohort_name"] == after.loc[r["neighborhood"], "cohort_name"]
        # Expected (borderline in the previous run) or a surprise: a BOOLEAN of the table.
        borderline = before.loc[r["neighborhood"], "fit_margin"] < BORDERLINE_MARGIN
        assert r["previously_borderline"] is bool(borderline)
    manifest = json.loads(latest[MANIFEST].content)
    assert manifest["transitions"]["moved"] == len(changed)
    (row,) = [r for r in history(bq) if r["run_id"] == run_id]
    assert row["moved_neighborhoods"] == len(changed)
    assert row["moved_stable_distressed"] == manifest["transitions"]["between_top_groups"]

    # The real data again: every neighborhood returns to its cohort, under its old id and name.
    load_features(bq, real_table())
    back = function.post(table_change_event(FEATURES))
    assert back.one("run succeeded")
    pd.testing.assert_frame_equal(cohorts_of(bq), before)
    returned = transitions_of(bq, back.one("run succeeded")["run_id"])
    assert sorted(r["neighborhood"] for r in returned) == changed


def test_label_overrides_win_and_survive_a_rerun(
    cloud, bq, gcs, first_run, bigquery_emulator, gcs_emulator, tmp_path
):
    clusters = f"{PROJECT}.{DATASET}.clusters_with_overrides"
    fields = [bigquery.SchemaField.from_api_repr(f) for f in table_schema("clusters_table")]
    bq.create_table(bigquery.Table(clusters, schema=fields))
    first = first_run.table_frame.set_index("neighborhood")
    target = int(first.loc[first["sub_cluster"] >= 0, "sub_cluster"].iloc[0])
    env = function_env(bigquery_emulator, gcs_emulator.endpoint, f"gs://{cloud}/overrides")
    env |= {
        "CLUSTERS_TABLE": f"bq://{clusters}",
        "LABEL_OVERRIDES": json.dumps({str(target): "Our own name"}),
    }
    with serve(env, tmp_path / "functions-framework.log") as server:
        for reason in ("overridden", "overridden again"):
            delivery = server.post(pubsub_event({"reason": reason}))
            assert delivery.one("run succeeded"), delivery.entries
            frame = pd.DataFrame([dict(r) for r in bq.list_rows(clusters)])
            frame = frame.set_index("neighborhood").sort_index()
            assert (frame["sub_cluster"] == first["sub_cluster"].sort_index()).all()
            named = frame.loc[frame["sub_cluster"] == target, "cohort_name"]
            assert set(named) == {"Our own name"}
            others = frame.loc[frame["sub_cluster"] != target, "cohort_name"]
            assert "Our own name" not in set(others)


@pytest.mark.parametrize(
    ("event", "cause"),
    [
        pytest.param(
            table_change_event(FEATURES, read=True),
            "(tableDataRead), not a data change",
            id="read-of-the-features-table",
        ),
        pytest.param(
            table_change_event(CLUSTERS),
            "is the function's own clusters table",
            id="write-to-the-clusters-table",
        ),
        pytest.param(
            table_change_event(FEATURES, principal=SERVICE_ACCOUNT),
            f"caused by the function's own service account {SERVICE_ACCOUNT}",
            id="change-by-the-function-itself",
        ),
    ],
)
def test_reads_and_the_functions_own_writes_run_nothing(
    function, bq, gcs, cloud, first_run, event, cause
):
    before = published(bq, gcs, cloud)

    delivery = function.post(event)

    assert delivery.acked
    skipped = delivery.one("event skipped")
    assert skipped["severity"] == "INFO" and cause in skipped["message"]
    assert skipped["trigger"] == "table-change"
    assert "run_id" not in skipped
    assert published(bq, gcs, cloud) == before


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        pytest.param("{not json", "message data is not valid JSON", id="invalid-json"),
        pytest.param(
            {"features_table": f"{PROJECT}.{DATASET}.someone_elses_table"},
            "is not allowed; allowed tables: " + FEATURES,
            id="table-not-allowlisted",
        ),
    ],
)
def test_a_malformed_message_is_acked_never_run_and_recorded_as_failed(
    function, bq, gcs, cloud, first_run, body, cause
):
    event = pubsub_event(body)
    before = published(bq, gcs, cloud)

    delivery = function.post(event)

    assert delivery.acked
    rejected = delivery.one("event rejected, not retried")
    assert rejected["severity"] == "ERROR" and cause in rejected["message"]
    assert not [m for m in delivery.messages() if m.startswith("run starting")]
    rows = rows_of(bq, event["id"])
    assert len(rows) == 1
    assert rows[0]["status"] == "failed" and rows[0]["trigger"] == "pubsub"
    assert cause in rows[0]["error"]
    after = published(bq, gcs, cloud)
    assert after.history_rows == before.history_rows + 1
    assert (after.table, after.latest, after.runs, after.claims) == (
        before.table,
        before.latest,
        before.runs,
        before.claims,
    )


def duplicated_neighborhood(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[5, "neighborhood"] = frame.loc[4, "neighborhood"]
    return frame


def negative_population(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[10, "population"] = -40
    return frame


@pytest.mark.parametrize(
    ("spoil", "cause"),
    [
        (duplicated_neighborhood, "appears more than once"),
        (negative_population, "population is negative"),
    ],
)
def test_bad_data_is_acked_as_a_failed_run_and_publishes_nothing(
    function, bq, gcs, cloud, first_run, restore_features, spoil, cause
):
    before = published(bq, gcs, cloud)
    load_features(bq, spoil(real_table()))
    event = table_change_event(FEATURES)

    delivery = function.post(event)

    assert delivery.acked, (delivery.status, delivery.body)
    failed = delivery.one("run failed, not retried")
    assert failed["severity"] == "WARNING" and failed["error_type"] == "InputError"
    assert f"bq://{FEATURES}" in failed["message"] and cause in failed["message"]
    (row,) = rows_of(bq, event["data"]["protoPayload"]["metadata"]["tableDataChange"]["jobName"])
    assert row["status"] == "failed" and row["trigger"] == "table-change"
    assert cause in row["error"] and row["run_id"] == failed["run_id"]
    after = published(bq, gcs, cloud)
    # The clusters table and latest/ are byte for byte as they were, and no run folder exists.
    assert after.table == before.table
    assert after.latest == before.latest
    assert after.runs == before.runs
    # The event stays claimed: a redelivery of a permanent failure is a duplicate.
    assert len(after.claims - before.claims) == 1


def test_every_line_the_function_prints_is_a_json_log_entry(function, first_run):
    # Cloud Logging turns each line of output into an entry: a plain-text line (a library's
    # warning, a traceback) becomes an entry without severity, run_id or trigger.
    entries, others = parse_log(function.log_since(0))
    assert entries
    assert others == []
    for entry in entries:
        assert {"severity", "message", "time", "trigger"} <= set(entry), entry


# --- Storage that is missing or fails ---------------------------------------------------------


def test_a_missing_artifacts_bucket_is_acked_and_recorded_as_failed(
    cloud, bq, gcs, first_run, bigquery_emulator, gcs_emulator, tmp_path
):
    missing = unique("no-such-bucket")
    env = function_env(bigquery_emulator, gcs_emulator.endpoint, f"gs://{missing}/{PREFIX}")
    table = clusters_state(bq)
    history_rows = len(history(bq))
    event = pubsub_event({"reason": "bucket missing"})

    with serve(env, tmp_path / "functions-framework.log") as function:
        delivery = function.post(event)

    # A missing bucket fails the same way on every retry: acked, never run.
    assert delivery.acked, (delivery.status, delivery.body)
    error = delivery.one("cannot claim the event")
    assert error["severity"] == "ERROR" and f"gs://{missing}/{PREFIX}/claims/" in error["message"]
    assert not [m for m in delivery.messages() if m.startswith("run starting")]
    (row,) = rows_of(bq, event["id"])
    assert row["status"] == "failed" and row["error"].startswith("claim failed: ")
    assert len(history(bq)) == history_rows + 1
    assert clusters_state(bq) == table
    assert gcs.lookup_bucket(missing) is None


class FilesystemGcs:
    """A fake-gcs-server of its own with its objects on disk, so that a test can take the
    bucket away, or stop the server and start it again on the same port with the same data."""

    def __init__(self, root: Path, log_path: Path) -> None:
        self.root = root
        self.log_path = log_path
        self.port = emulators.free_port()
        self.endpoint = f"http://{emulators.HOST}:{self.port}"
        self._running: contextlib.ExitStack | None = None

    def start(self) -> None:
        command = [
            str(emulators.GCS_BINARY),
            *("-scheme", "http", "-host", emulators.HOST, "-port", str(self.port)),
            *("-backend", "filesystem", "-filesystem-root", str(self.root)),
            *("-external-url", self.endpoint, "-log-level", "warn"),
        ]
        stack = contextlib.ExitStack()
        stack.enter_context(
            emulators.running_process(
                "fake-gcs-server (filesystem)",
                command,
                log_path=self.log_path,
                ready=lambda: emulators.http_answers(f"{self.endpoint}/storage/v1/b"),
            )
        )
        self._running = stack

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None

    def client(self) -> storage.Client:
        return emulators.storage_client(emulators.GcsEmulator(self.endpoint, self.log_path))


@dataclass
class OnDisk:
    """The function with its artifacts on a FilesystemGcs, after one successful run."""

    gcs: FilesystemGcs
    client: storage.Client
    bucket: str
    function: Function


@pytest.fixture(scope="module")
def on_disk(cloud, bigquery_emulator, tmp_path_factory) -> Iterator[OnDisk]:
    work = tmp_path_factory.mktemp("gcs-on-disk")
    gcs = FilesystemGcs(work / "storage", work / "fake-gcs-server.log")
    gcs.start()
    try:
        client = gcs.client()
        bucket = client.create_bucket(unique("artifacts")).name
        env = function_env(bigquery_emulator, gcs.endpoint, f"gs://{bucket}/{PREFIX}")
        with serve(env, work / "functions-framework.log") as function:
            baseline = function.post(pubsub_event({"reason": "baseline on disk"}))
            assert baseline.one("run succeeded"), baseline.entries
            yield OnDisk(gcs, client, bucket, function)
    finally:
        gcs.stop()


def start_mid_run(on_disk: OnDisk, event: dict, response_timeout: float):
    """POST the event from another thread; return the pending answer once the function has
    logged that the run of this event started (claimed, nothing published yet)."""
    pool = ThreadPoolExecutor(max_workers=1)
    offset = on_disk.function.log_size()
    answer = pool.submit(on_disk.function.post, event, response_timeout)
    pool.shutdown(wait=False)

    def started() -> bool:
        entries, _ = parse_log(on_disk.function.log_since(offset))
        return any(
            e["message"].startswith("run starting") and e.get("event_id") == event["id"]
            for e in entries
        )

    wait_for(lambda: started() or answer.done(), "the function to log `run starting`")
    assert not answer.done(), answer.result()
    return answer


def test_the_bucket_made_unavailable_mid_run_leaves_table_and_latest_intact(on_disk, bq):
    before = published(bq, on_disk.client, on_disk.bucket)
    event = pubsub_event({"reason": "bucket goes away"})
    bucket_dir = on_disk.gcs.root / on_disk.bucket
    hidden = bucket_dir.with_name(f"{on_disk.bucket}.hidden")

    answer = start_mid_run(on_disk, event, RESPONSE_TIMEOUT_S)
    # The run has read the features and is clustering; its first step will find no bucket.
    bucket_dir.rename(hidden)
    try:
        delivery = answer.result(timeout=RESPONSE_TIMEOUT_S)
    finally:
        hidden.rename(bucket_dir)

    # Without the bucket the run cannot show it still holds the run lock: it publishes
    # nothing and asks for a retry (a redelivery then claims again, or meets the 404).
    assert delivery.status == 500 and delivery.answer["event"] == "run_retry", delivery.body
    stopped = delivery.one("run stopped, will be retried")
    assert "lost the run lock before writing the run folder" in stopped["message"]
    (row,) = rows_of(bq, event["id"])
    assert row["status"] == "failed" and row["run_id"] == stopped["run_id"]
    after = published(bq, on_disk.client, on_disk.bucket)
    assert after.table == before.table
    assert after.latest == before.latest
    assert after.runs == before.runs
    # Its run lock could not be released while the bucket was away: it stays until it is
    # stale (the function timeout plus a minute). Removed here instead of waiting that out.
    (lock,) = after.claims - before.claims
    assert lock.startswith("run-lock")
    on_disk.client.bucket(on_disk.bucket).blob(f"{PREFIX}/claims/{lock}").delete()


@pytest.mark.slow
def test_a_storage_outage_mid_run_is_retried_and_leaves_table_and_latest_intact(on_disk, bq):
    before = published(bq, on_disk.client, on_disk.bucket)
    event = pubsub_event({"reason": "storage goes down"})

    answer = start_mid_run(on_disk, event, OUTAGE_RESPONSE_TIMEOUT_S)
    on_disk.gcs.stop()
    started = time.monotonic()
    try:
        # The storage client retries the refused connections for what is left of the run's
        # budget (FUNCTION_TIMEOUT_S minus the handler's margin), never past it.
        delivery = answer.result(timeout=OUTAGE_RESPONSE_TIMEOUT_S)
    finally:
        on_disk.gcs.start()
    assert time.monotonic() - started < FUNCTION_TIMEOUT_S

    # Transient: the function answers 500, so Pub/Sub redelivers.
    assert delivery.status == 500, (delivery.status, delivery.body)
    failed = delivery.one("run failed with a transient error, will be retried")
    assert failed["severity"] == "ERROR" and failed["event"] == "run_retry"
    assert delivery.answer["event"] == "run_retry"
    # The run lock could not be released while storage was down, and the handler says so; a
    # redelivery waits until it is stale, then takes it over (tests/test_claims.py).
    unreleased = delivery.one(f"claim {event['id']} could not be released")
    assert unreleased["severity"] == "ERROR"
    assert "taken over once it is stale" in unreleased["message"]
    (row,) = rows_of(bq, event["id"])
    assert row["status"] == "failed" and row["run_id"] == failed["run_id"]

    after = published(bq, on_disk.client, on_disk.bucket)
    assert after.table == before.table
    assert after.latest == before.latest
    assert after.runs == before.runs
    assert len(after.claims - before.claims) == 1  # the run lock, left to go stale


# --- Fault injection -------------------------------------------------------------------------


def test_two_deliveries_of_one_event_racing_publish_once(function, bq, gcs, cloud, first_run):
    event = pubsub_event({"reason": "racing"})
    before = published(bq, gcs, cloud)
    with ThreadPoolExecutor(2) as pool:
        deliveries = list(pool.map(lambda _: function.post(event), range(2)))

    events = sorted(d.answer["event"] for d in deliveries)
    # The loser met the done record (duplicate) or the winner's lock (busy, or its own
    # lock-taking lost the race and it stopped before running: retry).
    assert events in (
        ["duplicate", "run_succeeded"],
        ["run_busy", "run_succeeded"],
        ["run_retry", "run_succeeded"],
    ), events
    (row,) = rows_of(bq, event["id"])
    after = published(bq, gcs, cloud)
    assert after.runs - before.runs == {row["run_id"]}
    assert_table_and_latest_agree(after)


HELD = {
    "error": {
        "code": 403,
        "message": "Object is under active Event-Based hold.",
        "errors": [{"reason": "forbidden", "message": "held"}],
    }
}


def test_a_failure_between_the_table_load_and_latest_is_repaired_by_the_redelivery(
    cloud, bq, gcs, first_run, bigquery_emulator, gcs_emulator, tmp_path
):
    bucket = gcs.create_bucket(unique("partial")).name
    failing = [True]

    def refuse_the_pointer(method: str, path: str, body: bytes):
        # The pointer's write is refused (an object hold answers 403): after the table load.
        return (403, HELD) if failing[0] and b"/latest/run.json" in body else "pass"

    event = pubsub_event({"reason": "interrupted"})
    with emulators.FaultProxy(gcs_emulator.endpoint, refuse_the_pointer) as proxy:
        env = function_env(bigquery_emulator, proxy.endpoint, f"gs://{bucket}/{PREFIX}")
        with serve(env, tmp_path / "functions-framework.log") as function:
            first = function.post(event)
            interrupted = published(bq, gcs, bucket)
            failing[0] = False
            second = function.post(event)

    assert first.status == 500 and first.answer["event"] == "run_retry", first.body
    assert "was loaded into" in first.answer["reason"]
    # Between the two deliveries: the table holds the interrupted run, latest/ names no run
    # (it had none): never a mix, and the history says what was published.
    assert {row[-2] for row in interrupted.table.rows} == {first.answer["run_id"]}
    assert interrupted.latest == {}
    assert second.answer["event"] == "run_succeeded", second.body
    statuses = [
        r["status"] for r in sorted(rows_of(bq, event["id"]), key=lambda r: r["started_at"])
    ]
    assert statuses == ["published_partially", "succeeded"]
    repaired = published(bq, gcs, bucket)
    assert latest_run_id(repaired) == second.answer["run_id"]
    assert_table_and_latest_agree(repaired)


RATE_LIMITED = {
    "error": {
        "code": 403,
        "message": "Exceeded rate limits: too many api requests",
        "errors": [
            {
                "reason": "rateLimitExceeded",
                "domain": "usageLimits",
                "message": "Exceeded rate limits",
            }
        ],
        "status": "PERMISSION_DENIED",
    }
}


def test_a_bigquery_rate_limit_is_retried(
    cloud, bq, gcs, first_run, bigquery_emulator, gcs_emulator, tmp_path
):
    bucket = gcs.create_bucket(unique("throttled")).name
    throttled: list[str] = []

    def throttle_the_first_table_lookup(method: str, path: str, body: bytes):
        lookup = method == "GET" and "/tables/neighborhood_features?" in path
        if lookup and not throttled:
            throttled.append(path)
            return (403, RATE_LIMITED)
        return "pass"

    event = pubsub_event({"reason": "throttled"})
    with emulators.FaultProxy(bigquery_emulator.endpoint, throttle_the_first_table_lookup) as proxy:
        env = function_env(bigquery_emulator, gcs_emulator.endpoint, f"gs://{bucket}/{PREFIX}")
        env["BIGQUERY_EMULATOR_HOST"] = proxy.endpoint
        with serve(env, tmp_path / "functions-framework.log") as function:
            delivery = function.post(event)

    assert throttled, proxy.requests
    lookups = [r for r in proxy.requests if r.startswith("GET /") and "features?" in r]
    assert len(lookups) >= 2  # refused once, then retried within the run
    assert delivery.answer["event"] == "run_succeeded", delivery.body
    (row,) = rows_of(bq, event["id"])
    assert row["status"] == "succeeded"


# --- Through the Pub/Sub emulator: the deployed path --------------------------------------------


def pubsub_rest(emulator, method: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{emulator.endpoint}/v1/projects/{emulator.project}/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    with emulators.LOCAL_HTTP.open(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


@dataclass
class RunTopic:
    """A run topic and its push subscription to the function, as terraform/triggers.tf makes
    them, except for the ack deadline: the emulator redelivers a failed push only once the
    ack deadline passed (Pub/Sub itself follows the retry policy), so it is 10 s here rather
    than 600 s, for a busy retry to land within a test. A delivery that overlaps a run still
    in progress meets the run lock and is retried once more."""

    emulator: emulators.PubSubEmulator
    function: Function
    name: str

    def publish(self, *messages: dict) -> list[str]:
        answer = pubsub_rest(
            self.emulator, "POST", f"topics/{self.name}:publish", {"messages": list(messages)}
        )
        return answer["messageIds"]

    def decision(self, message_id: str, offset: int) -> dict:
        """The final log line of the message's delivery (retries of a busy one are skipped)."""

        def final() -> dict | None:
            entries, _ = parse_log(self.function.log_since(offset))
            found = [e for e in entries if e.get("event_id") == message_id and "event" in e]
            done = [e for e in found if e["event"] not in ("run_retry", "run_busy")]
            return done[-1] if done else None

        return wait_for(final, f"the decision on message {message_id}", interval_s=0.2)


@pytest.fixture
def run_topic(pubsub_emulator, function) -> RunTopic:
    topic = unique("neighborhood-clusters-runs")
    return push_topic(pubsub_emulator, function, topic, f"{topic}-push")


@pytest.fixture(scope="module")
def sink_topic(pubsub_emulator, function) -> RunTopic:
    """The log sink's own topic, pushed by the subscription TABLE_CHANGES_SUBSCRIPTION."""
    return push_topic(pubsub_emulator, function, unique("table-changes"), SINK_PUSH)


def push_topic(pubsub_emulator, function, topic: str, subscription: str) -> RunTopic:
    pubsub_rest(pubsub_emulator, "PUT", f"topics/{topic}", {})
    project = pubsub_emulator.project
    pubsub_rest(
        pubsub_emulator,
        "PUT",
        f"subscriptions/{subscription}",
        {
            "topic": f"projects/{project}/topics/{topic}",
            "ackDeadlineSeconds": 10,
            "retryPolicy": {"minimumBackoff": "1s", "maximumBackoff": "2s"},
            # The topic's path in the push URL names the event source, as in triggers.tf.
            "pushConfig": {
                "pushEndpoint": f"{function.server.url}projects/{project}/topics/{topic}"
            },
        },
    )
    return RunTopic(pubsub_emulator, function, topic)


def log_entry_message(entry: dict) -> dict:
    """What the log sink publishes: the LogEntry as JSON, the message's data."""
    return {"data": base64.b64encode(json.dumps(entry).encode()).decode()}


def test_a_sink_log_entry_pushed_through_pubsub_runs_once(
    sink_topic, run_topic, bq, gcs, cloud, first_run
):
    before = published(bq, gcs, cloud)
    offset = sink_topic.function.log_size()

    # The same entry published to the run topic, as anyone allowed a manual run could: refused.
    (forged,) = run_topic.publish(log_entry_message(bigquery_log_entry(FEATURES)))
    refused = run_topic.decision(forged, offset)
    assert (
        refused["event"] == "event_rejected"
        and "never taken as a table change" in (refused["message"])
    )
    (message_id,) = sink_topic.publish(log_entry_message(bigquery_log_entry(FEATURES)))
    decision = sink_topic.decision(message_id, offset)

    assert decision["event"] == "run_succeeded" and decision["trigger"] == "table-change"
    # A table change is keyed, and recorded, by its BigQuery job.
    (row,) = rows_of(bq, decision["idempotency_key"])
    after = published(bq, gcs, cloud)
    assert after.runs - before.runs == {row["run_id"]}
    assert_table_and_latest_agree(after)


@pytest.mark.parametrize(
    ("entry", "cause"),
    [
        pytest.param(bigquery_log_entry(FEATURES, read=True), "tableDataRead", id="read"),
        pytest.param(
            bigquery_log_entry(f"{PROJECT}.{DATASET}.someone_elses_table"),
            "not of the watched table",
            id="other-table",
        ),
    ],
)
def test_a_pushed_read_or_change_of_another_table_runs_nothing(
    sink_topic, bq, gcs, cloud, first_run, entry, cause
):
    before = published(bq, gcs, cloud)
    offset = sink_topic.function.log_size()

    (message_id,) = sink_topic.publish(log_entry_message(entry))
    decision = sink_topic.decision(message_id, offset)

    assert decision["event"] == "event_skipped" and cause in decision["message"]
    assert published(bq, gcs, cloud) == before


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        pytest.param(
            {"attributes": {"reason": "attributes only"}}, "attributes only", id="attribute-only"
        ),
        pytest.param(
            {"data": base64.b64encode(b'{"reason": "json body"}').decode()},
            "json body",
            id="json-body",
        ),
    ],
)
def test_a_manual_publish_is_pushed_and_runs_once(
    run_topic, bq, gcs, cloud, first_run, message, reason
):
    before = published(bq, gcs, cloud)
    offset = run_topic.function.log_size()

    (message_id,) = run_topic.publish(message)
    decision = run_topic.decision(message_id, offset)

    assert decision["event"] == "run_succeeded", decision
    (row,) = rows_of(bq, message_id)
    assert (row["status"], row["trigger"], row["reason"]) == ("succeeded", "pubsub", reason)
    after = published(bq, gcs, cloud)
    assert after.runs - before.runs == {row["run_id"]}
    assert json.loads(after.latest[MANIFEST].content)["event_id"] == message_id
    assert_table_and_latest_agree(after)


MARKER = "Abell"  # a neighborhood whose population each refresh of the burst changes


def test_a_burst_of_five_changes_gives_at_most_two_runs_the_last_on_the_final_data(
    function, bq, gcs, cloud, first_run, restore_features
):
    before = published(bq, gcs, cloud)
    real = real_table()
    assert MARKER in set(real["neighborhood"])
    events = []
    for step in range(5):
        # A refresh made of five load jobs; each logs a data change when it lands.
        version = real.copy()
        version.loc[version["neighborhood"] == MARKER, "population"] = 5000 + step
        load_features(bq, version)
        # As the log sink's subscription pushes it.
        events.append(
            pubsub_event(bigquery_log_entry(FEATURES), subscription=TABLE_CHANGES_SUBSCRIPTION)
        )

    def deliver(event: dict) -> dict:
        # Pushed back to back, as Pub/Sub does; an answer of 500 (busy: another delivery holds
        # the run lock) is delivered again, as Pub/Sub's retry policy does. The emulator's own
        # redelivery of a push that failed is not used here: it backs off for minutes.
        for _ in range(120):
            answer = function.post(event).answer
            if answer["event"] not in ("run_busy", "run_retry"):
                return answer
            time.sleep(1.0)
        raise AssertionError(f"still busy after 120 deliveries: {answer}")

    with ThreadPoolExecutor(len(events)) as pool:
        decisions = list(pool.map(deliver, events))

    outcomes = [d["event"] for d in decisions]
    assert set(outcomes) <= {"run_succeeded", "event_skipped", "duplicate"}, outcomes
    assert 1 <= outcomes.count("run_succeeded") <= 2, outcomes
    after = published(bq, gcs, cloud)
    assert len(after.runs - before.runs) == outcomes.count("run_succeeded")
    assert_table_and_latest_agree(after)
    frame = pd.DataFrame([dict(row) for row in bq.list_rows(CLUSTERS)])
    assert frame.set_index("neighborhood").loc[MARKER, "population"] == 5004


def test_only_posts_are_deliveries(function):
    with pytest.raises(urllib.error.HTTPError) as answer:
        emulators.LOCAL_HTTP.open(function.server.url, timeout=30)
    assert answer.value.code == 405
    assert "POST" in json.loads(answer.value.read())["error"]


def test_a_raw_push_without_data_reaches_the_code_and_runs(function, bq, first_run):
    # What Pub/Sub pushes for an attributes-only message: functions-framework's CloudEvent
    # conversion would answer 400 to it before any code of ours ran.
    message_id = str(uuid.uuid4().int % 10**16)
    message = {"attributes": {"reason": "raw push", "dry_run": "true"}, "messageId": message_id}
    body = {"message": message, "subscription": "projects/p/subscriptions/s"}
    request = urllib.request.Request(
        function.server.url + "projects/test-project/topics/runs",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with emulators.LOCAL_HTTP.open(request, timeout=RESPONSE_TIMEOUT_S) as response:
        answer = json.loads(response.read())
    assert response.status == 200 and answer["event"] == "dry_run", answer
    (row,) = rows_of(bq, message_id)
    assert (row["status"], row["reason"]) == ("dry_run", "raw push")


# --- The outcome field the alerts count (clustering.cloud.logs.Outcome, terraform/monitoring.tf) -


def outcome(delivery: Delivery) -> dict:
    """The one line of a delivery that carries `event`: its last JSON line."""
    marked = [e for e in delivery.entries if "event" in e]
    assert len(marked) == 1, f"expected exactly one line with an event, got {delivery.entries}"
    assert marked[0] is delivery.entries[-1], "the outcome is the delivery's final line"
    assert marked[0]["event"] in OUTCOMES
    return marked[0]


def test_a_run_and_a_duplicate_end_in_their_outcomes(function, first_run):
    done = outcome(first_run.delivery)
    assert (done["event"], done["severity"]) == (Outcome.RUN_SUCCEEDED, "INFO")
    assert done["run_id"] == first_run.history_row["run_id"]

    again = function.post(first_run.event)
    assert again.acked
    duplicate = outcome(again)
    assert (duplicate["event"], duplicate["severity"]) == (Outcome.DUPLICATE, "INFO")


def test_a_dry_run_is_not_counted_as_a_success(function, first_run):
    delivery = function.post(pubsub_event({"reason": "alerts dry run", "dry_run": True}))
    assert delivery.acked
    assert outcome(delivery)["event"] == Outcome.DRY_RUN


def test_a_skipped_and_a_rejected_event_end_in_their_outcomes(function, first_run):
    skipped = function.post(table_change_event(FEATURES, read=True))
    assert skipped.acked
    assert (outcome(skipped)["event"], outcome(skipped)["severity"]) == (
        Outcome.EVENT_SKIPPED,
        "INFO",
    )
    rejected = function.post(pubsub_event("{not json"))
    assert rejected.acked
    line = outcome(rejected)
    assert (line["event"], line["severity"]) == (Outcome.EVENT_REJECTED, "ERROR")


def test_bad_data_ends_in_run_failed_at_warning(function, bq, first_run, restore_features):
    load_features(bq, negative_population(real_table()))
    delivery = function.post(table_change_event(FEATURES))
    assert delivery.acked
    line = outcome(delivery)
    # The failed-run metric counts WARNING and above: bad data is logged at WARNING.
    assert (line["event"], line["severity"]) == (Outcome.RUN_FAILED, "WARNING")


def test_an_event_held_by_another_delivery_ends_in_run_busy(
    bigquery_emulator, gcs_emulator, cloud, tmp_path
):
    from clustering.adapters.gcs import GcsStore

    artifacts = f"gs://{cloud}/{PREFIX}-busy"
    event = pubsub_event({"reason": "held elsewhere"})
    now = datetime.now(UTC).isoformat()
    # Another run holds the run lock, freshly: this delivery must wait for it.
    lock = Claim(run_id="other-run", event_id="other", claimed_at=now, key="other")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
        assert GcsStore(artifacts).create_claim(LOCK_KEY, lock.encode())

    # A server of its own: the raised exception's traceback stays out of the shared log.
    env = function_env(bigquery_emulator, gcs_emulator.endpoint, artifacts)
    with serve(env, tmp_path / "functions-framework.log") as function:
        delivery = function.post(event)

    assert delivery.status == 500  # raised, so Pub/Sub delivers it again later
    line = outcome(delivery)
    assert (line["event"], line["severity"]) == (Outcome.RUN_BUSY, "WARNING")


def test_a_missing_bucket_ends_in_run_failed(bigquery_emulator, gcs_emulator, first_run, tmp_path):
    env = function_env(bigquery_emulator, gcs_emulator.endpoint, f"gs://{unique('none')}/x")
    with serve(env, tmp_path / "functions-framework.log") as function:
        delivery = function.post(pubsub_event({"reason": "no bucket"}))
    assert delivery.acked
    line = outcome(delivery)
    assert (line["event"], line["severity"]) == (Outcome.RUN_FAILED, "ERROR")


def test_a_transient_failure_ends_in_run_retry(gcs_emulator, cloud, tmp_path):
    # A BigQuery incident: every load job ends in backendError (tests/test_handler.py says why
    # this endpoint is a stand-in: a real outage is retried by the client for minutes first).
    features = tmp_path / "features.csv"
    real_table().to_csv(features, index=False)
    failing = FailingLoadJobs()
    env = {
        "FEATURES_SOURCE": str(features),
        "ARTIFACTS_DEST": f"gs://{cloud}/{PREFIX}-transient",
        "CLUSTERS_TABLE": f"bq://{CLUSTERS}",
        "RUNS_TABLE": str(tmp_path / "runs.jsonl"),
        "BIGQUERY_EMULATOR_HOST": failing.endpoint,
        "STORAGE_EMULATOR_HOST": gcs_emulator.endpoint,
    }
    try:
        with serve(env, tmp_path / "functions-framework.log") as function:
            delivery = function.post(pubsub_event({"reason": "during an incident"}))
    finally:
        failing.close()

    assert delivery.status == 500, (delivery.status, delivery.body)
    assert failing.requests, "the load job really reached the failing endpoint"
    line = outcome(delivery)
    assert (line["event"], line["severity"]) == (Outcome.RUN_RETRY, "ERROR")


def test_invalid_settings_stop_the_server_with_settings_invalid(tmp_path):
    env = {
        **os.environ,
        "FEATURES_SOURCE": str(tmp_path / "features.csv"),
        "ARTIFACTS_DEST": str(tmp_path / "artifacts"),
        "K_MIN": "9",
        "K_MAX": "3",
    }
    command = [
        str(emulators.FUNCTIONS_FRAMEWORK),
        *("--target", "recluster", "--signature-type", "cloudevent"),
        *("--source", str(MAIN), "--port", str(emulators.free_port()), "--host", emulators.HOST),
    ]
    # The server imports main.py before it listens: invalid settings end it at once.
    result = subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode != 0
    entries, _ = parse_log(result.stdout + result.stderr)
    (line,) = [e for e in entries if "event" in e]
    assert (line["event"], line["severity"]) == (Outcome.SETTINGS_INVALID, "CRITICAL")
    assert "K_MIN" in line["message"]


# --- Another city's table (issue 15) ----------------------------------------------------------


def city_env(bigquery_emulator, gcs_emulator, bucket: str) -> dict[str, str]:
    """The function configured for the city table with settings alone, as the example tfvars
    would configure it (terraform/examples/community-areas.tfvars)."""
    dataset = f"{PROJECT}.city"
    return {
        "FEATURES_SOURCE": f"bq://{dataset}.community_area_features",
        "ARTIFACTS_DEST": f"gs://{bucket}/city",
        "CLUSTERS_TABLE": f"bq://{dataset}.community_area_clusters",
        "RUNS_TABLE": f"bq://{dataset}.runs",
        "TRANSITIONS_TABLE": f"bq://{dataset}.community_area_transitions",
        "FUNCTION_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
        "FUNCTION_TIMEOUT_SECONDS": str(FUNCTION_TIMEOUT_S),
        # The emulator's tables never report a new last-modified time: no settling wait.
        "SETTLE_SECONDS": "0",
        **CITY_SETTINGS,
        "BIGQUERY_EMULATOR_HOST": bigquery_emulator.endpoint,
        "STORAGE_EMULATOR_HOST": gcs_emulator.endpoint,
    }


def load_city(bq: bigquery.Client, table_id: str, frame: pd.DataFrame) -> None:
    """The city table with its own schema: a text column, community_area, an INTEGER
    population with a blank, FLOAT features."""
    types = {"side": "STRING", "community_area": "STRING", CITY_POPULATION: "INTEGER"}
    config = bigquery.LoadJobConfig(
        schema=[bigquery.SchemaField(c, types.get(c, "FLOAT")) for c in frame.columns],
        source_format=bigquery.SourceFormat.CSV,
        skip_leading_rows=1,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
    )
    frame = frame.astype({CITY_POPULATION: "Int64"})
    csv = io.BytesIO(frame.to_csv(index=False).encode())
    bq.load_table_from_file(csv, table_id, job_config=config).result()


def test_the_function_clusters_a_city_table_with_settings_alone(
    bq, gcs, bigquery_emulator, gcs_emulator, tmp_path
):
    env = city_env(bigquery_emulator, gcs_emulator, gcs.create_bucket(unique("city")).name)
    features, clusters = (
        env[k].removeprefix("bq://") for k in ("FEATURES_SOURCE", "CLUSTERS_TABLE")
    )
    transitions = env["TRANSITIONS_TABLE"].removeprefix("bq://")
    bq.delete_dataset(f"{PROJECT}.city", delete_contents=True, not_found_ok=True)
    bq.create_dataset(f"{PROJECT}.city")
    table = city_table()
    load_city(bq, features, table)
    runs = env["RUNS_TABLE"].removeprefix("bq://")
    create_outputs(bq, features, (clusters, runs, transitions), CITY_KEY, CITY_POPULATION)
    # Before the first run the clusters table already has the city's columns.
    created = [f.name for f in bq.get_table(clusters).schema]
    assert created == [*table.columns, *CLUSTER_COLUMNS]

    with serve(env, tmp_path / "functions-framework.log") as function:
        first = function.post(pubsub_event({"reason": "city first run"}))
        assert first.acked, (first.status, first.body)
        assert first.answer["reason"].startswith("run succeeded: 77 community areas, top split K=2")
        loaded = pd.DataFrame([dict(row) for row in bq.list_rows(clusters)])
        # Area 02 takes on the poorest area's profile; the next run moves it.
        changed = table.set_index(CITY_KEY)
        poorest = changed["median_income"].idxmin()
        changed.loc["Area 02", list(CITY_FEATURES)] = changed.loc[poorest, list(CITY_FEATURES)]
        load_city(bq, features, changed.reset_index()[table.columns])
        second = function.post(pubsub_event({"reason": "city second run"}))
        assert second.acked, (second.status, second.body)

    schema = [f.name for f in bq.get_table(clusters).schema]
    assert schema == [*table.columns, *CLUSTER_COLUMNS]
    assert "neighborhood" not in schema and "population" not in schema
    assert len(loaded) == 77 and set(loaded[CITY_KEY]) == set(table[CITY_KEY])
    residential = loaded[loaded["excluded_type"] == "Residential"]
    income = residential.groupby("top_cluster_label")["median_income"].mean()
    assert income["Stable"] > income["Distressed"]  # higher income is better: Stable
    low = loaded.set_index(CITY_KEY)["excluded_type"]
    assert low["Area 05"] == low["Area 63"] == "Low Population (Park/Open Space)"
    moves = pd.DataFrame([dict(row) for row in bq.list_rows(transitions)])
    assert list(moves.columns)[:2] == [CITY_KEY, "previous_run_id"]
    assert "Area 02" in set(moves[CITY_KEY])
    history = [dict(row) for row in bq.list_rows(runs)]
    assert [row["key_column"] for row in history] == [CITY_KEY, CITY_KEY]
    assert {row["status"] for row in history} == {"succeeded"}


# --- The warehouse engine ------------------------------------------------------------------


def test_a_run_through_the_warehouse_engine_scores_every_row_in_bigquery(
    bigquery_emulator, gcs_emulator, bq, gcs, cloud, first_run, tmp_path, googlesql_checked
):
    """ENGINE=auto with a MEMORY_MAX_ROWS below the table's 279 rows: the function fits on
    the sample, scores every row inside BigQuery, exports the CSVs and publishes. Its
    BigQuery requests pass a proxy that has ZetaSQL analyze each query (tests/conftest.py)."""
    from clustering.analysis.assign import assign
    from clustering.analysis.document import read_model

    clusters = f"{PROJECT}.{DATASET}.warehouse_clusters"
    prefix = f"{PREFIX}-warehouse"
    env = function_env(bigquery_emulator, gcs_emulator.endpoint, f"gs://{cloud}/{prefix}")
    env |= {"CLUSTERS_TABLE": f"bq://{clusters}", "MEMORY_MAX_ROWS": "100", "SAMPLE_ROWS": "1000"}
    env.pop("RUNS_TABLE"), env.pop("TRANSITIONS_TABLE")
    with (
        emulators.FaultProxy(bigquery_emulator.endpoint, googlesql_checked.on_request) as proxy,
        serve(env | {"BIGQUERY_EMULATOR_HOST": proxy.endpoint}, tmp_path / "ff.log") as function,
    ):
        delivery = function.post(pubsub_event({"reason": "warehouse engine"}))
    sent = {step.rsplit("_", 1)[-1] for step, _ in googlesql_checked.statements}
    assert {"sample", "score", "summary"} <= sent, sent
    assert delivery.acked, (delivery.status, delivery.body, delivery.entries)
    run_id = delivery.answer["run_id"]
    assert any("inside BigQuery" in m for m in delivery.messages()), delivery.messages()

    latest = objects(gcs, cloud, f"{prefix}/latest/")
    manifest = json.loads(latest[MANIFEST].content)
    assert manifest["run_id"] == run_id and manifest["engine"] == "warehouse"
    table = pd.DataFrame([dict(row) for row in bq.list_rows(clusters)])
    assert len(table) == 279 and set(table["run_id"]) == {run_id}
    again = assign(real_table(), read_model(manifest, "run.json")).set_index("neighborhood")
    mine = table.set_index("neighborhood").loc[again.index]
    for column in ("sub_cluster", "runner_up_cluster"):
        assert mine[column].astype("Int64").equals(again[column].astype("Int64")), column
    for column in ("excluded_type", "excluded_cluster", "cohort_name"):
        assert mine[column].fillna("").tolist() == again[column].fillna("").tolist(), column
    run_files = names(gcs, cloud, f"{prefix}/runs/{run_id}/")
    assert {"neighborhood_clusters-000000000000.csv", "report.html", MANIFEST} <= run_files
    assert not [t for t in bq.list_tables(f"{PROJECT}.{DATASET}") if "nc_staged" in t.table_id]
