"""run_job with local paths: what a run writes, and what a failed run must leave alone."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clustering import InputError
from clustering.analysis.assign import BORDERLINE_MARGIN, assign
from clustering.analysis.document import read_model
from clustering.analysis.sample import make_sample
from clustering.analysis.transitions import columns
from clustering.job import RunRequest, run_job
from clustering.naming import ARTIFACTS, MANIFEST
from clustering.settings import AnalysisSettings, JobSettings
from tests.helpers import FILLED, cohort_table, move_rows

ROWS = 40
# K up to 4 keeps each run short; nothing here depends on the K range.
ANALYSIS = AnalysisSettings(k_max=4)


def tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, hidden ones included, by relative path."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class Published:
    """One successful run, shared by the tests that only read what it wrote."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.features = root / "features.csv"
        make_sample(ROWS).to_csv(self.features, index=False)
        self.out = root / "out"
        self.clusters = root / "tables" / "clusters.csv"
        self.clusters.parent.mkdir()
        self.clusters.write_text("old,table\n1,2\n")
        self.runs = root / "tables" / "runs.jsonl"
        self.messages: list[str] = []
        self.settings = JobSettings(
            features_source=str(self.features),
            artifacts_dest=str(self.out),
            clusters_table=str(self.clusters),
            runs_table=str(self.runs),
            analysis=ANALYSIS,
        )
        self.report = run_job(
            self.settings, RunRequest(trigger="test", reason="unit"), self.messages.append
        )
        self.folder = self.out / "runs" / self.report.run_id

    def copy_to(self, root: Path) -> tuple[Path, Path, Path]:
        """A private copy of out/, the clusters table and the runs table for a failing run."""
        out, tables = root / "out", root / "tables"
        shutil.copytree(self.out, out)
        shutil.copytree(self.clusters.parent, tables)
        return out, tables / "clusters.csv", tables / "runs.jsonl"


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Published:
    return Published(tmp_path_factory.mktemp("published"))


# --- a successful run --------------------------------------------------------------------------


