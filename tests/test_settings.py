"""Settings: the notebook's defaults, validation at start-up, and the function's environment."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping

import pytest

from clustering import InputError
from clustering.options import TABLE_BEGIN, TABLE_END
from clustering.settings import (
    ENV_VARS,
    MAX_CLOCK_SKEW_SECONDS,
    MIN_RUN_BUDGET_SECONDS,
    AnalysisSettings,
    JobSettings,
    bq_table_id,
    check_table_id,
    parse_feature_directions,
    parse_feature_labels,
    parse_name_list,
)
from tests.helpers import doc

# The notebook's configuration, copied from the seed notebook (cells 1-3), not from the product.
NOTEBOOK_EXCLUDE = (
    "Canton Industrial Area",
    "Fairfield Area",
    "Inner Harbor",
    "Pulaski Industrial Area",
    "Stadium/Entertainment Area",
    "Dunbar-Broadway",
    "Hopkins Bayview",
    "Johns Hopkins Homewood",
    "Morgan State University",
    "Penn-Fallsway",
    "Perkins",
    "University of Maryland",
    "Harbor Point",
)
NOTEBOOK_FEATURES = (
    "population",
    "med_age",
    "housing_vacancy_rate",
    "owner_occupancy_rate",
    "crime_per_capita",
    "arrest_per_capita",
    "crime_yoy_change",
    "vacant_notices_per_unit",
    "rehab_to_vacant_ratio",
    "permit_value_per_capita",
    "permit_recent_5yr",
    "requests_311_per_capita",
    "requests_311_blight",
    "median_assessed_value",
    "avg_assessed_value",
)
REQUIRED = {
    "FEATURES_SOURCE": "bq://my-project.analytics.neighborhood_features",
    "ARTIFACTS_DEST": "gs://my-bucket/clusters",
}


def env(**values: str) -> dict[str, str]:
    return REQUIRED | values


# --- AnalysisSettings --------------------------------------------------------------------------


def test_defaults_are_the_notebooks():
    settings = AnalysisSettings()
    assert settings.min_population == 100
    assert (settings.k_min, settings.k_max) == (2, 10)
    # find_best_k(k_range=range(2, 6)) in the notebook's sub-clustering.
    assert (settings.sub_k_min, settings.sub_k_max) == (2, 5)
    assert settings.random_state == 42
    assert settings.exclude_neighborhoods == NOTEBOOK_EXCLUDE
    assert settings.clustering_features == NOTEBOOK_FEATURES
    assert settings.severity_feature == "crime_per_capita"
    assert settings.silhouette_sample_size >= 279


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"min_population": -1}, ["MIN_POPULATION", "-1", "0 or more"]),
        ({"k_min": 1}, ["K_MIN=1", "2 <= K_MIN <= K_MAX"]),
        ({"k_min": 5, "k_max": 3}, ["K_MIN=5", "K_MAX=3"]),
        ({"sub_k_min": 1}, ["SUB_K_MIN=1"]),
        ({"sub_k_min": 4, "sub_k_max": 3}, ["SUB_K_MIN=4", "SUB_K_MAX=3"]),
        ({"random_state": -1}, ["RANDOM_STATE", "-1"]),
        ({"random_state": 2**32}, ["RANDOM_STATE", str(2**32)]),
        ({"clustering_features": ()}, ["CLUSTERING_FEATURES", "empty"]),
        ({"clustering_features": ("med_age", "med_age")}, ["CLUSTERING_FEATURES", "twice"]),
        ({"severity_feature": ""}, ["SEVERITY_FEATURE", "empty"]),
        ({"silhouette_sample_size": 99}, ["SILHOUETTE_SAMPLE_SIZE", "99", "100 or more"]),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, dict) else None,
)
def test_invalid_analysis_settings_are_refused_with_a_clear_message(changes, words):
    with pytest.raises(InputError) as caught:
        AnalysisSettings(**changes)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_boundary_values_are_accepted():
    settings = AnalysisSettings(
        min_population=0,
        k_min=2,
        k_max=2,
        sub_k_min=3,
        sub_k_max=3,
        random_state=2**32 - 1,
        exclude_neighborhoods=(),
        clustering_features=("med_age",),
        silhouette_sample_size=100,
    )
    assert settings.k_max == 2
    assert settings.exclude_neighborhoods == ()


# --- JobSettings -------------------------------------------------------------------------------


def test_job_defaults_run_the_sample_locally():
    settings = JobSettings()
    assert settings.features_source is None
    assert settings.artifacts_dest == "output"
    assert settings.clusters_table is None
    assert settings.runs_table is None
    assert settings.watched_table is None
    assert settings.analysis == AnalysisSettings()


def test_watched_table_defaults_to_a_bigquery_features_table():
    settings = JobSettings(features_source="bq://my-project.analytics.features")
    assert settings.watched_table == "my-project.analytics.features"
    explicit = JobSettings(
        features_source="bq://my-project.analytics.features",
        watched_table="other-project.raw.source",
    )
    assert explicit.watched_table == "other-project.raw.source"


@pytest.mark.parametrize("source", ["gs://bucket/features.csv", "data/features.parquet", None])
def test_no_watched_table_is_guessed_from_a_file_source(source):
    assert JobSettings(features_source=source).watched_table is None


def test_with_features_source_keeps_everything_else():
    settings = JobSettings(artifacts_dest="out", runs_table="runs.jsonl")
    other = settings.with_features_source("bq://p.d.t")
    assert other.features_source == "bq://p.d.t"
    assert (other.artifacts_dest, other.runs_table) == ("out", "runs.jsonl")
    assert settings.features_source is None


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"artifacts_dest": ""}, ["ARTIFACTS_DEST", "empty"]),
        ({"features_source": "bq://project.dataset"}, ["FEATURES_SOURCE", "project.dataset.table"]),
        ({"clusters_table": "bq://p.d.t; DROP TABLE x"}, ["CLUSTERS_TABLE"]),
        ({"runs_table": "bq://p.d.t`"}, ["RUNS_TABLE"]),
        ({"watched_table": "p.d.t.extra"}, ["WATCHED_TABLE"]),
        ({"allowed_features_tables": ("p.d.t", "p.d.t OR 1=1")}, ["ALLOWED_FEATURES_TABLES"]),
        ({"max_event_age_seconds": 0}, ["MAX_EVENT_AGE_SECONDS", "positive"]),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, dict) else None,
)
def test_invalid_job_settings_are_refused(kwargs, words):
    with pytest.raises(InputError) as caught:
        JobSettings(**kwargs)
    for word in words:
        assert word in str(caught.value)


def test_local_destinations_are_not_table_ids():
    settings = JobSettings(clusters_table="out/clusters.csv", runs_table="out/runs.jsonl")
    assert settings.clusters_table == "out/clusters.csv"


# --- table ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table_id",
    ["my-project.analytics.neighborhood_features", "p1.d_2.T3", "a.b.c", "my_project.d.t"],
)
def test_plain_table_ids_are_accepted(table_id):
    assert check_table_id(table_id, "X") == table_id
    assert bq_table_id(f"bq://{table_id}", "X") == table_id


@pytest.mark.parametrize(
    "table_id",
    [
        "",
        "dataset.table",
        "p.d.t.x",
        "p.d.t; DROP TABLE p.d.t",
        "p.d.t`; DELETE FROM p.d.t WHERE true; --",
        "p.d.t --",
        "p.d.t\n",
        "p.my-dataset.t",  # hyphens belong to project ids only
        "p.d.t*",
        "p..t",
        " p.d.t",
        "p.d.t/../../x",
        "p.d.t'",
        'p.d."t"',
        "p.d.tâ",
    ],
)
def test_injection_attempts_and_malformed_ids_are_rejected(table_id):
    with pytest.raises(InputError) as caught:
        check_table_id(table_id, "WATCHED_TABLE")
    assert "WATCHED_TABLE" in str(caught.value)
    assert "project.dataset.table" in str(caught.value)


# --- parse_name_list ---------------------------------------------------------------------------


def test_name_lists_are_json_lists_of_names():
    assert parse_name_list('["Inner Harbor", " Perkins "]', "X", "[]") == (
        "Inner Harbor",
        "Perkins",
    )
    assert parse_name_list("[]", "X", "[]") == ()


@pytest.mark.parametrize(
    "raw",
    [
        "Inner Harbor",
        "not json",
        '"Inner Harbor"',
        '{"a": 1}',
        "[1, 2]",
        '["ok", ""]',
        '["ok", "  "]',
        '["ok", null]',
        "[",
        "Inner Harbor, Perkins",
    ],
)
def test_bad_name_lists_say_what_is_expected(raw):
    with pytest.raises(InputError) as caught:
        parse_name_list(raw, "EXCLUDE_NEIGHBORHOODS", '["Inner Harbor"]')
    message = str(caught.value)
    assert message.startswith("EXCLUDE_NEIGHBORHOODS must be a JSON list of non-empty strings")
    assert 'like ["Inner Harbor"]; got' in message
    assert "\n" not in message


# --- JobSettings.from_env ----------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["FEATURES_SOURCE", "ARTIFACTS_DEST"])
@pytest.mark.parametrize("value", [None, "", "   "])
def test_required_variables(missing, value):
    environ = dict(REQUIRED)
    if value is None:
        del environ[missing]
    else:
        environ[missing] = value
    with pytest.raises(InputError, match=f"^{missing} is not set"):
        JobSettings.from_env(environ)


def test_from_env_defaults_equal_the_notebooks():
    settings = JobSettings.from_env(REQUIRED)
    assert settings.features_source == REQUIRED["FEATURES_SOURCE"]
    assert settings.artifacts_dest == REQUIRED["ARTIFACTS_DEST"]
    assert settings.analysis == AnalysisSettings()
    assert settings.analysis.exclude_neighborhoods == NOTEBOOK_EXCLUDE
    assert settings.analysis.clustering_features == NOTEBOOK_FEATURES
    assert settings.clusters_table is None
    assert settings.runs_table is None
    assert settings.allowed_features_tables == ()
    assert settings.function_service_account is None
    assert settings.max_event_age_seconds == 86_400
    # WATCHED_TABLE defaults to the bq:// FEATURES_SOURCE's table.
    assert settings.watched_table == "my-project.analytics.neighborhood_features"


def test_empty_optional_variables_mean_their_defaults():
    blank = {name: "" for name in ENV_VARS if name not in REQUIRED}
    assert JobSettings.from_env(REQUIRED | blank) == JobSettings.from_env(REQUIRED)


def test_every_variable_is_read_and_validated():
    settings = JobSettings.from_env(
        {
            "FEATURES_SOURCE": " gs://my-bucket/features.parquet ",
            "ARTIFACTS_DEST": "gs://my-bucket/artifacts",
            "CLUSTERS_TABLE": "bq://my-project.analytics.neighborhood_clusters",
            "RUNS_TABLE": "bq://my-project.analytics.clustering_runs",
            "WATCHED_TABLE": "my-project.raw.features",
            "ALLOWED_FEATURES_TABLES": '["my-project.analytics.a", "my-project.analytics.b"]',
            "FUNCTION_SERVICE_ACCOUNT": "fn@my-project.iam.gserviceaccount.com",
            "MAX_EVENT_AGE_SECONDS": "600",
            "MIN_POPULATION": "50",
            "K_MIN": "3",
            "K_MAX": " 8 ",
            "SUB_K_MIN": "2",
            "SUB_K_MAX": "4",
            "RANDOM_STATE": "7",
            "EXCLUDE_NEIGHBORHOODS": '["Inner Harbor", "Perkins"]',
            "CLUSTERING_FEATURES": '["population", "crime_per_capita"]',
            "SEVERITY_FEATURE": "crime_per_capita",
            "SILHOUETTE_SAMPLE_SIZE": "5000",
        }
    )
    assert settings.features_source == "gs://my-bucket/features.parquet"
    assert settings.clusters_table == "bq://my-project.analytics.neighborhood_clusters"
    assert settings.runs_table == "bq://my-project.analytics.clustering_runs"
    assert settings.watched_table == "my-project.raw.features"
    assert settings.allowed_features_tables == ("my-project.analytics.a", "my-project.analytics.b")
    assert settings.function_service_account == "fn@my-project.iam.gserviceaccount.com"
    assert settings.max_event_age_seconds == 600
    assert settings.analysis == AnalysisSettings(
        min_population=50,
        k_min=3,
        k_max=8,
        sub_k_min=2,
        sub_k_max=4,
        random_state=7,
        exclude_neighborhoods=("Inner Harbor", "Perkins"),
        clustering_features=("population", "crime_per_capita"),
        severity_feature="crime_per_capita",
        silhouette_sample_size=5000,
    )


class _Recorder(Mapping[str, str]):
    """An environment that notes every variable looked up (a real Mapping, not a mock)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.values[key]

    def get(self, key, default=None):
        self.read.add(key)
        return self.values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def test_env_vars_lists_exactly_the_variables_read():
    # Terraform sets exactly ENV_VARS, so the two must not drift.
    environ = _Recorder(dict(REQUIRED))
    JobSettings.from_env(environ)
    assert environ.read == set(ENV_VARS)
    assert len(ENV_VARS) == len(set(ENV_VARS))


