"""Another city's table with settings alone (issue 15): its own key and population columns,
features the seed notebook never had, a higher-is-better severity feature, a signed feature,
blanks and tiny populations, through the real CLI with flags and with the function's
environment variables only. The function served by functions-framework runs the same table
in tests/test_function_e2e.py (`-k city`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import (
    CITY_BLANK_POPULATION,
    CITY_DIRECTIONS,
    CITY_FEATURES,
    CITY_KEY,
    CITY_POPULATION,
    CITY_SETTINGS,
    CITY_SEVERITY,
    CITY_TINY,
    REPO,
    city_geojson,
    city_table,
)

# The settings, once as flags and once as the function's variables.
SETTINGS = CITY_SETTINGS
# Variables a caller's shell might hold that would change these runs.
OURS = {option for option in os.environ if option in SETTINGS or option.endswith("_TABLE")}


def flags(settings: dict[str, str]) -> list[str]:
    return [item for k, v in settings.items() for item in ("--" + k.lower().replace("_", "-"), v)]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m clustering ARGS` as a user runs it, with `env` added to a clean environment."""
    environ = {k: v for k, v in os.environ.items() if k not in OURS} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "clustering", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )


def clusters_of(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={CITY_KEY: str}, keep_default_na=False, na_values=[""])


def page_text(path: Path) -> str:
    html = re.sub(r'src="data:[^"]+"', "", path.read_text(encoding="utf-8"))
    html = re.sub(r"<style>.*?</style>", "", html, flags=re.DOTALL)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


