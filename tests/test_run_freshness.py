"""terraform/sql/run_freshness.sql, the freshness view Terraform creates over the runs table:
the SQL exactly as templatefile() renders it, run on the BigQuery emulator (local-bigquery)
through the unmodified client, against runs tables holding succeeded, failed and dry runs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import bigquery

from clustering.table import table_schema
from tests import emulators
from tests.helpers import REPO

SQL = REPO / "terraform" / "sql" / "run_freshness.sql"
COLUMNS = [
    "last_success_run_id",
    "last_success_at",
    "last_success_input_rows",
    "last_success_source_table",
    "hours_since_success",
    "failed_since_success",
    "failures_since_success",
    "last_failure_at",
    "last_failure_error",
]
NOW = datetime.now(UTC).replace(microsecond=0)


def render(runs_table: str) -> str:
    """What templatefile() makes of the file: its one variable, nothing else templated."""
    text = SQL.read_text(encoding="utf-8")
    assert set(re.findall(r"\$\{(\w+)\}", text)) == {"runs_table"}
    assert "%{" not in text, "a template directive would change the SQL"
    return text.replace("${runs_table}", runs_table)


@pytest.fixture(scope="module")
def bq(bigquery_emulator) -> Iterator[bigquery.Client]:
    client = emulators.bigquery_client(bigquery_emulator)
    dataset = f"{bigquery_emulator.project}.freshness"
    client.create_dataset(dataset, exists_ok=True)
    yield client
    client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
    client.close()


def run(run_id: str, status: str, hours_ago: float, **fields) -> dict:
    """A runs-table row (clustering.job.history_row's columns) finished `hours_ago`."""
    finished = NOW - timedelta(hours=hours_ago)
    return {
        "run_id": run_id,
        "trigger": "pubsub",
        "source_table": "bq://p.analytics.neighborhood_features",
        "started_at": (finished - timedelta(seconds=5)).isoformat(),
        "finished_at": finished.isoformat(),
        "status": status,
        **fields,
    }


def freshness(bq: bigquery.Client, rows: list[dict]) -> list[dict]:
    """The view's rows over a new runs table (created from the code's schema) holding `rows`."""
    table_id = f"{bq.project}.freshness.runs_{uuid.uuid4().hex[:8]}"
    schema = [bigquery.SchemaField.from_api_repr(f) for f in table_schema("runs_table")]
    bq.create_table(bigquery.Table(table_id, schema=schema))
    if rows:
        config = bigquery.LoadJobConfig(schema=schema)
        bq.load_table_from_json(rows, table_id, job_config=config).result()
    result = bq.query(render(table_id)).result()
    assert [field.name for field in result.schema] == COLUMNS
    return [dict(row) for row in result]


def test_the_last_success_and_the_failures_after_it(bq):
    (row,) = freshness(
        bq,
        [
            run("old-success", "succeeded", 72, input_rows=270),
            run("old-failure", "failed", 60, error="bad data before the success"),
            run("last-success", "succeeded", 48, input_rows=279),
            run("dry-after", "dry_run", 30, input_rows=300),
            run("failure-1", "failed", 24, error="population is negative"),
            run("failure-2", "failed", 12, error="duplicated neighborhood"),
        ],
    )
    assert row["last_success_run_id"] == "last-success"
    assert row["last_success_at"] == NOW - timedelta(hours=48)
    assert row["last_success_input_rows"] == 279
    assert row["last_success_source_table"] == "bq://p.analytics.neighborhood_features"
    assert row["hours_since_success"] in (48, 49)  # the view reads the clock a moment later
    # Only the failures after the last success count; the one before it does not.
    assert row["failed_since_success"] is True
    assert row["failures_since_success"] == 2
    assert row["last_failure_at"] == NOW - timedelta(hours=12)
    assert row["last_failure_error"] == "duplicated neighborhood"


def test_a_dry_run_is_neither_a_success_nor_a_failure(bq):
    (row,) = freshness(
        bq,
        [
            run("success", "succeeded", 10, input_rows=279),
            run("dry", "dry_run", 2, input_rows=12),
        ],
    )
    assert row["last_success_run_id"] == "success"
    assert row["last_success_input_rows"] == 279
    assert row["failed_since_success"] is False
    assert row["failures_since_success"] == 0
    assert row["last_failure_at"] is None and row["last_failure_error"] is None


def test_a_success_after_a_failure_clears_it(bq):
    (row,) = freshness(
        bq,
        [
            run("failure", "failed", 5, error="bucket missing"),
            run("recovered", "succeeded", 1, input_rows=279),
        ],
    )
    assert row["last_success_run_id"] == "recovered"
    assert row["failed_since_success"] is False and row["failures_since_success"] == 0


def test_only_failures_mean_no_success_and_every_failure_counts(bq):
    (row,) = freshness(
        bq,
        [
            run("f1", "failed", 3, error="first"),
            run("dry", "dry_run", 2, input_rows=279),
            run("f2", "failed", 1, error="second"),
        ],
    )
    assert row["last_success_run_id"] is None and row["last_success_at"] is None
    assert row["hours_since_success"] is None
    assert row["failed_since_success"] is True and row["failures_since_success"] == 2
    assert row["last_failure_error"] == "second"


def test_an_empty_history_still_gives_one_row(bq):
    (row,) = freshness(bq, [])
    assert row["last_success_run_id"] is None
    assert row["failed_since_success"] is False and row["failures_since_success"] == 0