def test_an_empty_exclusion_list_excludes_nothing():
    settings = JobSettings.from_env(env(EXCLUDE_NEIGHBORHOODS="[]"))
    assert settings.analysis.exclude_neighborhoods == ()


def test_exclude_also_extends_the_default_list():
    settings = JobSettings.from_env(env(EXCLUDE_ALSO='["Greektown"]')).analysis
    assert settings.exclude_neighborhoods == NOTEBOOK_EXCLUDE
    assert settings.excluded_names == (*NOTEBOOK_EXCLUDE, "Greektown")


def test_only_the_built_in_feature_list_counts_as_the_default():
    assert AnalysisSettings().default_features
    assert AnalysisSettings(clustering_features=NOTEBOOK_FEATURES).default_features
    assert not AnalysisSettings(clustering_features=NOTEBOOK_FEATURES[:-1]).default_features


@pytest.mark.parametrize(
    "name",
    [
        "MIN_POPULATION",
        "K_MIN",
        "K_MAX",
        "SUB_K_MIN",
        "SUB_K_MAX",
        "RANDOM_STATE",
        "SILHOUETTE_SAMPLE_SIZE",
        "MAX_EVENT_AGE_SECONDS",
    ],
)
@pytest.mark.parametrize("raw", ["ten", "1.5", "3e2", "0x10", "1_000_000x"])
def test_bad_integers_name_the_variable(name, raw):
    with pytest.raises(InputError) as caught:
        JobSettings.from_env(env(**{name: raw}))
    message = str(caught.value)
    assert message.startswith(f"{name}={raw!r} is not an integer")
    assert "whole number" in message


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("K_MIN", "11", ["K_MIN=11", "K_MAX=10"]),
        ("MIN_POPULATION", "-5", ["MIN_POPULATION", "-5"]),
        ("RANDOM_STATE", "-1", ["RANDOM_STATE"]),
        ("CLUSTERING_FEATURES", "[]", ["CLUSTERING_FEATURES", "empty"]),
        ("CLUSTERING_FEATURES", '["med_age", "med_age"]', ["CLUSTERING_FEATURES", "twice"]),
        ("MAX_EVENT_AGE_SECONDS", "-1", ["MAX_EVENT_AGE_SECONDS"]),
        ("SILHOUETTE_SAMPLE_SIZE", "10", ["SILHOUETTE_SAMPLE_SIZE"]),
    ],
)
def test_out_of_range_values_fail_at_start_up(name, value, words):
    with pytest.raises(InputError) as caught:
        JobSettings.from_env(env(**{name: value}))
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize(
    "name", ["EXCLUDE_NEIGHBORHOODS", "CLUSTERING_FEATURES", "ALLOWED_FEATURES_TABLES"]
)
@pytest.mark.parametrize("raw", ["Inner Harbor", '{"names": []}', "[1]", '["a", ""]', "['a']"])
def test_bad_json_lists_name_the_variable(name, raw):
    with pytest.raises(InputError) as caught:
        JobSettings.from_env(env(**{name: raw}))
    message = str(caught.value)
    assert message.startswith(f"{name} must be a JSON list")
    # An example of the right form, of the right kind: names of places for the exclusions,
    # feature-like names for the features, table ids for the tables.
    example = {
        "EXCLUDE_NEIGHBORHOODS": ["Inner Harbor", "Perkins"],
        "CLUSTERING_FEATURES": ["median_income", "poverty_rate"],
        "ALLOWED_FEATURES_TABLES": ["project.dataset.table"],
    }[name]
    assert f"like {json.dumps(example)}; got" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FEATURES_SOURCE", "bq://p.d.t` WHERE 1=1 --"),
        ("FEATURES_SOURCE", "bq://p.d"),
        ("CLUSTERS_TABLE", "bq://p.d.t; DROP TABLE p.d.t"),
        ("RUNS_TABLE", "bq://p.d.t.u"),
        ("WATCHED_TABLE", "p.d.t OR 1=1"),
        ("WATCHED_TABLE", "bq://p.d.t"),
        ("ALLOWED_FEATURES_TABLES", '["p.d.t", "p.d.t; DROP TABLE p.d.t"]'),
    ],
)
def test_table_ids_from_the_environment_are_validated(name, value):
    with pytest.raises(InputError) as caught:
        JobSettings.from_env(env(**{name: value}))
    assert name in str(caught.value)


