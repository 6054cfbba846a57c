"""The run's promises, kept by both engines: every test here runs once per engine, on the
emulators (local-bigquery with the unmodified client, fake-gcs-server), through run_job.

The memory engine reads every row into the process; the warehouse engine fits a key-hashed
sample and scores every row inside BigQuery. With SAMPLE_ROWS at least the table's rows the
two must give the same partition, the same cohort names and the same clusters table columns.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator

import pandas as pd
import pytest
from google.cloud import bigquery
from sklearn.metrics import adjusted_rand_score

from clustering import InputError
from clustering.adapters import bigquery as bq_adapter
from clustering.analysis.sample import make_sample
from clustering.job import NotSettled, PublishInterrupted, RunRequest, run_job
from clustering.settings import AnalysisSettings, JobSettings
from tests import emulators

pytestmark = pytest.mark.e2e

ENGINES = ("memory", "warehouse")
ROWS = 600
ANALYSIS = AnalysisSettings(k_max=5, sub_k_max=4)


@pytest.fixture(scope="module")
def clients(bigquery_emulator, gcs_emulator) -> Iterator[tuple]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(bq_adapter.EMULATOR_ENV, bigquery_emulator.endpoint)
        patch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
        bq = emulators.bigquery_client(bigquery_emulator)
        yield bq, emulators.storage_client(gcs_emulator)
        bq.close()


class Place:
    """One test's dataset and bucket, and the settings of a run there on `engine`."""

    def __init__(self, bq, gcs, engine: str):
        self.bq, self.gcs, self.engine = bq, gcs, engine
        self.dataset = f"{emulators.DEFAULT_PROJECT}.en_{uuid.uuid4().hex[:8]}"
        bq.create_dataset(self.dataset)
        self.bucket = gcs.create_bucket(f"en-{uuid.uuid4().hex[:10]}").name
        self.out = f"gs://{self.bucket}/out"

    def settings(self, **extra) -> JobSettings:
        given = {
            "features_source": f"bq://{self.dataset}.features",
            "artifacts_dest": self.out,
            "clusters_table": f"bq://{self.dataset}.clusters",
            "transitions_table": f"bq://{self.dataset}.transitions",
            "engine": self.engine,
            "sample_rows": 1_000,
            "settle_seconds": 0,
            "analysis": ANALYSIS,
        }
        return JobSettings(**(given | extra))

    def run(self, reason: str = "test", **extra):
        return run_job(self.settings(**extra), RunRequest(trigger="test", reason=reason))

    def load(self, frame: pd.DataFrame, table: str = "features") -> None:
        config = bigquery.LoadJobConfig(write_disposition="WRITE_TRUNCATE")
        target = f"{self.dataset}.{table}"
        self.bq.load_table_from_dataframe(frame, target, job_config=config).result()

    def clusters(self) -> pd.DataFrame:
        rows = self.bq.list_rows(f"{self.dataset}.clusters")
        return rows.to_dataframe(create_bqstorage_client=False)

    def latest_run(self) -> str | None:
        blob = self.gcs.bucket(self.bucket).blob("out/latest/run.json")
        return json.loads(blob.download_as_text())["run_id"] if blob.exists() else None

    def csv(self, manifest: dict, name: str) -> pd.DataFrame:
        """A people-facing CSV of a run, as its text cells were written: a file of the run
        folder (memory) or EXPORT DATA shards (warehouse)."""
        exported = manifest["outputs"]["exported"].get(name)
        if exported is None:
            path = f"out/runs/{manifest['run_id']}/{name}"
            blobs = [self.gcs.bucket(self.bucket).blob(path)]
        else:
            stem = exported.removeprefix(f"gs://{self.bucket}/").removesuffix("*.csv")
            blobs = [b for b in self.gcs.list_blobs(self.bucket, prefix=stem)]
        frames = [
            pd.read_csv(io.BytesIO(b.download_as_bytes()), dtype=str, keep_default_na=False)
            for b in blobs
        ]
        return pd.concat(frames, ignore_index=True)


@pytest.fixture(params=ENGINES)
def place(request, clients) -> Iterator[Place]:
    bq, gcs = clients
    where = Place(bq, gcs, request.param)
    yield where
    bq.delete_dataset(where.dataset, delete_contents=True, not_found_ok=True)


def table(rows: int = ROWS, random_state: int = 5) -> pd.DataFrame:
    return make_sample(rows, random_state=random_state)


