"""Where data comes from and goes to, chosen by URI.

`bq://project.dataset.table` is BigQuery, `gs://bucket/prefix` is Cloud Storage, anything else
a local path. The Google adapters import their clients only when such a URI is used, so local
runs never load them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from clustering import InputError
from clustering.adapters.claims import ClaimStore

if TYPE_CHECKING:
    import pandas as pd


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

    def read_latest_file(self, name: str) -> bytes | None:
        """The content of latest/<name>, or None when there is no such file."""


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


def source_version(source: str | None) -> tuple | None:
    """What changes whenever the features table does: a bq:// table's (last modified time,
    row count), read from BigQuery; None for files and the sample, which are read whole in
    one request, and for a table that does not exist (reading it says so)."""
    if not source or not source.startswith("bq://"):
        return None
    from clustering.adapters import bigquery

    return bigquery.table_version(source)


def read_bytes(source: str) -> bytes:
    """The content of a gs:// object or a local file; a missing one is an InputError."""
    if source.startswith("gs://"):
        from clustering.adapters import gcs

        return gcs.read_bytes(source)
    from clustering.adapters import local

    return local.read_bytes(source)


def read_boundaries(
    source: str, name_column: str, geography_column: str, maximum_bytes_billed: int | None = None
):
    """Name -> outer rings from a bq:// table with a GEOGRAPHY column (its query capped at
    `maximum_bytes_billed`, MAXIMUM_BYTES_BILLED), or from a GeoJSON at a gs:// or local
    path, whose features' `name_column` property names them (KEY_COLUMN)."""
    from clustering.outputs import geo

    if source.startswith("bq://"):
        from clustering.adapters import bigquery

        rows = bigquery.read_boundaries(source, name_column, geography_column, maximum_bytes_billed)
        return geo.boundaries_from_rows(rows, source)
    return geo.parse_boundaries(read_bytes(source), source, name_column)


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


def after_last_load(store: ArtifactStore, dest: str, load: str) -> None:
    """Before load `load` (a run id, which names its BigQuery job) into a bq:// clusters
    table: wait for the job of the load recorded last to end (cancelled at its run's
    deadline, it may still be running and commit later), then record `load` as the last.
    File replacements are synchronous: nothing to wait for."""
    if not dest.startswith("bq://"):
        return
    from datetime import UTC, datetime

    from clustering.adapters import bigquery, claims

    previous = claims.last_load(store)
    if previous and previous != load:
        bigquery.await_load(dest, previous)
    claims.record_load(store, claims.Claim(load, None, datetime.now(UTC).isoformat()))


def clusters_hold(dest: str, run_id: str) -> bool:
    """Whether the clusters table at `dest` holds run `run_id` now. A BigQuery load job that
    was cancelled may still land late, so the table is read back; a file replacement is
    synchronous and atomic, so it is not."""
    if not dest.startswith("bq://"):
        return True
    from clustering.adapters import bigquery

    return bigquery.table_run_id(dest) == run_id


def clusters_run_id(dest: str) -> str | None:
    """The run the clusters table at `dest` holds (its run_id column), None when the table
    is missing, empty or has no run_id (a table written by hand)."""
    if dest.startswith("bq://"):
        from google.api_core import exceptions

        from clustering.adapters import bigquery

        try:
            return bigquery.table_run_id(dest)
        except (exceptions.NotFound, exceptions.BadRequest):
            return None
    from clustering.adapters import local

    try:
        content = read_bytes(dest) if dest.startswith("gs://") else local.read_bytes(dest)
    except InputError:
        return None
    return local.run_id_of(content, dest)


def append_run(dest: str, row: dict) -> None:
    """Append one run record to the run history (bq:// or a local .jsonl file)."""
    if dest.startswith("bq://"):
        from clustering.adapters import bigquery

        bigquery.append_row(dest, row)
        return
    from clustering.adapters import local

    local.append_row(dest, row)


def holds_run(dest: str, run_id: str) -> bool:
    """Whether the runs or transitions table at `dest` (bq://, or a local .jsonl/.csv file)
    has a row of run `run_id`; a missing table has none."""
    if dest.startswith("bq://"):
        from clustering.adapters import bigquery

        return bigquery.holds_run(dest, run_id)
    from clustering.adapters import local

    return local.holds_run(dest, run_id)


def append_transitions(dest: str, frame: pd.DataFrame, schema: list[dict]) -> None:
    """Append a run's transitions (bq://, or a local .csv/.jsonl file)."""
    if dest.startswith("bq://"):
        from clustering.adapters import bigquery

        bigquery.append_table(dest, frame, schema)
        return
    from clustering.adapters import local

    local.append_table(dest, frame)