def test_watched_table_is_not_guessed_from_a_file_source():
    settings = JobSettings.from_env(env(FEATURES_SOURCE="gs://bucket/features.csv"))
    assert settings.watched_table is None
    watched = JobSettings.from_env(
        env(FEATURES_SOURCE="gs://bucket/features.csv", WATCHED_TABLE="p.d.t")
    )
    assert watched.watched_table == "p.d.t"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("clusters_table", "out/clusters.xlsx", "CLUSTERS_TABLE"),
        ("runs_table", "gs://bucket/runs.jsonl", "RUNS_TABLE"),
        ("runs_table", "out/runs.csv", "RUNS_TABLE"),
        ("transitions_table", "gs://bucket/moves.csv", "TRANSITIONS_TABLE"),
        ("transitions_table", "out/moves.parquet", "TRANSITIONS_TABLE"),
        ("transitions_table", "bq://p.d", "TRANSITIONS_TABLE"),
    ],
)
def test_destinations_that_cannot_be_written_fail_at_start(field, value, message):
    with pytest.raises(InputError, match=message):
        JobSettings(**{field: value})


def test_destinations_that_can_be_written_are_accepted():
    JobSettings(clusters_table="gs://bucket/clusters.parquet", runs_table="out/runs.jsonl")
    JobSettings(clusters_table="out/clusters.CSV", runs_table="bq://p.d.runs")