def test_both_engines_give_the_same_partition_names_and_columns(clients):
    bq, gcs = clients
    frame = table()
    found = {}
    for engine in ENGINES:
        where = Place(bq, gcs, engine)
        where.load(frame)
        report = where.run()
        found[engine] = (report.manifest, where.clusters().set_index("neighborhood"))
        bq.delete_dataset(where.dataset, delete_contents=True)
    (memory, by_memory), (warehouse, by_warehouse) = found["memory"], found["warehouse"]
    by_warehouse = by_warehouse.loc[by_memory.index]
    top = adjusted_rand_score(by_memory["top_cluster_label"], by_warehouse["top_cluster_label"])
    cohorts = adjusted_rand_score(by_memory["cohort_name"], by_warehouse["cohort_name"])
    assert top >= 0.99 and cohorts >= 0.99
    assert set(by_memory["cohort_name"]) == set(by_warehouse["cohort_name"])
    assert list(by_memory.columns) == list(by_warehouse.columns)
    assert memory["input"]["rows"] == warehouse["input"]["rows"] == ROWS
    assert (memory["engine"], warehouse["engine"]) == ENGINES


def test_bad_input_publishes_nothing(place):
    frame = table()
    frame.loc[1, "neighborhood"] = frame.loc[0, "neighborhood"]
    place.load(frame)
    with pytest.raises(InputError, match="neighborhood"):
        place.run()
    assert place.latest_run() is None
    assert [t.table_id for t in place.bq.list_tables(place.dataset)] == ["features"]


def test_a_table_loaded_within_settle_seconds_is_not_published(place):
    place.load(table())
    with pytest.raises(NotSettled, match="SETTLE_SECONDS=600"):
        place.run(settle_seconds=600)
    assert place.latest_run() is None


