"""The last published run, as the identity and transitions stages compare with it."""

from __future__ import annotations

import json

from clustering import InputError
from clustering.naming import CSV_CLUSTERS, MANIFEST


def previous(
    store,
    pointer: bytes | None,
    key_column: str = "neighborhood",
    with_rows: bool = True,
    table: str | None = None,
):
    """The last published run (the run latest/run.json points to), None on the first run.

    Centroids, names and ids come from its run.json; each neighborhood's previous cohort from
    its clusters CSV, read from latest/, which never expires (runs/<run_id>/ does, after
    artifact_retention_days): run.json stays one entry per cohort whatever the number of
    rows, and nothing is stored twice. A run the warehouse engine published has no such CSV
    (its rows were exported in shards): they are read from the clusters table `table`
    instead, when it still holds that run. Without `with_rows` (the warehouse engine, which
    compares rows inside BigQuery) no row is read.
    """
    from clustering.analysis.identity import previous_run
    from clustering.analysis.transitions import PREVIOUS_MARGIN, previous_columns

    if pointer is None:
        return None
    where = store.describe(f"latest/{MANIFEST}")
    try:
        manifest = json.loads(pointer)
        run_id = str(manifest["run_id"])
    except (ValueError, KeyError, TypeError):
        raise InputError(
            f"{where} is not a run manifest: restore it from runs/<run_id>/run.json, or remove "
            "latest/ to number the cohorts afresh"
        ) from None
    rows = _rows(store, run_id, key_column, table) if with_rows else None
    if rows is None:
        return previous_run(manifest, None)
    if key_column not in rows:  # published under another KEY_COLUMN: no row to compare
        return previous_run(manifest, None)
    if "cohort_name" not in rows:  # published before cohorts had names
        rows["cohort_name"] = rows["cluster_label"]
    margin = [PREVIOUS_MARGIN] if PREVIOUS_MARGIN in rows else []
    return previous_run(manifest, rows[[*previous_columns(key_column), *margin]])


def _rows(store, run_id: str, key_column: str, table: str | None):
    """The clusters CSV rows of run `run_id`: latest/'s copy, else (latest/ was left holding
    another run's copy by an interrupted switch) its run folder's, else the clusters table's
    rows when it holds that run; None when none has them."""
    from clustering.analysis.transitions import PREVIOUS_MARGIN, previous_columns
    from clustering.table import read_people_csv

    wanted = {*previous_columns(key_column), PREVIOUS_MARGIN, "cluster_label", "run_id"}
    for read in (store.read_latest_file, lambda name: store.read_run_file(run_id, name)):
        content = read(CSV_CLUSTERS)
        if content is None:
            continue
        rows = read_people_csv(
            content,
            usecols=lambda c: c in wanted,
            dtype={key_column: str},
            keep_default_na=False,
            na_values=[""],
        )
        if "run_id" not in rows or (rows["run_id"] == run_id).all():
            return rows
    return _table_rows(table, run_id, wanted) if table else None


def _table_rows(table: str, run_id: str, wanted: set[str]):
    """The clusters table's rows of run `run_id` (its comparison columns), None when it
    holds another run or is missing."""
    from clustering import adapters

    if adapters.clusters_run_id(table) != run_id:
        return None
    frame, _ = adapters.read_features(table)
    return frame[[c for c in frame.columns if c in wanted]].astype({"run_id": str})


def key_change(pointer: bytes | None, key_column: str) -> str | None:
    """The note a run makes when the last published run was keyed by another column: no row
    compares, so no transitions are derived (cohort identity still matches centroids)."""
    try:
        before = json.loads(pointer)["settings"]["key_column"] if pointer else None
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(before, str) or before == key_column:
        return None
    return (
        f"no transitions: the last published run was keyed by KEY_COLUMN={before!r}, this one "
        f"by {key_column!r}, so no row compares with it"
    )
