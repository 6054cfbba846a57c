"""The warehouse engine's BigQuery jobs: the sample read, the scoring, the transitions, the
summary, the exports, and the staging table's copy over the clusters table.

Every job has a fixed id made of the run id and its step, so a request the client retries after
a lost response meets its own job (409) and waits on it instead of starting a second one; every
job carries JOB_LABELS (which tell the events layer the job is ours). MAXIMUM_BYTES_BILLED is
the budget of the whole run (`Ledger`): before each query job its dry-run estimate is checked
against what is left, the job is capped at what is left (so BigQuery refuses it before it bills
more), and what it billed is subtracted. Every table this module creates or copies into staging
expires after STAGING_EXPIRATION, whoever runs it, so a run killed before its clean-up leaves
nothing for long. Jobs are waited on within the run's budget and cancelled when it runs out
(clustering.adapters.bigquery.wait). The SQL itself comes from warehouse_sql, built from
validated identifiers and numbers only; text values travel as query parameters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pandas as pd

from clustering import InputError
from clustering.adapters import bigquery, budget
from clustering.adapters import warehouse_sql as sql
from clustering.adapters.warehouse_sql import Parameter, Statement
from clustering.naming import JOB_LABELS
from clustering.settings import bq_table_id

# Rows per page when a query's result is read (the sample): fewer round trips than the
# client's default, well under the API's 10 MB per response for a few dozen columns.
PAGE_ROWS = 20_000
# Error reasons of a failed query that are the data's or the settings' fault, not ours:
# a text value where a number belongs, a job above MAXIMUM_BYTES_BILLED, a denied table.
CAUSES = {
    "bytesBilledLimitExceeded": "raise MAXIMUM_BYTES_BILLED or filter the table",
    "invalidQuery": "check that the features columns hold numbers",
    "accessDenied": "grant the function's service account access (terraform/iam.tf)",
}
# How long a staging table lives: well past any run (the function's timeout is minutes),
# short enough that a killed run's tables do not pile up.
STAGING_EXPIRATION = timedelta(days=1)
BUDGET_FIX = "raise MAXIMUM_BYTES_BILLED (--maximum-bytes-billed) or filter the table"


@dataclass
class Ledger:
    """One run's byte budget (MAXIMUM_BYTES_BILLED): `jobs` holds each query job's (step,
    dry-run estimate, bytes billed), in order."""

    budget: int
    jobs: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def billed(self) -> int:
        return sum(billed for _, _, billed in self.jobs)

    @property
    def left(self) -> int:
        return self.budget - self.billed

    def check(self, step: str, estimate: int) -> None:
        """Refuse a job whose estimate is more than what is left (or when nothing is)."""
        if estimate > self.left or self.left <= 0:
            raise InputError(
                f"{step}: the query would process {estimate:,} bytes, and {max(self.left, 0):,}"
                f" of this run's MAXIMUM_BYTES_BILLED ({self.budget:,} bytes) are left after "
                f"{self.billed:,} billed by its earlier jobs: {BUDGET_FIX}"
            )

    def spend(self, step: str, estimate: int, billed: int) -> None:
        self.jobs.append((step, estimate, billed))


@dataclass(frozen=True)
class Jobs:
    """How one run makes its jobs: in `project`, named after `run_id`, all its query jobs
    together within `maximum_bytes_billed` bytes (its `ledger`)."""

    project: str
    run_id: str
    maximum_bytes_billed: int
    ledger: Ledger = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ledger", Ledger(self.maximum_bytes_billed))

    def job_id(self, step: str) -> str:
        return f"neighborhood_clusters_{self.run_id}_{step}"


def query(
    jobs: Jobs,
    step: str,
    statement: Statement,
    destination: str | None = None,
    disposition: str | None = None,
):
    """Run one query job (into `destination`, a table id, with `disposition` when given) and
    wait for it within the time budget; the finished job. Its dry run's estimate must fit
    in what is left of the run's bytes (`Ledger.check`); the job is capped at that, and what
    it billed is spent."""
    from google.api_core import exceptions

    client = bigquery.client(jobs.project)
    estimate = _estimate(client, step, statement)
    jobs.ledger.check(step, estimate)
    config = _config(statement, jobs.ledger.left)
    if destination:
        config.destination = destination
        config.write_disposition = disposition
    job_id = jobs.job_id(step)
    _, timeout = budget.call_limits(f"starting {step}")
    try:
        job = client.query(
            statement.sql, job_config=config, job_id=job_id, job_retry=None, timeout=timeout
        )
    except exceptions.Conflict:
        # Our own insert, retried after its response was lost: the job exists; wait on it.
        job = client.get_job(job_id, **bigquery.limits(f"looking up job {job_id}"))
    with _refused(step):
        bigquery.wait(job, step)
    jobs.ledger.spend(step, estimate, int(job.total_bytes_billed or 0))
    return job


def _config(statement: Statement, maximum_bytes_billed: int | None, dry_run: bool = False):
    from google.cloud import bigquery as bq_types

    config = bq_types.QueryJobConfig(
        query_parameters=[_parameter(p) for p in statement.parameters],
        labels=dict(JOB_LABELS),
        use_legacy_sql=False,
        dry_run=dry_run,
        use_query_cache=not dry_run,
    )
    if maximum_bytes_billed is not None:
        config.maximum_bytes_billed = maximum_bytes_billed
    return config


def _estimate(client, step: str, statement: Statement) -> int:
    """The bytes a statement would process, from a dry run (free: no job is kept)."""
    with _refused(step):
        found = client.query(
            statement.sql,
            job_config=_config(statement, None, dry_run=True),
            job_retry=None,
            **bigquery.limits(f"estimating {step}"),
        )
    return int(found.total_bytes_processed or 0)


def read(jobs: Jobs, step: str, statement: Statement) -> pd.DataFrame:
    """A query's result rows as a DataFrame (the sample, the summary: bounded sizes)."""
    job = query(jobs, step, statement)
    client = bigquery.client(jobs.project)
    with bigquery.quiet_client(), _refused(step):
        rows = client.list_rows(
            job.destination, page_size=PAGE_ROWS, **bigquery.limits(f"reading {step}")
        )
        return rows.to_dataframe(create_bqstorage_client=False)


