"""The local emulators and the functions-framework helper do what the product relies on.

These run the unmodified google-cloud clients against the emulators, so that when an emulator
(or a client upgrade) breaks one of the operations the adapters use, it fails here, by name,
rather than deep inside an end-to-end test of the product.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from google.api_core import exceptions
from google.cloud import bigquery

from tests import emulators

pytestmark = pytest.mark.e2e

# Deadline for things that happen asynchronously (a push delivery); only bounds a wait.
DELIVERY_DEADLINE_S = 30.0


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DELIVERY_DEADLINE_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def http(method: str, url: str, body: object = None, headers: dict | None = None):
    """(status, parsed JSON or text) of one request; HTTP errors are returned, not raised."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None and not request.has_header("Content-type"):
        request.add_header("Content-Type", "application/json")
    try:
        with emulators.LOCAL_HTTP.open(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


# --- BigQuery ------------------------------------------------------------------------------

# The types the clusters table and the run history use. No REQUIRED mode here: local-bigquery
# 0.4.0 drops the job's modes on a Parquet load (every column of the loaded table is NULLABLE,
# and a null in a REQUIRED column loads), so only names and types can be compared.
SCHEMA = [
    bigquery.SchemaField("neighborhood", "STRING"),
    bigquery.SchemaField("top_cluster", "INTEGER"),
    bigquery.SchemaField("score", "FLOAT"),
    bigquery.SchemaField("_clustered_at", "TIMESTAMP"),
]


@pytest.fixture(scope="module")
def bq(bigquery_emulator) -> Iterator[bigquery.Client]:
    client = emulators.bigquery_client(bigquery_emulator)
    yield client
    client.close()


@pytest.fixture
def dataset(bq) -> Iterator[str]:
    dataset_id = f"{bq.project}.{unique('ds')}"
    bq.create_dataset(dataset_id)
    yield dataset_id
    bq.delete_dataset(dataset_id, delete_contents=True, not_found_ok=True)


def clusters_frame(names: list[str], clusters: list, scores: list, times: list) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "neighborhood": pd.Series(names, dtype="string"),
            "top_cluster": pd.Series(clusters, dtype="Int64"),
            "score": pd.Series(scores, dtype="float64"),
            "_clustered_at": pd.to_datetime(pd.Series(times), utc=True, format="ISO8601"),
        }
    )


def load_truncate(bq: bigquery.Client, table_id: str, frame: pd.DataFrame, labels: dict):
    config = bigquery.LoadJobConfig(
        schema=SCHEMA,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        labels=labels,
    )
    job = bq.load_table_from_dataframe(frame, table_id, job_config=config)
    job.result()
    return job


def test_bigquery_load_dataframe_explicit_schema_write_truncate_replaces(bq, dataset):
    table_id = f"{dataset}.clusters"
    first = clusters_frame(
        ["Abell", "Canton", "Dickeyville"],
        [1, None, 2],
        [0.5, float("nan"), -1.25],
        ["2024-05-01T12:00:00Z", None, "2024-05-01T12:00:01.5Z"],
    )
    labels = {"run_id": "run-1", "component": "neighborhood-clusters"}
    job = load_truncate(bq, table_id, first, labels)
    assert job.state == "DONE" and job.error_result is None
    assert bq.get_job(job.job_id).labels == labels

    table = bq.get_table(table_id)
    assert [(f.name, f.field_type) for f in table.schema] == [
        (f.name, f.field_type) for f in SCHEMA
    ]
    assert table.num_rows == 3

    second = clusters_frame(
        ["Roland Park", "Waverly"], [3, 4], [2.0, 3.0], ["2024-06-01T00:00:00Z"] * 2
    )
    load_truncate(bq, table_id, second, {"run_id": "run-2"})
    assert bq.get_table(table_id).num_rows == 2

    # The app does not install the BigQuery Storage client; saying so avoids a warning.
    back = bq.list_rows(table_id).to_dataframe(create_bqstorage_client=False)
    back = back.sort_values("neighborhood", ignore_index=True)
    assert back["neighborhood"].tolist() == ["Roland Park", "Waverly"]
    assert back["top_cluster"].tolist() == [3, 4]
    assert back["score"].tolist() == [2.0, 3.0]
    assert back["_clustered_at"].tolist() == [pd.Timestamp("2024-06-01T00:00:00Z")] * 2


