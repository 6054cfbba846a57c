"""Where data comes from and goes to, chosen by URI.

`bq://project.dataset.table` is BigQuery, `gs://bucket/prefix` is Cloud Storage, anything else
a local path. The Google adapters import their clients only when such a URI is used, so local
runs never load them.
"""

from __future__ import annotations

from typing import Protocol

import pandas as pd

from clustering.claims import ClaimStore


class ArtifactStore(ClaimStore, Protocol):
    """A place holding runs/<run_id>/, latest/ and the idempotency claims (claims/)."""

    def describe(self, path: str = "") -> str:
        """The user-facing location of `path` inside the store."""

    def write_run(self, run_id: str, files: dict[str, bytes]) -> None:
        """Write runs/<run_id>/ with `files`; the last file is written last."""

    def promote(self, run_id: str, files: dict[str, bytes]) -> None:
        """Replace latest/ by the files of runs/<run_id>/; the last file goes last."""

    def read_latest(self, name: str) -> bytes | None:
        """The content of latest/<name>, or None when there is no such file (first run)."""


def read_features(source: str) -> tuple[pd.DataFrame, str]:
    """The features table at `source` and a description of where it came from."""
    if source.startswith("bq://"):
        from clustering.adapters import bigquery

        return bigquery.read_table(source), source
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


def artifact_store(dest: str) -> ArtifactStore:
    """The store behind `dest`: a gs:// prefix or a local folder."""
    if dest.startswith("gs://"):
        from clustering.adapters import gcs

        return gcs.GcsStore(dest)
    from clustering.adapters import local

    return local.LocalStore(dest)


def write_clusters(dest: str, frame: pd.DataFrame, schema: list[dict]) -> None:
    """Replace the clusters table at `dest` (bq://, or a .csv/.parquet object or file) in one
    step."""
    if dest.startswith("bq://"):
        from clustering.adapters import bigquery

        bigquery.replace_table(dest, frame, schema)
        return
    if dest.startswith("gs://"):
        from clustering.adapters import gcs

        gcs.replace_table(dest, frame)
        return
    from clustering.adapters import local

    local.replace_table(dest, frame)


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
