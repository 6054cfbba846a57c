"""run_job with local paths: what a run writes, and what a failed run must leave alone."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from clustering.errors import InputError
from clustering.job import RunRequest, run_job
from clustering.naming import ARTIFACTS, MANIFEST
from clustering.sample import make_sample
from clustering.settings import AnalysisSettings, JobSettings

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


def test_a_run_writes_the_six_artifacts_to_its_folder_and_to_latest(published):
    report = published.report
    assert report.status == "succeeded"
    assert sorted(p.name for p in published.folder.iterdir()) == sorted(ARTIFACTS)
    assert len(ARTIFACTS) == 6
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
    # A small synthetic table may hold a cohort that the bootstrap finds shaky; nothing else.
    assert [w for w in manifest["warnings"] if "bootstrap stability" not in w] == []


def test_the_clusters_csv_has_one_row_per_input_row_stamped_with_the_run(published):
    clusters = pd.read_csv(published.folder / "neighborhood_clusters.csv")
    assert len(clusters) == ROWS
    assert set(clusters["neighborhood"]) == set(make_sample(ROWS)["neighborhood"])
    assert set(clusters["run_id"]) == {published.report.run_id}
    assert clusters["_clustered_at"].nunique() == 1
    excluded = pd.read_csv(published.folder / "excluded_neighborhood_analysis.csv")
    assert len(excluded) == published.report.manifest["input"]["excluded_rows"]


def test_progress_reports_each_stage_in_order(published):
    stages = ["reading features", "validating", "clustering",
              f"publishing run {published.report.run_id}"]  # fmt: skip
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
        "clusters.csv", "runs.jsonl",
    ]  # fmt: skip


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