class CityRun:
    """Two runs of the CLI with flags on the city table (the second after one area changed),
    with boundaries keyed by community_area and every output destination configured."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.table = city_table()
        self.features = root / "city.csv"
        self.table.to_csv(self.features, index=False)
        boundaries = root / "areas.geojson"
        boundaries.write_bytes(city_geojson(self.table[CITY_KEY]))
        self.out = root / "out"
        self.clusters = root / "clusters.csv"
        self.moves = root / "moves.csv"
        self.history = root / "runs.jsonl"
        common = [
            *("--out", str(self.out), "--clusters-table", str(self.clusters)),
            *("--transitions-table", str(self.moves), "--runs-table", str(self.history)),
            *("--boundaries", str(boundaries), *flags(SETTINGS)),
        ]
        self.first = cli("run", "--features", str(self.features), *common)
        self.first_table = clusters_of(self.clusters)
        # Area 02 takes on the profile of the most distressed area: it changes cohort.
        changed = self.table.set_index(CITY_KEY)
        worst = changed["median_income"].idxmin()
        changed.loc["Area 02", list(CITY_FEATURES)] = changed.loc[worst, list(CITY_FEATURES)]
        self.changed = root / "city-changed.csv"
        changed.reset_index()[self.table.columns].to_csv(self.changed, index=False)
        self.second = cli("run", "--features", str(self.changed), *common)

    def manifest(self) -> dict:
        return json.loads((self.out / "latest" / "run.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> CityRun:
    return CityRun(tmp_path_factory.mktemp("city"))


def test_the_cli_with_flags_clusters_another_citys_table_under_its_own_names(city):
    assert city.first.returncode == 0, city.first.stderr
    assert city.second.returncode == 0, city.second.stderr
    assert re.match(r"run \S+: 77 community areas; ", city.first.stdout), city.first.stdout
    table = city.first_table
    # Every input row, under the table's own columns in its own order, then the cluster columns.
    assert list(table.columns[: len(city.table.columns)]) == list(city.table.columns)
    assert "neighborhood" not in table.columns and "population" not in table.columns
    assert "community_area_shape" in table.columns  # boundaries matched by community_area
    assert table["community_area_shape"].str.startswith("POLYGON").all()
    assert sorted(table[CITY_KEY]) == sorted(city.table[CITY_KEY])
    pd.testing.assert_series_equal(
        table.set_index(CITY_KEY)["side"], city.table.set_index(CITY_KEY)["side"], check_like=True
    )
    # Tiny and blank populations are analysed apart; the named exclusion too.
    types = table.set_index(CITY_KEY)["excluded_type"]
    for name in (*CITY_TINY, *CITY_BLANK_POPULATION):
        assert types[name] == "Low Population (Park/Open Space)", name
    assert types["Area 77"] == "Institutional/Industrial"
    assert "warning: population" not in city.first.stderr  # the warning names total_pop
    assert f"{CITY_POPULATION} is blank in 1 rows" in city.first.stderr


def test_a_higher_is_better_severity_feature_names_the_richer_group_stable(city):
    rows = city.first_table[city.first_table["excluded_type"] == "Residential"]
    means = rows.groupby("top_cluster_label")[[CITY_SEVERITY, "poverty_rate"]].mean()
    assert means.loc["Stable", CITY_SEVERITY] > means.loc["Distressed", CITY_SEVERITY]
    assert means.loc["Stable", "poverty_rate"] < means.loc["Distressed", "poverty_rate"]
    # Names say better or worse by direction, and only higher or lower without one.
    names = " ".join(rows["cohort_name"].unique())
    assert re.search(r"\b(better|worse) (median income|poverty rate|degree share)", names), names
    assert "high median income" not in names and "low poverty rate" not in names


def test_the_signed_feature_is_described_in_standard_deviations_everywhere(city):
    manifest = city.manifest()
    measures = manifest["features"]["measures"]
    assert measures["crime_change_yoy"] == "sd"
    assert {measures[f] for f in CITY_FEATURES if f != "crime_change_yoy"} == {"index"}
    assert manifest["features"]["directions"]["crime_change_yoy"] is None
    assert manifest["features"]["directions"][CITY_SEVERITY] == "higher_is_better"
    for cohort in manifest["cohorts"]:
        assert "crime_change_yoy" not in cohort["index_scores"]  # no index score anywhere
        assert set(cohort["sd_scores"]) == set(manifest["features"]["used"])
    text = page_text(city.out / "latest" / "report.html")
    row = re.search(r"crime change yoy ([+-]?\d\.\d SD|0\.0 SD) (higher|lower|at the mean)", text)
    assert row, "the report gives the signed feature in SD, read higher/lower"
    assert re.search(r"median income \d+ (better|worse) \(higher is better\)", text)


def test_the_report_and_the_history_name_the_rows_as_the_table_does(city):
    text = page_text(city.out / "latest" / "report.html")
    assert "Community area cohorts" in text
    assert "77 community areas" in text
    assert "neighborhoods" not in text  # only the artifact names say neighborhood
    assert f"{CITY_POPULATION} below MIN_POPULATION" in text
    history = [json.loads(line) for line in city.history.read_text().splitlines()]
    assert [row["key_column"] for row in history] == [CITY_KEY, CITY_KEY]


def test_transitions_are_keyed_by_the_tables_key(city):
    moves = pd.read_csv(city.moves)
    assert moves.columns[0] == CITY_KEY and "neighborhood" not in moves.columns
    assert "Area 02" in set(moves[CITY_KEY])
    assert "community areas changed cohort since run" in city.second.stdout
    csv = pd.read_csv(city.out / "latest" / "neighborhood_cluster_transitions.csv")
    assert list(csv.columns) == list(moves.columns)


def test_the_cli_reads_the_functions_variables_and_a_flag_wins(city, tmp_path):
    out = tmp_path / "out"
    env = SETTINGS | {
        "FEATURES_SOURCE": str(city.features),
        "ARTIFACTS_DEST": str(out),
        "CLUSTERS_TABLE": str(tmp_path / "clusters.csv"),
    }
    only_env = cli("run", env=env)
    assert only_env.returncode == 0, only_env.stderr
    assert re.match(r"run \S+: 77 community areas; ", only_env.stdout)
    # The same table as the flags' first run, row for row (run_id and times aside); only the
    # shapes differ (that run had boundaries).
    ours = clusters_of(tmp_path / "clusters.csv").drop(columns=["run_id", "_clustered_at"])
    theirs = city.first_table.drop(columns=["run_id", "_clustered_at", "community_area_shape"])
    pd.testing.assert_frame_equal(ours, theirs)
    latest = json.loads((out / "latest" / "run.json").read_text())
    assert latest["settings"]["k_max"] == 4 and latest["diagnostics"]["k"] == [2, 3, 4]
    # A flag wins over its variable; the other variables still apply.
    wins = cli("run", "--k-max", "3", "--out", str(tmp_path / "wins"), "--quiet", env=env)
    assert wins.returncode == 0, wins.stderr
    latest = json.loads((tmp_path / "wins" / "latest" / "run.json").read_text())
    assert latest["settings"]["k_max"] == 3 and latest["diagnostics"]["k"] == [2, 3]
    assert latest["settings"]["key_column"] == CITY_KEY


def test_a_flag_overrides_a_bad_variable_and_a_bad_variable_alone_exits_2(city, tmp_path):
    env = SETTINGS | {"FEATURES_SOURCE": str(city.features), "ARTIFACTS_DEST": str(tmp_path)}
    bad = cli("run", "--dry-run", env=env | {"K_MAX": "many"})
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: K_MAX='many' is not an integer: set it to a whole number"
    )
    fixed = cli("run", "--dry-run", "--quiet", "--k-max", "4", env=env | {"K_MAX": "many"})
    assert fixed.returncode == 0, fixed.stderr


def test_the_default_features_on_another_table_are_one_error_listing_its_numeric_columns(city):
    keys = ("--key-column", CITY_KEY, "--population-column", CITY_POPULATION)
    result = cli("run", "--features", str(city.features), *keys, "--dry-run")
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "none of the default clustering features (the seed notebook's Baltimore" in line
    assert "set CLUSTERING_FEATURES (--clustering-features)" in line
    assert json.dumps(list(CITY_FEATURES)) in line  # its numeric columns, the text one left out
    assert "blank" not in line


def test_a_severity_feature_without_a_direction_is_a_settings_error(city):
    unknown = ("--severity-feature", "crime_change_yoy")
    result = cli("run", "--features", str(city.features), *flags(SETTINGS), *unknown, "--dry-run")
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: SEVERITY_FEATURE 'crime_change_yoy' has no direction")
    assert "FEATURE_DIRECTIONS (--feature-directions)" in line
    assert "Traceback" not in result.stderr


def test_the_baltimore_exclusion_list_on_another_table_is_one_note_not_a_warning(city, tmp_path):
    settings = {k: v for k, v in SETTINGS.items() if k != "EXCLUDE_NEIGHBORHOODS"}
    result = cli("run", "--features", str(city.features), "--out", str(tmp_path), *flags(settings))
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "note: " in line]
    assert len(notes) == 1 and "seed notebook's list of Baltimore names" in notes[0]
    assert "Inner Harbor" not in result.stderr  # not thirteen names
    assert not [line for line in result.stderr.splitlines() if "excluded name" in line]
    manifest = json.loads((tmp_path / "latest" / "run.json").read_text())
    assert manifest["notes"] == [notes[0].split("note: ", 1)[1]]
    assert not [w for w in manifest["warnings"] if "EXCLUDE_NEIGHBORHOODS" in w]


# --- A real city's shape (issue 21): upper-case names, a key ending in NAME, integers ----------

UPPER = {
    CITY_KEY: "COMMUNITY_AREA_NAME",
    CITY_POPULATION: "TOTAL_POP",
    **{f: f.upper() for f in CITY_FEATURES},
}


def upper_city() -> pd.DataFrame:
    """The city table under upper-case names, with whole-number columns written as integers:
    the population (one blank), the income and a count with a blank cell."""
    table = city_table().rename(columns=UPPER)
    table["HARDSHIP_INDEX"] = (table["POVERTY_RATE"].fillna(0.2) * 300).round().astype("Int64")
    table.loc[5, "HARDSHIP_INDEX"] = pd.NA
    table["MEDIAN_INCOME"] = table["MEDIAN_INCOME"].astype("int64")
    table["TOTAL_POP"] = table["TOTAL_POP"].astype("Int64")
    return table


@pytest.fixture(scope="module")
def upper(tmp_path_factory):
    root = tmp_path_factory.mktemp("upper")
    upper_city().to_csv(root / "city.csv", index=False)
    features = [UPPER[f] for f in CITY_FEATURES] + ["HARDSHIP_INDEX"]
    directions = {UPPER[f]: d for f, d in CITY_DIRECTIONS.items()} | {
        "HARDSHIP_INDEX": "higher_is_worse"
    }
    settings = {
        "KEY_COLUMN": "COMMUNITY_AREA_NAME",
        "POPULATION_COLUMN": "TOTAL_POP",
        "CLUSTERING_FEATURES": json.dumps(features),
        "SEVERITY_FEATURE": "MEDIAN_INCOME",
        "FEATURE_DIRECTIONS": json.dumps(directions),
        "FEATURE_LABELS": json.dumps({"DEGREE_SHARE": "college degrees"}),
        "EXCLUDE_NEIGHBORHOODS": json.dumps(["Area 77"]),
        "K_MAX": "4",
    }
    out, clusters = root / "out", root / "clusters.csv"
    run = cli(
        "run",
        *("--features", str(root / "city.csv"), "--out", str(out)),
        *("--clusters-table", str(clusters), *flags(settings)),
    )
    assert run.returncode == 0, run.stderr
    return run, out, clusters


def test_an_upper_case_table_reads_in_peoples_words(upper):
    run, out, clusters = upper
    assert re.match(r"run \S+: 77 community areas; ", run.stdout), run.stdout
    table = pd.read_csv(clusters, keep_default_na=False, na_values=[""])
    # The columns keep their names; the names and the page read in words.
    assert {"COMMUNITY_AREA_NAME", "TOTAL_POP", "MEDIAN_INCOME"} <= set(table.columns)
    names = " ".join(table.loc[table["excluded_type"] == "Residential", "cohort_name"].unique())
    assert not re.search(r"[A-Z]{2,}|_", names.replace("Stable", "").replace("Distressed", ""))
    assert re.search(r"\b(better|worse) (median income|poverty rate|college degrees)", names)
    text = page_text(out / "latest" / "report.html")
    assert "Community area cohorts" in text and "77 community areas" in text
    assert "college degrees (DEGREE_SHARE)" in text  # the facts name the column once
    # The facts list the features in words; warnings name the column a user would fix.
    used = text.split("Features used", 1)[1].split("Settings", 1)[0]
    assert "hardship index (HARDSHIP_INDEX)" in used and "HARDSHIP_INDEX " not in used
    assert "HARDSHIP_INDEX blank in 1 row (Area 06): filled with the median" in text
    assert "COMMUNITY AREA NAMEs" not in text and "community area names" not in text


def test_integer_columns_stay_integers_in_every_csv(upper):
    _, out, clusters = upper
    for path in (clusters, out / "latest" / "neighborhood_clusters.csv"):
        lines = path.read_text(encoding="utf-8").splitlines()
        header = lines[0].split(",")
        cells = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]
        for column in ("TOTAL_POP", "MEDIAN_INCOME", "HARDSHIP_INDEX"):
            values = [row[column] for row in cells]
            assert all(re.fullmatch(r"\d+", v) for v in values if v), (path.name, column, values)
            assert "" in values or column == "MEDIAN_INCOME"  # the blanks stay blank
        assert any(re.fullmatch(r"0\.\d+", row["POVERTY_RATE"]) for row in cells)  # floats stay


# A table shaped like a large city's published indicators by community area (issue 21):
# upper-case names, no population column, whole-number columns, and the citywide total row
# (the city's own name as its key) with a blank hardship index.
INDICATORS_KEY = "COMMUNITY_AREA_NAME"
INDICATORS_TOTAL = "CHICAGO"
INDICATORS = {
    "KEY_COLUMN": INDICATORS_KEY,
    "POPULATION_COLUMN": "none",
    "CLUSTERING_FEATURES": json.dumps(
        [
            "PERCENT_HOUSEHOLDS_BELOW_POVERTY",
            "PERCENT_AGED_16_UNEMPLOYED",
            "PER_CAPITA_INCOME",
            "HARDSHIP_INDEX",
        ]
    ),
    "SEVERITY_FEATURE": "HARDSHIP_INDEX",
    "FEATURE_DIRECTIONS": json.dumps(
        {
            "HARDSHIP_INDEX": "higher_is_worse",
            "PERCENT_HOUSEHOLDS_BELOW_POVERTY": "higher_is_worse",
            "PERCENT_AGED_16_UNEMPLOYED": "higher_is_worse",
            "PER_CAPITA_INCOME": "higher_is_better",
        }
    ),
    "EXCLUDE_NEIGHBORHOODS": "[]",
}


def indicators_table(rows: int = 77, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hardship = rng.integers(1, 99, rows)

    def share(base: float, slope: float, noise: float):
        return np.round(base + slope * hardship + rng.normal(0, noise, rows), 1)

    areas = pd.DataFrame(
        {
            INDICATORS_KEY: [f"AREA {i:02d}" for i in range(1, rows + 1)],
            "PERCENT_HOUSEHOLDS_BELOW_POVERTY": share(5, 0.4, 3),
            "PERCENT_AGED_16_UNEMPLOYED": share(4, 0.25, 2),
            "PER_CAPITA_INCOME": (60000 - 500 * hardship + rng.integers(0, 5000, rows)).astype(int),
            "HARDSHIP_INDEX": pd.array(hardship, dtype="Int64"),
        }
    )
    total = {
        INDICATORS_KEY: INDICATORS_TOTAL,
        "PERCENT_HOUSEHOLDS_BELOW_POVERTY": 19.7,
        "PERCENT_AGED_16_UNEMPLOYED": 12.9,
        "PER_CAPITA_INCOME": 28202,
        "HARDSHIP_INDEX": pd.NA,
    }
    return pd.concat([areas, pd.DataFrame([total])], ignore_index=True)


def run_indicators(root: Path, extra: dict[str, str] | None = None):
    """The indicators table through the CLI with the function's variables alone."""
    table = indicators_table()
    root.mkdir()
    features, out, clusters = root / "indicators.csv", root / "out", root / "clusters.csv"
    table.to_csv(features, index=False)
    env = {"FEATURES_SOURCE": str(features), "ARTIFACTS_DEST": str(out)} | INDICATORS
    env |= {"CLUSTERS_TABLE": str(clusters)} | (extra or {})
    result = cli("run", env=env)
    manifest = json.loads((out / "latest" / "run.json").read_text(encoding="utf-8"))
    page = page_text(out / "latest" / "report.html")
    csvs = [pd.read_csv(clusters, dtype={INDICATORS_KEY: str})]
    csvs += [pd.read_csv(p, dtype={INDICATORS_KEY: str}) for p in (out / "latest").glob("*.csv")]
    return table, result, manifest, page, csvs


