"""The ZetaSQL check itself (tests/zetasql_check.py, the googlesql_checked fixture of
tests/conftest.py): wrong GoogleSQL is reported against the emulator's real schemas, the
adapter's statements are analyzed as they are sent, and a rejection fails the test, so the
check cannot pass silently."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pandas as pd
import pytest

from clustering import InputError
from clustering.adapters import bigquery as bq_adapter
from clustering.adapters import warehouse
from clustering.adapters.warehouse_sql import Parameter, Statement
from tests import emulators
from tests.zetasql_check import Checked, Column
from tests.zetasql_check import Parameter as Typed

pytestmark = pytest.mark.e2e

PROJECT = emulators.DEFAULT_PROJECT


@pytest.fixture
def table(bigquery_emulator, monkeypatch) -> Iterator[str]:
    """A small table on the emulator: neighborhood STRING, population INTEGER, share FLOAT."""
    monkeypatch.setenv(bq_adapter.EMULATOR_ENV, bigquery_emulator.endpoint)
    client = emulators.bigquery_client(bigquery_emulator)
    dataset = f"{PROJECT}.zs_{uuid.uuid4().hex[:8]}"
    client.create_dataset(dataset)
    frame = pd.DataFrame({"neighborhood": ["a", "b"], "population": [1, 2], "share": [0.5, 1.5]})
    client.load_table_from_dataframe(frame, f"{dataset}.t").result()
    yield f"{dataset}.t"
    client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
    client.close()


def quoted(table_id: str) -> str:
    return ".".join(f"`{part}`" for part in table_id.split("."))


def test_right_sql_passes_and_an_unknown_column_is_reported(googlesql_checked, table):
    checked = googlesql_checked
    good = f"SELECT neighborhood, population * share AS weighted FROM {quoted(table)}"
    assert checked.check("good", good, []) is None
    error = checked.check("bad", f"SELECT neighbourhood FROM {quoted(table)}", [])
    assert error is not None and "Unrecognized name: neighbourhood" in error
    # The report names the step, ZetaSQL's message and where in the statement it is.
    assert checked.rejected == [("bad", error, f"SELECT neighbourhood FROM {quoted(table)}")]
    report = checked.verdict({})
    assert "ZetaSQL rejects the bad statement: Unrecognized name" in report
    assert "<<HERE>>neighbourhood" in report
    checked.rejected.clear()  # this test's rejection is its own, not the suite's


def test_the_schema_and_the_parameters_types_are_checked(googlesql_checked, table):
    checked = googlesql_checked
    where = f"SELECT * FROM {quoted(table)} WHERE neighborhood IN UNNEST(@names)"
    assert checked.check("strings", where, [Typed("names", "ARRAY<STRING>")]) is None
    wrong = checked.check("numbers", where, [Typed("names", "ARRAY<INT64>")])
    assert wrong is not None and "No matching signature" in wrong
    # The table's real types: population is INTEGER on the emulator, not text.
    text = checked.check("text", f"SELECT LENGTH(population) FROM {quoted(table)}", [])
    assert text is not None and "LENGTH" in text
    missing = checked.check("missing", f"SELECT 1 FROM {quoted(table + '_gone')}", [])
    assert missing is not None and "not found" in missing
    checked.rejected.clear()


def test_ddl_and_export_data_are_analyzed_too(googlesql_checked, table):
    checked = googlesql_checked
    export = (
        "EXPORT DATA OPTIONS (uri = 'gs://b/x-*.csv', format = 'CSV') AS "
        f"SELECT neighborhood FROM {quoted(table)}"
    )
    assert checked.check("export", export, []) is None
    wrong = checked.check("export", export.replace("SELECT neighborhood", "SELECT nope"), [])
    assert wrong is not None and "Unrecognized name: nope" in wrong
    create = f"CREATE TABLE {quoted(table + '_copy')} AS SELECT share FROM {quoted(table)}"
    assert checked.check("create", create, []) is None
    checked.rejected.clear()


@pytest.mark.googlesql_rejects("_estimate", match=r"Unrecognized name: nope")
def test_the_adapter_s_statements_are_analyzed_as_they_are_sent(
    googlesql_checked, table, bigquery_emulator
):
    statement = Statement(
        f"SELECT nope FROM {quoted(table)} WHERE neighborhood = @name",
        (Parameter("name", "STRING", "a"),),
    )
    with pytest.raises(InputError, match="probe: BigQuery refused the job"):
        warehouse.query(warehouse.Jobs(PROJECT, "zetasql", 10**12), "probe", statement)
    # Checked as the client sent it: first its dry run (the byte budget's estimate, which has
    # no job id, so it is named by the function that sent it), which BigQuery refuses, so the
    # job itself is never sent. The tests' own queries are not checked.
    assert googlesql_checked.statements == [
        ("clustering.adapters.warehouse._estimate", statement.sql)
    ]
    emulators.bigquery_client(bigquery_emulator).query(statement.sql.replace("nope", "1"))
    assert len(googlesql_checked.statements) == 1
    # The marker makes this rejection expected; the fixture fails the test without it.


def test_a_rejection_fails_the_test_unless_the_test_expects_it():
    checked = Checked(analyzer=None, schema_of=None)
    checked.statements = [("nc_run_score", "SELECT x"), ("nc_run_export", "SELECT 1")]
    checked.rejected = [("nc_run_score", "Unrecognized name: x [at 1:8]", "SELECT x")]
    assert "ZetaSQL rejects the nc_run_score statement" in checked.verdict({})
    assert checked.verdict({"score": r"Unrecognized name"}) is None
    assert "rejects the nc_run_score" in checked.verdict({"score": r"No matching signature"})
    assert "expected to be rejected by ZetaSQL" in checked.verdict({"export": ""})
    assert "and was not sent" in checked.verdict({"score": "", "summary": ""})
    assert "expected to be rejected" in checked.verdict({"run_sco": ""})
    checked.rejected = [("clustering.adapters.bigquery.read_boundaries", "Table not found", "")]
    assert checked.verdict({"read_boundaries": "not found"}) is None


def test_bigquery_s_type_names_map_to_zetasql_types(zetasql_analyzer):
    record = Column.from_api(
        {
            "name": "r",
            "type": "RECORD",
            "mode": "REPEATED",
            "fields": [{"name": "g", "type": "GEOGRAPHY"}, {"name": "n", "type": "NUMERIC"}],
        }
    )
    kind = zetasql_analyzer.column_type(record)
    assert kind.array_type.element_type.struct_type.field[0].field_name == "g"
    sql = "SELECT ST_ASTEXT(e.g), e.n + 1 FROM `p`.`d`.`t`, UNNEST(r) AS e"
    assert zetasql_analyzer.analyze(sql, [], {("p", "d", "t"): [record]}) is None
    # BigQuery's product mode: FLOAT64, never the internal DOUBLE.
    assert zetasql_analyzer.analyze("SELECT CAST(1 AS FLOAT64)", [], {}) is None
    assert "Type not found: DOUBLE" in zetasql_analyzer.analyze("SELECT CAST(1 AS DOUBLE)", [], {})
    with pytest.raises(ValueError, match="no ZetaSQL type"):
        zetasql_analyzer.type_of("INTERVAL")