def test_bigquery_failed_truncate_load_leaves_the_table_as_it_was(bq, dataset):
    table_id = f"{dataset}.clusters"
    frame = clusters_frame(["Abell"], [1], [0.5], ["2024-05-01T12:00:00Z"])
    load_truncate(bq, table_id, frame, {"run_id": "good"})

    # A value the server (not the client) rejects, so the load job itself fails.
    config = bigquery.LoadJobConfig(
        schema=SCHEMA, write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE
    )
    bad_rows = [{"neighborhood": "Canton", "top_cluster": "not a number"}]
    with pytest.raises(exceptions.BadRequest):
        bq.load_table_from_json(bad_rows, table_id, job_config=config).result()

    assert [row["neighborhood"] for row in bq.list_rows(table_id)] == ["Abell"]


def test_bigquery_nulls_and_timestamps_round_trip(bq, dataset):
    table_id = f"{dataset}.clusters"
    frame = clusters_frame(
        ["Abell", "Canton", None],
        [1, None, 2],
        [0.5, float("nan"), None],
        ["2024-05-01T12:00:00.123456Z", None, "2024-05-01T08:00:00-04:00"],
    )
    load_truncate(bq, table_id, frame, {"run_id": "nulls"})

    rows = {row["top_cluster"]: row for row in bq.list_rows(table_id, selected_fields=SCHEMA)}
    assert rows[1]["neighborhood"] == "Abell"
    assert rows[1]["_clustered_at"] == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert rows[None]["score"] is None and rows[None]["_clustered_at"] is None
    assert rows[2]["neighborhood"] is None and rows[2]["score"] is None
    assert rows[2]["_clustered_at"] == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_bigquery_insert_rows_json_appends(bq, dataset):
    table = bq.create_table(
        bigquery.Table(
            f"{dataset}.runs",
            schema=[
                bigquery.SchemaField("run_id", "STRING", mode="REQUIRED"),
                bigquery.SchemaField("status", "STRING"),
                bigquery.SchemaField("rows", "INTEGER"),
                bigquery.SchemaField("started_at", "TIMESTAMP"),
            ],
        )
    )
    first = [{"run_id": "a", "status": "ok", "rows": 279, "started_at": "2024-05-01T12:00:00Z"}]
    second = [
        {"run_id": "b", "status": "failed", "rows": None, "started_at": "2024-05-02T12:00:00Z"},
        {"run_id": "c", "status": "ok", "rows": 279, "started_at": None},
    ]
    # With the client's default insertIds (deduplication) and without them.
    assert bq.insert_rows_json(table, first) == []
    assert bq.insert_rows_json(table, second, row_ids=[None, None]) == []

    # Emulators count streamed rows at once; real BigQuery may still buffer them.
    table_id = f"{table.project}.{table.dataset_id}.{table.table_id}"
    rows = list(bq.query(f"SELECT run_id, rows FROM `{table_id}` ORDER BY run_id").result())
    assert [(r["run_id"], r["rows"]) for r in rows] == [("a", 279), ("b", None), ("c", 279)]


def test_bigquery_query_order_by_parameters_and_labels(bq, dataset):
    table_id = f"{dataset}.clusters"
    frame = clusters_frame(
        ["Canton", "Abell", "Waverly", "Dickeyville"],
        [2, 1, 2, 1],
        [0.1, 0.2, 0.3, 0.4],
        ["2024-05-01T12:00:00Z"] * 4,
    )
    load_truncate(bq, table_id, frame, {"run_id": "query"})

    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter("cluster", "INT64", 2)],
        labels={"trigger": "test"},
    )
    job = bq.query(
        f"SELECT neighborhood, score FROM `{table_id}` WHERE top_cluster = @cluster "
        "ORDER BY score DESC",
        job_config=config,
    )
    assert [row["neighborhood"] for row in job.result()] == ["Waverly", "Canton"]
    assert bq.get_job(job.job_id).labels == {"trigger": "test"}

    ordered = bq.query(f"SELECT neighborhood FROM `{table_id}` ORDER BY neighborhood").to_dataframe(
        create_bqstorage_client=False
    )
    assert ordered["neighborhood"].tolist() == ["Abell", "Canton", "Dickeyville", "Waverly"]


