"""The features table on the way in (read_table, validate_features) and out (output_schema)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clustering import InputError
from clustering.adapters.local import read_table
from clustering.analysis.sample import make_sample
from clustering.settings import DEFAULT_CLUSTERING_FEATURES, AnalysisSettings
from clustering.table import (
    CLUSTER_COLUMNS,
    Unmatched,
    check_column_names,
    check_output_columns,
    check_schema,
    closest,
    did_you_mean,
    escape_cell,
    numeric_fields,
    output_schema,
    people_csv,
    read_people_csv,
    shape_column,
    table_schema,
    typed_clusters,
    typed_rows,
    unescape_cell,
    unmatched_exclusions,
    validate_features,
    validate_for_model,
    withheld_columns,
)

SETTINGS = AnalysisSettings()
# Settings that fit small(): its features, no exclusion list, so validation has nothing to say.
FITTED = AnalysisSettings(
    clustering_features=("population", "med_age", "crime_per_capita"), exclude_neighborhoods=()
)
WHERE = "data/features.csv"


def small() -> pd.DataFrame:
    """Five rows in reverse name order with every column kind a features table may hold."""
    return pd.DataFrame(
        {
            "neighborhood": ["Oak Hill", "Mill Park", "Elm Point", "Cedar Manor", "Ash Village"],
            "population": [1200, 0, 350, 87, 4100],
            "med_age": [34.5, np.nan, 41.0, 29.0, 38.2],
            "crime_per_capita": [0.05, np.nan, 0.12, 0.3, 0.02],
            "notes": ["a", "b", None, "d", "e"],
        }
    )


def invalid(frame: pd.DataFrame, settings: AnalysisSettings = SETTINGS) -> str:
    """The message of the InputError that validating `frame` raises; it must be one line."""
    with pytest.raises(InputError) as caught:
        validate_features(frame, settings, WHERE)
    message = str(caught.value)
    assert "\n" not in message, message
    assert WHERE in message, message
    return message


# --- what a valid table becomes ----------------------------------------------------------------


def test_rows_come_back_sorted_by_name_with_a_fresh_index():
    frame = small()
    frame.index = [10, 3, 7, 1, 0]
    valid = validate_features(frame, FITTED, WHERE)
    assert list(valid.frame["neighborhood"]) == sorted(frame["neighborhood"])
    assert list(valid.frame.index) == [0, 1, 2, 3, 4]
    # Each row keeps its own values.
    oak = valid.frame.set_index("neighborhood").loc["Oak Hill"]
    assert oak["population"] == 1200
    assert oak["med_age"] == 34.5
    assert valid.warnings == ()


def test_the_input_frame_is_not_modified():
    frame = small().astype({"med_age": object})
    frame.loc[0, "med_age"] = " 34.5 "
    before = frame.copy()
    validate_features(frame, SETTINGS, WHERE)
    pd.testing.assert_frame_equal(frame, before)


def test_population_is_int64_and_features_float64_with_blanks_as_nan():
    frame = small().astype({"population": "float64", "med_age": object})
    frame["med_age"] = ["34.5", "", " 41 ", "29", None]
    valid = validate_features(frame, SETTINGS, WHERE).frame
    assert valid["population"].dtype == np.int64
    assert valid["med_age"].dtype == np.float64
    assert valid["crime_per_capita"].dtype == np.float64
    by_name = valid.set_index("neighborhood")
    assert by_name.loc["Elm Point", "med_age"] == 41.0
    assert np.isnan(by_name.loc["Mill Park", "med_age"])
    assert np.isnan(by_name.loc["Ash Village", "med_age"])


def test_names_are_stripped_strings():
    frame = small()
    frame["neighborhood"] = ["  Oak Hill", "Mill Park ", "Elm Point", "Cedar Manor", "Ash Village"]
    valid = validate_features(frame, SETTINGS, WHERE).frame
    assert list(valid["neighborhood"]) == [
        "Ash Village",
        "Cedar Manor",
        "Elm Point",
        "Mill Park",
        "Oak Hill",
    ]
    numbers = small().assign(neighborhood=[5, 4, 3, 2, 1])
    names = validate_features(numbers, SETTINGS, WHERE).frame["neighborhood"]
    assert list(names) == ["1", "2", "3", "4", "5"]


def test_columns_that_are_not_features_are_left_alone():
    frame = small().assign(comment=["text", "is", "fine", "here", "!"])
    settings = AnalysisSettings(clustering_features=("population", "crime_per_capita"))
    valid = validate_features(frame.astype({"med_age": object}), settings, WHERE).frame
    assert list(valid.columns) == list(frame.columns)
    assert valid["comment"].tolist() == ["!", "here", "fine", "is", "text"]
    # med_age is not configured, so it is neither checked nor converted.
    assert valid["med_age"].dtype == object


def test_an_all_blank_feature_is_a_warning_naming_it():
    frame = small().assign(med_age=np.nan)
    valid = validate_features(frame, FITTED, WHERE)
    assert len(valid.warnings) == 1
    assert "'med_age'" in valid.warnings[0]
    assert WHERE in valid.warnings[0]
    assert valid.frame["med_age"].isna().all()


def test_absent_default_features_are_a_warning_naming_them():
    # The built-in list keeps the notebook's skip-and-report.
    frame = small()[["neighborhood", "population", "crime_per_capita"]]
    valid = validate_features(frame, AnalysisSettings(exclude_neighborhoods=()), WHERE)
    assert len(valid.frame) == 5
    (warning,) = valid.warnings
    assert warning.startswith("features not in the table, skipped: med_age, ")
    assert "avg_assessed_value" in warning and WHERE in warning


@pytest.mark.parametrize(
    ("features", "words"),
    [
        (
            ("population", "crime_per_captia", "med_age"),
            [
                "no column 'crime_per_captia'",
                "did you mean 'crime_per_capita'?",
                "CLUSTERING_FEATURES (--clustering-features)",
            ],
        ),
        (
            ("med_age", "Crime Per Capita"),
            ["'Crime Per Capita'", "did you mean 'crime_per_capita'"],
        ),
        (("med_age", "zzz", "yyy"), ["no column 'zzz'", "nor 'yyy'"]),
    ],
)
def test_a_feature_the_user_named_that_the_table_lacks_is_an_error(features, words):
    message = invalid(small(), AnalysisSettings(clustering_features=features))
    for word in words:
        assert word in message
    if "zzz" in features:
        assert "did you mean" not in message  # nothing close: no guess


def test_a_missing_severity_feature_is_an_error_with_a_guess():
    frame = small().rename(columns={"crime_per_capita": "crime_per_capita_2024"})
    message = invalid(frame, FITTED)
    assert "no column 'crime_per_capita'" in message
    assert "did you mean 'crime_per_capita_2024'?" in message
    assert "SEVERITY_FEATURE (--severity-feature)" in message


def test_exclusion_names_that_match_no_row_are_a_warning_with_a_guess():
    settings = AnalysisSettings(
        clustering_features=FITTED.clustering_features,
        exclude_neighborhoods=("Oak Hill", "Mill Prak"),
        exclude_also=("Nowhere At All",),
    )
    valid = validate_features(small(), settings, WHERE)
    (warning,) = valid.warnings
    assert warning.startswith(f"2 excluded names match no neighborhood of {WHERE}")
    assert "'Mill Prak' (did you mean 'Mill Park'?)" in warning
    assert "'Nowhere At All'" in warning and "'Oak Hill'" not in warning
    assert "EXCLUDE_ALSO extends it" in warning
    assert unmatched_exclusions(valid.frame["neighborhood"], settings) == (
        Unmatched("Mill Prak", "Mill Park"),
        Unmatched("Nowhere At All", None),
    )
    one = AnalysisSettings(
        clustering_features=FITTED.clustering_features, exclude_neighborhoods=("oak hill",)
    )
    (warning,) = validate_features(small(), one, WHERE).warnings
    assert warning.startswith("1 excluded name matches no neighborhood")
    assert "did you mean 'Oak Hill'?" in warning


@pytest.mark.parametrize(
    ("header", "meant"),
    [
        ("Neighborhood", "neighborhood"),
        (" neighborhood ", "neighborhood"),
        ("NEIGHBOR HOOD", "neighborhood"),
        ("Population", "population"),
    ],
)
def test_a_required_column_spelled_differently_gets_a_guess(header, meant):
    message = invalid(small().rename(columns={meant: header}))
    assert f"no {meant!r} column (did you mean {header!r}?)" in message


@pytest.mark.parametrize(("sep", "decimal"), [(";", ","), ("\t", ".")])
def test_semicolon_and_tab_separated_files_read_like_comma_ones(tmp_path, sep, decimal):
    # A spreadsheet in a decimal-comma locale exports ";" and "0,5".
    table = make_sample(25)
    path = tmp_path / "f.csv"
    table.to_csv(path, sep=sep, decimal=decimal, index=False)
    read = validate_features(read_table(str(path)), SETTINGS, "f").frame
    pd.testing.assert_frame_equal(read, table, check_dtype=False)


# --- what is refused, and how it is said -------------------------------------------------------


def test_no_columns():
    message = invalid(pd.DataFrame())
    assert "no columns" in message
    assert "header row" in message


def test_header_without_rows():
    message = invalid(small().iloc[:0])
    assert "no rows" in message
    assert "one row per neighborhood" in message


@pytest.mark.parametrize(
    ("column", "setting"),
    [("neighborhood", "KEY_COLUMN (--key-column)"), ("population", "POPULATION_COLUMN")],
)
def test_required_column_missing(column, setting):
    message = invalid(small().drop(columns=column))
    assert f"no {column!r} column" in message
    # It lists the columns it did find, and says how to fix it: the setting to give.
    assert "crime_per_capita" in message
    assert f"add it, or set {setting}" in message


def test_a_long_column_list_is_shortened():
    frame = make_sample(30).drop(columns="population")
    message = invalid(frame)
    assert "..." in message
    assert "avg_assessed_value" not in message


@pytest.mark.parametrize("blank", [None, np.nan, "", "   "])
def test_blank_name(blank):
    frame = small().astype({"neighborhood": object})
    frame.loc[3, "neighborhood"] = blank
    message = invalid(frame)
    assert "neighborhood is blank in data row 4" in message
    assert "give every row a name" in message


def test_duplicate_names_list_their_rows():
    frame = small()
    frame.loc[3, "neighborhood"] = "Oak Hill "  # the same name once stripped
    message = invalid(frame)
    assert "'Oak Hill' appears more than once" in message
    assert "data rows 1, 4" in message
    assert "keep one row per neighborhood" in message


def test_many_duplicates_list_at_most_five_rows():
    frame = make_sample(30).assign(neighborhood="Same")
    message = invalid(frame)
    assert "data rows 1, 2, 3, 4, 5)" in message


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("abc", "'abc'"),
        ("NA", "'NA'"),
        ("null", "'null'"),
        ("1,5", "'1,5'"),
        ("inf", "'inf'"),
        ("-Infinity", "'-Infinity'"),
        ("nan", "'nan'"),
        ("12 %", "'12 %'"),
    ],
)
def test_text_or_non_finite_text_in_a_feature(value, shown):
    frame = small().astype({"crime_per_capita": object})
    frame.loc[2, "crime_per_capita"] = value
    message = invalid(frame)
    assert "column 'crime_per_capita'" in message
    assert f"has {shown}" in message
    # The data row counts from 1 in the input's order (not the sorted one), plus the name.
    assert "data row 3 (Elm Point)" in message
    assert "use a finite number, or leave it blank" in message


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_non_finite_number_in_a_numeric_feature(value):
    frame = small()
    frame.loc[4, "med_age"] = value
    message = invalid(frame)
    assert "column 'med_age'" in message
    assert f"has '{value}'" in message
    assert "data row 5 (Ash Village)" in message


def test_true_false_feature():
    frame = small().assign(crime_per_capita=[True, False, True, True, False])
    message = invalid(frame)
    assert "'crime_per_capita'" in message
    assert "true/false" in message
    assert "numeric" in message


def test_text_in_population():
    frame = small().astype({"population": object})
    frame.loc[1, "population"] = "about 100"
    message = invalid(frame)
    assert "column 'population' has 'about 100' in data row 2 (Mill Park)" in message


@pytest.mark.parametrize(
    ("value", "what", "fix"),
    [
        (-1, "is negative", "0 or more"),
        (-0.5, "is negative", "0 or more"),
    ],
)
def test_bad_population(value, what, fix):
    frame = small().astype({"population": "float64"})
    frame.loc[3, "population"] = value
    message = invalid(frame)
    assert f"population {what} in data row 4 (Cedar Manor)" in message
    assert fix in message


def test_a_population_too_large_for_an_integer_is_refused():
    # 1e30 passes the whole-number check but does not fit int64: it must not silently become
    # -9223372036854775808 (a negative population) on the way to the clusters table.
    frame = small().astype({"population": object})
    frame.loc[0, "population"] = "1e30"
    message = invalid(frame)
    assert "population" in message
    assert "data row 1 (Oak Hill)" in message


def test_the_first_problem_in_row_order_is_reported():
    frame = small().astype({"med_age": object})
    frame.loc[4, "med_age"] = "x"
    frame.loc[1, "med_age"] = "y"
    assert "data row 2 (Mill Park)" in invalid(frame)


# --- read_table: files to frames ---------------------------------------------------------------


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_csv_blanks_are_nan_but_na_words_stay_text(tmp_path):
    path = write(
        tmp_path / "f.csv",
        "\n".join(
            [
                "neighborhood,population,med_age,crime_per_capita",
                "Oak Hill, 1200,,0.05",
                "Mill Park,0,NA,",
                "",
            ]
        ),
    )
    frame = read_table(path)
    assert frame["population"].tolist() == [1200, 0]
    assert np.isnan(frame.loc[0, "med_age"])
    assert frame.loc[1, "med_age"] == "NA"
    with pytest.raises(InputError, match=r"column 'med_age' has 'NA' in data row 2 \(Mill Park\)"):
        validate_features(frame, SETTINGS, path)


def test_csv_and_parquet_validate_to_the_same_table(tmp_path):
    table = make_sample(25)
    table.to_csv(tmp_path / "f.csv", index=False)
    table.to_parquet(tmp_path / "f.parquet", index=False)
    from_csv = validate_features(read_table(str(tmp_path / "f.csv")), SETTINGS, "csv").frame
    from_parquet = validate_features(
        read_table(str(tmp_path / "f.parquet")), SETTINGS, "parquet"
    ).frame
    pd.testing.assert_frame_equal(from_csv, from_parquet, check_dtype=False)
    pd.testing.assert_frame_equal(from_csv, table, check_dtype=False)


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("missing.csv", None, ["no such file"]),
        ("empty.csv", b"", ["is empty"]),
        ("binary.csv", bytes(range(256)) * 8, ["cannot be read as CSV"]),
        ("latin1.csv", "neighborhood,population\nCafé,10\n".encode("latin-1"), ["cannot be read"]),
        ("fake.parquet", b"PAR1 not really", ["cannot be read as PARQUET"]),
        ("table.xlsx", b"PK", ["unknown format '.xlsx'", ".csv or .parquet"]),
        ("table", b"a,b\n1,2\n", ["unknown format", "no extension"]),
    ],
)
def test_unreadable_files(tmp_path, name, content, words):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        read_table(str(path))
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message


def test_a_folder_is_not_a_file(tmp_path):
    (tmp_path / "features.csv").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        read_table(str(tmp_path / "features.csv"))


def test_a_header_only_csv_reads_as_no_rows(tmp_path):
    path = write(tmp_path / "f.csv", "neighborhood,population\n")
    with pytest.raises(InputError, match="has a header but no rows"):
        validate_features(read_table(path), SETTINGS, path)


# --- output_schema -----------------------------------------------------------------------------


def clusters_frame() -> pd.DataFrame:
    """A validated table with extra columns of every kind, then the cluster columns."""
    frame = validate_features(small(), SETTINGS, WHERE).frame.assign(
        ward=np.arange(5, dtype=np.int64),
        share=np.linspace(0, 1, 5),
        flagged=[True, False, True, False, True],
        surveyed=pd.to_datetime(["2024-01-0" + str(i) for i in range(1, 6)]),
    )
    return frame.assign(
        top_cluster=pd.array([0, 1, -1, 0, 1], dtype="Int64"),
        top_cluster_label=["Stable", "Distressed", "Excluded", "Stable", "Distressed"],
        sub_cluster=pd.array([1, 10, -1, 2, 11], dtype="Int64"),
        cluster_label=["Cluster 1", "Cluster 10", "x", "Cluster 2", "Cluster 11"],
        excluded_type="Residential",
        excluded_cluster=None,
        run_id="20260101T000000Z-abcdef12",
        _clustered_at=pd.Timestamp("2026-01-01", tz="UTC"),
    )


def test_schema_names_are_the_frames_columns_in_order():
    frame = clusters_frame()
    schema = output_schema(frame)
    assert [field["name"] for field in schema] == list(frame.columns)


def test_known_columns_get_their_declared_types():
    types = {field["name"]: field for field in output_schema(clusters_frame())}
    assert types["neighborhood"]["type"] == "STRING"
    assert types["neighborhood"]["mode"] == "REQUIRED"
    assert types["population"]["type"] == "INTEGER"
    assert types["med_age"]["type"] == "FLOAT"
    assert types["top_cluster"]["type"] == "INTEGER"
    assert types["sub_cluster"]["type"] == "INTEGER"
    for column in ("top_cluster_label", "cluster_label", "excluded_type", "excluded_cluster"):
        assert types[column]["type"] == "STRING"
    assert types["run_id"]["type"] == "STRING"
    assert types["_clustered_at"]["type"] == "TIMESTAMP"


def test_extra_columns_get_a_type_from_their_values():
    types = {field["name"]: field for field in output_schema(clusters_frame())}
    assert types["ward"]["type"] == "INTEGER"
    assert types["share"]["type"] == "FLOAT"
    assert types["flagged"]["type"] == "BOOLEAN"
    assert types["surveyed"]["type"] == "TIMESTAMP"
    assert types["notes"]["type"] == "STRING"
    assert all(types[c]["mode"] == "NULLABLE" for c in ("ward", "share", "flagged", "notes"))


def test_the_shipped_schema_declares_the_key_the_population_and_the_cluster_columns():
    raw = table_schema("clusters_table", "{key}", "{population}")
    names = [field["name"] for field in raw]
    assert len(names) == len(set(names))
    # The features table's own columns are not declared: they keep their names and types.
    assert names == ["{key}", "{population}", *CLUSTER_COLUMNS, "{key}_shape"]
    chicago = [f["name"] for f in table_schema("clusters_table", "community_area", "total_pop")]
    assert chicago == ["community_area", "total_pop", *CLUSTER_COLUMNS, "community_area_shape"]
    assert chicago[-1] == shape_column("community_area")
    for field in raw:
        expected = {"STRING", "INTEGER", "FLOAT", "BOOLEAN", "TIMESTAMP"}
        if field["name"] == "{key}_shape":
            expected = {"GEOGRAPHY"}
        assert field["type"] in expected
    assert table_schema("transitions_table", "tract")[0]["name"] == "tract"


def test_the_schema_keeps_the_configured_key_and_population_names():
    frame = clusters_frame().rename(columns={"neighborhood": "tract", "population": "pop_2020"})
    schema = {field["name"]: field for field in output_schema(frame, "tract", "pop_2020")}
    assert "neighborhood" not in schema and "population" not in schema
    assert (schema["tract"]["type"], schema["tract"]["mode"]) == ("STRING", "REQUIRED")
    assert schema["pop_2020"]["type"] == "INTEGER"
    assert "POPULATION_COLUMN" in schema["pop_2020"]["description"]


def test_the_severity_feature_is_checked_even_when_not_clustered_on():
    settings = AnalysisSettings(
        clustering_features=("population", "med_age"), severity_feature="crime_per_capita"
    )
    frame = small().astype({"crime_per_capita": object})
    frame.loc[2, "crime_per_capita"] = "lots"
    with pytest.raises(InputError, match="'crime_per_capita' has 'lots'"):
        validate_features(frame, settings, WHERE)


def test_a_blank_population_is_a_warning_and_keeps_the_row():
    frame = small().astype({"population": "float64"})
    frame.loc[3, "population"] = np.nan
    valid = validate_features(frame, SETTINGS, WHERE)
    assert len(valid.frame) == len(frame)
    assert valid.frame["population"].dtype == np.float64
    (warning,) = [w for w in valid.warnings if "population is blank" in w]
    assert "Cedar Manor" in warning and WHERE in warning and "low-population" in warning


def test_fractional_populations_are_kept_as_numbers_and_written_as_float():
    frame = small().astype({"population": "float64"})
    frame.loc[3, "population"] = 1234.5
    valid = validate_features(frame, SETTINGS, WHERE)
    assert valid.frame["population"].dtype == np.float64
    types = {f["name"]: f["type"] for f in output_schema(valid.frame)}
    assert types["population"] == "FLOAT"
    whole = validate_features(small(), SETTINGS, WHERE).frame
    assert whole["population"].dtype == np.int64
    assert {f["name"]: f["type"] for f in output_schema(whole)}["population"] == "INTEGER"


# --- features_table.json: the schema of docs/deploy.md's `bq load` recipe -------------------------


def test_the_features_schema_is_the_default_columns_in_the_samples_order():
    schema = table_schema("features_table")
    names = [field["name"] for field in schema]
    # `bq load` of a CSV maps columns by position: the sample's order is the schema's.
    assert names == list(make_sample(20).columns)
    assert names == ["neighborhood", *DEFAULT_CLUSTERING_FEATURES]
    types = {field["name"]: (field["type"], field["mode"]) for field in schema}
    assert types.pop("neighborhood") == ("STRING", "REQUIRED")
    assert types.pop("population") == ("INTEGER", "NULLABLE")
    assert set(types.values()) == {("FLOAT", "NULLABLE")}


def test_a_csv_loaded_with_the_features_schema_reads_back_as_the_same_table(
    bigquery_emulator, tmp_path, monkeypatch
):
    # What `bq load --source_format=CSV --skip_leading_rows=1 ... features_table.json` does, on
    # the BigQuery emulator with the unmodified client; read back by the function's adapter.
    from google.cloud import bigquery as bq

    from clustering.adapters import bigquery as adapter
    from tests.emulators import bigquery_client

    table = make_sample(40)
    path = tmp_path / "features.csv"
    table.to_csv(path, index=False)
    client = bigquery_client(bigquery_emulator)
    dataset = f"{client.project}.features_schema_test"
    client.create_dataset(dataset, exists_ok=True)
    config = bq.LoadJobConfig(
        schema=[bq.SchemaField.from_api_repr(f) for f in table_schema("features_table")],
        source_format=bq.SourceFormat.CSV,
        skip_leading_rows=1,
        write_disposition=bq.WriteDisposition.WRITE_TRUNCATE,
    )
    with path.open("rb") as features:
        client.load_table_from_file(features, f"{dataset}.features", job_config=config).result()
    monkeypatch.setenv(adapter.EMULATOR_ENV, bigquery_emulator.endpoint)
    read = adapter.read_table(f"bq://{dataset}.features")
    valid = validate_features(read, SETTINGS, "bq").frame
    pd.testing.assert_frame_equal(valid, table, check_dtype=False)
    client.delete_dataset(dataset, delete_contents=True)
    client.close()


def test_a_header_split_on_the_wrong_separator_says_so(tmp_path):
    # A quoted comma in a semicolon header defeats the detection: the error names the cause.
    path = write(tmp_path / "f.csv", 'neighborhood;population;"crime, per capita"\nA;10;0.1\n')
    with pytest.raises(InputError) as caught:
        validate_features(read_table(path), SETTINGS, path)
    message = str(caught.value)
    assert "no 'neighborhood' column" in message
    assert "the header looks separated by semicolons, not commas" in message


# --- Rules pinned by mutation testing (tools/mutation.py) ------------------------------------


def named(count: int, **columns) -> pd.DataFrame:
    """`count` rows named n01, n02, ... with a population of 500, the FITTED features and the
    given columns."""
    names = [f"n{i:02d}" for i in range(1, count + 1)]
    features = {"med_age": [35.0] * count, "crime_per_capita": [0.05] * count}
    return pd.DataFrame(
        {"neighborhood": names, "population": [500.0] * count, **features, **columns}
    )


def test_a_population_of_a_trillion_is_the_largest_accepted():
    frame = small().astype({"population": "float64"})
    frame.loc[0, "population"] = 10**12
    assert validate_features(frame, SETTINGS, WHERE).frame["population"].max() == 10**12
    frame.loc[0, "population"] = 10**12 + 1
    assert "population is implausibly large in data row 1 (Oak Hill)" in invalid(frame)


@pytest.mark.parametrize(("blanks", "more"), [(5, False), (6, True)])
def test_the_blank_population_warning_names_at_most_five_rows(blanks, more):
    frame = named(8)
    frame.loc[: blanks - 1, "population"] = np.nan
    (warning,) = validate_features(frame, FITTED, WHERE).warnings
    shown = "n01, n02, n03, n04, n05" + (", ..." if more else "")
    assert f"population is blank in {blanks} rows of {WHERE} ({shown}):" in warning


def test_an_all_blank_population_is_warned_about_once():
    frame = named(3, med_age=[30.0, 40.0, 50.0])
    frame["population"] = np.nan
    (warning,) = validate_features(frame, FITTED, WHERE).warnings
    assert warning.startswith("population is blank in 3 rows")


def test_the_first_duplicated_name_is_the_one_reported():
    frame = named(4)
    frame["neighborhood"] = ["Alpha", "Beta", "Alpha", "Beta"]
    message = invalid(frame)
    assert "neighborhood 'Alpha' appears more than once (data rows 1, 2, 3, 4)" in message


@pytest.mark.parametrize(
    ("extra", "shown"),
    [
        (7, "c1, c2, c3, c4, c5, c6, c7, neighborhood)"),
        (8, "c1, c2, c3, c4, c5, c6, c7, c8, ...)"),
    ],
)
def test_a_missing_column_message_lists_up_to_eight_columns(extra, shown):
    frame = pd.DataFrame({f"c{i}": [1.0] for i in range(1, extra + 1)} | {"neighborhood": ["a"]})
    assert f"(columns: {shown}" in invalid(frame)


def test_feature_columns_get_their_type_from_their_values():
    schema = {field["name"]: field for field in output_schema(clusters_frame())}
    assert clusters_frame()["med_age"].dtype == np.float64
    assert schema["med_age"] == {"name": "med_age", "type": "FLOAT", "mode": "NULLABLE"}


def test_one_missing_feature_the_user_named_has_no_others_to_list():
    message = invalid(small(), AnalysisSettings(clustering_features=("med_age", "zzz")))
    assert "no column 'zzz'" in message and "(nor" not in message


def test_features_blank_in_every_row_are_named_in_the_singular_or_plural():
    frame = small().assign(med_age=np.nan)
    (warning,) = validate_features(frame, FITTED, WHERE).warnings
    assert warning == f"feature 'med_age' is blank in every row of {WHERE}"
    frame = frame.assign(crime_per_capita=np.nan)
    (warning,) = validate_features(frame, FITTED, WHERE).warnings
    assert warning == f"features 'med_age', 'crime_per_capita' are blank in every row of {WHERE}"


# --- issue 21: integers kept, labels checked ----------------------------------------------------


def test_integer_features_stay_integers_with_blanks_as_na():
    frame = small().assign(med_age=pd.array([34, None, 41, 29, 38], dtype="Int64"))
    frame["crime_per_capita"] = [5, 0, 12, 30, 2]  # int64: no blank
    valid = validate_features(frame, FITTED, WHERE).frame.set_index("neighborhood")
    assert valid["med_age"].dtype == "Int64" and valid["crime_per_capita"].dtype == "Int64"
    assert valid.loc["Elm Point", "med_age"] == 41 and valid["med_age"].isna().sum() == 1
    # Text and float columns are numbers as before.
    floats = validate_features(small(), FITTED, WHERE).frame
    assert floats["med_age"].dtype == np.float64


def test_a_csvs_integer_column_with_a_blank_is_read_as_integers(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("neighborhood,population,count,rate,flag,name\nA,10,3,0.5,true,x\nB,20,,1,,\n")
    frame = read_table(str(path))
    assert frame["population"].dtype == np.int64 and frame["count"].dtype == "Int64"
    assert frame["rate"].dtype == np.float64
    assert frame["name"].dtype == object and frame["name"].isna().tolist() == [False, True]
    assert frame["flag"].dtype == object  # a blank in a true/false column: not numeric
    assert frame["count"].isna().tolist() == [False, True]


def test_a_feature_label_for_a_column_the_table_lacks_is_a_warning_with_the_closest():
    settings = AnalysisSettings(
        clustering_features=FITTED.clustering_features,
        exclude_neighborhoods=(),
        feature_labels=(("med_ag", "median age"), ("crime_per_capita", "crime")),
    )
    warnings = validate_features(small(), settings, WHERE).warnings
    assert warnings == (
        f"FEATURE_LABELS names 'med_ag', which is not a column of {WHERE} (did you mean "
        "'med_age'?): its label is unused",
    )


def test_a_blank_in_an_integer_population_is_a_blank_not_a_bad_count():
    frame = small().assign(population=pd.array([1200, None, 350, 87, 4100], dtype="Int64"))
    valid = validate_features(frame, FITTED, WHERE)
    assert any("population is blank in 1 rows" in w for w in valid.warnings), valid.warnings
    negative = small().assign(population=pd.array([1200, None, -3, 87, 4100], dtype="Int64"))
    assert "population is negative in data row 3 (Elm Point)" in invalid(negative, FITTED)


def community_areas() -> pd.DataFrame:
    """A table shaped like a city's published indicators: upper-case names, no population
    column, integer columns, and the citywide total row with a blank."""
    return pd.DataFrame(
        {
            "COMMUNITY_AREA_NAME": ["Rogers Park", "CHICAGO", "Uptown", "Edgewater"],
            "PER_CAPITA_INCOME": [23939, 28202, 35787, 33385],
            "PERCENT_HOUSEHOLDS_BELOW_POVERTY": [23.6, 19.7, 22.7, 17.3],
            "HARDSHIP_INDEX": [39.0, np.nan, 20.0, 19.0],
        }
    )


AREAS = AnalysisSettings(
    key_column="COMMUNITY_AREA_NAME",
    population_column="none",
    clustering_features=("PER_CAPITA_INCOME", "PERCENT_HOUSEHOLDS_BELOW_POVERTY", "HARDSHIP_INDEX"),
    severity_feature="HARDSHIP_INDEX",
    feature_directions=(("HARDSHIP_INDEX", "higher_is_worse"),),
    exclude_neighborhoods=(),
)


def test_a_table_without_a_population_column_is_valid_with_population_column_none():
    valid = validate_features(community_areas(), AREAS, WHERE)
    assert list(valid.frame["COMMUNITY_AREA_NAME"]) == [
        "CHICAGO", "Edgewater", "Rogers Park", "Uptown"
    ]  # fmt: skip
    assert valid.warnings == () and valid.dropped == ()
    with pytest.raises(InputError, match=r"has no 'population' column.*\(none for a table"):
        validate_features(community_areas(), replace(AREAS, population_column="population"), WHERE)


def test_drop_keys_leave_their_rows_out_and_say_so():
    settings = replace(AREAS, drop_keys=("CHICAGO", "Edgewatr"))
    valid = validate_features(community_areas(), settings, WHERE)
    assert "CHICAGO" not in set(valid.frame["COMMUNITY_AREA_NAME"])
    assert len(valid.frame) == 3 and valid.dropped == ("CHICAGO",)
    assert valid.warnings == (
        f"DROP_KEYS names 'Edgewatr', which is no COMMUNITY_AREA_NAME of {WHERE}, so it drops "
        "nothing (did you mean 'Edgewater'?)",
    )
    assert valid.notes == (
        f"DROP_KEYS left 1 row of {WHERE} out of the analysis and of every output: CHICAGO",
    )
    every = replace(AREAS, drop_keys=tuple(community_areas()["COMMUNITY_AREA_NAME"]))
    with pytest.raises(InputError, match=r"DROP_KEYS \(--drop-keys\) leaves no row"):
        validate_features(community_areas(), every, WHERE)


def test_a_feature_directions_key_that_is_not_a_column_is_refused_with_a_did_you_mean():
    given = (("HARDSHIP_INDEX", "higher_is_worse"), ("PER_CAPITA_INCOM", "higher_is_better"))
    typo = replace(AREAS, feature_directions=given)
    with pytest.raises(InputError) as caught:
        validate_features(community_areas(), typo, WHERE)
    assert str(caught.value) == (
        f"{WHERE} has no column 'PER_CAPITA_INCOM' (did you mean 'PER_CAPITA_INCOME'?), which "
        "FEATURE_DIRECTIONS (--feature-directions) names: fix the name or remove it"
    )
    # The default directions (Baltimore's columns) are not the user's typos.
    assert validate_features(community_areas(), AREAS, WHERE).warnings == ()


def test_a_severity_feature_that_is_not_a_column_is_a_missing_column_before_its_direction():
    half = replace(AREAS, severity_feature="HARDSHIP")
    with pytest.raises(InputError) as caught:
        validate_features(community_areas(), half, WHERE)
    assert str(caught.value).startswith(
        f"{WHERE} has no column 'HARDSHIP' (did you mean 'HARDSHIP_INDEX'?), which "
        "SEVERITY_FEATURE (--severity-feature) names"
    )
    undirected = replace(AREAS, severity_feature="PER_CAPITA_INCOME")
    with pytest.raises(InputError, match=r"SEVERITY_FEATURE 'PER_CAPITA_INCOME' has no direction"):
        validate_features(community_areas(), undirected, WHERE)


def test_a_population_that_is_not_whole_numbers_is_a_warning_naming_it():
    table = community_areas().assign(SHARE=[0.25, 1.0, 0.5, 2.0])
    valid = validate_features(table, replace(AREAS, population_column="SHARE"), WHERE)
    assert valid.warnings == (
        "POPULATION_COLUMN 'SHARE' holds 2 values that are not a whole number of residents "
        f"(Rogers Park, Uptown) in {WHERE}: if it is not a count of residents, set "
        "POPULATION_COLUMN=none",
    )
    assert valid.frame["SHARE"].dtype == np.float64
    share = replace(AREAS, population_column="SHARE")
    counts = validate_features(table.assign(SHARE=[1, 2, 3, 4]), share, WHERE)
    assert counts.warnings == () and counts.frame["SHARE"].dtype == np.int64
    with pytest.raises(InputError, match=r"SHARE is negative .*POPULATION_COLUMN=none"):
        validate_features(table.assign(SHARE=[1, -2, 3, 4]), share, WHERE)


def test_without_a_population_column_the_clusters_schema_has_no_population_field():
    names = [f["name"] for f in table_schema("clusters_table", "AREA", None)]
    assert "population" not in names and "None" not in names and names[0] == "AREA"
    assert "population" in [f["name"] for f in table_schema("clusters_table", "AREA")]


# --- A warehouse table's schema, checked before any row is read (issue 20) -------------------

# The tables API names its types the legacy way (INTEGER, FLOAT); GoogleSQL's names and the
# decimals are numbers too.
SIX_NUMERIC = [
    {"name": "tract", "type": "STRING"},
    {"name": "residents", "type": "INTEGER"},
    {"name": "income", "type": "INTEGER"},
    {"name": "poverty", "type": "FLOAT"},
    {"name": "age", "type": "INT64"},
    {"name": "rent", "type": "FLOAT64"},
    {"name": "value", "type": "NUMERIC"},
    {"name": "big", "type": "BIGNUMERIC"},
    {"name": "label", "type": "STRING"},
    {"name": "opened", "type": "TIMESTAMP"},
]


def test_a_schemas_numeric_columns_are_the_hint_whatever_the_type_is_called():
    settings = AnalysisSettings(key_column="tract", population_column="residents")
    with pytest.raises(InputError) as caught:
        check_schema(SIX_NUMERIC, settings, "bq://p.d.tracts")
    assert str(caught.value).endswith(
        'its numeric columns are ["income", "poverty", "age", "rent", "value", "big"]'
    )
    text_only = [f for f in SIX_NUMERIC if f["type"] in ("STRING", "TIMESTAMP")]
    with pytest.raises(InputError, match=r"numeric columns are none \(only text columns\)$"):
        check_schema(text_only, settings, "bq://p.d.tracts")


def test_a_schema_is_held_to_the_features_and_directions_a_table_is():
    chosen = AnalysisSettings(
        key_column="tract",
        population_column="residents",
        clustering_features=("income", "poverty"),
        severity_feature="poverty",
        feature_directions=(("poverty", "higher_is_worse"), ("incom", "higher_is_better")),
        exclude_neighborhoods=(),
    )
    with pytest.raises(InputError, match=r"no column 'incom' \(did you mean 'income'\?\)"):
        check_schema(SIX_NUMERIC, chosen, "bq://p.d.tracts")
    check_schema(
        SIX_NUMERIC, replace(chosen, feature_directions=chosen.feature_directions[:1]), "t"
    )
    with pytest.raises(InputError, match=r"no column 'rents'.*SEVERITY_FEATURE"):
        check_schema(SIX_NUMERIC, replace(chosen, severity_feature="rents"), "bq://p.d.tracts")


# --- The checks other steps make with this module's rules (issue 23) -------------------------
# assign's input, OUTPUT_COLUMNS, the warehouse's column names and the CSVs people open are
# checked by table.py: their rules are pinned here, in the module's own tests, and not only
# through the steps that call them.


def model_input() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "neighborhood": [" Oak Hill ", "Ash Village", "Elm Point"],
            "med_age": ["34.5", "", "41"],
            "crime_per_capita": [0.05, 0.3, np.nan],
            "notes": ["a", "b", "c"],
        },
        index=[7, 3, 5],
    )


MODEL_COLUMNS = ("neighborhood", "med_age", "crime_per_capita")


def for_model(frame: pd.DataFrame, columns=MODEL_COLUMNS) -> pd.DataFrame:
    return validate_for_model(frame, "neighborhood", columns, WHERE)


def refused_for_model(frame: pd.DataFrame, columns=MODEL_COLUMNS) -> str:
    with pytest.raises(InputError) as caught:
        for_model(frame, columns)
    return str(caught.value)


def test_a_table_for_a_model_keeps_its_row_order_with_stripped_keys_and_numbers():
    valid = for_model(model_input())
    assert valid["neighborhood"].tolist() == ["Oak Hill", "Ash Village", "Elm Point"]
    assert valid.index.tolist() == [0, 1, 2]
    assert valid["med_age"].tolist()[::2] == [34.5, 41.0] and np.isnan(valid["med_age"][1])
    assert valid["med_age"].dtype == np.float64 and valid["notes"].tolist() == ["a", "b", "c"]
    # The key is text, never read as a number, even when it looks like one.
    numbered = model_input().assign(neighborhood=["101", "102", "103"])
    assert for_model(numbered)["neighborhood"].tolist() == ["101", "102", "103"]


def test_a_table_for_a_model_without_rows_is_refused():
    assert refused_for_model(model_input().iloc[:0]) == (
        f"{WHERE} has no rows: give one row per neighborhood to assign"
    )


def test_a_table_for_a_model_lacking_a_model_column_names_it_with_a_guess():
    assert refused_for_model(model_input().drop(columns="med_age").assign(med_ag=1.0)) == (
        f"{WHERE} has no 'med_age' column (did you mean 'med_ag'?), which the run's model "
        "needs: add it (the features table's columns, by the same names)"
    )
    # Only the model's columns are required.
    assert list(for_model(model_input(), MODEL_COLUMNS[:2]).columns) == list(model_input())


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_a_table_for_a_model_with_a_blank_key_names_the_row(blank):
    frame = model_input().assign(neighborhood=["Oak Hill", blank, "Elm Point"])
    assert refused_for_model(frame) == (f"{WHERE}: neighborhood is blank in data row 2: fill it in")


def test_a_table_for_a_model_with_text_in_a_model_column_is_refused():
    frame = model_input().assign(med_age=["34.5", "old", "41"])
    assert refused_for_model(frame) == (
        f"{WHERE}: column 'med_age' has 'old' in data row 2 (Ash Village): use a finite "
        "number, or leave it blank"
    )


def test_output_columns_must_be_columns_of_the_input():
    check_output_columns(("med_age", "notes"), small().columns, WHERE)
    with pytest.raises(InputError) as caught:
        check_output_columns(("med_age", "note"), small().columns, WHERE)
    assert str(caught.value) == (
        f"{WHERE} has no column 'note' (did you mean 'notes'?), which OUTPUT_COLUMNS "
        "(--output-columns) names: fix the name or remove it"
    )


def test_withheld_columns_are_the_inputs_not_kept_and_never_the_key():
    columns = small().columns
    assert withheld_columns(columns, (), "neighborhood") == ()
    assert withheld_columns(columns, ("med_age",), "neighborhood") == (
        "population",
        "crime_per_capita",
        "notes",
    )


def test_column_names_that_differ_only_in_case_are_refused():
    check_column_names(
        ["neighborhood", "top_cluster", "neighborhood_shape", "x"], "neighborhood", WHERE
    )
    with pytest.raises(InputError) as caught:
        check_column_names(["neighborhood", "Rate", "rate"], "neighborhood", WHERE)
    assert str(caught.value) == (
        f"{WHERE}: columns 'Rate' and 'rate' differ only in case, which BigQuery takes for the "
        "same column: rename one of them"
    )
    for added in ("Top_Cluster", "Neighborhood_Shape"):
        with pytest.raises(InputError) as caught:
            check_column_names(["neighborhood", added], "neighborhood", WHERE)
        assert str(caught.value) == (
            f"{WHERE}: column {added!r} differs only in case from {added.lower()!r}, a column "
            "the run adds, which BigQuery takes for the same column: rename it"
        )


def test_the_closest_name_is_the_same_up_to_case_and_spacing_before_a_spelling_guess():
    assert closest("oak  HILL", ["Oak Hil", "Oak_Hill"]) == "Oak_Hill"
    assert closest("Oak Hil", ["Elm Point", "Oak Hill"]) == "Oak Hill"
    assert closest("Zzz", ["Elm Point", "Oak Hill"]) is None
    assert did_you_mean("Zzz", ["Oak Hill"]) == ""
    assert did_you_mean("Oak Hil", ["Oak Hill"]) == " (did you mean 'Oak Hill'?)"


def test_a_schemas_numeric_fields_skip_the_key_and_population_and_any_spelling():
    schema = [
        {"name": "tract", "type": "INTEGER"},
        {"name": "residents", "type": "integer"},
        {"name": "income", "type": "int64"},
        {"name": "label"},
        {"name": "rate", "type": "Float"},
    ]
    settings = AnalysisSettings(key_column="tract", population_column="residents")
    assert numeric_fields(schema, settings) == ["income", "rate"]


def test_rows_read_back_get_their_declared_integer_and_time_types():
    schema = [
        {"name": "count", "type": "INTEGER"},
        {"name": "share", "type": "INTEGER"},
        {"name": "at", "type": "TIMESTAMP"},
        {"name": "rate", "type": "FLOAT"},
    ]
    rows = pd.DataFrame(
        {
            "count": [1.0, np.nan],
            "share": [1.0, 2.5],
            "at": ["2026-01-02T03:04:05Z", "2026-01-02T04:04:05+01:00"],
            "rate": [1.0, 2.0],
            "other": [3.0, 4.0],
        }
    )
    typed = typed_rows(rows, schema)
    assert typed["count"].dtype == "Int64" and typed["count"].isna().tolist() == [False, True]
    assert typed["share"].dtype == np.float64  # not whole: kept as it is
    assert typed["rate"].dtype == np.float64 and typed["other"].dtype == np.float64
    assert typed["at"].tolist() == [pd.Timestamp("2026-01-02T03:04:05Z")] * 2


def test_the_clusters_table_read_back_gets_the_declared_types_of_its_columns():
    rows = pd.DataFrame({"tract": ["a"], "pop": [12.0], "top_cluster": [1.0], "x": [2.0]})
    typed = typed_clusters(rows, "tract", "pop")
    assert typed["pop"].dtype == "Int64" and typed["top_cluster"].dtype == "Int64"
    assert typed["x"].dtype == np.float64


def test_text_cells_that_a_spreadsheet_would_evaluate_are_escaped_exactly():
    for value in ("=1+1", "+1", "-1", "@x", "'q", "\tx", "\x00x"):
        assert escape_cell(value) == "'" + value and unescape_cell(escape_cell(value)) == value
    for value in ("", "Oak Hill", -1.5, None):
        assert escape_cell(value) == value and unescape_cell(value) == value
    frame = pd.DataFrame({"=name": ["=a", "b"], "n": [-1, 2]})
    assert people_csv(frame) == b"'=name,n\n'=a,-1\nb,2\n"
    assert people_csv(frame, header=False) == b"'=a,-1\nb,2\n"


def test_a_people_csv_reads_back_with_its_exact_names_and_chosen_columns():
    frame = pd.DataFrame({"=name": ["=a", "b"], "n": [1, 2], "k": ["01", "02"]})
    content = people_csv(frame)
    pd.testing.assert_frame_equal(read_people_csv(content, dtype={"k": str}), frame)
    chosen = read_people_csv(content, usecols=lambda c: c in ("=name", "n"))
    pd.testing.assert_frame_equal(chosen, frame[["=name", "n"]])


def test_a_people_csv_writes_each_float_as_pandas_would_and_nan_blank():
    floats = [1e16, 1e15, 1e-05, 0.0001, 0.1 + 0.2, -0.0, 26.0, float("inf"), 5e-324, np.nan]
    frame = pd.DataFrame(
        {
            "key": [f"k{i}" for i in range(len(floats))],
            "value": floats,
            "count": range(len(floats)),
            "when": pd.Timestamp("2026-12-07T15:36:19.5", tz="UTC"),
        }
    )
    assert people_csv(frame) == _pandas_csv(frame)
    lines = people_csv(frame).decode().splitlines()
    assert [line.split(",")[1] for line in lines[1:]] == [
        "1e+16", "1000000000000000.0", "1e-05", "0.0001", "0.30000000000000004", "-0.0",
        "26.0", "inf", "5e-324", "",
    ]  # fmt: skip
    # The frame given is not changed.
    assert frame["value"].dtype == np.float64


def test_the_hint_for_another_citys_table_lists_its_numeric_columns():
    table = pd.DataFrame(
        {
            "neighborhood": ["a", "b"],
            "population": [1, 2],
            "rate": ["0.5", " 2 "],
            "mixed": ["1", "x"],
            "blank": pd.array([None, None], dtype="string"),
            "flag": [True, False],
            "count": [3, 4],
        }
    )
    with pytest.raises(InputError) as caught:
        validate_features(table, SETTINGS, WHERE)
    assert str(caught.value).endswith('its numeric columns are ["rate", "count"]')
    with pytest.raises(InputError, match=r"numeric columns are none \(only text columns\)$"):
        validate_features(table[["neighborhood", "population", "mixed"]], SETTINGS, WHERE)


def test_the_default_exclusion_list_matching_no_row_is_a_note_not_a_warning():
    other_city = small()
    settings = AnalysisSettings(clustering_features=FITTED.clustering_features)
    valid = validate_features(other_city, settings, WHERE)
    assert valid.warnings == ()
    assert valid.notes == (
        "the default EXCLUDE_NEIGHBORHOODS is the seed notebook's list of Baltimore names, none "
        f"of which is a neighborhood of {WHERE}: nothing is excluded by name (set "
        "EXCLUDE_NEIGHBORHOODS to this table's institutional or industrial areas, or [])",
    )
    # EXCLUDE_ALSO is the user's own: its typo is still a warning.
    also = replace(settings, exclude_also=("Oak Hil",))
    assert validate_features(other_city, also, WHERE).warnings == (
        f"1 excluded name matches no neighborhood of {WHERE}, so it excludes nothing: "
        "'Oak Hil' (did you mean 'Oak Hill'?) (EXCLUDE_NEIGHBORHOODS replaces the default "
        "list, EXCLUDE_ALSO extends it)",
    )


def test_without_a_population_column_a_missing_key_column_is_still_refused():
    table = community_areas().rename(columns={"COMMUNITY_AREA_NAME": "AREA"})
    with pytest.raises(InputError) as caught:
        validate_features(table, AREAS, WHERE)
    assert str(caught.value).startswith(f"{WHERE} has no 'COMMUNITY_AREA_NAME' column")


def test_drop_keys_leave_the_tables_columns_as_they_were():
    settings = replace(AREAS, drop_keys=("CHICAGO",))
    valid = validate_features(community_areas(), settings, WHERE)
    assert list(valid.frame.columns) == list(community_areas().columns)
    assert valid.frame.index.tolist() == [0, 1, 2]


def test_one_population_that_is_not_whole_is_named_in_the_singular():
    table = community_areas().assign(SHARE=[0.25, 1.0, 3.0, 2.0])
    valid = validate_features(table, replace(AREAS, population_column="SHARE"), WHERE)
    assert valid.warnings[0].startswith(
        "POPULATION_COLUMN 'SHARE' holds 1 value that is not a whole number of residents "
        "(Rogers Park)"
    )


def test_a_cell_starting_with_a_space_is_not_escaped():
    assert escape_cell(" =x") == " =x" and escape_cell("\x1fx") == "'\x1fx"


def _pandas_csv(frame: pd.DataFrame, header: bool = True) -> bytes:
    """What people_csv wrote before it formatted cells itself: pandas' writer over the frame
    with its text cells and names escaped."""
    columns = []
    for i in range(frame.shape[1]):
        column = frame.iloc[:, i]
        text = column.dtype == object or pd.api.types.is_string_dtype(column)
        columns.append(column.map(escape_cell) if text else column)
    escaped = pd.concat(columns, axis=1) if columns else frame.copy()
    escaped = escaped.set_axis([escape_cell(str(c)) for c in frame.columns], axis=1)
    return escaped.to_csv(index=False, header=header, lineterminator="\n").encode()


PEOPLE_CSV_CASES = {
    "floats": pd.DataFrame(
        {"v": [1e16, 1e-5, 0.1 + 0.2, -0.0, 0.0, float("inf"), -float("inf"), np.nan, -0.0]}
    ),
    "text": pd.DataFrame(
        {
            "k": ["a,b", 'q"x', "l\nm", "r\rx", "", None, "=1", "-2", "'q", "\tx", "ok", np.nan],
            "n": range(12),
        }
    ),
    "one column with blanks": pd.DataFrame({"k": ["", None, "x"]}),
    "one float column": pd.DataFrame({"v": [np.nan, 1.5]}),
    "mixed objects": pd.DataFrame(
        {"m": pd.Series([1, 1.0, True, "x", None, "=y", 2.5, np.nan, "a,b"], dtype=object)}
    ),
    "dates": pd.DataFrame(
        {
            "day": pd.to_datetime(["2026-01-01", "2026-01-02", None]),
            "time": pd.to_datetime(["2026-01-01 10:00:00.5", "2026-01-01", None], format="mixed"),
            "utc": pd.to_datetime(
                ["2026-01-01 10:00:00.5", "2026-01-01 10:00", None], utc=True, format="mixed"
            ),
            "stamp": pd.Timestamp("2026-12-07T15:36:19", tz="UTC"),
        }
    ),
    "nullable": pd.DataFrame(
        {
            "i": pd.array([1, None, 3], dtype="Int64"),
            "b": pd.array([True, None, False], dtype="boolean"),
            "f": pd.array([1.5, None, 2.0], dtype="Float64"),
            "f32": np.array([0.1, 2, 3], dtype=np.float32),
            "s": pd.array(["a", None, "=c"], dtype="string"),
        }
    ),
    "categorical": pd.DataFrame(
        {"c": pd.Categorical(["a", None, "=b", "a"]), "n": pd.Categorical([1.5, 2.0, None, 1.5])}
    ),
    "integers": pd.DataFrame(
        {"i": [1, -2, 3], "u": np.array([1, 2, 3], dtype=np.uint8), "b": [True, False, True]}
    ),
    "no rows": pd.DataFrame({"a": pd.Series([], dtype=float), "b": pd.Series([], dtype=object)}),
    "names": pd.DataFrame([[1, 2, 3, 4]], columns=["=x", "a,b", 5, "x"]),
    "repeated name": pd.DataFrame([[1, "a"]], columns=["x", "x"]),
    "all blank text": pd.DataFrame({"o": pd.Series([None, None], dtype=object), "n": [1, 2]}),
}


@pytest.mark.parametrize("name", sorted(PEOPLE_CSV_CASES))
def test_a_people_csv_has_the_bytes_pandas_writes_for_every_kind_of_column(name):
    frame = PEOPLE_CSV_CASES[name]
    for header in (True, False):
        assert people_csv(frame, header=header) == _pandas_csv(frame, header), (name, header)


def test_a_people_csv_of_a_large_table_writes_each_distinct_value_as_pandas_does():
    rng = np.random.default_rng(3)
    n = 5_000
    frame = pd.DataFrame(
        {
            "key": [
                f"=k{i}" if i % 7 == 0 else f"k,{i}" if i % 11 == 0 else f"k{i}" for i in range(n)
            ],
            "rate": np.round(rng.random(n), 4),
            "margin": rng.random(n),
            "signed": rng.choice([-0.0, 0.0, 1.0, np.nan], n),
            "count": rng.integers(0, 50, n),
            "name": rng.choice(["Stable: low vacancy", 'Distressed: "many", permits', None], n),
            "at": pd.Timestamp("2026-12-07T20:32:52.044881", tz="UTC"),
        }
    )
    assert people_csv(frame) == _pandas_csv(frame)