def test_a_table_without_population_with_a_total_row_runs_warns_and_drops_it(tmp_path):
    table, result, manifest, page, csvs = run_indicators(tmp_path / "kept")
    assert result.returncode == 0, result.stderr
    median = np.median(table["HARDSHIP_INDEX"].dropna().to_numpy(dtype=float))
    warning = (
        f"HARDSHIP_INDEX blank in 1 row ({INDICATORS_TOTAL}): filled with the median {median:.6g}"
    )
    assert f"warning: {warning}" in result.stderr.splitlines()
    assert warning in manifest["warnings"] and warning in page
    # No population: every row is clustered, no Low Population group, and the report says so.
    assert manifest["input"]["rows_by_type"] == {"Residential": 78}
    assert manifest["settings"]["population_column"] is None
    assert "POPULATION_COLUMN=none" in page and "no Low Population group" in page
    assert INDICATORS_TOTAL in set(csvs[0][INDICATORS_KEY])

    dropped = {"DROP_KEYS": json.dumps([INDICATORS_TOTAL])}
    _, result, manifest, page, csvs = run_indicators(tmp_path / "dropped", dropped)
    assert result.returncode == 0, result.stderr
    assert manifest["input"]["rows"] == 77 and manifest["settings"]["drop_keys"] == ["CHICAGO"]
    note = f"out of the analysis and of every output: {INDICATORS_TOTAL}"
    assert [n for n in manifest["notes"] if note in n] and note in page
    assert "blank" not in " ".join(manifest["warnings"]) and "warning:" not in result.stderr
    for csv in csvs:
        if INDICATORS_KEY in csv:
            assert INDICATORS_TOTAL not in set(csv[INDICATORS_KEY])
            assert len(csv) <= 77
    # Out of the report's cohort lists too: the only mention is the note.
    assert page.count(INDICATORS_TOTAL) == 1