def test_bigquery_missing_table_and_bad_sql(bq, dataset):
    with pytest.raises(exceptions.NotFound):
        bq.get_table(f"{dataset}.no_such_table")
    with pytest.raises(exceptions.NotFound):
        bq.query(f"SELECT 1 FROM `{dataset}.no_such_table`").result()
    with pytest.raises(exceptions.NotFound):
        bq.get_dataset(f"{bq.project}.{unique('missing')}")
    with pytest.raises(exceptions.BadRequest):
        bq.query("SELEC nothing").result()


# --- Cloud Storage -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gcs(gcs_emulator):
    client = emulators.storage_client(gcs_emulator)
    yield client
    client.close()


def test_gcs_objects_preconditions_listing_copy_delete(gcs):
    bucket = gcs.create_bucket(unique("bucket").replace("_", "-"))
    with pytest.raises(exceptions.Conflict):
        gcs.create_bucket(bucket.name)

    manifest = bucket.blob("runs/r1/run.json")
    manifest.upload_from_string('{"run_id": "r1"}', content_type="application/json")
    chart = bucket.blob("runs/r1/pca_clusters.png")
    chart.upload_from_string(b"\x89PNG fake", content_type="image/png")
    bucket.blob("latest/run.json").upload_from_string("{}", content_type="application/json")

    stored = bucket.get_blob("runs/r1/run.json")
    assert stored.content_type == "application/json"
    assert stored.download_as_bytes() == b'{"run_id": "r1"}'

    # The idempotency claim: create-only-if-absent wins once, then gets 412.
    claim = bucket.blob("claims/event-1")
    claim.upload_from_string("first", if_generation_match=0)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("claims/event-1").upload_from_string("second", if_generation_match=0)
    assert bucket.blob("claims/event-1").download_as_text() == "first"
    with pytest.raises(exceptions.PreconditionFailed):
        manifest.upload_from_string("{}", if_generation_match=stored.generation + 1)

    assert sorted(b.name for b in gcs.list_blobs(bucket, prefix="runs/r1/")) == [
        "runs/r1/pca_clusters.png",
        "runs/r1/run.json",
    ]
    listing = gcs.list_blobs(bucket, prefix="runs/", delimiter="/")
    assert list(listing) == [] and listing.prefixes == {"runs/r1/"}

    copied = bucket.copy_blob(chart, bucket, "latest/pca_clusters.png")
    assert copied.download_as_bytes() == b"\x89PNG fake"
    rewritten = bucket.blob("latest/run.json")
    token, done, total = rewritten.rewrite(manifest)
    while token is not None:
        token, done, total = rewritten.rewrite(manifest, token=token)
    assert done == total
    assert bucket.get_blob("latest/run.json").download_as_bytes() == b'{"run_id": "r1"}'

    copied.delete()
    assert not bucket.blob("latest/pca_clusters.png").exists()
    with pytest.raises(exceptions.NotFound):
        bucket.blob("latest/pca_clusters.png").download_as_bytes()


# --- functions-framework -------------------------------------------------------------------

THROWAWAY_FUNCTION = """
import json
import os

import functions_framework


@functions_framework.cloud_event
def recluster(cloud_event):
    record = {
        "id": cloud_event["id"],
        "type": cloud_event["type"],
        "source": cloud_event["source"],
        "data": cloud_event.data,
        "marker": os.environ.get("MARKER"),
        "removed": os.environ.get("REMOVED_VARIABLE"),
    }
    with open(os.environ["EVENTS_FILE"], "a") as events:
        events.write(json.dumps(record) + "\\n")
    print("handled", cloud_event["id"], flush=True)
"""


