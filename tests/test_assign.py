"""`python -m clustering assign`: a published run's model applied to any table, through the
command line (and, at the end, from a gs:// run into a bq:// table on the emulators)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clustering.analysis.assign import ASSIGNED_COLUMNS, assign
from clustering.analysis.document import read_model
from tests import emulators
from tests.helpers import REAL_FEATURES, real_table
from tests.test_cli import cli, one_error_line, run_main

IDS = ("top_cluster", "sub_cluster", "runner_up_cluster")


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """The real table run once through the CLI; returns the artifacts folder."""
    out = tmp_path_factory.mktemp("real") / "out"
    result = cli("run", "--features", str(REAL_FEATURES), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def published(out: Path) -> pd.DataFrame:
    return read_csv(out / "latest" / "neighborhood_clusters.csv")


def cohort_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The cohort columns by neighborhood, ids as floats and blanks as None, whatever the
    table was read from (CSV, Parquet, BigQuery)."""
    frame = frame.set_index("neighborhood").sort_index()[list(ASSIGNED_COLUMNS)]
    out = frame.astype(object).where(frame.notna(), None)
    for column in (*IDS, "fit_margin"):
        out[column] = pd.to_numeric(frame[column]).astype("float64")
    return out


def assert_same_cohorts(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    got, expected = cohort_columns(got), cohort_columns(expected)
    assert got.index.tolist() == expected.index.tolist()
    np.testing.assert_allclose(got["fit_margin"], expected["fit_margin"], rtol=0, atol=1e-12)
    pd.testing.assert_frame_equal(
        got.drop(columns="fit_margin"), expected.drop(columns="fit_margin")
    )


# --- a good assignment -------------------------------------------------------------------------


def test_the_runs_model_reassigns_every_row_of_its_clusters_table(real_run):
    manifest = json.loads((real_run / "latest" / "run.json").read_text())
    rows = published(real_run)
    assert len(rows) == 279
    assert_same_cohorts(assign(rows, read_model(manifest, "run.json")), rows)
    residential = rows[rows["excluded_type"] == "Residential"]
    assert residential["fit_margin"].between(-1, 1).all()
    assert residential["runner_up_cluster"].notna().all()
    assert (residential["runner_up_cluster"] != residential["sub_cluster"]).all()
    excluded = rows[rows["excluded_type"] != "Residential"]
    assert excluded[["fit_margin", "runner_up_cluster", "runner_up_name"]].isna().all().all()


@pytest.mark.parametrize("form", ["artifacts folder", "latest folder", "run folder", "run.json"])
def test_assign_on_the_same_table_gives_the_runs_columns_back(real_run, tmp_path, form):
    run_id = json.loads((real_run / "latest" / "run.json").read_text())["run_id"]
    run = {
        "artifacts folder": real_run,
        "latest folder": real_run / "latest",
        "run folder": real_run / "runs" / run_id,
        "run.json": real_run / "runs" / run_id / "run.json",
    }[form]
    dest = tmp_path / "assigned.csv"
    result = cli("assign", "--run", str(run), "--features", str(REAL_FEATURES), "--out", str(dest))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"assigned 279 rows by the model of run {run_id}: 247 residential, 32 excluded; "
        f"wrote {dest}\n"
    )
    got = read_csv(dest)
    assert list(got.columns) == ["neighborhood", *ASSIGNED_COLUMNS]
    # The input's order, not the run's sorted one.
    assert got["neighborhood"].tolist() == real_table()["neighborhood"].str.strip().tolist()
    assert_same_cohorts(got, published(real_run))


def test_a_neighborhood_moved_onto_another_cohorts_centroid_is_assigned_to_that_cohort(
    real_run, tmp_path
):
    model = json.loads((real_run / "latest" / "run.json").read_text())["model"]
    part = model["residential"]
    rows = published(real_run)
    residential = rows[rows["excluded_type"] == "Residential"]
    table = real_table().astype({f: "float64" for f in part["features"]})
    moves = {}
    for target, entry in part["sub"].items():
        # A neighborhood of another cohort, put on this cohort's centroid (in original units).
        mover = residential.loc[residential["sub_cluster"] != int(target), "neighborhood"].iloc[
            len(moves)
        ]
        values = np.array(entry["centroid"]) * part["scale"] + part["center"]
        table.loc[table["neighborhood"] == mover, part["features"]] = values
        moves[mover] = (int(target), entry["name"])
    features = tmp_path / "what-if.csv"
    table.to_csv(features, index=False)
    dest = tmp_path / "what-if.parquet"
    result = cli("assign", "--run", str(real_run), "--features", str(features), "--out", str(dest))
    assert result.returncode == 0, result.stderr
    got = pd.read_parquet(dest).set_index("neighborhood")
    for mover, (target, name) in moves.items():
        assert (got.loc[mover, "sub_cluster"], got.loc[mover, "cohort_name"]) == (target, name)
        assert got.loc[mover, "fit_margin"] == pytest.approx(1.0)
        assert got.loc[mover, "top_cluster"] == part["sub"][str(target)]["top"]
    # Everyone else keeps the run's cohort.
    others = published(real_run).set_index("neighborhood").drop(index=list(moves))
    assert (got.loc[others.index, "sub_cluster"] == others["sub_cluster"]).all()