def create_table(
    table_id: str, schema: list[dict], expires: timedelta | None = STAGING_EXPIRATION
) -> None:
    """Create an empty table with an explicit schema, expiring `expires` from now (a staging
    table, the default; None for a table that is published); one that exists already is our
    own create retried (staging names are unique per run)."""
    from google.api_core import exceptions
    from google.cloud import bigquery as bq_types

    table = bq_types.Table(table_id, schema=[bq_types.SchemaField.from_api_repr(f) for f in schema])
    table.labels = dict(JOB_LABELS)
    if expires is not None:
        table.expires = datetime.now(UTC) + expires
    client = bigquery.client(table_id.split(".")[0])
    try:
        client.create_table(table, **bigquery.limits(f"creating {table_id}"))
    except exceptions.Conflict:
        pass
    except exceptions.NotFound:
        dataset = table_id.rsplit(".", 1)[0]
        raise InputError(
            f"the staging dataset {dataset} does not exist: create it (terraform/bigquery.tf "
            "does) or set STAGING_DATASET to one the function may write to"
        ) from None


def copy(
    jobs: Jobs,
    step: str,
    source: str,
    destination: str,
    disposition: str,
    expires: timedelta | None = None,
    job_id: str | None = None,
) -> None:
    """One copy job: atomic (readers see the old table or the new one) and free. Into a
    published table (the default) it sets no expiration: an existing table keeps its own;
    into staging, pass `expires` (STAGING_EXPIRATION) and the copy expires that long after.
    `job_id` replaces the step's id (the clusters table's replacement takes its run's load
    job id, which the next run waits for)."""
    from google.api_core import exceptions
    from google.cloud import bigquery as bq_types

    config = bq_types.CopyJobConfig(write_disposition=disposition, labels=dict(JOB_LABELS))
    client = bigquery.client(jobs.project)
    job_id = job_id or jobs.job_id(step)
    _, timeout = budget.call_limits(f"starting {step}")
    try:
        job = client.copy_table(
            source, destination, job_id=job_id, job_config=config, timeout=timeout
        )
    except exceptions.Conflict:
        job = client.get_job(job_id, **bigquery.limits(f"looking up job {job_id}"))
    bigquery.wait(job, step)
    if expires is not None:
        expire(destination, expires)


def expire(table_id: str, expires: timedelta = STAGING_EXPIRATION) -> None:
    """Make a table expire `expires` from now (a staging table a job wrote)."""
    client = bigquery.client(table_id.split(".")[0])
    table = client.get_table(table_id, **bigquery.limits(f"looking up {table_id}"))
    table.expires = datetime.now(UTC) + expires
    client.update_table(table, ["expires"], **bigquery.limits(f"setting {table_id} to expire"))


def modified(table_id: str) -> tuple[datetime, int] | None:
    """(last modified time, row count) of a table as BigQuery states them, None when there
    is no such table: what a settling check and the check before the copy compare."""
    return bigquery.table_version(f"bq://{table_id}")


