"""Where data comes from and goes to, chosen by URI.

`bq://project.dataset.table` is BigQuery, `gs://bucket/prefix` is Cloud Storage, anything else
a local path. The Google adapters import their clients only when such a URI is used, so local
runs never load them.
"""

from __future__ import annotations

from typing import Protocol

import pandas as pd

from clustering.adapters.claims import ClaimStore


class ArtifactStore(ClaimStore, Protocol):
    """A place holding runs/<run_id>/, latest/ and the idempotency claims (claims/)."""

    def describe(self, path: str = "") -> str:
        """The user-facing location of `path` inside the store."""

    def write_run(self, run_id: str, files: dict[str, bytes]) -> None:
        """Write runs/<run_id>/ with `files`; the last file is written last."""

    def read_pointer(self) -> tuple[bytes | None, object]:
        """latest/run.json (the current run's manifest) and its version token."""

    def switch_latest(self, run_id: str, files: dict[str, bytes], token: object) -> bool:
        """Point latest/ at runs/<run_id>/ in one step, only if latest/run.json is still the
        version `token`; False (nothing changed) otherwise."""

    def read_run_file(self, run_id: str, name: str) -> bytes | None:
        """The content of runs/<run_id>/<name>, or None when there is no such file."""


def read_features(source: str, max_rows: int | None = None) -> tuple[pd.DataFrame, str]:
    """The features table at `source` and a description of where it came from; a bq://
    table above `max_rows` (MEMORY_MAX_ROWS; default its default) is refused unread."""
    if source.startswith("bq://"):
        from clustering.adapters import bigquery

        return bigquery.read_table(source, max_rows or bigquery.MAX_FEATURES_ROWS), source
    if source.startswith("gs://"):
        from clustering.adapters import gcs

        return gcs.read_table(source), source
    from clustering.adapters import local

    return local.read_table(source), source


def read_bytes(source: str) -> bytes:
    """The content of a gs:// object or a local file; a missing one is an InputError."""
    if source.startswith("gs://"):
        from clustering.adapters import gcs

        return gcs.read_bytes(source)
    from clustering.adapters import local

    return local.read_bytes(source)


def read_boundaries(source: str, name_column: str, geography_column: str):
    """Neighborhood name -> outer rings from a bq:// table with a GEOGRAPHY column, or from a
    GeoJSON at a gs:// or local path."""
    from clustering.outputs import geo

    if source.startswith("bq://"):
        from clustering.adapters import bigquery

        rows = bigquery.read_boundaries(source, name_column, geography_column)
        return geo.boundaries_from_rows(rows, source)
    return geo.parse_boundaries(read_bytes(source), source)


def artifact_store(dest: str) -> ArtifactStore:
    """The store behind `dest`: a gs:// prefix or a local folder."""
    if dest.startswith("gs://"):
        from clustering.adapters import gcs

        return gcs.GcsStore(dest)
    from clustering.adapters import local

    return local.LocalStore(dest)


def write_clusters(
    dest: str, frame: pd.DataFrame, schema: list[dict], run_id: str | None = None
) -> None:
    """Replace the clusters table at `dest` (bq://, or a .csv/.parquet object or file) in one
    step; a BigQuery load job is named after `run_id`."""
    if dest.startswith("bq://"):
        from clustering.adapters import bigquery

        bigquery.replace_table(dest, frame, schema, run_id)
        return
    if dest.startswith("gs://"):
        from clustering.adapters import gcs

        gcs.replace_table(dest, frame)
        return
    from clustering.adapters import local

    local.replace_table(dest, frame)


def clusters_hold(dest: str, run_id: str) -> bool:
    """Whether the clusters table at `dest` holds run `run_id` now. A BigQuery load job that
    was cancelled may still land late, so the table is read back; a file replacement is
    synchronous and atomic, so it is not."""
    if not dest.startswith("bq://"):
        return True
    from clustering.adapters import bigquery

    return bigquery.table_run_id(dest) == run_id


def append_run(dest: str, row: dict) -> None:
    """Append one run record to the run history (bq:// or a local .jsonl file)."""
    if dest.startswith("bq://"):
        from clustering.adapters import bigquery

        bigquery.append_row(dest, row)
        return
    from clustering.adapters import local

    local.append_row(dest, row)


def append_transitions(dest: str, frame: pd.DataFrame, schema: list[dict]) -> None:
    """Append a run's transitions (bq://, or a local .csv/.jsonl file)."""
    if dest.startswith("bq://"):
        from clustering.adapters import bigquery

        bigquery.append_table(dest, frame, schema)
        return
    from clustering.adapters import local

    local.append_table(dest, frame)