# --- Rules pinned by mutation testing (tools/mutation.py) ------------------------------------


def _documented_integer_defaults() -> dict[str, int]:
    """The rows of docs/configuration.md's settings table whose default is one integer."""
    table = doc("configuration.md").split(TABLE_BEGIN)[1].split(TABLE_END)[0]
    # Columns: variable, flag (or "function only"), default, meaning.
    rows = re.findall(r"^\| `([A-Z_]+)` \| [^|]+ \| `(\d+)` \|", table, flags=re.MULTILINE)
    return {name: int(value) for name, value in rows}


def test_the_docs_state_the_integer_defaults_the_code_uses():
    documented = _documented_integer_defaults()
    for settings in (JobSettings.from_env(REQUIRED), JobSettings()):
        actual = {
            "MAX_EVENT_AGE_SECONDS": settings.max_event_age_seconds,
            "MIN_POPULATION": settings.analysis.min_population,
            "RANDOM_STATE": settings.analysis.random_state,
            "SILHOUETTE_SAMPLE_SIZE": settings.analysis.silhouette_sample_size,
        }
        assert {name: documented.get(name) for name in actual} == actual


def test_random_state_zero_is_a_valid_seed():
    assert AnalysisSettings(random_state=0).random_state == 0
    assert JobSettings.from_env(env(RANDOM_STATE="0")).analysis.random_state == 0


