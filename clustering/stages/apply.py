"""`python -m clustering assign`: a published run's model document applied to a table,
without refitting."""

from __future__ import annotations

import json
from dataclasses import dataclass

from clustering import InputError
from clustering.naming import MANIFEST


@dataclass(frozen=True)
class Assigned:
    """What `assign_table` did: the rows it assigned, by whose model, and where they went."""

    run_id: str
    rows: int
    residential: int
    dest: str


def assign_table(run: str, features: str, dest: str) -> Assigned:
    """The model document of `run` (a run folder, its run.json, or a gs:// latest/ or run
    folder) applied to the table at `features`; `dest` (.csv, .parquet or bq://) gets the key
    column and the cohort columns."""
    from clustering import adapters
    from clustering.analysis.assign import assign
    from clustering.analysis.document import read_model
    from clustering.table import output_schema, validate_for_model

    _check_destination(dest)
    manifest, where = _read_manifest(run)
    model = read_model(manifest, where)
    frame, source = adapters.read_features(features)
    rows = assign(validate_for_model(frame, model.key_column, model.columns, source), model)
    schema = output_schema(rows, model.key_column, model.population_column)
    adapters.write_clusters(dest, rows, schema)
    residential = int((rows["excluded_type"] == "Residential").sum())
    return Assigned(str(manifest.get("run_id", "?")), len(rows), residential, dest)


def _read_manifest(run: str) -> tuple[dict, str]:
    """The run.json `run` names, and where it was read."""
    from pathlib import Path

    from clustering import adapters

    if run.endswith(".json"):
        where = run
    elif run.startswith("gs://"):
        where = f"{run.rstrip('/')}/{MANIFEST}"
    else:
        folder = Path(run)
        # An artifacts folder stands for its latest run.
        inside = [folder / MANIFEST, folder / "latest" / MANIFEST]
        where = str(next((p for p in inside if p.is_file()), inside[0]))
    content = adapters.read_bytes(where)
    try:
        manifest = json.loads(content)
    except (ValueError, RecursionError):  # not JSON, not text at all, or nested too deep
        manifest = None
    if not isinstance(manifest, dict):
        raise InputError(
            f"{where} is not a run manifest: give --run a run folder, its run.json, or a "
            "latest/ folder as the job wrote it"
        )
    return manifest, where


def _check_destination(dest: str) -> None:
    """Refuse an --out that cannot be written before any work is done."""
    from pathlib import PurePosixPath

    from clustering.settings import TABLE_ID_PATTERN

    if dest.startswith("bq://"):
        if not TABLE_ID_PATTERN.match(dest.removeprefix("bq://")):
            raise InputError(f"--out {dest}: write a BigQuery table as bq://project.dataset.table")
    elif PurePosixPath(dest).suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"--out {dest}: give a .csv or .parquet path, or a bq:// table")
