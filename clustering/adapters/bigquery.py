"""BigQuery: read the features table, replace the clusters table, append to the run history.

No SQL is ever assembled: the features table is read with the tabledata API (`list_rows`) by a
validated table id, the clusters table is replaced by one WRITE_TRUNCATE load job with an
explicit schema (atomic: readers see the old table or the new one), and every job carries
the labels that mark it as ours in the audit logs.

Every call has a retry deadline and a per-request timeout from the run's budget
(clustering.adapters.budget), and a load job is waited on with a timeout and cancelled when it
passes, instead of the client's 600 s defaults that outlast the function.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress

import pandas as pd

from clustering import InputError
from clustering.adapters import budget
from clustering.naming import JOB_LABELS
from clustering.settings import MAX_FEATURES_BYTES, MAX_FEATURES_ROWS, bq_table_id, check_column

EMULATOR_ENV = "BIGQUERY_EMULATOR_HOST"
# Error reasons BigQuery returns with 403 that a later attempt can pass: throttling, not a
# missing permission (https://cloud.google.com/bigquery/docs/error-messages).
TRANSIENT_403_REASONS = frozenset({"rateLimitExceeded", "quotaExceeded"})
# How long a cancelled load job is waited on to reach DONE before the run gives up its claim.
CANCEL_WAIT_SECONDS = 10.0


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


def limits(step: str) -> dict:
    """retry= and timeout= for one BigQuery call, within the run's remaining time."""
    from google.cloud.bigquery import DEFAULT_RETRY

    deadline, timeout = budget.call_limits(step)
    return {"retry": DEFAULT_RETRY.with_deadline(deadline), "timeout": timeout}


def is_rate_limited(error: BaseException) -> bool:
    """A 403 that is throttling (rateLimitExceeded, quotaExceeded): transient."""
    from google.api_core import exceptions

    if not isinstance(error, exceptions.Forbidden):
        return False
    return any(
        isinstance(e, dict) and e.get("reason") in TRANSIENT_403_REASONS for e in error.errors
    )


@contextmanager
def quiet_client():
    """Silence the client's notices about its own future dependencies (pandas-gbq, the
    BigQuery Storage API): they concern its next major version, not this pinned one, and each
    would print plain-text lines into the function's JSON log on every run."""
    with warnings.catch_warnings():
        # Scoped to the client calls below; the notices name our line, not the client's.
        for category in (FutureWarning, PendingDeprecationWarning, DeprecationWarning):
            warnings.simplefilter("ignore", category)
        yield


def read_table(uri: str, max_rows: int = MAX_FEATURES_ROWS) -> pd.DataFrame:
    """All rows of the features table as a DataFrame (validation sorts them by name); a table
    above `max_rows` (MEMORY_MAX_ROWS) or the size limit is refused before any row is read."""
    table_id = bq_table_id(uri, "features source")
    bq = client(table_id.split(".")[0])
    with _features_errors(uri):
        table = bq.get_table(table_id, **limits(f"looking up {uri}"))
        _check_size(uri, table.num_rows, table.num_bytes, max_rows)
        with quiet_client():
            rows = bq.list_rows(table, **limits(f"reading {uri}"))
            return rows.to_dataframe(create_bqstorage_client=False)


def get_table(uri: str):
    """The features table's metadata (row count, schema) from one cheap lookup: no row is
    read and no query billed."""
    table_id = bq_table_id(uri, "features source")
    with _features_errors(uri):
        return client(table_id.split(".")[0]).get_table(table_id, **limits(f"looking up {uri}"))


@contextmanager
def _features_errors(uri: str):
    """A missing table or a denied read of the features table as the user's one-line error;
    a rate limit stays transient."""
    from google.api_core import exceptions

    try:
        yield
    except exceptions.NotFound:
        raise InputError(
            f"{uri}: table not found: check FEATURES_SOURCE and that the table exists"
        ) from None
    except exceptions.Forbidden as error:
        if is_rate_limited(error):
            raise
        raise InputError(
            f"{uri}: access denied ({error.message}): grant the function's service account "
            "BigQuery Data Viewer on the table"
        ) from None


def row_count(table_id: str, timeout: float = 10.0) -> int | None:
    """The rows BigQuery states `table_id` holds (one metadata lookup, no retry: for tools
    outside a run, such as send-event); None when the table does not exist."""
    from google.api_core import exceptions

    try:
        table = client(table_id.split(".")[0]).get_table(table_id, retry=None, timeout=timeout)
    except exceptions.NotFound:
        return None
    return table.num_rows


def table_version(uri: str) -> tuple | None:
    """(last modified time, row count) of a table, both as BigQuery states them; None when
    the table does not exist."""
    from google.api_core import exceptions

    table_id = bq_table_id(uri, "features source")
    try:
        table = client(table_id.split(".")[0]).get_table(table_id, **limits(f"checking {uri}"))
    except exceptions.NotFound:
        return None
    return table.modified, table.num_rows