def test_the_shortest_event_age_limit_is_one_second():
    assert JobSettings(max_event_age_seconds=1).max_event_age_seconds == 1
    with pytest.raises(InputError, match="MAX_EVENT_AGE_SECONDS is 0"):
        JobSettings(max_event_age_seconds=0)


def test_boundaries_source_is_read_from_the_environment():
    settings = JobSettings.from_env(env(BOUNDARIES_SOURCE=" gs://my-bucket/boundaries.geojson "))
    assert settings.boundaries_source == "gs://my-bucket/boundaries.geojson"
    assert JobSettings.from_env(env(BOUNDARIES_SOURCE=" ")).boundaries_source is None


def test_a_bad_name_list_is_echoed_up_to_80_characters():
    raw = "[" + "x" * 200
    with pytest.raises(InputError) as caught:
        parse_name_list(raw, "EXCLUDE_NEIGHBORHOODS", "[]")
    assert str(caught.value).endswith("got " + repr(raw[:80]))


def test_delivery_settings_are_read_and_validated():
    import re

    from clustering.settings import JobSettings

    env = {"FEATURES_SOURCE": "f.csv", "ARTIFACTS_DEST": "out"}
    default = JobSettings.from_env(env)
    assert (default.min_rows_ratio, default.function_timeout_seconds) == (0.5, None)
    assert default.max_event_age_seconds == 86_400
    chosen = JobSettings.from_env(
        env | {"MIN_ROWS_RATIO": "0.25", "FUNCTION_TIMEOUT_SECONDS": "120"}
    )
    assert (chosen.min_rows_ratio, chosen.function_timeout_seconds) == (0.25, 120)
    assert JobSettings.from_env(env | {"MIN_ROWS_RATIO": "0"}).min_rows_ratio == 0
    assert JobSettings.from_env(env | {"MIN_ROWS_RATIO": "1"}).min_rows_ratio == 1
    for name, value, cause in (
        ("MIN_ROWS_RATIO", "1.01", "between 0 (guard off) and 1"),
        ("MIN_ROWS_RATIO", "-0.1", "between 0 (guard off) and 1"),
        ("MIN_ROWS_RATIO", "half", "is not a number"),
        ("FUNCTION_TIMEOUT_SECONDS", "119", "120 or more"),
    ):
        with pytest.raises(InputError, match=re.escape(cause)):
            JobSettings.from_env(env | {name: value})

    for moves in ("bq://p.d.moves", "out/moves.csv", "out/moves.jsonl"):
        assert JobSettings(transitions_table=moves).transitions_table == moves


def test_transitions_table_and_label_overrides_come_from_the_environment():
    settings = JobSettings.from_env(
        env(
            TRANSITIONS_TABLE=" bq://p.d.moves ",
            LABEL_OVERRIDES='{"11": " Rowhouse core ", "3": "Leafy north"}',
        )
    )
    assert settings.transitions_table == "bq://p.d.moves"
    assert settings.label_overrides == ((3, "Leafy north"), (11, "Rowhouse core"))
    defaults = JobSettings.from_env(env(LABEL_OVERRIDES="", TRANSITIONS_TABLE=""))
    assert (defaults.transitions_table, defaults.label_overrides) == (None, ())


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("not json", "JSON object"),
        ('["11"]', "JSON object"),
        ('{"eleven": "Core"}', "cohort id"),
        ('{"-1": "Core"}', "cohort id"),
        ('{"11": ""}', "cohort id"),
        ('{"11": 5}', "cohort id"),
        ('{"11": "Core", "12": "Core"}', "'Core' to more than one cohort"),
        ('{"11": "Core", " 11": "Other"}', "names a cohort id twice"),
    ],
)
def test_bad_label_overrides_fail_at_start_up(raw, words):
    with pytest.raises(InputError, match="LABEL_OVERRIDES") as error:
        JobSettings.from_env(env(LABEL_OVERRIDES=raw))
    assert words in str(error.value)


def test_the_size_limits_are_the_ones_the_docs_document():
    from clustering.settings import MAX_BOUNDARIES_BYTES, MAX_FEATURES_BYTES, MAX_FEATURES_ROWS

    limits = doc("configuration.md").split("**Limits.**")[1].split("\n\n")[0]
    found = re.search(
        r"above ([\d,]+) rows or (\d+) MiB, or a boundaries file above (\d+) MiB",
        " ".join(limits.split()),
    )
    assert found, limits
    rows, features_mib, boundaries_mib = found.groups()
    assert int(rows.replace(",", "")) == MAX_FEATURES_ROWS
    assert int(features_mib) * 1024**2 == MAX_FEATURES_BYTES
    assert int(boundaries_mib) * 1024**2 == MAX_BOUNDARIES_BYTES


