"""The warehouse engine's adapter on the BigQuery emulator (local-bigquery) with the unmodified
client, and fake-gcs-server for EXPORT DATA: one snapshot read by every statement, staging
tables that expire, one byte budget for the whole run, the boundaries read on that budget,
the scoring's OUTPUT_COLUMNS and `<key>_shape`, and formula-safe export cells.

local-bigquery reports 0 bytes for every dry run and job (notes/emulators.md), so the
ledger's arithmetic is pinned with real numbers in the Ledger tests, and on the emulator by
what it records and refuses."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from google.api_core import exceptions
from google.cloud import bigquery

from clustering import InputError
from clustering.adapters import bigquery as bq_adapter
from clustering.adapters import warehouse
from clustering.adapters import warehouse_sql as sql
from clustering.table import FORMULA_STARTS, escape_cell
from tests import emulators
from tests.test_warehouse_sql import MODEL, STAMP

pytestmark = pytest.mark.e2e

PROJECT = emulators.DEFAULT_PROJECT


@pytest.fixture(scope="module")
def clients(bigquery_emulator, gcs_emulator) -> Iterator[tuple]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(bq_adapter.EMULATOR_ENV, bigquery_emulator.endpoint)
        patch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
        bq = emulators.bigquery_client(bigquery_emulator)
        gcs = emulators.storage_client(gcs_emulator)
        yield bq, gcs
        bq.close()


@pytest.fixture
def dataset(clients) -> Iterator[str]:
    bq, _ = clients
    name = f"{PROJECT}.wa_{uuid.uuid4().hex[:8]}"
    bq.create_dataset(name)
    yield name
    bq.delete_dataset(name, delete_contents=True, not_found_ok=True)


def jobs(budget: int = 10**12) -> warehouse.Jobs:
    return warehouse.Jobs(PROJECT, f"t{uuid.uuid4().hex[:10]}", budget)


def features(names, population=(900, 50, 2_000, 700), vacancy=(0.1, 0.2, 0.3, 0.4)):
    return pd.DataFrame(
        {
            "neighborhood": list(names),
            "population": list(population)[: len(names)],
            "vacancy": list(vacancy)[: len(names)],
            "notes": [f"note {n}" for n in names],
        }
    )


def replace(bq, table_id: str, frame: pd.DataFrame) -> None:
    config = bigquery.LoadJobConfig(write_disposition="WRITE_TRUNCATE")
    bq.load_table_from_dataframe(frame, table_id, job_config=config).result()


# --- One snapshot -------------------------------------------------------------------------


def test_every_statement_over_a_snapshot_reads_the_table_as_it_was(clients, dataset):
    bq, _ = clients
    source = f"{dataset}.features"
    replace(bq, source, features(["Abell", "Barclay", "Canton"]))
    run = jobs()
    pinned = warehouse.snapshot(run, source)
    assert pinned.id == source and pinned.as_of.tzinfo is not None
    # A load lands while the run works: another row, every value changed.
    replace(bq, source, features(["Abell", "Barclay", "Canton", "Dickeyville"], vacancy=(9,) * 4))
    checks = warehouse.read(run, "checks", sql.checks(pinned, "neighborhood")).iloc[0]
    assert (int(checks["rows"]), int(checks["keys"])) == (3, 3)
    columns = ("neighborhood", "population", "vacancy", "notes")
    sample = warehouse.read(run, "sample", sql.sample(pinned, columns, "neighborhood", (), 10))
    assert sorted(sample["neighborhood"]) == ["Abell", "Barclay", "Canton"]
    assert sample["vacancy"].max() < 1
    scored = f"{dataset}.scored"
    statement = sql.score(pinned, columns, MODEL, {}, STAMP)
    warehouse.query(run, "score", statement, scored, "WRITE_TRUNCATE")
    assert bq.get_table(scored).num_rows == 3
    # The same table unpinned is the live one: the test tells the two apart.
    live = warehouse.read(run, "live", sql.checks(sql.Table(source), "neighborhood")).iloc[0]
    assert int(live["rows"]) == 4


def test_modified_gives_what_a_settling_check_compares(clients, dataset):
    bq, _ = clients
    source = f"{dataset}.features"
    assert warehouse.modified(source) is None
    replace(bq, source, features(["Abell", "Barclay"]))
    when, rows = warehouse.modified(source)
    assert rows == 2 and when.tzinfo is not None
    assert abs(datetime.now(UTC) - when) < timedelta(minutes=5)
    replace(bq, source, features(["Abell", "Barclay", "Canton"]))
    # local-bigquery keeps the creation time as lastModifiedTime after a load; the row count
    # still tells the change (real BigQuery moves both).
    assert warehouse.modified(source)[1] == 3


# --- Staging tables expire ----------------------------------------------------------------


def expires_in(bq, table_id: str) -> timedelta | None:
    expires = bq.get_table(table_id).expires
    return None if expires is None else expires - datetime.now(UTC)


def close_to_a_day(left: timedelta | None) -> bool:
    return left is not None and timedelta(hours=23) < left <= warehouse.STAGING_EXPIRATION


def test_every_staging_table_expires_whoever_creates_it(clients, dataset):
    bq, _ = clients
    schema = [{"name": n, "type": "INTEGER"} for n in ("rows", "keys", "blank_keys")]
    staged = f"{dataset}.nc_staged"
    warehouse.create_table(staged, schema)
    assert close_to_a_day(expires_in(bq, staged))
    # A job writing into it keeps the expiration.
    run = jobs()
    replace(bq, f"{dataset}.features", features(["Abell"]))
    select = sql.checks(sql.Table(f"{dataset}.features"), "neighborhood")
    warehouse.query(run, "fill", select, staged, "WRITE_APPEND")
    assert bq.get_table(staged).num_rows == 1
    assert close_to_a_day(expires_in(bq, staged))
    # A copy into staging expires too; a published table keeps having none.
    copied = f"{dataset}.nc_copy"
    warehouse.copy(run, "stage", staged, copied, "WRITE_TRUNCATE", warehouse.STAGING_EXPIRATION)
    assert close_to_a_day(expires_in(bq, copied))
    published = f"{dataset}.clusters"
    warehouse.create_table(published, schema, expires=None)
    warehouse.copy(run, "replace", copied, published, "WRITE_TRUNCATE")
    assert expires_in(bq, published) is None


# --- One byte budget per run --------------------------------------------------------------


def test_the_ledger_checks_each_estimate_against_what_is_left():
    ledger = warehouse.Ledger(1_000)
    ledger.check("checks", 600)
    ledger.spend("checks", 600, 600)
    ledger.check("sample", 400)  # exactly what is left fits
    with pytest.raises(InputError) as refused:
        ledger.check("sample", 401)
    message = str(refused.value)
    assert message.startswith("sample: the query would process 401 bytes, and 400 of")
    assert "MAXIMUM_BYTES_BILLED (1,000 bytes)" in message and "600 billed" in message
    assert message.endswith(warehouse.BUDGET_FIX)
    ledger.spend("sample", 400, 400)
    with pytest.raises(InputError, match="would process 0 bytes, and 0 of"):
        ledger.check("score", 0)  # nothing left: no job starts
    assert ledger.left == 0 and ledger.billed == 1_000


def test_a_run_spends_one_budget_across_its_jobs(clients, dataset):
    bq, _ = clients
    source = f"{dataset}.features"
    replace(bq, source, features(["Abell", "Barclay"]))
    run = jobs(5_000_000)
    warehouse.read(run, "checks", sql.checks(sql.Table(source), "neighborhood"))
    run.ledger.spend("earlier", 0, 1_000_000)  # what a real job would have billed
    job = warehouse.query(run, "again", sql.checks(sql.Table(source), "neighborhood"))
    # Each job is recorded (0 bytes: the emulator bills nothing) and capped at what is left.
    assert [step for step, _, _ in run.ledger.jobs] == ["checks", "earlier", "again"]
    assert job.maximum_bytes_billed == 4_000_000 == run.ledger.left
    # What earlier jobs billed is gone for the later ones: the next job does not start.
    run.ledger.spend("earlier", 0, run.ledger.left)
    with pytest.raises(InputError, match=r"^score: the query would process 0 bytes, and 0 of"):
        warehouse.query(run, "score", sql.checks(sql.Table(source), "neighborhood"))
    with pytest.raises(exceptions.NotFound):
        bq.get_job(run.job_id("score"))


def boundaries_table(bq, dataset: str) -> str:
    table_id = f"{dataset}.boundaries"
    schema = [
        bigquery.SchemaField("nbr_name", "STRING"),
        bigquery.SchemaField("shape", "GEOGRAPHY"),
    ]
    frame = pd.DataFrame(
        {
            "nbr_name": ["Abell", "Canton"],
            "shape": ["POLYGON((0 0, 1 0, 1 1, 0 0))", "POLYGON((2 2, 3 2, 3 3, 2 2))"],
        }
    )
    config = bigquery.LoadJobConfig(schema=schema)
    bq.load_table_from_dataframe(frame, table_id, job_config=config).result()
    return table_id


# The last read names a table that does not exist, on purpose: its dry run is refused.
@pytest.mark.googlesql_rejects("_estimate", match=r"Table not found: .*nowhere")
def test_the_boundaries_are_read_on_the_runs_budget(clients, dataset):
    bq, _ = clients
    uri = f"bq://{boundaries_table(bq, dataset)}"
    run = jobs()
    rows = dict(warehouse.read_boundaries(run, uri, "nbr_name", "shape"))
    assert sorted(rows) == ["Abell", "Canton"]
    assert json.loads(rows["Abell"])["type"] == "Polygon"
    assert [step for step, _, _ in run.ledger.jobs] == ["boundaries"]
    run.ledger.spend("earlier", 0, run.ledger.left)
    with pytest.raises(InputError, match=r"^boundaries: the query would process"):
        warehouse.read_boundaries(run, uri, "nbr_name", "shape")
    with pytest.raises(InputError, match=r"has no column 'name'.*BOUNDARIES_NAME_COLUMN"):
        warehouse.read_boundaries(jobs(), uri, "name", "shape")
    with pytest.raises(InputError, match="boundaries table not found"):
        warehouse.read_boundaries(jobs(), f"bq://{dataset}.nowhere", "nbr_name", "shape")


# --- The scoring's columns and the export's cells -----------------------------------------


def test_the_scoring_withholds_columns_and_adds_each_rows_shape(clients, dataset):
    bq, _ = clients
    source = f"{dataset}.features"
    replace(bq, source, features(["Abell", "Barclay", "Canton"]))
    run = jobs()
    shapes = warehouse.stage_shapes(
        run, f"bq://{boundaries_table(bq, dataset)}", "nbr_name", "shape", f"{dataset}.shapes"
    )
    assert close_to_a_day(expires_in(bq, shapes.id))
    columns = ("neighborhood", "population", "vacancy", "notes")
    scoring = sql.Scoring(published=("neighborhood", "vacancy"), shapes=shapes)
    statement = sql.score(sql.Table(source), columns, MODEL, {}, STAMP, scoring)
    scored = f"{dataset}.scored"
    warehouse.query(run, "score", statement, scored, "WRITE_TRUNCATE")
    rows = bq.list_rows(scored).to_dataframe(create_bqstorage_client=False)
    assert list(rows.columns) == [
        "neighborhood",
        "vacancy",
        *sql.OUTPUT_COLUMNS,
        "neighborhood_shape",
    ]
    # population was withheld but still decided who is residential (Barclay has 50).
    kinds = dict(zip(rows["neighborhood"], rows["excluded_type"], strict=True))
    assert kinds["Barclay"] != kinds["Abell"] == "Residential"
    shape = dict(zip(rows["neighborhood"], rows["neighborhood_shape"], strict=True))
    assert "POLYGON" in str(shape["Abell"]).upper() and pd.isna(shape["Barclay"])
    assert len(rows) == 3


def test_exported_text_cells_are_escaped_as_the_memory_csvs_are(clients, dataset):
    bq, gcs = clients
    values = ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "'quoted", "plain", ""]
    values += [f"{chr(code)}hidden" for code in sorted(map(ord, FORMULA_STARTS)) if code < 32]
    values += ["a=b", "résumé", None]
    frame = pd.DataFrame({"neighborhood": values, "top_cluster": range(len(values))})
    frame["top_cluster"] = frame["top_cluster"] - 3  # negative numbers stay numbers
    staged = f"{dataset}.staged"
    replace(bq, staged, frame)
    bucket = gcs.create_bucket(f"wa-{uuid.uuid4().hex[:10]}").name
    uri = f"gs://{bucket}/runs/r-1/neighborhood_clusters-*.csv"
    statement = sql.export(sql.Table(staged), uri, warehouse.fields(staged))
    warehouse.query(jobs(), "export", statement)
    shards = [b for b in gcs.list_blobs(bucket, prefix="runs/r-1/") if b.name.endswith(".csv")]
    assert shards
    got = pd.concat(
        pd.read_csv(io.BytesIO(b.download_as_bytes()), keep_default_na=False, dtype=str)
        for b in shards
    )
    cells = dict(zip(got["top_cluster"].astype(int) + 3, got["neighborhood"], strict=True))
    for i, value in enumerate(values):
        assert cells[i] == (escape_cell(value) if value is not None else ""), (i, value)
    assert sorted(got["top_cluster"].astype(int)) == list(range(-3, len(values) - 3))
    # The table itself keeps the exact values.
    kept = bq.list_rows(staged).to_dataframe(create_bqstorage_client=False)
    assert set(kept["neighborhood"].dropna()) == {v for v in values if v is not None}
