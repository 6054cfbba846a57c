"""What an outside review found (issue 16), on run_job with local files: formula cells, expired
run folders, self-repair of a table/latest disagreement, and the columns a deployment keeps."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from clustering import InputError
from clustering.job import RunRequest, run_job
from clustering.settings import AnalysisSettings, JobSettings
from clustering.table import escape_cell, people_csv, read_people_csv, unescape_cell
from tests.helpers import cohort_table, move_rows

ANALYSIS = AnalysisSettings(k_max=4)
HOSTILE = [
    '=HYPERLINK("http://example.com","x")',
    "+SUM(1,1)",
    "@cmd",
    "-2+3",
    "\x07Bell",
    "'quoted",
]
FORMULA = ("=", "+", "-", "@", "\t", "\r", "\n")


def hostile_table() -> pd.DataFrame:
    table = cohort_table()
    table.loc[: len(HOSTILE) - 1, "neighborhood"] = HOSTILE
    return table.assign(**{"=1+1": "note", "@owner": ["=A1"] * len(table)})


def settings_for(root: Path, features: pd.DataFrame, **changes) -> JobSettings:
    source = root / "features.parquet"
    features.to_parquet(source, index=False)
    return JobSettings(
        features_source=str(source),
        artifacts_dest=str(root / "out"),
        analysis=changes.pop("analysis", ANALYSIS),
        **changes,
    )


def cells(content: bytes) -> list[str]:
    """Every cell of a CSV, header included, as a spreadsheet would receive it."""
    return [cell for row in csv.reader(io.StringIO(content.decode())) for cell in row]


def evaluated(cell: str) -> bool:
    """Whether a spreadsheet would take `cell` for a formula (a number is no formula)."""
    if not cell or cell[0] not in FORMULA:
        return False
    try:
        float(cell)
    except ValueError:
        return True
    return False


# --- 1. Formula cells --------------------------------------------------------------------------


def test_escaping_is_exact_and_leaves_numbers_and_plain_text_alone() -> None:
    for value in [*HOSTILE, "''", "'", "Canton", "", "a=b", 3, None, -2.5]:
        assert unescape_cell(escape_cell(value)) == value
    assert escape_cell("Canton") == "Canton" and escape_cell(-2.5) == -2.5
    frame = pd.DataFrame({"neighborhood": HOSTILE, "=x": [-1.5] * len(HOSTILE)})
    content = people_csv(frame)
    assert not any(evaluated(cell) for cell in cells(content))
    pd.testing.assert_frame_equal(read_people_csv(content), frame)


def test_no_csv_of_a_run_carries_a_formula_and_tables_keep_the_exact_names(tmp_path) -> None:
    table = hostile_table()
    settings = settings_for(
        tmp_path,
        table,
        clusters_table=str(tmp_path / "clusters.parquet"),
        transitions_table=str(tmp_path / "t.csv"),
    )
    first = run_job(settings, RunRequest(trigger="test"))
    moved = move_rows(table, HOSTILE[:2], like="Cohort 1 Street 010")
    settings = settings_for(
        tmp_path,
        moved,
        clusters_table=settings.clusters_table,
        transitions_table=settings.transitions_table,
    )
    second = run_job(settings, RunRequest(trigger="test"))
    for report in (first, second):
        folder = tmp_path / "out" / "runs" / report.run_id
        for name in report.manifest["outputs"]["files"]:
            if name.endswith(".csv"):
                found = [c for c in cells((folder / name).read_bytes()) if evaluated(c)]
                assert found == [], (name, found)
    # The table keeps the names byte-exact, and so does our own reading of the previous CSV:
    # the transitions name the moved neighborhoods exactly.
    clusters = pd.read_parquet(tmp_path / "clusters.parquet")
    assert set(HOSTILE) <= set(clusters["neighborhood"]) and "=1+1" in clusters
    assert set(clusters["@owner"]) == {"=A1"}
    moves = read_people_csv((tmp_path / "t.csv").read_bytes())
    assert moves["neighborhood"].tolist() == sorted(HOSTILE[:2])
    assert not any(evaluated(cell) for cell in cells((tmp_path / "t.csv").read_bytes()))
    assert second.manifest["transitions"]["moved"] == 2


# --- 4. Expired run folders ----------------------------------------------------------------------


def test_the_previous_state_comes_from_latest_when_its_run_folder_expired(tmp_path) -> None:
    table = cohort_table()
    settings = settings_for(tmp_path, table, transitions_table=str(tmp_path / "t.csv"))
    first = run_job(settings, RunRequest(trigger="test"))
    # The lifecycle rule deletes runs/<id>/ after artifact_retention_days, latest/ stays.
    shutil.rmtree(tmp_path / "out" / "runs" / first.run_id)
    moved = ["Cohort 3 Street 001", "Cohort 3 Street 002"]
    settings = settings_for(
        tmp_path,
        move_rows(table, moved, like="Cohort 1 Street 000"),
        transitions_table=str(tmp_path / "t.csv"),
    )
    second = run_job(settings, RunRequest(trigger="test"))
    assert second.manifest["transitions"]["previous_run_id"] == first.run_id
    assert second.manifest["transitions"]["moved"] == 2
    assert "neighborhood_cluster_transitions.csv" in second.manifest["outputs"]["files"]
    assert pd.read_csv(tmp_path / "t.csv")["neighborhood"].tolist() == moved


def test_a_latest_copy_of_another_run_is_not_taken_for_the_previous_one(tmp_path) -> None:
    table = cohort_table()
    settings = settings_for(tmp_path, table)
    first = run_job(settings, RunRequest(trigger="test"))
    second = run_job(settings, RunRequest(trigger="test"))
    # An interrupted switch on Cloud Storage: the pointer names the second run, the CSV
    # beside it is still the first run's.
    latest = tmp_path / "out" / "latest"
    shutil.copy(tmp_path / "out" / "runs" / first.run_id / "neighborhood_clusters.csv", latest)
    moved = move_rows(table, ["Cohort 3 Street 001"], like="Cohort 1 Street 000")
    third = run_job(settings_for(tmp_path, moved), RunRequest(trigger="test"))
    assert third.manifest["transitions"]["previous_run_id"] == second.run_id
    assert third.manifest["transitions"]["moved"] == 1


def test_the_cli_reports_a_run_whose_previous_csv_is_gone(tmp_path, capsys) -> None:
    from clustering.cli import main

    features = tmp_path / "features.csv"
    cohort_table().to_csv(features, index=False)
    args = ["run", "--features", str(features), "--out", str(tmp_path / "out"), "--k-max", "4"]
    assert main([*args, "--quiet"]) == 0
    for csv_file in (tmp_path / "out").rglob("neighborhood_clusters.csv"):
        csv_file.unlink()
    assert main([*args, "--quiet"]) == 0
    assert "no transitions" in capsys.readouterr().out


def test_latest_keeps_every_file_the_next_run_reads(tmp_path) -> None:
    name = "run.json"
    report = run_job(settings_for(tmp_path, cohort_table()), RunRequest(trigger="test"))
    latest = tmp_path / "out" / "latest"
    assert json.loads((latest / name).read_text())["run_id"] == report.run_id
    assert set(read_people_csv((latest / "neighborhood_clusters.csv").read_bytes())["run_id"]) == {
        report.run_id
    }


# --- 11. The columns a deployment publishes ------------------------------------------------------


def test_output_columns_keep_only_the_chosen_input_columns_everywhere(tmp_path) -> None:
    table = cohort_table().assign(home_address="12 Secret St")
    settings = settings_for(
        tmp_path,
        table,
        clusters_table=str(tmp_path / "clusters.parquet"),
        output_columns=("population", "crime_per_capita"),
    )
    report = run_job(settings, RunRequest(trigger="test"))
    clusters = pd.read_parquet(tmp_path / "clusters.parquet")
    inputs = ["neighborhood", "population", "crime_per_capita"]
    assert [c for c in clusters.columns if c in table.columns] == inputs
    assert {"top_cluster", "sub_cluster", "cohort_name", "run_id"} <= set(clusters.columns)
    folder = tmp_path / "out" / "runs" / report.run_id
    for name in ("neighborhood_clusters.csv", "excluded_neighborhood_analysis.csv"):
        content = (folder / name).read_bytes()
        assert b"Secret" not in content and b"housing_vacancy_rate" not in content, name
    # The clustering itself still used every feature.
    assert "housing_vacancy_rate" in report.manifest["features"]["used"]


def test_every_column_is_published_by_default_and_an_unknown_one_is_an_input_error(tmp_path):
    from clustering import InputError

    table = cohort_table().assign(note="kept")
    report = run_job(settings_for(tmp_path, table), RunRequest(trigger="test"))
    folder = tmp_path / "out" / "runs" / report.run_id
    clusters = read_people_csv((folder / "neighborhood_clusters.csv").read_bytes())
    assert set(table.columns) <= set(clusters.columns)
    with pytest.raises(InputError, match=r"no column 'populaton' \(did you mean 'population'"):
        run_job(settings_for(tmp_path, table, output_columns=("populaton",)), RunRequest())


# --- 10. The CLI takes the run lock for shared destinations ------------------------------------


@pytest.mark.e2e
def test_the_cli_publishing_to_gs_takes_and_releases_the_functions_run_lock(
    gcs_emulator, monkeypatch, tmp_path, capsys
) -> None:
    import uuid
    from datetime import UTC, datetime

    from clustering.adapters import claims
    from clustering.adapters.gcs import GcsStore
    from clustering.cli import main
    from tests.emulators import storage_client

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    bucket = storage_client(gcs_emulator).create_bucket(f"cli-lock-{uuid.uuid4().hex[:8]}")
    features = tmp_path / "features.csv"
    cohort_table().to_csv(features, index=False)
    out = f"gs://{bucket.name}/artifacts"
    args = ["run", "--features", str(features), "--out", out, "--k-max", "4", "--quiet"]
    store = GcsStore(out)
    held = claims.Claim("20260101T000000Z-deployed", "event-1", datetime.now(UTC).isoformat())
    assert store.create_claim(claims.LOCK_KEY, held.encode()) is not None
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run 20260101T000000Z-deployed since") and "run lock" in err
    assert not [b.name for b in bucket.list_blobs(prefix="artifacts/runs/")]
    store.release(claims.LOCK_KEY)
    assert main(args) == 0
    assert [b.name for b in bucket.list_blobs(prefix="artifacts/latest/run.json")]
    assert store.read_claim(claims.LOCK_KEY) is None


# --- 6. Settling ---------------------------------------------------------------------------------


@pytest.fixture
def features_table(bigquery_emulator, monkeypatch):
    """A fresh features table in the BigQuery emulator, just loaded."""
    import uuid

    from clustering.adapters import bigquery as adapter
    from tests.emulators import bigquery_client

    monkeypatch.setenv(adapter.EMULATOR_ENV, bigquery_emulator.endpoint)
    client = bigquery_client(bigquery_emulator)
    dataset = f"{bigquery_emulator.project}.settle_{uuid.uuid4().hex[:8]}"
    client.create_dataset(dataset)
    client.load_table_from_dataframe(cohort_table(), f"{dataset}.features").result()
    yield client, f"{dataset}.features"
    client.delete_dataset(dataset, delete_contents=True)


@pytest.mark.e2e
def test_a_table_modified_within_settle_seconds_is_not_published(features_table, tmp_path):
    from clustering.cloud.handler import is_transient
    from clustering.job import NotSettled

    _, table = features_table
    settings = JobSettings(
        features_source=f"bq://{table}", artifacts_dest=str(tmp_path / "out"), analysis=ANALYSIS
    )
    assert settings.settle_seconds == 60
    with pytest.raises(NotSettled, match="less than SETTLE_SECONDS=60") as caught:
        run_job(settings, RunRequest(trigger="test"))
    assert is_transient(caught.value)
    assert not (tmp_path / "out" / "latest").exists()


@pytest.mark.e2e
def test_a_table_that_changes_while_it_is_read_is_not_published(
    features_table, tmp_path, monkeypatch
):
    import time

    from clustering import adapters
    from clustering.job import NotSettled

    client, table = features_table
    time.sleep(1.1)  # older than SETTLE_SECONDS=1
    read = adapters.read_features

    def read_then_another_job_appends(source, *limits):
        found = read(source, *limits)
        extra = cohort_table(per_cohort=1)
        extra["neighborhood"] = "Extra " + extra["neighborhood"]
        client.load_table_from_dataframe(extra, table).result()
        return found

    settings = JobSettings(
        features_source=f"bq://{table}",
        artifacts_dest=str(tmp_path / "out"),
        settle_seconds=1,
        analysis=ANALYSIS,
    )
    monkeypatch.setattr(adapters, "read_features", read_then_another_job_appends)
    with pytest.raises(NotSettled, match="changed while it was read"):
        run_job(settings, RunRequest(trigger="test"))
    assert not (tmp_path / "out" / "latest").exists()
    monkeypatch.setattr(adapters, "read_features", read)
    report = run_job(settings, RunRequest(trigger="test"))
    assert report.status == "succeeded" and report.manifest["input"]["rows"] == 186


# --- 8. A late load; 12. waits with a limit ------------------------------------------------------


def _running(project: str, job_id: str) -> dict:
    return {
        "kind": "bigquery#job",
        "id": f"{project}:US.{job_id}",
        "jobReference": {"projectId": project, "jobId": job_id, "location": "US"},
        "configuration": {"jobType": "LOAD", "load": {}},
        "status": {"state": "RUNNING"},
    }


@pytest.mark.e2e
def test_a_run_waits_for_the_previous_holders_load_before_its_own(
    features_table, bigquery_emulator, tmp_path, monkeypatch
):
    from clustering.adapters import bigquery as adapter
    from clustering.adapters import budget, claims
    from clustering.adapters.local import LocalStore
    from tests.emulators import FaultProxy

    _, table = features_table
    clusters = f"bq://{table.rsplit('.', 1)[0]}.clusters"
    settings = JobSettings(
        features_source=str(tmp_path / "f.csv"),
        artifacts_dest=str(tmp_path / "out"),
        clusters_table=clusters,
        analysis=ANALYSIS,
    )
    cohort_table().to_csv(tmp_path / "f.csv", index=False)
    first = run_job(settings, RunRequest(trigger="test"))
    store = LocalStore(str(tmp_path / "out"))
    assert claims.last_load(store) == first.run_id
    # The last load was cancelled at its run's deadline and BigQuery still runs it.
    late = adapter.load_job_id(first.run_id)
    running = _running(bigquery_emulator.project, late)
    loads = []

    def still_running(method: str, path: str, body: bytes):
        if method == "GET" and f"/jobs/{late}" in path:
            return (200, running)
        if "/upload/bigquery/" in path:
            loads.append(path)
        return "pass"

    with FaultProxy(bigquery_emulator.endpoint, still_running) as proxy:
        monkeypatch.setenv(adapter.EMULATOR_ENV, proxy.endpoint)
        with (
            budget.bounded(budget.Budget.lasting(60)),
            pytest.raises(budget.OutOfTime, match=f"{late} of the earlier run .* still running"),
        ):
            monkeypatch.setattr(budget, "call_limits", lambda step: (3.0, 3.0))
            run_job(settings, RunRequest(trigger="test"))
    assert loads == []  # it never loaded over the late job
    assert claims.last_load(store) == first.run_id
    monkeypatch.undo()
    monkeypatch.setenv(adapter.EMULATOR_ENV, bigquery_emulator.endpoint)
    third = run_job(settings, RunRequest(trigger="test"))  # the late job has ended: it loads
    assert claims.last_load(store) == third.run_id
    assert adapter.table_run_id(clusters) == third.run_id


def _sleeps(seconds: float) -> bytes:
    import time

    time.sleep(seconds)
    return b"late"


def test_collecting_the_chart_workers_is_bounded_by_the_time_left() -> None:
    import time

    from clustering.outputs.charts import ChartRenderer

    began = time.monotonic()
    with pytest.raises(TimeoutError, match="still drawing after 1 s"), ChartRenderer() as r:
        r.submit("slow.png", _sleeps, 30.0)
        r.collect(timeout=1.0)
    assert time.monotonic() - began < 15
    with ChartRenderer() as r:
        r.submit("quick.png", _sleeps, 0.0)
        assert r.collect(timeout=30.0) == {"quick.png": b"late"}


@pytest.mark.e2e
# The features table has no GEOGRAPHY column, so the query names an INT64 one: BigQuery would
# refuse it, but the proxy never lets it run; only the waiting is under test.
@pytest.mark.googlesql_rejects("read_boundaries", match=r"ST_ASGEOJSON for argument types: INT64")
def test_the_boundaries_query_is_waited_on_within_the_budget(
    features_table, bigquery_emulator, monkeypatch
):
    import threading

    from clustering.adapters import bigquery as adapter
    from clustering.adapters import budget
    from tests.emulators import FaultProxy

    _, table = features_table
    answers: dict[str, dict] = {}

    def query_never_ends(method: str, path: str, body: bytes):
        if method == "POST" and path.split("?")[0].endswith("/jobs"):
            job_id = json.loads(body)["jobReference"]["jobId"]
            answers["job"] = _running(bigquery_emulator.project, job_id)
            answers["job"]["configuration"] = {"jobType": "QUERY", "query": {"query": "x"}}
            return (200, answers["job"])
        if "job" in answers and answers["job"]["jobReference"]["jobId"] in path:
            if "/cancel" in path:
                return (200, {"kind": "bigquery#jobCancelResponse", "job": answers["job"]})
            return (200, answers["job"])
        return "pass"

    outcome: list[BaseException] = []

    def query() -> None:
        with budget.bounded(budget.Budget.lasting(4)):
            try:
                adapter.read_boundaries(f"bq://{table}", "neighborhood", "population")
            except BaseException as error:
                outcome.append(error)

    with FaultProxy(bigquery_emulator.endpoint, query_never_ends) as proxy:
        monkeypatch.setenv(adapter.EMULATOR_ENV, proxy.endpoint)
        monkeypatch.setattr(adapter, "CANCEL_WAIT_SECONDS", 1.0)
        worker = threading.Thread(target=query, daemon=True)
        worker.start()
        worker.join(30)
    assert not worker.is_alive(), "the query was waited on past the run's budget"
    assert len(outcome) == 1 and isinstance(outcome[0], budget.OutOfTime), outcome


# --- 5. Self-repair ------------------------------------------------------------------------------


def interrupted(settings: JobSettings) -> str:
    """A run that loaded the clusters table and then lost its switch of latest/ (its
    redelivery went to the dead letter): the table and latest/ disagree. Its run id."""
    from clustering.adapters.claims import ClaimLost
    from clustering.job import PublishInterrupted

    ids = []

    def fence(step: str) -> None:
        if step == "switching latest/":
            raise ClaimLost("lost before the switch")

    with pytest.raises(PublishInterrupted) as caught:
        run_job(settings, RunRequest(trigger="test"), on_warning=ids.append, fence=fence)
    return str(caught.value).split()[1]


def test_a_refused_run_first_points_latest_at_the_run_the_table_holds(tmp_path) -> None:
    table = cohort_table()
    clusters = tmp_path / "clusters.parquet"
    settings = settings_for(tmp_path, table, clusters_table=str(clusters))
    first = run_job(settings, RunRequest(trigger="test"))
    second = interrupted(settings)
    latest = tmp_path / "out" / "latest" / "run.json"
    assert json.loads(latest.read_text())["run_id"] == first.run_id
    assert pd.read_parquet(clusters)["run_id"].iloc[0] == second
    # The next delivery: a truncated table, refused by the row-drop guard, repairs first.
    warnings: list[str] = []
    truncated = settings_for(tmp_path, table.head(30), clusters_table=str(clusters))
    with pytest.raises(InputError, match="MIN_ROWS_RATIO"):
        run_job(truncated, RunRequest(trigger="test"), on_warning=warnings.append)
    assert json.loads(latest.read_text())["run_id"] == second
    assert any(w.startswith(f"repaired: {clusters} held run {second}") for w in warnings)
    # Agreeing again, the next run repairs nothing.
    warnings.clear()
    settings = settings_for(tmp_path, table, clusters_table=str(clusters))
    run_job(settings, RunRequest(trigger="test"), on_warning=warnings.append)
    assert not [w for w in warnings if w.startswith("repaired")]


def test_a_table_whose_run_folder_is_gone_is_reloaded_from_latest(tmp_path) -> None:
    table = hostile_table()
    clusters = tmp_path / "clusters.parquet"
    settings = settings_for(tmp_path, table, clusters_table=str(clusters))
    first = run_job(settings, RunRequest(trigger="test"))
    published = pd.read_parquet(clusters)
    second = interrupted(settings)
    shutil.rmtree(tmp_path / "out" / "runs" / second)  # expired, or never complete
    warnings: list[str] = []
    truncated = settings_for(tmp_path, table.head(30), clusters_table=str(clusters))
    with pytest.raises(InputError, match="MIN_ROWS_RATIO"):
        run_job(truncated, RunRequest(trigger="test"), on_warning=warnings.append)
    assert any(f"latest/ names run {first.run_id}, whose rows were loaded" in w for w in warnings)
    repaired = pd.read_parquet(clusters)
    assert set(repaired["run_id"]) == {first.run_id}

    # The exact names and values the first run published, the cluster ids as integers.
    def comparable(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.drop(columns="_clustered_at").astype(object)
        return frame.where(frame.notna(), None)

    pd.testing.assert_frame_equal(comparable(repaired), comparable(published))
    assert (repaired["_clustered_at"] == published["_clustered_at"]).all()
    assert str(repaired["sub_cluster"].dtype) == "Int64"