@pytest.mark.parametrize("column", ["1st_name", "name; DROP TABLE x", "shape-wkt", ""])
def test_a_boundaries_column_that_is_not_a_column_name_fails_at_start(column):
    table = "bq://p.d.shapes"  # the columns are written into the query that reads it
    for variable in ("BOUNDARIES_NAME_COLUMN", "BOUNDARIES_GEOGRAPHY_COLUMN"):
        field = variable.lower()
        if field == "boundaries_name_column" and not column:  # unset: KEY_COLUMN
            assert JobSettings(boundaries_source=table, **{field: column}).boundaries_key_column
            continue
        with pytest.raises(InputError, match=f"{variable}: .* is not a column name"):
            JobSettings(boundaries_source=table, **{field: column})
    named = JobSettings(boundaries_source=table, boundaries_name_column="_name2")
    assert named.boundaries_key_column == "_name2"


def test_the_boundaries_name_column_is_the_key_column_unless_set():
    analysis = AnalysisSettings(key_column="Community Area", population_column="total_pop")
    # A GeoJSON property may be any text, like a CSV's header.
    assert JobSettings(analysis=analysis).boundaries_key_column == "Community Area"
    assert JobSettings().boundaries_key_column == "neighborhood"
    with pytest.raises(InputError, match="BOUNDARIES_NAME_COLUMN"):
        JobSettings(analysis=analysis, boundaries_source="bq://p.d.shapes")


def test_bad_label_overrides_are_echoed_up_to_eighty_characters():
    raw = "x" * 100
    with pytest.raises(InputError) as error:
        JobSettings.from_env(env(LABEL_OVERRIDES=raw))
    assert str(error.value).endswith(f"got {'x' * 80!r}")


# --- Engines ------------------------------------------------------------------------------------


def test_engine_defaults_and_their_variables():
    job = JobSettings.from_env(env())
    assert (job.engine, job.memory_max_rows, job.sample_rows) == ("auto", 300_000, 200_000)
    assert job.maximum_bytes_billed == 1024**4 and job.staging_dataset is None
    tuned = JobSettings.from_env(
        env(
            ENGINE="warehouse",
            CLUSTERS_TABLE="bq://p.out.clusters",
            MEMORY_MAX_ROWS="1000",
            SAMPLE_ROWS="50000",
            MAXIMUM_BYTES_BILLED="20000000",
            STAGING_DATASET="other-project.staging",
        )
    )
    assert (tuned.engine, tuned.memory_max_rows, tuned.sample_rows) == ("warehouse", 1000, 50_000)
    assert tuned.maximum_bytes_billed == 20_000_000
    assert tuned.staging == "other-project.staging"
    # Without STAGING_DATASET the staging tables go beside the clusters table.
    assert JobSettings(clusters_table="bq://p.out.clusters").staging == "p.out"
    assert JobSettings(clusters_table="out.csv").staging is None


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"ENGINE": "gpu"}, "ENGINE (--engine) is 'gpu': use one of auto, memory, warehouse"),
        ({"MEMORY_MAX_ROWS": "0"}, "MEMORY_MAX_ROWS (--memory-max-rows) is 0: use 1 or more"),
        ({"SAMPLE_ROWS": "999"}, "SAMPLE_ROWS (--sample-rows) is 999: use 1,000 to 1,000,000"),
        ({"SAMPLE_ROWS": "1000001"}, "use 1,000 to 1,000,000 rows"),
        ({"MAXIMUM_BYTES_BILLED": "10485759"}, "use at least 10485760"),
        ({"STAGING_DATASET": "p.d.t"}, "STAGING_DATASET (--staging-dataset): 'p.d.t' is not"),
        ({"STAGING_DATASET": "p;drop"}, "is not a dataset id"),
        ({"ENGINE": "warehouse"}, "ENGINE=warehouse needs CLUSTERS_TABLE (--clusters-table)"),
        (
            {"ENGINE": "warehouse", "FEATURES_SOURCE": "gs://b/f.csv"},
            "ENGINE=warehouse needs FEATURES_SOURCE (--features) to be a bq://",
        ),
    ],
)
def test_bad_engine_settings_fail_at_start_up(values, words):
    with pytest.raises(InputError) as error:
        JobSettings.from_env(env(**values))
    assert words in str(error.value)


def test_the_edges_of_the_engine_settings_are_accepted():
    edges = JobSettings.from_env(
        env(MEMORY_MAX_ROWS="1", SAMPLE_ROWS="1000", MAXIMUM_BYTES_BILLED="10485760")
    )
    assert (edges.memory_max_rows, edges.sample_rows) == (1, 1000)
    assert JobSettings.from_env(env(SAMPLE_ROWS="1000000")).sample_rows == 1_000_000


# --- Words for people: FEATURE_LABELS and ROW_NOUN (issue 21) ---------------------------------