# --- bad input: one line, exit 2, nothing written ----------------------------------------------


def with_model(real_run: Path, folder: Path, change) -> Path:
    """A copy of the latest run whose run.json went through `change`."""
    run = folder / "run"
    shutil.copytree(real_run / "latest", run)
    manifest = json.loads((run / "run.json").read_text())
    change(manifest)
    (run / "run.json").write_text(json.dumps(manifest))
    return run


BAD = {
    "a missing feature": ("no 'med_age' column", "add it"),
    "text in a feature": ("'crime_per_capita'", "'lots'", "data row 3 (Arcadia)"),
    "no key column": ("no 'neighborhood' column",),
    "a document of an older version": ("model document version 0", "run the job again"),
    "a run.json without a model": ("holds no model document",),
    "a malformed model": ("the model document is malformed",),
    "an unreadable run": ("is not a run manifest",),
    "a run.json nested without end": ("is not a run manifest",),
    "no such run": ("no such file",),
    "an output of another format": ("--out", ".csv or .parquet"),
    "a missing features file": ("no such file",),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(real_run, tmp_path, capsys, case):
    table = real_table()
    run, dest = real_run, tmp_path / "assigned.csv"
    if case == "a missing feature":
        table = table.drop(columns="med_age")
    elif case == "text in a feature":
        table = table.astype({"crime_per_capita": object})
        table.loc[2, "crime_per_capita"] = "lots"
    elif case == "no key column":
        table = table.rename(columns={"neighborhood": "name"})
    elif case == "a document of an older version":
        run = with_model(real_run, tmp_path, lambda m: m["model"].update(version=0))
    elif case == "a run.json without a model":
        run = with_model(real_run, tmp_path, lambda m: m.pop("model"))
    elif case == "a malformed model":
        run = with_model(real_run, tmp_path, lambda m: m["model"]["residential"].pop("top"))
    elif case == "an unreadable run":
        run = tmp_path / "run.json"
        run.write_text("{not json")
    elif case == "a run.json nested without end":
        run = tmp_path / "run.json"
        run.write_text('{"model": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif case == "no such run":
        run = tmp_path / "nowhere"
    elif case == "an output of another format":
        dest = tmp_path / "assigned.txt"
    features = tmp_path / "features.csv"
    if case != "a missing features file":
        table.to_csv(features, index=False)
    code = run_main("assign", "--run", str(run), "--features", str(features), "--out", str(dest))
    captured = capsys.readouterr()
    assert code == 2, captured.err
    line = one_error_line(captured.err)
    for word in BAD[case]:
        assert word in line, line
    assert captured.out == "" and not dest.exists()


# --- from a gs:// run into a bq:// table, on the emulators -------------------------------------


@pytest.mark.e2e
def test_assign_reads_a_gs_latest_folder_and_writes_a_bigquery_table(
    real_run, gcs_emulator, bigquery_emulator, monkeypatch, capsys
):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator.endpoint)
    bucket = emulators.storage_client(gcs_emulator).create_bucket(f"assign-{uuid.uuid4().hex[:8]}")
    manifest = (real_run / "latest" / "run.json").read_bytes()
    bucket.blob("artifacts/latest/run.json").upload_from_string(manifest)
    bq = emulators.bigquery_client(bigquery_emulator)
    dataset = f"{bigquery_emulator.project}.assign_{uuid.uuid4().hex[:8]}"
    bq.create_dataset(dataset)
    dest = f"bq://{dataset}.assigned"
    run = f"gs://{bucket.name}/artifacts/latest/"
    code = run_main("assign", "--run", run, "--features", str(REAL_FEATURES), "--out", dest)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.endswith(f"wrote {dest}\n")
    table = bq.get_table(f"{dataset}.assigned")
    types = {field.name: field.field_type for field in table.schema}
    assert list(types) == ["neighborhood", *ASSIGNED_COLUMNS]
    assert types["fit_margin"] == "FLOAT" and types["runner_up_cluster"] == "INTEGER"
    rows = bq.list_rows(table).to_dataframe(create_bqstorage_client=False)
    assert_same_cohorts(rows, published(real_run))
    bq.delete_dataset(dataset, delete_contents=True)