def test_the_row_drop_guard_counts_every_row(place):
    place.load(table())
    first = place.run()
    place.load(table().iloc[: ROWS // 3])
    with pytest.raises(InputError, match="MIN_ROWS_RATIO"):
        place.run()
    assert place.latest_run() == first.run_id
    assert set(place.clusters()["run_id"]) == {first.run_id}


def test_output_columns_leave_a_column_out_of_the_table_and_every_csv(place):
    place.load(table())
    report = place.run(output_columns=("population",))
    inputs = set(table().columns) - {"neighborhood", "population"}
    assert not inputs & set(place.clusters().columns)
    assert "population" in place.clusters().columns
    for name in ("neighborhood_clusters.csv", "excluded_neighborhood_analysis.csv"):
        assert not inputs & set(place.csv(report.manifest, name).columns), name
    with pytest.raises(InputError, match=r"did you mean 'population'.*OUTPUT_COLUMNS"):
        place.run(output_columns=("populaton",))


def test_formula_cells_are_escaped_in_the_csvs_and_exact_in_the_table(place):
    frame = table()
    formula = '=HYPERLINK("http://x.example","y")'
    frame.loc[3, "neighborhood"] = formula
    place.load(frame)
    report = place.run()
    written = place.csv(report.manifest, "neighborhood_clusters.csv")["neighborhood"]
    assert ("'" + formula) in set(written) and formula not in set(written)
    assert formula in set(place.clusters()["neighborhood"])


def test_transitions_are_derived_against_the_last_published_run(place):
    frame = table()
    place.load(frame)
    first = place.run("first")
    rows = place.clusters()
    residential = rows[rows["excluded_type"] == "Residential"]
    cohort = residential["sub_cluster"]
    movers = list(residential.loc[cohort == cohort.max(), "neighborhood"][:4])
    donor = residential.loc[cohort == cohort.min(), "neighborhood"].iloc[0]
    moved = frame.copy()
    values = frame.set_index("neighborhood").loc[donor]
    for column in frame.columns.drop(["neighborhood", "population"]):
        moved.loc[moved["neighborhood"].isin(movers), column] = values[column]
    place.load(moved)
    second = place.run("second")
    moves = second.manifest["transitions"]
    assert moves["previous_run_id"] == first.run_id and moves["moved"] >= len(movers)
    appended = place.bq.list_rows(f"{place.dataset}.transitions")
    appended = appended.to_dataframe(create_bqstorage_client=False)
    assert set(movers) <= set(appended["neighborhood"])
    # Identity: the cohorts that did not lose their members keep their ids and names.
    names = {c["sub_cluster"]: c["name"] for c in first.manifest["cohorts"]}
    kept = {c["sub_cluster"]: c["name"] for c in second.manifest["cohorts"]}
    assert len(set(names.items()) & set(kept.items())) >= len(names) - 2


def test_a_key_column_change_skips_transitions_with_a_note(place):
    frame = table()
    place.load(frame)
    place.run("first")
    renamed = frame.rename(columns={"neighborhood": "area_name"})
    place.load(renamed)
    analysis = AnalysisSettings(k_max=5, sub_k_max=4, key_column="area_name")
    second = place.run("second", analysis=analysis)
    assert second.manifest["transitions"]["moved"] in (None, 0)
    assert any("KEY_COLUMN" in w for w in second.manifest["warnings"])
    assert "area_name" in place.clusters().columns


def test_a_column_differing_only_in_case_from_ours_is_refused(place):
    frame = table().assign(Top_Cluster=1)
    place.load(frame)
    with pytest.raises(InputError, match=r"Top_Cluster.*case"):
        place.run()
    assert place.latest_run() is None


def test_self_repair_never_switches_latest_to_an_older_run(place):
    place.load(table())
    first = place.run("first")
    snapshot = f"{place.dataset}.first_rows"
    place.bq.copy_table(f"{place.dataset}.clusters", snapshot).result()
    second = place.run("second")
    # The table goes back to the first run (a late job of it committed), latest/ names the
    # second: the next run must not follow the table back.
    config = bigquery.CopyJobConfig(write_disposition="WRITE_TRUNCATE")
    place.bq.copy_table(snapshot, f"{place.dataset}.clusters", job_config=config).result()
    warnings = []
    run_job(place.settings(), RunRequest(trigger="test"), on_warning=warnings.append)
    assert not any(f"latest/ now points to run {first.run_id}" in w for w in warnings)
    assert place.latest_run() not in (first.run_id, second.run_id)


def test_an_interrupted_publish_is_completed_by_the_next_run(place):
    place.load(table())
    place.run("first")

    def lose_the_switch(step: str) -> None:
        if step == "switching latest/":
            raise RuntimeError("the instance went away")

    with pytest.raises(PublishInterrupted):
        run_job(place.settings(), RunRequest(trigger="test"), fence=lose_the_switch)
    interrupted = set(place.clusters()["run_id"])
    warnings = []
    run_job(place.settings(), RunRequest(trigger="test"), on_warning=warnings.append)
    assert any("repaired" in w for w in warnings)
    assert len(interrupted) == 1 and place.latest_run() != next(iter(interrupted))


def test_the_replacement_waits_for_the_last_load_and_records_itself(place, monkeypatch):
    from clustering.adapters import budget, claims
    from clustering.adapters.gcs import GcsStore

    place.load(table())
    first = place.run("first")
    store = GcsStore(place.out)
    assert claims.last_load(store) == first.run_id
    # The first run's job was cancelled at its deadline, and BigQuery still runs it.
    late = bq_adapter.load_job_id(first.run_id)
    project = place.dataset.split(".")[0]
    running = {
        "kind": "bigquery#job",
        "id": f"{project}:US.{late}",
        "jobReference": {"projectId": project, "jobId": late, "location": "US"},
        "configuration": {"jobType": "LOAD", "load": {}},
        "status": {"state": "RUNNING"},
    }

    def still_running(method: str, path: str, body: bytes):
        return (200, running) if method == "GET" and f"/jobs/{late}" in path else "pass"

    real_limits = budget.call_limits
    monkeypatch.setattr(
        budget,
        "call_limits",
        lambda step: (3.0, 3.0) if step.startswith("waiting for load job") else real_limits(step),
    )
    endpoint = os.environ[bq_adapter.EMULATOR_ENV]
    with emulators.FaultProxy(endpoint, still_running) as proxy:
        monkeypatch.setenv(bq_adapter.EMULATOR_ENV, proxy.endpoint)
        with pytest.raises(budget.OutOfTime, match=f"{late} of the earlier run .* still running"):
            place.run("second")
    monkeypatch.setenv(bq_adapter.EMULATOR_ENV, endpoint)
    # Nothing was written over the late job, and it is still the one to wait for.
    assert set(place.clusters()["run_id"]) == {first.run_id}
    assert claims.last_load(store) == first.run_id
    third = place.run("third")  # the late job has ended: this run replaces the table
    assert claims.last_load(store) == third.run_id
    assert set(place.clusters()["run_id"]) == {third.run_id}


def test_run_json_counts_every_row_when_the_fit_saw_a_sample(clients):
    bq, gcs = clients
    where = Place(bq, gcs, "warehouse")
    where.load(table(1_500))
    report = where.run()
    manifest = report.manifest
    assert manifest["input"]["rows"] == 1_500 and manifest["input"]["sample_rows"] == 1_000
    residential = manifest["input"]["residential_rows"]
    assert sum(c["rows"] for c in manifest["cohorts"]) == residential
    assert sum(entry["neighborhoods"] for entry in manifest["summary"]) == residential
    bq.delete_dataset(where.dataset, delete_contents=True)


def test_a_memory_run_after_a_warehouse_run_derives_its_transitions(clients):
    bq, gcs = clients
    where = Place(bq, gcs, "warehouse")
    where.load(table())
    first = where.run("warehouse")
    where.engine = "memory"
    second = where.run("memory")
    moves = second.manifest["transitions"]
    assert moves["previous_run_id"] == first.run_id
    assert isinstance(moves["moved"], int) and moves["appeared"] == 0
    bq.delete_dataset(where.dataset, delete_contents=True)


def test_the_clusters_table_carries_each_rows_shape(place, tmp_path):
    frame = table()
    place.load(frame)
    names = list(frame["neighborhood"][:10])
    features = [
        {
            "type": "Feature",
            "properties": {"neighborhood": name},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[i, 0], [i + 1, 0], [i + 1, 1], [i, 1], [i, 0]]],
            },
        }
        for i, name in enumerate(names)
    ]
    shapes = tmp_path / "bounds.geojson"
    shapes.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    place.run(boundaries_source=str(shapes))
    schema = {f.name: f.field_type for f in place.bq.get_table(f"{place.dataset}.clusters").schema}
    assert schema["neighborhood_shape"] == "GEOGRAPHY"
    sql = (
        f"SELECT neighborhood, ST_AREA(neighborhood_shape) AS area "
        f"FROM `{place.dataset}.clusters` WHERE neighborhood_shape IS NOT NULL"
    )
    areas = {r["neighborhood"]: r["area"] for r in place.bq.query(sql).result()}
    assert sorted(areas) == sorted(names) and all(a > 0 for a in areas.values())