def test_feature_labels_name_columns_and_the_others_read_as_their_names():
    settings = JobSettings.from_env(
        env(FEATURE_LABELS='{"PCT_POVERTY": " households in poverty ", "HARDSHIP": "hardship"}')
    ).analysis
    assert settings.feature_labels == (
        ("PCT_POVERTY", "households in poverty"),
        ("HARDSHIP", "hardship"),
    )
    assert settings.label("PCT_POVERTY") == "households in poverty"
    assert settings.label("PER_CAPITA_INCOME") == "per capita income"
    assert settings.labels == {"PCT_POVERTY": "households in poverty", "HARDSHIP": "hardship"}
    assert AnalysisSettings().feature_labels == () and AnalysisSettings().labels == {}


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ('["a"]', "must be a JSON object of column to words, like"),
        ("{oops", "must be a JSON object of column to words, like"),
        ('{"PCT_POVERTY": "poverty", "HARDSHIP": ""}', 'the entry {"HARDSHIP": ""} must map'),
        ('{"PCT_POVERTY": 3}', 'the entry {"PCT_POVERTY": 3} must map'),
        ('{" ": "blank"}', 'the entry {" ": "blank"} must map'),
    ],
)
def test_a_bad_feature_label_names_its_entry(raw, words):
    with pytest.raises(InputError, match=re.escape(words)) as error:
        JobSettings.from_env(env(FEATURE_LABELS=raw))
    assert str(error.value).startswith("FEATURE_LABELS")
    assert "PCT_HOUSEHOLDS_IN_POVERTY" in str(error.value)  # the example shows the form


@pytest.mark.parametrize(
    "labels", [(("a", "x"), ("a", "y")), (("a", " "),)], ids=["twice", "no words"]
)
def test_labels_built_in_code_are_checked_too(labels):
    with pytest.raises(InputError, match="FEATURE_LABELS"):
        AnalysisSettings(feature_labels=labels)


def test_the_row_noun_is_row_noun_else_the_key_columns_words():
    assert AnalysisSettings().rows_called == "neighborhoods"
    assert AnalysisSettings().noun == "neighborhood"
    derived = AnalysisSettings(key_column="COMMUNITY_AREA_NAME")
    assert (derived.noun, derived.rows_called) == ("community area", "community areas")
    given = JobSettings.from_env(env(KEY_COLUMN="GEOID", ROW_NOUN=" census tract ")).analysis
    assert (given.noun, given.rows_called) == ("census tract", "census tracts")
    assert JobSettings.from_env(env(ROW_NOUN="")).analysis.row_noun is None


def test_a_blank_row_noun_built_in_code_is_refused():
    with pytest.raises(InputError, match=r"ROW_NOUN \(--row-noun\) is blank"):
        AnalysisSettings(row_noun="  ")


@pytest.mark.parametrize("raw", ["none", "NONE", " None "])
def test_population_column_none_means_the_table_has_no_population(raw):
    assert AnalysisSettings(population_column=raw).population_column is None
    environ = {"FEATURES_SOURCE": "t.csv", "ARTIFACTS_DEST": "out", "POPULATION_COLUMN": raw}
    assert JobSettings.from_env(environ).analysis.population_column is None
    # A column named otherwise stays a column.
    assert AnalysisSettings(population_column="nonempty").population_column == "nonempty"


def test_an_empty_population_column_says_none_is_the_way_to_have_none():
    with pytest.raises(InputError, match=r"POPULATION_COLUMN .* is empty: .* use none"):
        AnalysisSettings(population_column=" ")


def test_drop_keys_come_from_the_environment_as_a_json_list():
    environ = {"FEATURES_SOURCE": "t.csv", "ARTIFACTS_DEST": "out"}
    assert JobSettings.from_env(environ).analysis.drop_keys == ()
    given = JobSettings.from_env(environ | {"DROP_KEYS": '["CHICAGO", " Total "]'})
    assert given.analysis.drop_keys == ("CHICAGO", "Total")
    with pytest.raises(InputError, match=r"DROP_KEYS must be a JSON list .* like \[\"CITYWIDE\"\]"):
        JobSettings.from_env(environ | {"DROP_KEYS": "CHICAGO"})


def test_a_bad_direction_value_names_its_entry_and_the_accepted_values():
    from clustering.settings import parse_feature_directions

    raw = '{"PER_CAPITA_INCOME": "higher_is_better", "HARDSHIP_INDEX": "worse", "x": 1}'
    with pytest.raises(InputError) as caught:
        parse_feature_directions(raw, "FEATURE_DIRECTIONS")
    assert str(caught.value) == (
        'FEATURE_DIRECTIONS: the entry {"HARDSHIP_INDEX": "worse"} is not a direction: give '
        '"HARDSHIP_INDEX" one of "higher_is_worse" or "higher_is_better"'
    )


def test_only_the_directions_given_beyond_the_defaults_count_as_given():
    from clustering.settings import parse_feature_directions

    raw = '{"HARDSHIP_INDEX": "higher_is_worse", "crime_per_capita": "higher_is_worse"}'
    settings = AnalysisSettings(feature_directions=parse_feature_directions(raw, "X"))
    # crime_per_capita is a default with its default direction: not the user's to check.
    assert settings.given_directions == {"HARDSHIP_INDEX": "higher_is_worse"}
    flipped = parse_feature_directions('{"crime_per_capita": "higher_is_better"}', "X")
    assert AnalysisSettings(feature_directions=flipped).given_directions == {
        "crime_per_capita": "higher_is_better"
    }


def test_a_severity_feature_without_a_direction_waits_for_the_table():
    # Whether it is a typo of a column (a missing column) or a column without a direction is
    # only known with the table's columns (tests/test_table.py).
    assert AnalysisSettings(severity_feature="HARDSHIP").severity_feature == "HARDSHIP"


