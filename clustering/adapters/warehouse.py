"""The warehouse engine's BigQuery jobs: the sample read, the scoring, the transitions, the
summary, the exports, and the staging table's copy over the clusters table.

Every job has a fixed id made of the run id and its step, so a request the client retries
after a lost response meets its own job (409) and waits on it instead of starting a second
one; every job carries JOB_LABELS (which tell the events layer the job is ours), and every
query job MAXIMUM_BYTES_BILLED, so a query that would bill more fails before it costs
anything. Jobs are waited on within the run's budget and cancelled when it runs out
(clustering.adapters.bigquery.wait). The SQL itself comes from warehouse_sql, built from
validated identifiers and numbers only; text values travel as query parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd

from clustering import InputError
from clustering.adapters import bigquery, budget
from clustering.adapters.warehouse_sql import Parameter, Statement
from clustering.naming import JOB_LABELS

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


@dataclass(frozen=True)
class Jobs:
    """How one run makes its jobs: in `project`, named after `run_id`, capped at
    `maximum_bytes_billed` bytes per query."""

    project: str
    run_id: str
    maximum_bytes_billed: int

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
    wait for it within the budget; the finished job."""
    from google.api_core import exceptions
    from google.cloud import bigquery as bq_types

    config = bq_types.QueryJobConfig(
        query_parameters=[_parameter(p) for p in statement.parameters],
        labels=dict(JOB_LABELS),
        maximum_bytes_billed=jobs.maximum_bytes_billed,
        use_legacy_sql=False,
    )
    if destination:
        config.destination = destination
        config.write_disposition = disposition
    client = bigquery.client(jobs.project)
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
    return job


def read(jobs: Jobs, step: str, statement: Statement) -> pd.DataFrame:
    """A query's result rows as a DataFrame (the sample, the summary: bounded sizes)."""
    job = query(jobs, step, statement)
    client = bigquery.client(jobs.project)
    with bigquery.quiet_client(), _refused(step):
        rows = client.list_rows(
            job.destination, page_size=PAGE_ROWS, **bigquery.limits(f"reading {step}")
        )
        return rows.to_dataframe(create_bqstorage_client=False)


def create_table(table_id: str, schema: list[dict]) -> None:
    """Create an empty table with an explicit schema; one that exists already is our own
    create retried (staging names are unique per run)."""
    from google.api_core import exceptions
    from google.cloud import bigquery as bq_types

    table = bq_types.Table(table_id, schema=[bq_types.SchemaField.from_api_repr(f) for f in schema])
    table.labels = dict(JOB_LABELS)
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
    jobs: Jobs, step: str, source: str, destination: str, disposition: str, job_id=None
) -> None:
    """One copy job: atomic (readers see the old table or the new one) and free. It sets no
    expiration on the destination: an existing table keeps its own. `job_id` replaces the
    step's id (the clusters table's replacement takes its run's load job id, which the next
    run waits for)."""
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
    """The table's (column name, BigQuery type) pairs, in its order."""
    client = bigquery.client(table_id.split(".")[0])
    table = client.get_table(table_id, **bigquery.limits(f"looking up {table_id}"))
    return tuple((f.name, f.field_type) for f in table.schema)


def exists(table_id: str) -> bool:
    return columns(table_id) is not None


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
