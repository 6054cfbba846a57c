"""The warehouse engine on the emulators: local-bigquery runs its SQL with the unmodified client,
fake-gcs-server receives its EXPORT DATA. Every row the SQL scores must equal the numpy
assignment of the same model document (clustering.analysis.assign, written from DESIGN.md's
rules without any SQL); a whole run publishes every row, its model and its transitions the way
the memory engine does, and leaves no staging table behind."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from google.cloud import bigquery

from clustering import InputError
from clustering.adapters import bigquery as bq_adapter
from clustering.adapters import budget, warehouse
from clustering.adapters import warehouse_sql as sql
from clustering.analysis.assign import ASSIGNED_COLUMNS, assign
from clustering.analysis.document import document, fitted_model, read_model
from clustering.analysis.identity import identify
from clustering.analysis.model import cluster
from clustering.analysis.sample import make_sample
from clustering.engines import choose
from clustering.engines.warehouse import staging_schema
from clustering.job import RunRequest, run_job
from clustering.settings import AnalysisSettings, JobSettings
from clustering.table import validate_features
from tests import emulators

pytestmark = pytest.mark.e2e

PROJECT = emulators.DEFAULT_PROJECT
# Columns the SQL and numpy must agree on exactly: all of `assign`'s but the margin (compared
# to rounding); stability and the run's stamp are not the model's.
EXACT = tuple(c for c in ASSIGNED_COLUMNS if c != "fit_margin")


@pytest.fixture(scope="module")
def clients(bigquery_emulator, gcs_emulator) -> Iterator[tuple]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(bq_adapter.EMULATOR_ENV, bigquery_emulator.endpoint)
        patch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
        bq = emulators.bigquery_client(bigquery_emulator)
        gcs = emulators.storage_client(gcs_emulator)
        yield bq, gcs
        bq.close()


@pytest.fixture
def dataset(clients) -> Iterator[str]:
    bq, _ = clients
    name = f"{PROJECT}.wh_{uuid.uuid4().hex[:8]}"
    bq.create_dataset(name)
    yield name
    bq.delete_dataset(name, delete_contents=True, not_found_ok=True)


@pytest.fixture
def bucket(clients) -> str:
    _, gcs = clients
    return gcs.create_bucket(f"wh-{uuid.uuid4().hex[:10]}").name


def load(bq, table_id: str, frame: pd.DataFrame, nan_rows: int = 0) -> None:
    """Load `frame`; then its first `nan_rows` rows get NaN (not null) in med_age, which a
    DataFrame load cannot write: BigQuery keeps NaN in FLOAT64, and the SQL must impute it."""
    bq.load_table_from_dataframe(frame, table_id).result()
    if nan_rows:
        names = list(frame["neighborhood"].iloc[:nan_rows])
        config = bigquery.QueryJobConfig(
            query_parameters=[bigquery.ArrayQueryParameter("names", "STRING", names)]
        )
        bq.query(
            f"UPDATE `{table_id}` SET med_age = IEEE_DIVIDE(0, 0) WHERE neighborhood IN "
            "UNNEST(@names)",
            job_config=config,
        ).result()


def fitted_on(frame: pd.DataFrame):
    """The model of a first memory-engine fit of `frame` (the document read back from JSON)."""
    settings = AnalysisSettings()
    valid = validate_features(frame, settings, "test").frame
    identity = identify(cluster(valid, settings), None, {}, "fit")
    written = json.loads(json.dumps({"model": document(fitted_model(identity, settings))}))
    return identity, read_model(written, "run.json")


def exported_rows(gcs, prefix_uri: str) -> pd.DataFrame:
    """Every shard of an export (gs://bucket/path/name-*.csv), read as one table."""
    bucket, _, path = prefix_uri.removeprefix("gs://").partition("/")
    stem = path.removesuffix("*.csv")
    shards = [b for b in gcs.list_blobs(bucket, prefix=stem) if b.name.endswith(".csv")]
    assert shards, f"nothing exported to {prefix_uri}"
    frames = [
        pd.read_csv(io.BytesIO(b.download_as_bytes()), keep_default_na=False, na_values=[""])
        for b in shards
    ]
    return pd.concat(frames, ignore_index=True)


def assert_rows_equal_numpy(scored: pd.DataFrame, features: pd.DataFrame, model) -> None:
    """Each scored row equals `assign` of the same features row under the same model."""
    expected = assign(features, model).set_index("neighborhood")
    got = scored.set_index("neighborhood").loc[expected.index]
    for column in EXACT:
        want, have = (_comparable(s[column]) for s in (expected, got))
        differ = want != have
        assert not differ.any(), (column, int(differ.sum()), got[differ].head(3).to_dict("records"))
    np.testing.assert_allclose(
        got["fit_margin"].to_numpy(dtype=float),
        expected["fit_margin"].to_numpy(dtype=float),
        rtol=1e-9,
        atol=1e-12,
    )


def _comparable(values: pd.Series) -> np.ndarray:
    """Values as text, a blank (None, NaN, NA) as one marker: ids read back from a CSV as
    floats compare with the Int64 ids of `assign`."""
    blank = values.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(values):
        shown = values.astype("float64").fillna(0).astype("int64").astype(str).to_numpy()
    else:
        shown = values.astype(str).to_numpy()
    return np.where(blank, "\0", shown)


@pytest.mark.slow
def test_a_million_rows_scored_in_bigquery_equal_the_numpy_assignment(clients, dataset, bucket):
    bq, gcs = clients
    rows = 1_000_000
    frame = make_sample(rows, random_state=11)
    source = f"{dataset}.features"
    load(bq, source, frame, nan_rows=5_000)
    nan_frame = frame.copy()
    nan_frame.loc[: 5_000 - 1, "med_age"] = np.nan
    _, model = fitted_on(frame.sample(6_000, random_state=0))
    # Values far outside the fit's range, which the clipping must bring back.
    assert (frame["median_assessed_value"] > model.residential.clip[1][-2]).any()

    staged = f"{dataset}.staged"
    table = bq.get_table(source)
    warehouse.create_table(staged, staging_schema(tuple(f.to_api_repr() for f in table.schema)))
    jobs = warehouse.Jobs(PROJECT, "million", 10**12)
    stamp = sql.Stamp("million", "2026-01-01T00:00:00+00:00")
    columns = tuple(frame.columns)
    began = time.perf_counter()
    statement = sql.score(sql.Table(source), columns, model, {}, stamp)
    warehouse.query(jobs, "score", statement, staged, "WRITE_APPEND")
    scoring_seconds = time.perf_counter() - began
    assert bq.get_table(staged).num_rows == rows
    uri = f"gs://{bucket}/million/scored-*.csv"
    kept = tuple(
        f for f in warehouse.fields(staged) if f[0] in ("neighborhood", *sql.OUTPUT_COLUMNS)
    )
    warehouse.query(jobs, "export", sql.export(sql.Table(staged), uri, kept))
    scored = exported_rows(gcs, uri)
    assert len(scored) == rows and scored["neighborhood"].is_unique
    assert (scored["run_id"] == "million").all()
    assert_rows_equal_numpy(scored, nan_frame, model)
    # Blank values took the impute value: null (from the load) and NaN alike.
    assert frame["med_age"].isna().any()
    print(f"scoring {rows:,} rows on the emulator: {scoring_seconds:.1f} s")


def settings_for(dataset: str, out: str, **extra) -> JobSettings:
    return JobSettings(
        features_source=f"bq://{dataset}.features",
        artifacts_dest=out,
        clusters_table=f"bq://{dataset}.clusters",
        transitions_table=f"bq://{dataset}.transitions",
        **({"engine": "warehouse", "sample_rows": 1_500, "settle_seconds": 0} | extra),
    )


def clusters_of(bq, dataset: str) -> pd.DataFrame:
    rows = bq.list_rows(f"{dataset}.clusters")
    return rows.to_dataframe(create_bqstorage_client=False)


def test_a_warehouse_run_publishes_every_row_through_its_model(
    clients, dataset, bucket, googlesql_checked
):
    bq, gcs = clients
    frame = make_sample(4_000, random_state=3)
    load(bq, f"{dataset}.features", frame, nan_rows=50)
    out = f"gs://{bucket}/runs-here"
    first = run_job(settings_for(dataset, out), RunRequest(reason="first"))
    manifest = first.manifest
    assert manifest["engine"] == "warehouse" and manifest["model"]["engine"] == "warehouse"
    assert manifest["input"]["rows"] == 4_000 and manifest["input"]["sample_rows"] == 1_500
    assert manifest["model"]["sample"] == {
        "rows": 1_500,
        "of_rows": 4_000,
        "rule": sql.SAMPLE_RULE,
    }
    table = clusters_of(bq, dataset)
    assert len(table) == 4_000 and set(table["run_id"]) == {first.run_id}
    # The clusters table is the model document applied to every row of the features table.
    model = read_model(manifest, "run.json")
    features = frame.copy()
    features.loc[: 50 - 1, "med_age"] = np.nan
    assert_rows_equal_numpy(table, features, model)
    # Cohort sizes count every row; the charts and names come from the sample.
    sizes = table[table["excluded_type"] == "Residential"]["sub_cluster"].value_counts()
    assert {c["sub_cluster"]: c["rows"] for c in manifest["cohorts"]} == sizes.to_dict()
    exported = manifest["outputs"]["exported"]
    assert len(exported_rows(gcs, exported["neighborhood_clusters.csv"])) == 4_000
    excluded = exported_rows(gcs, exported["excluded_neighborhood_analysis.csv"])
    assert len(excluded) == (table["excluded_type"] != "Residential").sum()
    latest = {b.name for b in gcs.list_blobs(bucket, prefix="runs-here/latest/")}
    assert f"runs-here/latest/{'run.json'}" in latest
    report = gcs.bucket(bucket).blob("runs-here/latest/report.html").download_as_text()
    assert "drawn from a sample of 1,500 of 4,000 rows" in report

    # The second run: five neighborhoods take another cohort's values and move.
    moved = frame.copy()
    residential = table[table["excluded_type"] == "Residential"]
    cohort = residential["sub_cluster"]
    names = list(residential.loc[cohort == cohort.max(), "neighborhood"][:5])
    donor = (
        residential.loc[cohort == cohort.min()].sort_values("fit_margin")["neighborhood"].iloc[-1]
    )
    values = frame.set_index("neighborhood").loc[donor]
    for column in frame.columns.drop(["neighborhood", "population"]):
        moved.loc[moved["neighborhood"].isin(names), column] = values[column]
    bq.load_table_from_dataframe(
        moved,
        f"{dataset}.features",
        job_config=bigquery.LoadJobConfig(write_disposition="WRITE_TRUNCATE"),
    ).result()
    second = run_job(settings_for(dataset, out), RunRequest(reason="second"))
    moves = second.manifest["transitions"]
    assert moves["previous_run_id"] == first.run_id and moves["moved"] >= len(names)
    appended = bq.list_rows(f"{dataset}.transitions").to_dataframe(create_bqstorage_client=False)
    assert set(appended["run_id"]) == {second.run_id}
    assert len(appended) == moves["moved"] + moves["appeared"] + moves["disappeared"]
    assert set(names) <= set(appended["neighborhood"])
    assert set(clusters_of(bq, dataset)["run_id"]) == {second.run_id}
    pointer = json.loads(gcs.bucket(bucket).blob("runs-here/latest/run.json").download_as_text())
    assert pointer["run_id"] == second.run_id

    # Nothing is left in staging; every job is ours, capped, and named after its run.
    assert {t.table_id for t in bq.list_tables(dataset)} == {
        "features",
        "clusters",
        "transitions",
    }
    # The copy over the clusters table is the run's load job: the next run waits for it.
    for step in ("_checks", "_sample", "_score", "_transitions", "_summary", ""):
        job = bq.get_job(f"neighborhood_clusters_{second.run_id}{step}")
        assert job.labels == {"app": "neighborhood-clusters"} and job.state == "DONE", step
        if job.job_type == "query":
            assert job.maximum_bytes_billed == JobSettings().maximum_bytes_billed, step
    # ZetaSQL analyzed every statement of both runs as it was sent (tests/conftest.py).
    job = f"neighborhood_clusters_{second.run_id}_"
    sent = {label.removeprefix(job) for label, _ in googlesql_checked.statements}
    assert {"checks", "sample", "score", "transitions", "summary", "append_transitions"} <= sent
    assert {"export_neighborhood_clusters", "export_excluded_neighborhood_analysis"} <= sent


def test_auto_sends_a_table_above_memory_max_rows_to_the_warehouse(clients, dataset):
    bq, _ = clients
    load(bq, f"{dataset}.features", make_sample(300))
    base = settings_for(dataset, "unused", memory_max_rows=300).__dict__ | {"engine": "auto"}
    base.pop("analysis")
    assert choose(JobSettings(**base)).engine == "memory"
    above = choose(JobSettings(**(base | {"memory_max_rows": 299})))
    assert above.engine == "warehouse" and above.rows == 300
    assert above.columns[:2] == ("neighborhood", "population")
    without = base | {"memory_max_rows": 299, "clusters_table": None, "transitions_table": None}
    with pytest.raises(InputError, match=r"more than MEMORY_MAX_ROWS=299.*set CLUSTERS_TABLE"):
        choose(JobSettings(**without))
    # The warehouse engine would publish the DROP_KEYS rows: it refuses them instead.
    dropping = base | {"memory_max_rows": 299, "analysis": AnalysisSettings(drop_keys=("X",))}
    with pytest.raises(InputError, match=r"above MEMORY_MAX_ROWS: .* does not apply DROP_KEYS"):
        choose(JobSettings(**dropping))
    # ENGINE=memory reads what it is given, and refuses a table above the limit unread.
    forced = base | {"memory_max_rows": 299, "engine": "memory"}
    assert choose(JobSettings(**forced)).engine == "memory"
    with pytest.raises(InputError, match="more than the 299 the memory engine reads"):
        run_job(JobSettings(**forced), RunRequest(dry_run=True))


def test_a_dry_run_scores_in_staging_and_publishes_nothing(clients, dataset, tmp_path):
    bq, _ = clients
    load(bq, f"{dataset}.features", make_sample(2_000, random_state=5))
    report = run_job(settings_for(dataset, str(tmp_path)), RunRequest(dry_run=True))
    assert report.status == "dry_run" and report.manifest["input"]["rows"] == 2_000
    assert {t.table_id for t in bq.list_tables(dataset)} == {"features"}
    assert not (tmp_path / "latest").exists()


def test_a_local_out_says_where_the_rows_are_instead_of_downloading_them(
    clients, dataset, tmp_path
):
    bq, _ = clients
    load(bq, f"{dataset}.features", make_sample(2_000, random_state=5))
    said = []
    report = run_job(settings_for(dataset, str(tmp_path)), progress=said.append)
    assert any(f"the rows are in bq://{dataset}.clusters" in line for line in said), said
    files = {p.name for p in (tmp_path / "latest").iterdir()}
    assert "run.json" in files and "report.html" in files
    assert not [f for f in files if f.endswith(".csv")]
    assert report.manifest["outputs"]["exported"] == {}
    assert len(clusters_of(bq, dataset)) == 2_000


def test_a_repeated_step_finds_its_job_instead_of_running_again(clients, dataset):
    bq, _ = clients
    load(bq, f"{dataset}.features", make_sample(50))
    copy = sql.Statement(
        f"INSERT INTO `{dataset}.features` SELECT * FROM `{dataset}.features` LIMIT 1"
    )
    jobs = warehouse.Jobs(PROJECT, "repeat", 10**12)
    first = warehouse.query(jobs, "insert", copy)
    again = warehouse.query(jobs, "insert", copy)
    assert first.job_id == again.job_id == "neighborhood_clusters_repeat_insert"
    assert bq.get_table(f"{dataset}.features").num_rows == 51


def test_a_query_bigquery_refuses_for_the_data_is_one_line(clients, dataset):
    bq, _ = clients
    frame = make_sample(50).astype({"med_age": object})
    frame.loc[3, "med_age"] = "forty"
    bq.load_table_from_dataframe(frame.astype({"med_age": str}), f"{dataset}.features").result()
    _, model = fitted_on(make_sample(400))
    columns = tuple(frame.columns)
    statement = sql.score(
        sql.Table(f"{dataset}.features"), columns, model, {}, sql.Stamp("x", "2026-01-01T00:00:00Z")
    )
    with pytest.raises(InputError, match=r"score: BigQuery refused the job .*hold numbers"):
        warehouse.query(warehouse.Jobs(PROJECT, "bad", 10**12), "score", statement)


def test_a_query_still_running_at_the_deadline_is_cancelled(
    clients, bigquery_emulator, monkeypatch
):
    job_id = "neighborhood_clusters_slow_score"
    running = {
        "kind": "bigquery#job",
        "id": f"{PROJECT}:US.{job_id}",
        "jobReference": {"projectId": PROJECT, "jobId": job_id, "location": "US"},
        "configuration": {"jobType": "QUERY", "query": {"query": "SELECT 1"}},
        "status": {"state": "RUNNING"},
    }

    def never_finishes(method: str, path: str, body: bytes):
        # Every poll says RUNNING, as a stuck job's would; no emulator can be told to keep a
        # job running, so these answers come from the proxy.
        if method == "POST" and path.split("?")[0].endswith("/jobs"):
            return (200, running)
        if f"/jobs/{job_id}/cancel" in path:
            return (200, {"kind": "bigquery#jobCancelResponse", "job": running})
        if f"/jobs/{job_id}" in path or f"/queries/{job_id}" in path:
            return (200, running | {"jobComplete": False})
        return "pass"

    with emulators.FaultProxy(bigquery_emulator.endpoint, never_finishes) as proxy:
        monkeypatch.setenv(bq_adapter.EMULATOR_ENV, proxy.endpoint)
        monkeypatch.setattr(bq_adapter, "CANCEL_WAIT_SECONDS", 2.0)
        with (
            budget.bounded(budget.Budget.lasting(4)),
            pytest.raises(budget.OutOfTime, match=f"score \\(job {job_id}\\) did not finish"),
        ):
            warehouse.query(
                warehouse.Jobs(PROJECT, "slow", 10**12), "score", sql.Statement("SELECT 1")
            )
    assert [r for r in proxy.requests if "/cancel" in r], proxy.requests
