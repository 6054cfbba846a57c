"""The warehouse engine's SQL, without a server: every statement parses back as BigQuery SQL
to the tree that was built, only validated identifiers and numbers reach the text (every text
value is a parameter), and the numbers read back as the very floats of the model document.
What the statements compute is checked on the emulator (tests/test_warehouse.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlglot
from sqlglot import exp

from clustering import InputError
from clustering.adapters import warehouse_sql as sql
from clustering.analysis.document import read_model

NASTY = "O'Brien \\ `Heights`; DROP TABLE x; --"


def document(**changes) -> dict:
    """A small model document in the shape clustering.analysis.document writes."""
    found = {
        "version": 1,
        "engine": "warehouse",
        "key_column": "neighborhood",
        "population_column": "population",
        "min_population": 100,
        "excluded_keys": ["Inner Harbor", NASTY],
        "sample": None,
        "residential": {
            "features": ["population", "vacancy"],
            "impute": [500.0, 0.1],
            "clip": [[0.0, 1e6], [-1.0, 2.5]],
            "center": [800.0, 0.3],
            "scale": [100.0, 1.0],
            "top_labels": {"0": "Stable", "1": "Distressed"},
            "top": {"0": [0.5, -0.25], "1": [-1.0, 2e-7]},
            "sub": {
                "0": {"top": 0, "centroid": [0.1, 0.2], "name": NASTY},
                "1": {"top": 0, "centroid": [1.0, -1.0], "name": "Stable: older owners"},
                "10": {"top": 1, "centroid": [-1.0, 0.0], "name": "Distressed: vacancy"},
            },
        },
        "excluded": {
            "Institutional/Industrial": {"label": "Institutional/Industrial - Too few to cluster"},
            "Low Population (Park/Open Space)": {
                "features": ["vacancy"],
                "impute": [0.1],
                "center": [0.2],
                "scale": [0.5],
                "groups": {"Low - Group 0": [1.0], "Low - Group 1": [-1.0]},
            },
        },
    }
    found.update(changes)
    return found


MODEL = read_model({"model": document()}, "test")
SOURCE = sql.Table("my-project.analytics.features")
COLUMNS = ("neighborhood", "population", "vacancy", "notes")
STAMP = sql.Stamp("20260101T000000Z-abcdef12", "2026-01-01T00:00:00+00:00")
# BigQuery functions sqlglot has no node for (documented in BigQuery's geography functions).
BIGQUERY_ONLY = {"ST_ASGEOJSON"}
MOMENT = datetime(2026, 1, 1, 12, 30, 15, 250_000, tzinfo=UTC)
PINNED = sql.Table(SOURCE.id, as_of=MOMENT)
FIELDS = (("neighborhood", "STRING"), ("top_cluster", "INTEGER"), ("cohort_name", "STRING"))


def statements() -> dict[str, sql.Statement]:
    staged, moves = sql.Table("p-1.staging.clusters"), sql.Table("p-1.staging.moves")
    return {
        "score": sql.score(SOURCE, COLUMNS, MODEL, {0: 0.9, 1: None, 10: 0.55}, STAMP),
        "score_pinned_published_shapes": sql.score(
            PINNED,
            COLUMNS,
            MODEL,
            {},
            STAMP,
            sql.Scoring(("neighborhood", "vacancy"), sql.Table("p-1.staging.shapes")),
        ),
        "sample": sql.sample(PINNED, COLUMNS, "neighborhood", ("Inner Harbor", NASTY), 200_000),
        "checks": sql.checks(PINNED, "neighborhood"),
        "now": sql.now(),
        "boundaries": sql.boundaries(sql.Table("p-1.geo.b"), "nbr_name", "shape"),
        "shapes": sql.shapes(sql.Table("p-1.geo.b"), "nbr_name", "shape"),
        "transitions": sql.transitions(
            staged, sql.Table("p-1.out.clusters"), "neighborhood", ("run-a", "run-b"), True
        ),
        "counts": sql.transition_counts(moves, (0,), (1,)),
        "summary": sql.summary(staged, ("population", "vacancy")),
        "first": sql.first_rows(moves, "neighborhood", 200),
        "append": sql.append(moves, sql.Table("p-1.out.transitions")),
        "export": sql.export(staged, "gs://my-bucket/runs/r-1/neighborhood_clusters-*.csv", FIELDS),
        "export_excluded": sql.export(
            staged,
            "gs://my-bucket/runs/r-1/excluded_neighborhood_analysis-*.csv",
            (("neighborhood", "STRING"), ("excluded_type", "STRING")),
            sql.excluded_rows(),
        ),
    }


@pytest.mark.parametrize("name", sorted(statements()))
def test_every_statement_parses_back_as_bigquery_sql(name):
    statement = statements()[name]
    tree = sqlglot.parse_one(statement.sql, read="bigquery")
    # Written again from the parsed tree, it is the same text: the builder wrote nothing the
    # BigQuery grammar reads otherwise (a missing parenthesis would regroup the arithmetic).
    assert tree.sql(dialect="bigquery", identify=True) == statement.sql
    unknown = {f.name for f in tree.find_all(exp.Anonymous)} - BIGQUERY_ONLY
    assert not unknown, "a function BigQuery does not know"


def test_text_values_travel_as_parameters_never_in_the_sql():
    for name, statement in statements().items():
        assert NASTY not in statement.sql, name
        assert "O'Brien" not in statement.sql and "DROP TABLE" not in statement.sql, name
    score = statements()["score"]
    values = {p.name: p.value for p in score.parameters}
    assert values["excluded_keys"] == ["Inner Harbor", NASTY]
    assert values["cohort_name_0"] == NASTY
    assert values["top_label_1"] == "Distressed"
    assert values["run_id"] == STAMP.run_id
    assert {p.type for p in score.parameters} == {"STRING", "ARRAY<STRING>", "TIMESTAMP"}
    # Every parameter the SQL names is bound, and every bound one is named.
    named = {p.name for p in sqlglot.parse_one(score.sql, read="bigquery").find_all(exp.Parameter)}
    assert named == set(values)


def test_every_literal_is_a_number_of_the_model_or_our_own_constant():
    tree = sqlglot.parse_one(statements()["score"].sql, read="bigquery")
    strings = {lit.this for lit in tree.find_all(exp.Literal) if lit.is_string}
    assert strings == {
        "Residential",
        "Institutional/Industrial",
        "Low Population (Park/Open Space)",
        "Excluded",
        "Cluster ",
    }
    numbers = {float(lit.this) for lit in tree.find_all(exp.Literal) if not lit.is_string}
    assert {800.0, 100.0, 2e-7, 1e6, 0.55, 0.9} <= numbers


@pytest.mark.parametrize(
    "value", [0.1, -0.25, 2e-7, 1e300, -1e-300, 5e-324, 1 / 3, 123456789.123456789, 0.0, -0.0]
)
def test_numbers_read_back_as_the_same_double(value):
    node = sql.number(value)
    written = exp.select(node).sql(dialect="bigquery")
    back = sqlglot.parse_one(written, read="bigquery").expressions[0]
    sign = -1.0 if isinstance(back, exp.Neg) else 1.0
    literal = back.this if isinstance(back, exp.Neg) else back
    assert sign * float(literal.this) == value
    assert "." in literal.this or "e" in literal.this, "an integer literal would be INT64"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_value_that_is_not_finite_never_becomes_sql(value):
    with pytest.raises(ValueError, match="not a finite number"):
        sql.number(value)


@pytest.mark.parametrize("column", ["na`me", "x; DROP TABLE t", "1st", "with space", ""])
def test_a_column_that_is_not_a_plain_name_is_refused(column):
    with pytest.raises(InputError, match="is not a column name"):
        sql.source_columns(("neighborhood", column), "bq://p.d.t", "neighborhood")


@pytest.mark.parametrize("column", ["_nc_kind", "_NC_kind", "_Nc_shape"])
def test_a_column_with_the_engines_own_prefix_is_refused_in_any_case(column):
    with pytest.raises(InputError, match=f"{column!r} starts with '_nc_'"):
        sql.source_columns(("neighborhood", column), "bq://p.d.t", "neighborhood")


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (("neighborhood", "Top_Cluster"), "'Top_Cluster' differs only in case from 'top_cluster'"),
        (("nbr", "NBR_shape"), "'NBR_shape' differs only in case from 'nbr_shape'"),
        (("nbr", "Vacancy", "vacancy"), "'Vacancy' and 'vacancy' differ only in case"),
    ],
)
def test_column_names_are_compared_without_case_as_bigquery_does(columns, message):
    with pytest.raises(InputError, match=message):
        sql.source_columns(columns, "bq://p.d.t", columns[0])


def test_a_column_spelt_as_one_the_run_adds_is_replaced_not_refused():
    found = sql.source_columns(("nbr", "top_cluster", "nbr_shape"), "bq://p.d.t", "nbr")
    assert found == ("nbr", "top_cluster", "nbr_shape")


@pytest.mark.parametrize("table", ["p.d", "p.d.t; DROP", "p.d.t`", "p.d-x.t"])
def test_a_table_that_is_not_a_plain_id_is_refused(table):
    with pytest.raises(InputError, match="is not a table id"):
        sql.Table(table)


@pytest.mark.parametrize(
    "uri",
    [
        "gs://b/runs/x/neighborhood_clusters.csv",  # no shard wildcard
        "gs://b/runs/x'/neighborhood_clusters-*.csv",
        "s3://bucket/neighborhood_clusters-*.csv",
        "gs://B/neighborhood_clusters-*.csv",
    ],
)
def test_the_export_writes_only_to_a_plain_gs_path(uri):
    with pytest.raises(InputError, match="not a gs:// path"):
        sql.export(sql.Table("p.d.t"), uri, FIELDS)


def test_a_feature_the_table_lacks_is_the_users_error():
    with pytest.raises(InputError, match="has no column 'vacancy', which the model document"):
        sql.score(SOURCE, ("neighborhood", "population"), MODEL, {}, STAMP)


def test_the_clusters_columns_replace_the_features_columns_of_the_same_name():
    statement = sql.score(SOURCE, (*COLUMNS, "top_cluster", "run_id"), MODEL, {}, STAMP)
    tree = sqlglot.parse_one(statement.sql, read="bigquery")
    names = [e.alias_or_name for e in tree.expressions]
    assert names == [*COLUMNS, *sql.OUTPUT_COLUMNS]


def test_ties_go_to_the_first_centroid_like_numpys_argmin():
    # Entry i wins when it is no larger than every later entry (<=, not <).
    d = [exp.column(f"d{i}") for i in range(3)]
    chosen = sql._argmin(d, [sql.integer(i) for i in (7, 8, 9)]).sql(dialect="bigquery")
    assert chosen == "CASE WHEN d0 <= d1 AND d0 <= d2 THEN 7 WHEN d1 <= d2 THEN 8 ELSE 9 END"


def test_blank_means_null_or_nan_before_clipping():
    text = sql._z(MODEL.residential, 1).sql(dialect="bigquery")
    assert text == (
        "(LEAST(GREATEST(CASE WHEN CAST(`vacancy` AS FLOAT64) IS NULL OR "
        "IS_NAN(CAST(`vacancy` AS FLOAT64)) THEN 0.1 ELSE CAST(`vacancy` AS FLOAT64) END, "
        "-1.0), 2.5) - 0.3) / 1.0"
    )


def test_a_pinned_table_is_read_as_of_its_moment_in_every_statement_over_it():
    for name in ("score_pinned_published_shapes", "sample", "checks"):
        tree = sqlglot.parse_one(statements()[name].sql, read="bigquery")
        source = [t for t in tree.find_all(exp.Table) if t.name == "features"]
        assert source, name
        for table in source:
            version = table.args.get("version")
            assert version is not None and version.args["kind"] == "AS OF", name
            assert version.expression.this.this == "2026-01-01T12:30:15.250000+00:00", name
    # Other tables, and the same table unpinned, are read as they are now.
    for name in ("score", "transitions", "summary"):
        tree = sqlglot.parse_one(statements()[name].sql, read="bigquery")
        assert not [t for t in tree.find_all(exp.Table) if t.args.get("version")], name


def test_a_snapshot_time_is_written_in_utc_and_must_be_aware():
    east = datetime(2026, 1, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    text = sql.checks(sql.Table(SOURCE.id, as_of=east), "neighborhood").sql
    assert "'2026-01-01T12:30:00+00:00'" in text
    with pytest.raises(ValueError, match="no time zone"):
        sql.Table(SOURCE.id, as_of=datetime(2026, 1, 1))


def test_the_scoring_publishes_only_the_columns_it_is_given_and_reads_the_models():
    statement = statements()["score_pinned_published_shapes"]
    tree = sqlglot.parse_one(statement.sql, read="bigquery")
    names = [e.alias_or_name for e in tree.expressions]
    assert names == ["neighborhood", "vacancy", *sql.OUTPUT_COLUMNS, "neighborhood_shape"]
    scaled = next(c for c in tree.find_all(exp.CTE) if c.alias == "_nc_scaled").this
    read = [e.alias_or_name for e in scaled.expressions if isinstance(e, exp.Column)]
    # population is withheld from the outputs but the model needs it; notes is not read.
    assert read == ["neighborhood", "population", "vacancy"]


def test_the_shapes_join_by_the_key_as_text_and_keep_every_row():
    tree = sqlglot.parse_one(statements()["score_pinned_published_shapes"].sql, read="bigquery")
    join = tree.find(exp.Join)
    assert join.side == "LEFT" and join.this.name == "shapes"
    assert join.args["on"].sql(dialect="bigquery") == (
        "CAST(`neighborhood` AS STRING) = `_nc_name`"
    )


def test_only_text_fields_are_escaped_in_an_export():
    tree = sqlglot.parse_one(statements()["export"].sql, read="bigquery")
    select = tree.this
    escaped = [e.alias_or_name for e in select.expressions if isinstance(e, exp.Alias)]
    assert escaped == ["neighborhood", "cohort_name"]
    assert [e.alias_or_name for e in select.expressions] == [n for n, _ in FIELDS]


def test_without_a_population_column_every_row_not_listed_is_residential():
    model = read_model({"model": document(population_column=None)}, "test")
    assert model.population_column is None and "population" not in model.columns[:1]
    text = sql.kind(model, sql._Params()).sql(dialect="bigquery")
    assert text == (
        "CASE WHEN CAST(`neighborhood` AS STRING) IN UNNEST(@excluded_keys) THEN "
        "'Institutional/Industrial' WHEN TRUE THEN 'Residential' "
        "ELSE 'Low Population (Park/Open Space)' END"
    )
    with_population = sql.kind(MODEL, sql._Params()).sql(dialect="bigquery")
    assert "`population`" in with_population and ">= 100" in with_population