def _check_size(uri: str, rows: int | None, size: int | None, max_rows: int) -> None:
    if rows is not None and rows > max_rows:
        raise InputError(
            f"{uri} has {rows:,} rows, more than the {max_rows:,} the memory engine reads "
            "(MEMORY_MAX_ROWS): use ENGINE=auto or warehouse, raise MEMORY_MAX_ROWS, or "
            "filter the table"
        )
    if size is not None and size > MAX_FEATURES_BYTES:
        raise InputError(
            f"{uri} holds {size:,} bytes, more than the {MAX_FEATURES_BYTES:,} "
            "this job reads (see docs/configuration.md, Limits): drop unused columns"
        )


def load_job_id(run_id: str) -> str:
    """The load job of a run has a fixed id, so a retried insert cannot load twice and any
    later delivery can look up whether the run's load landed."""
    return f"neighborhood_clusters_{run_id}"


def replace_table(
    uri: str, frame: pd.DataFrame, schema: list[dict], run_id: str | None = None
) -> None:
    """Replace the table's contents and schema with `frame` in one load job (named after
    `run_id` when given), waited on within the run's budget and cancelled when it runs out."""
    job_id = load_job_id(run_id) if run_id else None
    _load(uri, bq_table_id(uri, "clusters table"), frame, schema, "WRITE_TRUNCATE", job_id)


def append_table(uri: str, frame: pd.DataFrame, schema: list[dict]) -> None:
    """Append `frame` in one load job: all of its rows or none."""
    _load(uri, bq_table_id(uri, "transitions table"), frame, schema, "WRITE_APPEND", None)


def _load(
    uri: str,
    table_id: str,
    frame: pd.DataFrame,
    schema: list[dict],
    disposition: str,
    job_id: str | None,
) -> None:
    """One Parquet load job with an explicit schema, labelled as ours, within the budget."""
    from google.api_core import exceptions
    from google.cloud import bigquery

    config = bigquery.LoadJobConfig(
        schema=[bigquery.SchemaField.from_api_repr(field) for field in schema],
        write_disposition=disposition,
        source_format=bigquery.SourceFormat.PARQUET,
        labels=dict(JOB_LABELS),
    )
    bq = client(table_id.split(".")[0])
    _, timeout = budget.call_limits(f"loading {uri}")
    try:
        with quiet_client():
            job = bq.load_table_from_dataframe(
                frame, table_id, job_config=config, job_id=job_id, timeout=timeout
            )
    except exceptions.Conflict:
        if job_id is None:
            raise
        # Our own insert, retried after its response was lost: the job exists; wait on it.
        job = bq.get_job(job_id, **limits(f"looking up load job {job_id}"))
    wait(job, f"the load of {uri}")


def await_load(uri: str, run_id: str) -> None:
    """Return once run `run_id`'s load job (its id is fixed: `load_job_id`) has ended, or
    never started. A load cancelled at its run's deadline may still be running, and would
    commit over this run's load, splitting the table from latest/. Waited on within the
    budget; past it OutOfTime, and the event is retried."""
    from google.api_core import exceptions
    from google.cloud.bigquery import DEFAULT_RETRY

    job_id = load_job_id(run_id)
    bq = client(bq_table_id(uri, "clusters table").split(".")[0])
    try:
        job = bq.get_job(job_id, **limits(f"looking up load job {job_id}"))
    except exceptions.NotFound:
        return
    if job.state == "DONE":
        return
    deadline, _ = budget.call_limits(f"waiting for load job {job_id} of run {run_id}")
    try:
        job.result(retry=DEFAULT_RETRY.with_deadline(deadline), timeout=deadline)
    except (FutureTimeout, exceptions.RetryError):
        raise budget.OutOfTime(
            f"the load job {job_id} of the earlier run {run_id} into {uri} is still running: "
            "this run does not load over it, the event is retried"
        ) from None
    except exceptions.GoogleAPICallError:
        return  # it failed or was cancelled: either way it has ended


def wait(job, what: str) -> None:
    """Wait for the job within the budget; past it, cancel the job, wait for it to stop, and
    raise OutOfTime. `what` names the job's work in messages ("the load of bq://...")."""
    from google.api_core import exceptions
    from google.cloud.bigquery import DEFAULT_RETRY

    deadline, _ = budget.call_limits(f"waiting for {what}")
    try:
        job.result(retry=DEFAULT_RETRY.with_deadline(deadline), timeout=deadline)
    except (FutureTimeout, exceptions.RetryError) as error:
        job.cancel(
            retry=DEFAULT_RETRY.with_deadline(CANCEL_WAIT_SECONDS), timeout=CANCEL_WAIT_SECONDS
        )
        # Cancelled or failed: either way it no longer writes.
        with suppress(Exception):
            job.result(timeout=CANCEL_WAIT_SECONDS)
        raise budget.OutOfTime(
            f"{what} (job {job.job_id}) did not finish in the run's time and was cancelled: {error}"
        ) from None