def snapshot(jobs: Jobs, table_id: str) -> sql.Table:
    """The table pinned to now, as BigQuery's clock tells it (one free query): every
    statement built over the result reads this one state of it (FOR SYSTEM_TIME AS OF),
    whatever loads land while the run works. Now rather than the table's last-modified
    time: time travel reaches back only a few days, and an unchanged table may be older."""
    frame = read(jobs, "snapshot", sql.now())
    moment = pd.Timestamp(frame.iloc[0]["now"]).to_pydatetime()
    return sql.Table(table_id, as_of=moment.astimezone(UTC))


def read_boundaries(jobs: Jobs, uri: str, name_column: str, geography_column: str):
    """(name, GeoJSON geometry) rows of a bq:// boundaries table with a GEOGRAPHY column,
    read by a query on the run's budget like every other (`query`)."""
    table = _boundaries_table(uri, name_column, geography_column)
    statement = sql.boundaries(table, name_column, geography_column)
    with bigquery.boundaries_errors(uri, name_column, geography_column):
        frame = read(jobs, "boundaries", statement)
    return list(zip(frame["name"], frame["geometry"], strict=True))


def stage_shapes(jobs: Jobs, uri: str, name_column: str, geography_column: str, dest: str):
    """The bq:// boundaries table's (name, GEOGRAPHY) rows into the staging table `dest`
    (warehouse_sql.SHAPES_SCHEMA, expiring), for the scoring's `<key>_shape` column: the
    shapes never leave BigQuery."""
    table = _boundaries_table(uri, name_column, geography_column)
    create_table(dest, list(sql.SHAPES_SCHEMA))
    statement = sql.shapes(table, name_column, geography_column)
    with bigquery.boundaries_errors(uri, name_column, geography_column):
        query(jobs, "shapes", statement, dest, "WRITE_TRUNCATE")
    return sql.Table(dest)


def drop(table_id: str) -> None:
    """Delete a staging table (gone already is fine)."""
    client = bigquery.client(table_id.split(".")[0])
    client.delete_table(table_id, not_found_ok=True, **bigquery.limits(f"dropping {table_id}"))


def columns(table_id: str) -> tuple[str, ...] | None:
    """The table's column names, None when there is no such table."""
    from google.api_core import exceptions

    client = bigquery.client(table_id.split(".")[0])
    try:
        table = client.get_table(table_id, **bigquery.limits(f"looking up {table_id}"))
    except exceptions.NotFound:
        return None
    return tuple(f.name for f in table.schema)


def fields(table_id: str) -> tuple[tuple[str, str], ...]:
    """The table's (column, BigQuery type) pairs, as warehouse_sql.export takes them."""
    client = bigquery.client(table_id.split(".")[0])
    table = client.get_table(table_id, **bigquery.limits(f"looking up {table_id}"))
    return tuple((f.name, f.field_type) for f in table.schema)


def exists(table_id: str) -> bool:
    return columns(table_id) is not None


def _boundaries_table(uri: str, name_column: str, geography_column: str) -> sql.Table:
    """The boundaries table, checked to have both columns before a query names them (a
    refused query would blame the features); a missing table is left to the query to say."""
    table_id = bq_table_id(uri, "BOUNDARIES_SOURCE")
    found = columns(table_id) or (name_column, geography_column)
    lacking = [c for c in (name_column, geography_column) if c not in found]
    if lacking:
        raise InputError(
            f"{uri} has no column {lacking[0]!r}: set BOUNDARIES_NAME_COLUMN and "
            "BOUNDARIES_GEOGRAPHY_COLUMN to the table's columns"
        )
    return sql.Table(table_id)


def _parameter(parameter: Parameter):
    from google.cloud import bigquery as bq_types

    if parameter.type.startswith("ARRAY<"):
        return bq_types.ArrayQueryParameter(parameter.name, parameter.type[6:-1], parameter.value)
    return bq_types.ScalarQueryParameter(parameter.name, parameter.type, parameter.value)


@contextmanager
def _refused(step: str) -> Iterator[None]:
    """A job BigQuery refuses for the data's or the settings' sake (CAUSES) as the user's
    one-line error; anything else (a 5xx, a rate limit) passes unchanged."""
    from google.api_core import exceptions

    try:
        yield
    except (exceptions.BadRequest, exceptions.Forbidden) as error:
        if bigquery.is_rate_limited(error):
            raise
        reasons = [e.get("reason") for e in error.errors or () if isinstance(e, dict)]
        fix = next((CAUSES[r] for r in reasons if r in CAUSES), "see the job in BigQuery")
        message = " ".join(str(error.message).split())
        raise InputError(f"{step}: BigQuery refused the job ({message}): {fix}") from None
