"""The BigQuery adapter with the unmodified client against local-bigquery: size limits checked
before any row is read, the run's load job named after it (a retried insert is the same job),
the run_id read back, and which 403s are throttling."""

import uuid

import pytest
from google.api_core import exceptions

from clustering import InputError
from clustering.adapters import bigquery as adapter
from clustering.analysis.sample import make_sample
from clustering.table import output_schema
from tests.emulators import FaultProxy, bigquery_client

pytestmark = pytest.mark.e2e


@pytest.fixture
def dataset(bigquery_emulator, monkeypatch):
    monkeypatch.setenv(adapter.EMULATOR_ENV, bigquery_emulator.endpoint)
    name = f"adapter_{uuid.uuid4().hex[:8]}"
    client = bigquery_client(bigquery_emulator)
    client.create_dataset(f"{bigquery_emulator.project}.{name}")
    yield f"{bigquery_emulator.project}.{name}"
    client.delete_dataset(f"{bigquery_emulator.project}.{name}", delete_contents=True)


def clustered(rows: int, run_id: str):
    frame = make_sample(rows)
    return frame.assign(run_id=run_id)


def test_a_table_above_the_row_limit_is_refused_before_any_row_is_read(
    dataset, bigquery_emulator, monkeypatch
):
    table = f"{dataset}.features"
    frame = make_sample(30)
    bigquery_client(bigquery_emulator).load_table_from_dataframe(frame, table).result()
    with FaultProxy(bigquery_emulator.endpoint, lambda *_: "pass") as proxy:
        monkeypatch.setenv(adapter.EMULATOR_ENV, proxy.endpoint)
        with pytest.raises(
            InputError, match="has 30 rows, more than the 29 the memory engine reads"
        ) as refused:
            adapter.read_table(f"bq://{table}", max_rows=29)
    assert "MEMORY_MAX_ROWS" in str(refused.value) and "ENGINE=auto" in str(refused.value)
    assert proxy.requests and not [r for r in proxy.requests if "/data?" in r]
    monkeypatch.setenv(adapter.EMULATOR_ENV, bigquery_emulator.endpoint)
    assert len(adapter.read_table(f"bq://{table}", max_rows=30)) == 30


def test_the_load_job_is_named_after_the_run_and_a_repeat_is_the_same_job(
    dataset, bigquery_emulator
):
    table = f"bq://{dataset}.clusters"
    frame = clustered(25, "run-1")
    adapter.replace_table(table, frame, output_schema(frame), run_id="run-1")
    assert adapter.table_run_id(table) == "run-1"
    job = bigquery_client(bigquery_emulator).get_job(adapter.load_job_id("run-1"))
    assert job.labels == {"app": "neighborhood-clusters"} and job.state == "DONE"

    # The insert retried after a lost response meets its own job (409) and waits on it.
    adapter.replace_table(table, frame, output_schema(frame), run_id="run-1")
    assert adapter.table_run_id(table) == "run-1"


def test_only_throttling_403s_are_rate_limits():
    assert adapter.is_rate_limited(exceptions.Forbidden("x", errors=[{"reason": "quotaExceeded"}]))
    assert adapter.is_rate_limited(
        exceptions.Forbidden("x", errors=[{"reason": "rateLimitExceeded"}])
    )
    assert not adapter.is_rate_limited(
        exceptions.Forbidden("x", errors=[{"reason": "accessDenied"}])
    )
    assert not adapter.is_rate_limited(
        exceptions.TooManyRequests("x", errors=[{"reason": "rateLimitExceeded"}])
    )


def test_a_load_job_still_running_at_the_deadline_is_cancelled(
    dataset, bigquery_emulator, monkeypatch
):
    from clustering.adapters import budget

    project = bigquery_emulator.project
    job_id = adapter.load_job_id("run-slow")
    running = {
        "kind": "bigquery#job",
        "id": f"{project}:US.{job_id}",
        "jobReference": {"projectId": project, "jobId": job_id, "location": "US"},
        "configuration": {"jobType": "LOAD", "load": {}},
        "status": {"state": "RUNNING"},
    }

    def never_finishes(method: str, path: str, body: bytes):
        # The job is accepted and every poll of it says RUNNING, as a stuck job's would; no
        # emulator can be told to keep a job running, so these answers come from the proxy.
        if method == "POST" and "/upload/bigquery/" in path:
            return (200, running)
        if method == "GET" and f"/jobs/{job_id}" in path:
            return (200, running)
        if method == "POST" and f"/jobs/{job_id}/cancel" in path:
            return (200, {"kind": "bigquery#jobCancelResponse", "job": running})
        return "pass"

    frame = clustered(20, "run-slow")
    with FaultProxy(bigquery_emulator.endpoint, never_finishes) as proxy:
        monkeypatch.setenv(adapter.EMULATOR_ENV, proxy.endpoint)
        monkeypatch.setattr(adapter, "CANCEL_WAIT_SECONDS", 2.0)
        with (
            budget.bounded(budget.Budget.lasting(4)),
            pytest.raises(
                budget.OutOfTime, match=f"job {job_id}.* did not finish in the run's time"
            ),
        ):
            adapter.replace_table(
                f"bq://{dataset}.clusters", frame, output_schema(frame), run_id="run-slow"
            )
    assert [r for r in proxy.requests if "/cancel" in r], proxy.requests


def test_integer_columns_of_the_input_load_as_integers(dataset, bigquery_emulator):
    # A CSV's whole-number columns, one with a blank, stay integers through validation and
    # the clusters table's load (issue 21: 21323 came back as 21323.0).
    from clustering.adapters.local import parse_table
    from clustering.settings import AnalysisSettings
    from clustering.table import validate_features

    csv = b"area,pop,income,count,rate\nA,100,21323,3,0.5\nB,200,18000,,0.25\nC,300,40001,7,1\n"
    settings = AnalysisSettings(
        key_column="area",
        population_column="pop",
        clustering_features=("income", "count", "rate"),
        severity_feature="income",
        feature_directions=(("income", "higher_is_better"),),
    )
    frame = validate_features(parse_table(csv, "csv", "t.csv"), settings, "t.csv").frame
    table, run_id = f"bq://{dataset}.typed", f"typed-{uuid.uuid4().hex[:8]}"  # its own job
    schema = output_schema(frame.assign(run_id=run_id), "area", "pop")
    assert {f["name"]: f["type"] for f in schema} == {
        "area": "STRING",
        "pop": "INTEGER",
        "income": "INTEGER",
        "count": "INTEGER",
        "rate": "FLOAT",
        "run_id": "STRING",
    }
    adapter.replace_table(table, frame.assign(run_id=run_id), schema, run_id=run_id)
    client = bigquery_client(bigquery_emulator)
    loaded = {f.name: f.field_type for f in client.get_table(table.removeprefix("bq://")).schema}
    assert loaded["income"] == loaded["count"] == "INTEGER" and loaded["rate"] == "FLOAT"
    rows = client.query(f"SELECT area, income, count FROM `{dataset}.typed` ORDER BY area").result()
    assert [tuple(r.values()) for r in rows] == [
        ("A", 21323, 3),
        ("B", 18000, None),
        ("C", 40001, 7),
    ]