def test_the_warehouse_engine_refuses_drop_keys_it_would_not_apply():
    tables = {"features_source": "bq://p.d.features", "clusters_table": "bq://p.d.clusters"}
    assert JobSettings(**tables, engine="warehouse").engine == "warehouse"
    dropped = AnalysisSettings(drop_keys=("CHICAGO",))
    with pytest.raises(InputError, match=r"ENGINE=warehouse: .* does not apply DROP_KEYS"):
        JobSettings(**tables, engine="warehouse", analysis=dropped)
    assert JobSettings(**tables, engine="memory", analysis=dropped).engine == "memory"


# --- The settings' own checks, pinned here (issue 23) -----------------------------------------


def refused(make) -> str:
    with pytest.raises(InputError) as caught:
        make()
    return str(caught.value)


def test_the_clock_skew_and_the_cli_budget_are_the_documented_ones():
    assert MAX_CLOCK_SKEW_SECONDS == 1.0 and MIN_RUN_BUDGET_SECONDS == 10
    assert JobSettings().run_budget_seconds == 6 * 3600
    assert JobSettings(run_budget_seconds=10).run_budget_seconds == 10
    assert refused(lambda: JobSettings(run_budget_seconds=9)) == (
        "--time-budget is 9: give the run 10 seconds or more"
    )


def test_only_the_built_in_exclusion_list_counts_as_the_default():
    assert AnalysisSettings().default_exclusions
    assert not AnalysisSettings(exclude_neighborhoods=("Perkins",)).default_exclusions


def test_a_blank_key_column_and_a_key_that_is_the_population_are_refused():
    assert refused(lambda: AnalysisSettings(key_column="  ")) == (
        "KEY_COLUMN (--key-column) is empty: name the column of the features table"
    )
    assert refused(lambda: AnalysisSettings(key_column="area", population_column="area")) == (
        "KEY_COLUMN and POPULATION_COLUMN are both 'area': the names and the residents are two "
        "different columns"
    )


def test_the_table_changes_subscription_must_be_a_full_subscription_name():
    name = "projects/my-project/subscriptions/table-changes"
    assert JobSettings(table_changes_subscription=name).table_changes_subscription == name
    assert refused(lambda: JobSettings(table_changes_subscription="table-changes")) == (
        "TABLE_CHANGES_SUBSCRIPTION 'table-changes': write it as "
        "projects/PROJECT/subscriptions/NAME"
    )


def test_settle_seconds_may_be_zero_but_not_negative():
    assert JobSettings(settle_seconds=0).settle_seconds == 0
    assert refused(lambda: JobSettings(settle_seconds=-1)) == (
        "SETTLE_SECONDS (--settle-seconds) is -1: use 0 (no check) or more"
    )


def test_feature_directions_come_from_the_environment_over_the_defaults():
    settings = JobSettings.from_env(env(FEATURE_DIRECTIONS='{"rent": "higher_is_better"}'))
    assert settings.analysis.directions["rent"] == "higher_is_better"
    assert settings.analysis.given_directions == {"rent": "higher_is_better"}


@pytest.mark.parametrize("raw", ['["rent"]', '{" ": "higher_is_worse"}'])
def test_feature_directions_that_are_not_an_object_of_features_are_refused(raw):
    assert refused(lambda: parse_feature_directions(raw, "FEATURE_DIRECTIONS")) == (
        'FEATURE_DIRECTIONS must be a JSON object of feature to "higher_is_worse" or '
        f'"higher_is_better", like {{"median_income": "higher_is_better"}}; got {raw!r}'
    )


def test_bad_directions_and_labels_are_echoed_up_to_80_characters():
    raw = "x" * 79 + "yz"
    assert refused(lambda: parse_feature_directions(raw, "D")).endswith(f"got {raw[:80]!r}")
    assert refused(lambda: parse_feature_labels(raw, "L", "{}")).endswith(f"got {raw[:80]!r}")


def test_directions_built_in_code_name_the_wrong_word_or_the_feature_given_twice():
    assert refused(lambda: AnalysisSettings(feature_directions=(("a", "sideways"),))) == (
        "FEATURE_DIRECTIONS (--feature-directions) must give each feature once, as "
        '"higher_is_worse" or "higher_is_better"; got [\'sideways\']'
    )
    wrong_twice = (("a", "up"), ("b", "down"))
    assert refused(lambda: AnalysisSettings(feature_directions=wrong_twice)).endswith("['up']")
    twice = (("a", "higher_is_worse"), ("a", "higher_is_better"))
    assert refused(lambda: AnalysisSettings(feature_directions=twice)).endswith(
        "got a feature twice"
    )


def test_the_warehouse_engine_names_an_unset_features_source():
    assert refused(lambda: JobSettings(engine="warehouse", clusters_table="bq://p.d.c")) == (
        "ENGINE=warehouse needs FEATURES_SOURCE (--features) to be a bq://project.dataset.table, "
        "not unset: set it, or use ENGINE=auto or memory"
    )