@pytest.fixture
def throwaway_function(tmp_path, monkeypatch) -> Iterator[tuple[emulators.FunctionServer, Path]]:
    source = tmp_path / "main.py"
    source.write_text(THROWAWAY_FUNCTION)
    events = tmp_path / "events.jsonl"
    # Must not reach the server: proves a None value removes an inherited variable.
    monkeypatch.setenv("REMOVED_VARIABLE", "inherited")
    env = {"EVENTS_FILE": str(events), "MARKER": "from-env", "REMOVED_VARIABLE": None}
    with emulators.functions_framework_server(source, env, log_path=tmp_path / "ff.log") as server:
        yield server, events


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_functions_framework_handles_structured_and_binary_cloudevents(throwaway_function):
    server, events = throwaway_function
    data = {"message": {"data": base64.b64encode(b"go").decode(), "messageId": "m-1"}}
    event_type = "google.cloud.pubsub.topic.v1.messagePublished"
    source = "//pubsub.googleapis.com/projects/test-project/topics/recluster"

    structured = {
        "specversion": "1.0",
        "id": "structured-1",
        "source": source,
        "type": event_type,
        "datacontenttype": "application/json",
        "data": data,
    }
    status, _ = http(
        "POST", server.url, structured, {"Content-Type": "application/cloudevents+json"}
    )
    assert status == 200

    binary_headers = {
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "binary-1",
        "ce-source": source,
        "ce-type": event_type,
    }
    status, _ = http("POST", server.url, data, binary_headers)
    assert status == 200

    assert read_events(events) == [
        {
            "id": event_id,
            "type": event_type,
            "source": source,
            "data": data,
            "marker": "from-env",
            "removed": None,
        }
        for event_id in ("structured-1", "binary-1")
    ]
    log = server.read_log()
    assert "handled structured-1" in log and "handled binary-1" in log


# --- Pub/Sub -------------------------------------------------------------------------------


class PushReceiver:
    """A local HTTP endpoint that records every push and acknowledges it with 204."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((emulators.HOST, 0), Handler)
        self.url = f"http://{emulators.HOST}:{self.server.server_address[1]}/push"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PushReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def create_push_subscription(emulator, topic: str, push_endpoint: str) -> str:
    base = f"{emulator.endpoint}/v1/projects/{emulator.project}"
    status, body = http("PUT", f"{base}/topics/{topic}")
    assert status == 200, body
    subscription = unique("push")
    status, body = http(
        "PUT",
        f"{base}/subscriptions/{subscription}",
        {
            "topic": f"projects/{emulator.project}/topics/{topic}",
            "pushConfig": {"pushEndpoint": push_endpoint},
        },
    )
    assert status == 200, body
    return f"projects/{emulator.project}/subscriptions/{subscription}"


def publish(emulator, topic: str, data: bytes, attributes: dict) -> str:
    status, body = http(
        "POST",
        f"{emulator.endpoint}/v1/projects/{emulator.project}/topics/{topic}:publish",
        {"messages": [{"data": base64.b64encode(data).decode(), "attributes": attributes}]},
    )
    assert status == 200, body
    return body["messageIds"][0]


def test_pubsub_push_delivers_the_raw_push_body(pubsub_emulator):
    topic = unique("recluster")
    with PushReceiver() as receiver:
        subscription = create_push_subscription(pubsub_emulator, topic, receiver.url)
        message_id = publish(pubsub_emulator, topic, b'{"table": "p.d.t"}', {"origin": "test"})
        wait_for(lambda: receiver.bodies, "the push delivery")

    body = receiver.bodies[0]
    assert set(body) == {"message", "subscription"}
    assert body["subscription"] == subscription
    message = body["message"]
    assert message["messageId"] == message_id
    assert base64.b64decode(message["data"]) == b'{"table": "p.d.t"}'
    assert message["attributes"] == {"origin": "test"}
    assert "publishTime" in message


def test_pubsub_push_to_functions_framework_arrives_as_cloudevent(
    pubsub_emulator, throwaway_function
):
    server, events = throwaway_function
    topic = unique("recluster")
    # functions-framework takes the CloudEvent source's topic from the push URL's path.
    push_url = f"{server.url}projects/{pubsub_emulator.project}/topics/{topic}"
    create_push_subscription(pubsub_emulator, topic, push_url)
    message_id = publish(pubsub_emulator, topic, b"go", {"origin": "test"})
    wait_for(lambda: read_events(events), "the function to handle the push")

    event = read_events(events)[0]
    assert event["id"] == message_id
    assert event["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert event["source"] == (
        f"//pubsub.googleapis.com/projects/{pubsub_emulator.project}/topics/{topic}"
    )
    message = event["data"]["message"]
    assert base64.b64decode(message["data"]) == b"go"
    assert message["attributes"] == {"origin": "test"}
    assert message["messageId"] == message_id