class Killed(BaseException):
    """The instance going away: no handler of the run sees it (not an Exception)."""


def test_a_run_killed_after_its_table_replacement_is_completed_by_the_next(
    place, tmp_path, monkeypatch
):
    from clustering.engines.warehouse import WarehouseEngine

    frame = table()
    place.load(frame)
    runs = tmp_path / "runs.jsonl"
    place.run("first", runs_table=str(runs))
    rows = place.clusters()
    residential = rows[rows["excluded_type"] == "Residential"]
    cohort = residential["sub_cluster"]
    movers = list(residential.loc[cohort == cohort.max(), "neighborhood"][:4])
    donor = residential.loc[cohort == cohort.min(), "neighborhood"].iloc[0]
    values = frame.set_index("neighborhood").loc[donor]
    moved = frame.copy()
    for column in frame.columns.drop(["neighborhood", "population"]):
        moved.loc[moved["neighborhood"].isin(movers), column] = values[column]
    place.load(moved)

    def killed_after_the_copy(step: str) -> None:
        if step == "appending the transitions":
            raise Killed

    # A killed instance drops nothing: its staging tables stay until they expire.
    monkeypatch.setattr(WarehouseEngine, "close", lambda self: None)
    with pytest.raises(Killed):
        run_job(
            place.settings(runs_table=str(runs)),
            RunRequest(trigger="test"),
            fence=killed_after_the_copy,
        )
    killed = place.clusters()["run_id"].iloc[0]
    recorded = [json.loads(line)["run_id"] for line in runs.read_text().splitlines()]
    assert killed not in recorded
    monkeypatch.undo()
    warnings = []
    run_job(
        place.settings(runs_table=str(runs)),
        RunRequest(trigger="test"),
        on_warning=warnings.append,
    )
    assert any(f"recovered: run {killed}" in w for w in warnings)
    appended = place.bq.list_rows(f"{place.dataset}.transitions")
    appended = appended.to_dataframe(create_bqstorage_client=False)
    assert set(movers) <= set(appended.loc[appended["run_id"] == killed, "neighborhood"])
    history = {
        json.loads(line)["run_id"]: json.loads(line) for line in runs.read_text().splitlines()
    }
    assert history[killed]["status"] == "succeeded"