INCOM = {"PER_CAPITA_INCOM": "higher_is_better"}  # its last letter lost


@pytest.mark.parametrize(
    "change, hint",
    [
        (
            {"FEATURE_DIRECTIONS": json.dumps({"HARDSHIP_INDEX": "higher_is_worse"} | INCOM)},
            "has no column 'PER_CAPITA_INCOM' (did you mean 'PER_CAPITA_INCOME'?), which "
            "FEATURE_DIRECTIONS (--feature-directions) names",
        ),
        (
            {"SEVERITY_FEATURE": "HARDSHIP"},
            "has no column 'HARDSHIP' (did you mean 'HARDSHIP_INDEX'?), which SEVERITY_FEATURE "
            "(--severity-feature) names",
        ),
        (
            {"FEATURE_DIRECTIONS": json.dumps({"HARDSHIP_INDEX": "higher is worse"})},
            'FEATURE_DIRECTIONS: the entry {"HARDSHIP_INDEX": "higher is worse"} is not a '
            'direction: give "HARDSHIP_INDEX" one of "higher_is_worse" or "higher_is_better"',
        ),
    ],
    ids=["direction-key-typo", "severity-half-a-name", "direction-value"],
)
def test_each_typo_of_the_indicators_settings_exits_2_with_the_right_hint(tmp_path, change, hint):
    features = tmp_path / "indicators.csv"
    indicators_table().to_csv(features, index=False)
    env = {"FEATURES_SOURCE": str(features), "ARTIFACTS_DEST": str(tmp_path)} | INDICATORS
    result = cli("run", "--dry-run", env=env | change)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and hint in line, line
    assert "Traceback" not in result.stderr