def test_a_run_writes_the_seven_artifacts_to_its_folder_and_to_latest(published):
    report = published.report
    assert report.status == "succeeded"
    assert sorted(p.name for p in published.folder.iterdir()) == sorted(ARTIFACTS)
    assert len(ARTIFACTS) == 7
    latest = published.out / "latest"
    assert tree(latest) == tree(published.folder)
    assert sorted(p.name for p in published.out.iterdir()) == ["latest", "runs"]
    assert [p.name for p in (published.out / "runs").iterdir()] == [report.run_id]
    for name in ARTIFACTS:
        assert (published.folder / name).stat().st_size > 0
        if name.endswith(".png"):
            assert (published.folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(report.artifact_prefix) == published.folder


def test_the_manifest_describes_the_run(published):
    manifest = json.loads((published.folder / MANIFEST).read_text())
    report = published.report
    assert manifest["run_id"] == report.run_id
    assert manifest["trigger"] == "test"
    assert manifest["reason"] == "unit"
    assert manifest["dry_run"] is False
    assert manifest["input"]["source"] == str(published.features)
    assert manifest["input"]["rows"] == ROWS
    counts = manifest["input"]
    assert counts["residential_rows"] + counts["excluded_rows"] == ROWS
    assert sum(counts["rows_by_type"].values()) == ROWS
    assert manifest["outputs"]["files"] == list(ARTIFACTS)
    assert manifest["outputs"]["artifacts"] == report.artifact_prefix
    assert manifest["outputs"]["clusters_table"] == str(published.clusters)
    assert manifest["features"]["used"] == list(ANALYSIS.clustering_features)
    assert manifest["features"]["missing"] == []
    assert manifest["settings"]["k_max"] == 4
    assert manifest["diagnostics"]["k"] == [2, 3, 4]
    assert {g["label"] for g in manifest["top_groups"]} == {"Stable", "Distressed"}
    assert set(manifest["timings_seconds"]) >= {"read", "validate", "cluster"}
    assert manifest["versions"]["scikit-learn"]
    # A small synthetic table may hold a cohort that the bootstrap finds shaky, and the
    # sample's few blanks are each a warning; nothing else.
    others = [w for w in manifest["warnings"] if "bootstrap stability" not in w]
    assert others and all(FILLED in w for w in others)


def test_the_clusters_csv_has_one_row_per_input_row_stamped_with_the_run(published):
    clusters = pd.read_csv(published.folder / "neighborhood_clusters.csv")
    assert len(clusters) == ROWS
    assert set(clusters["neighborhood"]) == set(make_sample(ROWS)["neighborhood"])
    assert set(clusters["run_id"]) == {published.report.run_id}
    assert clusters["_clustered_at"].nunique() == 1
    excluded = pd.read_csv(published.folder / "excluded_neighborhood_analysis.csv")
    assert len(excluded) == published.report.manifest["input"]["excluded_rows"]


def test_progress_reports_each_stage_in_order(published):
    stages = [
        "reading features",
        "validating",
        "clustering",
        f"publishing run {published.report.run_id}",
    ]
    positions = [
        next(i for i, m in enumerate(published.messages) if m.startswith(stage)) for stage in stages
    ]
    assert positions == sorted(positions)


def test_a_local_clusters_table_is_replaced(published):
    assert (
        published.clusters.read_bytes()
        == (published.folder / "neighborhood_clusters.csv").read_bytes()
    )
    # Replaced by a rename: no temporary file is left beside it.
    assert sorted(p.name for p in published.clusters.parent.iterdir()) == [
        "clusters.csv",
        "runs.jsonl",
    ]


def test_the_runs_table_gets_one_row_for_the_run(published):
    rows = history(published.runs)
    assert len(rows) == 1
    row = rows[0]
    assert row["run_id"] == published.report.run_id
    assert row["status"] == "succeeded"
    assert row["error"] is None
    assert row["trigger"] == "test"
    assert row["source_table"] == str(published.features)
    assert row["input_rows"] == row["output_rows"] == ROWS
    assert row["artifact_prefix"] == published.report.artifact_prefix
    assert json.loads(row["features_used"]) == list(ANALYSIS.clustering_features)
    assert {row["stable_sub_k"], row["distressed_sub_k"]} <= {1, 2, 3, 4, 5}
    assert row["duration_seconds"] >= 0


# --- failures ----------------------------------------------------------------------------------


def test_a_bad_input_is_recorded_as_failed_and_publishes_nothing(published, tmp_path):
    out, clusters, runs = published.copy_to(tmp_path)
    before, table_before = tree(out), clusters.read_bytes()
    bad = tmp_path / "bad.csv"
    make_sample(ROWS).assign(population=-1).to_csv(bad, index=False)
    settings = JobSettings(
        features_source=str(bad),
        artifacts_dest=str(out),
        clusters_table=str(clusters),
        runs_table=str(runs),
        analysis=ANALYSIS,
    )
    with pytest.raises(InputError, match="population is negative"):
        run_job(settings, RunRequest(trigger="test"))
    assert tree(out) == before
    assert clusters.read_bytes() == table_before
    rows = history(runs)
    assert len(rows) == 2
    failed = rows[-1]
    assert failed["status"] == "failed"
    assert "population is negative in data row 1" in failed["error"]
    assert failed["run_id"] != published.report.run_id
    assert failed["source_table"] == str(bad)
    assert failed.get("output_rows") is None


def test_a_failure_while_publishing_leaves_latest_and_the_table_untouched(published, tmp_path):
    out, _clusters, runs = published.copy_to(tmp_path)
    latest_before = tree(out / "latest")
    runs_before = set((out / "runs").iterdir())
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file")
    settings = JobSettings(
        features_source=str(published.features),
        artifacts_dest=str(out),
        # Writing the clusters table fails: its folder would have to be inside a regular file.
        clusters_table=str(blocker / "clusters.csv"),
        runs_table=str(runs),
        analysis=ANALYSIS,
    )
    with pytest.raises(OSError):
        run_job(settings, RunRequest(trigger="test"))
    assert tree(out / "latest") == latest_before
    assert not any(p.name.startswith(".") for p in out.iterdir())
    # runs/<id>/ of the failed run may exist; it is never promoted.
    assert set((out / "runs").iterdir()) >= runs_before
    assert blocker.read_text() == "a regular file"
    rows = history(runs)
    assert [r["status"] for r in rows] == ["succeeded", "failed"]
    assert rows[-1]["error"]


def test_a_history_that_cannot_be_written_does_not_hide_the_runs_own_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad = tmp_path / "bad.csv"
    bad.write_text("neighborhood,population\n")
    settings = JobSettings(
        features_source=str(bad),
        artifacts_dest=str(tmp_path / "out"),
        runs_table=str(blocker / "runs.jsonl"),
        analysis=ANALYSIS,
    )
    history_errors: list[Exception] = []
    with pytest.raises(InputError, match="no rows"):
        run_job(settings, RunRequest(), on_history_error=history_errors.append)
    assert len(history_errors) == 1
    assert isinstance(history_errors[0], OSError)
    assert not (tmp_path / "out").exists()


def test_a_dry_run_computes_everything_and_writes_nothing(published, tmp_path):
    out = tmp_path / "out"
    clusters = tmp_path / "clusters.csv"
    settings = JobSettings(
        features_source=str(published.features),
        artifacts_dest=str(out),
        clusters_table=str(clusters),
        analysis=ANALYSIS,
    )
    messages: list[str] = []
    report = run_job(settings, RunRequest(dry_run=True), messages.append)
    assert report.status == "dry_run"
    assert report.artifact_prefix is None
    assert report.manifest["dry_run"] is True
    assert report.manifest["input"]["rows"] == ROWS
    assert report.manifest["outputs"]["artifacts"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert not any(m.startswith("publishing") for m in messages)
    # The same analysis as the published run.
    published_manifest = json.loads((published.folder / MANIFEST).read_text())
    assert report.manifest["diagnostics"] == published_manifest["diagnostics"]


def test_the_row_drop_guard_refuses_only_a_real_drop():
    from clustering import InputError
    from clustering.stages.guards import check_row_drop

    previous = {"run_id": "r1", "input": {"rows": 100}}
    check_row_drop(50, previous, 0.5, False, "t")  # exactly the share: allowed
    with pytest.raises(
        InputError, match=r"t has 49 rows, fewer than MIN_ROWS_RATIO=0\.5 of the 100"
    ):
        check_row_drop(49, previous, 0.5, False, "t")
    check_row_drop(49, previous, 0.5, True, "t")  # forced
    check_row_drop(1, previous, 0, False, "t")  # guard off
    check_row_drop(1, None, 0.5, False, "t")  # no previous run
    check_row_drop(1, {"input": {"rows": "100"}}, 0.5, False, "t")  # unreadable count


# --- identity across runs ----------------------------------------------------------------------


class Chain:
    """Runs of the job into one artifacts folder, each matched to the one before."""

    def __init__(self, root: Path, table: pd.DataFrame) -> None:
        self.root = root
        self.out = root / "out"
        self.transitions = root / "tables" / "transitions.csv"
        self.runs = root / "tables" / "runs.jsonl"
        self.table = table

    def run(self, table: pd.DataFrame | None = None, **changes) -> tuple[dict, pd.DataFrame]:
        """Run on `table` (default: the chain's), return run.json and the clusters CSV."""
        features = self.root / "features.csv"
        (self.table if table is None else table).to_csv(features, index=False)
        settings = JobSettings(
            features_source=str(features),
            artifacts_dest=str(self.out),
            runs_table=str(self.runs),
            transitions_table=str(self.transitions),
            analysis=changes.pop("analysis", ANALYSIS),
            **changes,
        )
        report = run_job(settings, RunRequest(trigger="test"))
        folder = self.out / "runs" / report.run_id
        return report.manifest, pd.read_csv(folder / "neighborhood_clusters.csv")


def cohort_ids(clusters: pd.DataFrame) -> pd.DataFrame:
    columns = ["top_cluster", "sub_cluster", "cluster_label", "cohort_name", "cohort_stability"]
    return clusters.set_index("neighborhood")[columns]


@pytest.fixture(scope="module")
def chained(tmp_path_factory):
    chain = Chain(tmp_path_factory.mktemp("chain"), cohort_table())
    first = chain.run()
    return chain, first


def test_the_first_run_writes_names_stability_and_centroids_but_no_transitions(chained):
    chain, (manifest, clusters) = chained
    assert "neighborhood_cluster_transitions.csv" not in manifest["outputs"]["files"]
    assert not chain.transitions.exists()
    assert manifest["transitions"]["previous_run_id"] is None
    assert manifest["identity"]["rule"].startswith("first run")
    cohorts = manifest["cohorts"]
    assert [c["sub_cluster"] for c in cohorts] == sorted(c["sub_cluster"] for c in cohorts)
    for cohort in cohorts:
        assert 0 <= cohort["stability"] <= 1
        assert set(cohort["centroid"]) == set(manifest["features"]["used"])
        rows = clusters[clusters["sub_cluster"] == cohort["sub_cluster"]]
        assert len(rows) == cohort["rows"]
        assert set(rows["cohort_name"]) == {cohort["name"]}
        assert set(rows["cohort_stability"]) == {cohort["stability"]}
    assert manifest["stability"] == {
        "method": manifest["stability"]["method"],
        "resamples": 50,
        "sample_size": None,
        "seed": ANALYSIS.random_state,
        "threshold": 0.6,
    }
    assert len(manifest["top_centroids"]) == 2
    row = history(chain.runs)[0]
    assert row["previous_run_id"] is None and row["moved_neighborhoods"] is None


def test_the_runs_model_document_assigns_every_row_as_the_run_did(chained):
    _chain, (manifest, clusters) = chained
    model = manifest["model"]
    assert (model["version"], model["engine"], model["sample"]) == (1, "memory", None)
    again = assign(clusters, read_model(manifest, "run.json"))
    columns = ["top_cluster", "sub_cluster", "excluded_type", "excluded_cluster", "cohort_name"]
    for column in columns:
        assert again[column].astype(str).tolist() == clusters[column].astype(str).tolist()
    np.testing.assert_allclose(again["fit_margin"], clusters["fit_margin"], atol=1e-12)
    assert (again["runner_up_cluster"].to_numpy() == clusters["runner_up_cluster"]).all()
    # The fit columns follow the cohort's stability, before the run's id and time.
    names = list(clusters.columns)
    at = names.index("cohort_stability")
    assert names[at : at + 6] == [
        "cohort_stability",
        "fit_margin",
        "runner_up_cluster",
        "runner_up_name",
        "run_id",
        "_clustered_at",
    ]
    assert "model" in manifest["timings_seconds"]


def test_an_identical_rerun_with_shuffled_rows_changes_no_id_or_name(chained):
    chain, (first, clusters) = chained
    shuffled = chain.table.sample(frac=1, random_state=5)
    manifest, again = chain.run(shuffled)
    pd.testing.assert_frame_equal(cohort_ids(again), cohort_ids(clusters))
    assert manifest["transitions"] == {
        "previous_run_id": first["run_id"],
        "moved": 0,
        "between_top_groups": 0,
        "stable_to_distressed": 0,
        "distressed_to_stable": 0,
        "appeared": 0,
        "disappeared": 0,
    }
    folder = chain.out / "runs" / manifest["run_id"]
    written = pd.read_csv(folder / "neighborhood_cluster_transitions.csv")
    assert written.empty and list(written.columns) == list(columns("neighborhood"))
    assert sorted(manifest["outputs"]["files"]) == sorted(
        [*ARTIFACTS, "neighborhood_cluster_transitions.csv"]
    )
    assert tree(chain.out / "latest") == tree(folder)
    # Nothing moved, so nothing was appended to the transitions table.
    assert not chain.transitions.exists()
    row = history(chain.runs)[-1]
    assert row["previous_run_id"] == first["run_id"]
    assert (row["moved_neighborhoods"], row["moved_stable_distressed"]) == (0, 0)


def test_moved_neighborhoods_are_appended_to_the_transitions_table(chained, tmp_path):
    chain, (_first, clusters) = chained
    mine = Chain(tmp_path, chain.table)
    shutil.copytree(chain.out, mine.out)
    moved = ["Cohort 3 Street 001", "Cohort 3 Street 002"]
    manifest, after = mine.run(move_rows(chain.table, moved, like="Cohort 1 Street 000"))
    before = cohort_ids(clusters)
    pd.testing.assert_frame_equal(cohort_ids(after).drop(moved), before.drop(moved))
    table = pd.read_csv(mine.transitions)
    assert table["neighborhood"].tolist() == moved
    assert set(table["run_id"]) == {manifest["run_id"]}
    assert set(table["previous_sub_cluster"]) == set(before.loc[moved, "sub_cluster"])
    assert set(table["sub_cluster"]) == {before.loc["Cohort 1 Street 000", "sub_cluster"]}
    # Whether the first run found them borderline: clear members of their cohorts, so no.
    margins = clusters.set_index("neighborhood").loc[moved, "fit_margin"]
    assert (margins >= BORDERLINE_MARGIN).all()
    assert table["previously_borderline"].tolist() == [False, False]
    assert manifest["transitions"]["moved"] == 2
    assert manifest["transitions"]["distressed_to_stable"] == 2
    row = history(mine.runs)[-1]
    assert (row["moved_neighborhoods"], row["moved_stable_distressed"]) == (2, 2)
    # The next run moves them back: appended below, the header once.
    mine.run()
    table = pd.read_csv(mine.transitions)
    assert len(table) == 4 and table["neighborhood"].tolist() == moved + moved
    assert mine.transitions.read_text().count("neighborhood,") == 1


def test_overrides_win_in_every_output_and_survive_a_rerun(chained, tmp_path):
    chain, (_first, clusters) = chained
    mine = Chain(tmp_path, chain.table)
    shutil.copytree(chain.out, mine.out)
    overrides = ((10, "Distressed core"),)
    for _ in range(2):
        manifest, after = mine.run(label_overrides=overrides)
        assert set(after.loc[after["sub_cluster"] == 10, "cohort_name"]) == {"Distressed core"}
        assert (after["sub_cluster"] == clusters["sub_cluster"]).all()
        cohort = next(c for c in manifest["cohorts"] if c["sub_cluster"] == 10)
        assert (cohort["name"], cohort["name_source"]) == ("Distressed core", "override")
        assert manifest["label_overrides"] == {"10": "Distressed core"}


def test_a_dry_run_is_matched_to_the_published_run(chained):
    chain, _first = chained
    settings = JobSettings(features_source=None, artifacts_dest=str(chain.out), analysis=ANALYSIS)
    latest = tree(chain.out / "latest")
    published_id = json.loads((chain.out / "latest" / MANIFEST).read_text())["run_id"]
    report = run_job(settings, RunRequest(dry_run=True))
    assert report.manifest["identity"]["previous_run_id"] == published_id
    assert report.manifest["transitions"]["previous_run_id"] == published_id
    assert tree(chain.out / "latest") == latest


def test_a_latest_manifest_that_is_not_one_is_an_input_error(tmp_path):
    (tmp_path / "out" / "latest").mkdir(parents=True)
    (tmp_path / "out" / "latest" / MANIFEST).write_text("{not json")
    settings = JobSettings(artifacts_dest=str(tmp_path / "out"), analysis=ANALYSIS)
    with pytest.raises(InputError, match=r"latest/run\.json is not a run manifest"):
        run_job(settings, RunRequest())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["latest"]