def table_run_id(uri: str) -> str | None:
    """The run_id column of the table's first row (all rows share it), None when empty."""
    from google.cloud import bigquery

    table_id = bq_table_id(uri, "clusters table")
    bq = client(table_id.split(".")[0])
    rows = bq.list_rows(
        table_id,
        selected_fields=[bigquery.SchemaField("run_id", "STRING")],
        max_results=1,
        **limits(f"checking {uri}"),
    )
    return next((row["run_id"] for row in rows), None)


def holds_run(uri: str, run_id: str) -> bool:
    """Whether the table has a row of run `run_id` (one small query, labelled as ours); a
    missing table has none."""
    from google.api_core import exceptions
    from google.cloud import bigquery

    table_id = bq_table_id(uri, "table")
    bq = client(table_id.split(".")[0])
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter("run_id", "STRING", run_id)],
        labels=dict(JOB_LABELS),
    )
    try:
        bq.get_table(table_id, **limits(f"looking up {uri}"))
    except exceptions.NotFound:
        return False
    query = f"SELECT COUNT(*) AS n FROM `{table_id}` WHERE run_id = @run_id"
    job = bq.query(query, job_config=config, **limits(f"checking {uri} for run {run_id}"))
    return next(iter(job.result(**limits(f"checking {uri}"))))["n"] > 0


def append_row(uri: str, row: dict) -> None:
    """Append one run record. Streaming inserts log no tableDataChange, so the history can
    never trigger a run. The insert id makes a retried insert land once."""
    table_id = bq_table_id(uri, "runs table")
    bq = client(table_id.split(".")[0])
    row_id = f"{row.get('run_id')}:{row.get('status')}"
    errors = bq.insert_rows_json(table_id, [row], row_ids=[row_id], **limits(f"appending to {uri}"))
    if errors:
        raise RuntimeError(f"{uri}: the run record was rejected: {errors}")


def read_boundaries(
    uri: str, name_column: str, geography_column: str, maximum_bytes_billed: int | None = None
) -> list[tuple]:
    """(name, GeoJSON geometry) rows of a boundaries table with a GEOGRAPHY column; the
    query is capped at `maximum_bytes_billed` when given (MAXIMUM_BYTES_BILLED). A warehouse
    run reads them on its run's budget instead (clustering.adapters.warehouse).

    The one query this adapter builds: it takes no parameters, and every identifier in it is
    validated first (a table id, two column names), so no value from outside reaches SQL."""
    from google.cloud import bigquery

    table_id = bq_table_id(uri, "BOUNDARIES_SOURCE")
    name = check_column(name_column, "BOUNDARIES_NAME_COLUMN")
    shape = check_column(geography_column, "BOUNDARIES_GEOGRAPHY_COLUMN")
    sql = (
        f"SELECT CAST(`{name}` AS STRING) AS name, ST_ASGEOJSON(`{shape}`) AS geometry "
        f"FROM `{table_id}`"
    )
    bq = client(table_id.split(".")[0])
    config = bigquery.QueryJobConfig(labels=dict(JOB_LABELS))
    if maximum_bytes_billed is not None:
        # Set only when given: the client sends a None as JSON null, which is no number.
        config.maximum_bytes_billed = maximum_bytes_billed
    with boundaries_errors(uri, name, shape), quiet_client():
        job = bq.query(sql, job_config=config, **limits(f"querying {uri}"))
        # Waited on within the run's budget, like a load: cancelled and OutOfTime past it.
        wait(job, f"the boundaries query of {uri}")
        return [(row["name"], row["geometry"]) for row in job.result(**limits(uri))]


@contextmanager
def boundaries_errors(uri: str, name: str, shape: str):
    """A missing, denied or mismatched boundaries table as the user's one-line error."""
    from google.api_core import exceptions

    try:
        yield
    except exceptions.NotFound:
        raise InputError(
            f"{uri}: boundaries table not found: check BOUNDARIES_SOURCE (--boundaries)"
        ) from None
    except exceptions.Forbidden as error:
        if is_rate_limited(error):
            raise
        raise InputError(
            f"{uri}: access denied ({error.message}): set boundaries_table in Terraform so the "
            "function's service account may read it"
        ) from None
    except exceptions.BadRequest as error:
        raise InputError(
            f"{uri}: cannot read {name!r} and the GEOGRAPHY {shape!r} ({error.message}): set "
            "BOUNDARIES_NAME_COLUMN and BOUNDARIES_GEOGRAPHY_COLUMN to the table's columns"
        ) from None
