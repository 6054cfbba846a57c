"""BigQuery: read the features table, replace the clusters table, append to the run history.

No SQL is ever assembled: the features table is read with the tabledata API (`list_rows`) by a
validated table id, the clusters table is replaced by one WRITE_TRUNCATE load job with an
explicit schema (atomic: readers see the old table or the new one), and every job carries
the labels that mark it as ours in the audit logs.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager

import pandas as pd

from clustering.errors import InputError
from clustering.events import JOB_LABELS
from clustering.settings import bq_table_id

EMULATOR_ENV = "BIGQUERY_EMULATOR_HOST"


def client(project: str):
    """A BigQuery client; against BIGQUERY_EMULATOR_HOST when set (local emulation), which
    needs anonymous credentials and the endpoint passed explicitly."""
    from google.cloud import bigquery

    endpoint = os.environ.get(EMULATOR_ENV)
    if not endpoint:
        return bigquery.Client(project=project)
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=endpoint),
    )


@contextmanager
def _quiet_client():
    """Silence the client's notices about its own future dependencies (pandas-gbq, the
    BigQuery Storage API): they concern its next major version, not this pinned one, and each
    would print plain-text lines into the function's JSON log on every run."""
    with warnings.catch_warnings():
        # Scoped to the client calls below; the notices name our line, not the client's.
        for category in (FutureWarning, PendingDeprecationWarning, DeprecationWarning):
            warnings.simplefilter("ignore", category)
        yield


def read_table(uri: str) -> pd.DataFrame:
    """All rows of the features table as a DataFrame (validation sorts them by name)."""
    from google.api_core import exceptions

    table_id = bq_table_id(uri, "features source")
    bq = client(table_id.split(".")[0])
    try:
        with _quiet_client():
            return bq.list_rows(table_id).to_dataframe(create_bqstorage_client=False)
    except exceptions.NotFound:
        raise InputError(
            f"{uri}: table not found: check FEATURES_SOURCE and that the table exists"
        ) from None
    except exceptions.Forbidden as error:
        raise InputError(
            f"{uri}: access denied ({error.message}): grant the function's service account "
            "BigQuery Data Viewer on the table"
        ) from None


def replace_table(uri: str, frame: pd.DataFrame, schema: list[dict]) -> None:
    """Replace the table's contents and schema with `frame` in one load job."""
    _load(bq_table_id(uri, "clusters table"), frame, schema, "WRITE_TRUNCATE")


def append_table(uri: str, frame: pd.DataFrame, schema: list[dict]) -> None:
    """Append `frame` in one load job: all of its rows or none."""
    _load(bq_table_id(uri, "transitions table"), frame, schema, "WRITE_APPEND")


def _load(table_id: str, frame: pd.DataFrame, schema: list[dict], disposition: str) -> None:
    """One Parquet load job with an explicit schema, labelled as ours."""
    from google.cloud import bigquery

    config = bigquery.LoadJobConfig(
        schema=[bigquery.SchemaField.from_api_repr(field) for field in schema],
        write_disposition=disposition,
        source_format=bigquery.SourceFormat.PARQUET,
        labels=dict(JOB_LABELS),
    )
    bq = client(table_id.split(".")[0])
    with _quiet_client():
        bq.load_table_from_dataframe(frame, table_id, job_config=config).result()


def append_row(uri: str, row: dict) -> None:
    """Append one run record. Streaming inserts log no tableDataChange, so the history can
    never trigger a run."""
    table_id = bq_table_id(uri, "runs table")
    bq = client(table_id.split(".")[0])
    errors = bq.insert_rows_json(table_id, [row])
    if errors:
        raise RuntimeError(f"{uri}: the run record was rejected: {errors}")
