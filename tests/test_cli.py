"""The command line: every bad input exits 2 with one `error:` line and publishes nothing.

A few cases run the real entry point (`python -m clustering`) in a subprocess, to prove the exit
code and the absence of a traceback end to end; the many bad-input cases call `cli.main` in
process, which is what that entry point runs, to keep the suite fast.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clustering.adapters.local import read_table
from clustering.analysis.sample import make_sample
from clustering.cli import build_parser, main, settings_from_args
from clustering.naming import ARTIFACTS
from clustering.options import (
    OPTIONS,
    TABLE_BEGIN,
    TABLE_END,
    settings_table,
    with_settings_table,
)
from clustering.settings import DEFAULT_CLUSTERING_FEATURES, DEFAULT_EXCLUDE_NEIGHBORHOODS
from tests.helpers import FILLED, doc, real_table

REPO = Path(__file__).resolve().parents[1]
ROWS = 40
SAMPLE = make_sample(ROWS)
FEATURES = [c for c in DEFAULT_CLUSTERING_FEATURES if c != "population"]
# K up to 4 keeps the good runs short; nothing here depends on the K range.
FAST = ("--k-max", "4")
PROGRESS = re.compile(r"^(\[\s*\d+\.\ds\] \S|warning: \S)")
UNSTABLE = "has bootstrap stability"
CSV_TRANSITIONS = "neighborhood_cluster_transitions.csv"


def cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m clustering ARGS` from the repository root, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "clustering", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


def run_main(*args: str) -> int:
    """`cli.main` in process; argparse's own exits become return codes too."""
    try:
        return main(list(args))
    except SystemExit as leaving:
        return int(leaving.code)


def tree(folder: Path) -> dict[str, str]:
    """Every file (hashed) and folder under `folder`, hidden ones included."""
    return {
        str(path.relative_to(folder)): (
            "<folder>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        )
        for path in sorted(folder.rglob("*"))
    }


def one_error_line(stderr: str) -> str:
    """The single `error:` line of `stderr`; anything before it must be progress lines."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert lines, "nothing on stderr"
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    assert all(PROGRESS.match(line) for line in lines[:-1]), stderr
    return errors[0]


@dataclass
class Published:
    """One good run of the real CLI into `out`; later tests copy `out` and try to break it."""

    root: Path
    features: Path = field(init=False)
    out: Path = field(init=False)
    result: subprocess.CompletedProcess = field(init=False)

    def __post_init__(self) -> None:
        self.features = self.root / "features.csv"
        SAMPLE.to_csv(self.features, index=False)
        self.out = self.root / "out"
        self.result = cli("run", "--features", str(self.features), "--out", str(self.out), *FAST)

    def copy_out(self, root: Path) -> Path:
        out = root / "out"
        shutil.copytree(self.out, out)
        return out


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Published:
    return Published(tmp_path_factory.mktemp("published"))


# --- a good run --------------------------------------------------------------------------------


def test_a_good_run_publishes_the_seven_artifacts(published):
    result = published.result
    assert result.returncode == 0, result.stderr
    runs = list((published.out / "runs").iterdir())
    assert len(runs) == 1
    folder = runs[0]
    run_id = folder.name
    assert sorted(p.name for p in folder.iterdir()) == sorted(ARTIFACTS)
    assert tree(published.out / "latest") == tree(folder)
    manifest = json.loads((folder / "run.json").read_text())
    assert sorted(manifest["outputs"]["files"]) == sorted(ARTIFACTS)
    assert manifest["run_id"] == run_id
    assert manifest["trigger"] == "cli"
    assert manifest["input"]["source"] == str(published.features)
    assert manifest["input"]["rows"] == ROWS
    assert manifest["settings"]["k_max"] == 4
    assert manifest["settings"]["min_population"] == 100
    # The summary goes to stdout, in one line.
    assert result.stdout.splitlines() == [result.stdout.strip()]
    assert result.stdout.startswith(f"run {run_id}: {ROWS} neighborhoods; ")
    assert f"artifacts in {published.out}/latest/" in result.stdout


def test_progress_lines_go_to_stderr(published):
    lines = published.result.stderr.splitlines()
    assert all(PROGRESS.match(line) for line in lines), published.result.stderr
    text = "\n".join(lines)
    assert f"reading features from {published.features}" in text
    assert f"validating {ROWS} rows" in text
    assert "publishing run " in text
    # The 40-row sample may hold a cohort the bootstrap finds shaky, and has a few blanks that
    # are filled: the only warnings allowed.
    expected = [line for line in lines if UNSTABLE not in line and FILLED not in line]
    assert "warning" not in "\n".join(expected)
    assert [line for line in lines if line.startswith("warning: ") and FILLED in line]
    assert "error" not in text


def test_quiet_prints_no_progress_and_dry_run_publishes_nothing(published, tmp_path, capsys):
    out = tmp_path / "out"
    code = run_main(
        "run",
        "--features",
        str(published.features),
        "--out",
        str(out),
        "--quiet",
        "--dry-run",
        *FAST,
    )
    captured = capsys.readouterr()
    assert code == 0
    said = captured.err.splitlines()
    assert [line for line in said if UNSTABLE not in line and FILLED not in line] == []
    assert captured.out.startswith("run ")
    assert "nothing published (dry run)" in captured.out
    assert not out.exists()


def test_warnings_do_not_fail_the_run(published, tmp_path):
    # Two optional feature columns are missing and one is blank throughout: warnings, exit 0.
    out = published.copy_out(tmp_path)
    before = tree(out)
    features = tmp_path / "features.csv"
    SAMPLE.drop(columns=["permit_recent_5yr", "crime_yoy_change"]).assign(med_age=np.nan).to_csv(
        features, index=False
    )
    result = cli("run", "--features", str(features), "--out", str(out), "--dry-run", *FAST)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    # Only progress and warning lines: no Python warning or traceback leaks through.
    assert all(PROGRESS.match(line) for line in lines), result.stderr
    warnings = [line for line in lines if "warning: " in line]
    assert any("permit_recent_5yr" in w and "crime_yoy_change" in w for w in warnings), lines
    assert any("med_age" in w for w in warnings), lines
    assert "nothing published (dry run)" in result.stdout
    assert tree(out) == before


# --- bad input: the real entry point -----------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("garbage", ["cannot be read"]),
        ("negative", ["population is negative", "data row 3"]),
        ("settings", ["K_MIN=5", "K_MAX=3"]),
    ],
)
def test_the_entry_point_exits_2_with_one_line(published, tmp_path, case, words):
    out = published.copy_out(tmp_path)
    before = tree(out)
    features = tmp_path / "features.csv"
    extra: tuple[str, ...] = ()
    if case == "garbage":
        features.write_bytes(bytes(range(256)) * 16)
    elif case == "negative":
        SAMPLE.assign(population=SAMPLE["population"].where(SAMPLE.index != 2, -4)).to_csv(
            features, index=False
        )
    else:
        shutil.copy(published.features, features)
        extra = ("--k-min", "5", "--k-max", "3")
    result = cli("run", "--features", str(features), "--out", str(out), *extra)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    if case != "settings":
        assert str(features) in line
    for word in words:
        assert word in line
    assert result.stdout == ""
    assert tree(out) == before


# --- bad input: every case of the issue --------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A bad features file: how to write it, extra flags, and words its error must contain."""

    id: str
    write: Callable[[Path], Path]
    words: tuple[str, ...]
    flags: tuple[str, ...] = ()


def csv(frame: pd.DataFrame, name: str = "features.csv") -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / name
        frame.to_csv(path, index=False)
        return path

    return write


def parquet(frame: pd.DataFrame) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / "features.parquet"
        frame.to_parquet(path, index=False)
        return path

    return write


def raw(name: str, content: bytes) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content)
        return path

    return write


def folder_named(path: Path) -> Path:
    path.mkdir()
    return path


def changed(row: int, column: str, value) -> pd.DataFrame:
    frame = SAMPLE.astype({column: object})
    frame.loc[row, column] = value
    return frame


def name(row: int) -> str:
    return SAMPLE.loc[row, "neighborhood"]


def only_residential(rows: list[int]) -> pd.DataFrame:
    """Everyone under MIN_POPULATION except `rows` (which must not be excluded areas)."""
    assert not SAMPLE.loc[rows, "neighborhood"].isin(DEFAULT_EXCLUDE_NEIGHBORHOODS).any()
    population = np.full(ROWS, 50)
    population[rows] = 5_000
    return SAMPLE.assign(population=population)


RESIDENTIAL_ROWS = [
    i for i in range(ROWS) if SAMPLE.loc[i, "neighborhood"] not in DEFAULT_EXCLUDE_NEIGHBORHOODS
]
LATIN1 = changed(4, "neighborhood", "Café Row").to_csv(index=False).encode("latin-1")

BAD_INPUTS = [
    Bad("missing file", lambda folder: folder / "no-such-file.csv", ("no such file",)),
    Bad("empty file", raw("features.csv", b""), ("empty",)),
    Bad("binary garbage", raw("features.csv", bytes(range(256)) * 16), ("cannot be read",)),
    Bad("not utf-8", raw("features.csv", LATIN1), ("cannot be read",)),
    Bad(
        "not parquet",
        raw("features.parquet", b"PAR1 not a parquet file"),
        ("cannot be read", "parquet"),
    ),
    Bad("unknown format", raw("features.xlsx", b"PK\x03\x04"), ("unknown format", ".csv")),
    Bad("a folder", lambda folder: folder_named(folder / "dir.csv"), ("folder",)),
    Bad(
        "header only csv",
        raw("features.csv", ",".join(SAMPLE.columns).encode() + b"\n"),
        ("no rows",),
    ),
    Bad("header only parquet", parquet(SAMPLE.iloc[:0]), ("no rows",)),
    Bad(
        "no neighborhood column",
        csv(SAMPLE.drop(columns="neighborhood")),
        ("'neighborhood' column",),
    ),
    Bad("no population column", csv(SAMPLE.drop(columns="population")), ("'population' column",)),
    Bad(
        "renamed neighborhood column",
        csv(SAMPLE.rename(columns={"neighborhood": "name"})),
        ("'neighborhood' column", "set KEY_COLUMN (--key-column)"),
    ),
    Bad("blank name", csv(changed(5, "neighborhood", "")), ("blank", "data row 6")),
    Bad("blank name spaces", csv(changed(5, "neighborhood", "   ")), ("blank", "data row 6")),
    Bad(
        "duplicate name",
        csv(changed(6, "neighborhood", name(3))),
        (repr(name(3)), "more than once", "data rows 4, 7"),
    ),
    Bad(
        "text in a feature",
        csv(changed(7, "med_age", "forty")),
        ("'med_age'", "'forty'", "data row 8", name(7)),
    ),
    Bad(
        "NA in a feature",
        csv(changed(7, "crime_per_capita", "NA")),
        ("'crime_per_capita'", "'NA'", "data row 8"),
    ),
    Bad(
        "inf in a csv feature",
        csv(changed(8, "crime_per_capita", np.inf)),
        ("'crime_per_capita'", "inf", "data row 9"),
    ),
    Bad(
        "-inf in a parquet feature",
        parquet(
            SAMPLE.assign(
                owner_occupancy_rate=SAMPLE["owner_occupancy_rate"].where(
                    SAMPLE.index != 9, -np.inf
                )
            )
        ),
        ("'owner_occupancy_rate'", "-inf", "data row 10"),
    ),
    Bad(
        "text in population",
        csv(changed(2, "population", "many")),
        ("'population'", "'many'", "data row 3"),
    ),
    Bad(
        "negative population",
        csv(changed(2, "population", -1)),
        ("population is negative", "data row 3", name(2)),
    ),
    Bad("every feature blank", csv(SAMPLE.assign(**{f: np.nan for f in FEATURES})), ("blank",)),
    Bad(
        "every configured feature blank",
        csv(SAMPLE.assign(med_age=np.nan, crime_per_capita=np.nan)),
        ("blank", "med_age"),
        ("--clustering-features", '["med_age", "crime_per_capita"]'),
    ),
    Bad(
        "severity feature blank",
        csv(SAMPLE.assign(crime_per_capita=np.nan)),
        ("crime_per_capita", "SEVERITY_FEATURE"),
    ),
    Bad(
        "severity feature missing",
        csv(SAMPLE.drop(columns="crime_per_capita")),
        ("crime_per_capita", "SEVERITY_FEATURE"),
    ),
    Bad(
        "too few residential rows",
        csv(only_residential(RESIDENTIAL_ROWS[:2])),
        ("residential rows", "MIN_POPULATION"),
    ),
    Bad("no residential rows", csv(only_residential([])), ("residential rows", "MIN_POPULATION")),
    Bad(
        "a line break in a name",
        csv(
            changed(7, "med_age", "x").assign(
                neighborhood=lambda f: f["neighborhood"].where(f.index != 7, "Old\nTown")
            )
        ),
        ("'med_age'", "data row 8"),
    ),
]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[bad.id for bad in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_publishes_nothing(published, tmp_path, capsys, bad):
    out = published.copy_out(tmp_path)
    before = tree(out)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    features = bad.write(inputs)
    code = run_main(
        "run", "--features", str(features), "--out", str(out), "--quiet", *FAST, *bad.flags
    )
    captured = capsys.readouterr()
    assert code == 2, captured.err
    line = one_error_line(captured.err)
    # --quiet: the error alone, after any warning about the input (those print when it is read).
    assert all(w.startswith("warning: ") for w in captured.err.splitlines()[:-1]), captured.err
    assert str(features) in line, f"the error does not name the file: {line}"
    for word in bad.words:
        assert word.lower() in line.lower(), f"{word!r} not in {line!r}"
    # What, where, and how to fix: the line goes on after the problem with a hint.
    assert ": " in line.removeprefix("error: ")
    assert captured.out == ""
    assert tree(out) == before


# --- bad settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--k-min", "5", "--k-max", "3"], ["K_MIN=5", "K_MAX=3"]),
        (["--sub-k-min", "1"], ["SUB_K_MIN=1"]),
        (["--min-population", "-1"], ["MIN_POPULATION", "-1"]),
        (["--random-state", "-3"], ["RANDOM_STATE"]),
        (["--silhouette-sample-size", "5"], ["SILHOUETTE_SAMPLE_SIZE"]),
        (["--exclude-neighborhoods", "not json"], ["--exclude-neighborhoods", "JSON list"]),
        (["--exclude-neighborhoods", '{"a": 1}'], ["--exclude-neighborhoods"]),
        (["--clustering-features", '["med_age", 3]'], ["--clustering-features", "JSON list"]),
        (["--clustering-features", '["med_age", "med_age"]'], ["twice"]),
        (["--clustering-features", "[]"], ["empty"]),
        (["--severity-feature", ""], ["SEVERITY_FEATURE", "empty"]),
        (["--clusters-table", "bq://project.dataset"], ["CLUSTERS_TABLE"]),
        (["--runs-table", "bq://p.d.t; DROP TABLE p.d.t"], ["RUNS_TABLE"]),
        (["--transitions-table", "gs://bucket/transitions.csv"], ["TRANSITIONS_TABLE"]),
        (["--transitions-table", "moves.txt"], ["TRANSITIONS_TABLE", ".jsonl"]),
        (["--label-overrides", "not json"], ["--label-overrides", "JSON object"]),
        (["--label-overrides", '{"eleven": "Core"}'], ["--label-overrides", "cohort id"]),
        (["--label-overrides", '{"11": ""}'], ["--label-overrides"]),
        (["--label-overrides", '{"11": "Core", "12": "Core"}'], ["'Core'", "unique"]),
        (["--bogus"], ["unrecognized arguments: --bogus"]),
        (["--k-min", "two"], ["--k-min", "invalid int value: 'two'"]),
        (["--k-max"], ["--k-max", "expected one argument"]),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) and "--" in value[0] else None,
)
def test_bad_settings_exit_2_with_one_line(published, tmp_path, capsys, flags, words):
    out = published.copy_out(tmp_path)
    before = tree(out)
    code = run_main(
        "run", "--features", str(published.features), "--out", str(out), "--quiet", *flags
    )
    captured = capsys.readouterr()
    assert code == 2, captured.err
    line = one_error_line(captured.err)
    assert len(captured.err.splitlines()) == 1
    for word in words:
        assert word in line
    assert tree(out) == before


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["run", "--help-me"], ["sample"]])
def test_usage_errors_exit_2_with_one_line(capsys, argv):
    assert run_main(*argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.endswith("--help)")


def test_flags_reach_the_settings():
    args = build_parser().parse_args(
        [
            "run",
            "--features",
            "f.csv",
            "--out",
            "o",
            "--min-population",
            "50",
            "--k-min",
            "3",
            "--k-max",
            "6",
            "--sub-k-max",
            "4",
            "--random-state",
            "7",
            "--exclude-neighborhoods",
            '["Inner Harbor"]',
            "--clustering-features",
            '["population", "crime_per_capita"]',
            "--clusters-table",
            "c.csv",
            "--runs-table",
            "r.jsonl",
            "--transitions-table",
            "t.csv",
            "--label-overrides",
            '{"12": "Rowhouse core", "3": " Leafy north "}',
        ]
    )
    settings = settings_from_args(args)
    assert settings.transitions_table == "t.csv"
    assert settings.label_overrides == ((3, "Leafy north"), (12, "Rowhouse core"))
    assert (settings.features_source, settings.artifacts_dest) == ("f.csv", "o")
    assert (settings.clusters_table, settings.runs_table) == ("c.csv", "r.jsonl")
    analysis = settings.analysis
    assert (analysis.min_population, analysis.k_min, analysis.k_max) == (50, 3, 6)
    assert (analysis.sub_k_max, analysis.random_state) == (4, 7)
    assert analysis.exclude_neighborhoods == ("Inner Harbor",)
    assert analysis.clustering_features == ("population", "crime_per_capita")


def test_defaults_are_the_built_in_sample_and_the_notebooks_settings():
    settings = settings_from_args(build_parser().parse_args(["run"]))
    assert settings.features_source is None
    assert settings.artifacts_dest == "output"
    assert settings.analysis.exclude_neighborhoods == DEFAULT_EXCLUDE_NEIGHBORHOODS
    assert settings.analysis.clustering_features == DEFAULT_CLUSTERING_FEATURES


def test_an_empty_exclusion_list_excludes_nothing():
    # `[]` is a valid JSON list and means "exclude no neighborhood", as EXCLUDE_NEIGHBORHOODS=[]
    # does for the function; it must not silently mean the 13 default names.
    args = build_parser().parse_args(["run", "--exclude-neighborhoods", "[]"])
    assert settings_from_args(args).analysis.exclude_neighborhoods == ()


# --- the sample command ------------------------------------------------------------------------


def test_sample_writes_the_synthetic_table(tmp_path):
    path = tmp_path / "x.csv"
    result = cli("sample", "--rows", "50", "--out", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote 50 rows to {path}"
    assert result.stderr == ""
    pd.testing.assert_frame_equal(read_table(str(path)), make_sample(50), check_dtype=False)


def test_sample_writes_parquet_and_honours_the_seed(tmp_path, capsys):
    path = tmp_path / "x.parquet"
    assert run_main("sample", "--rows", "30", "--random-state", "5", "--out", str(path)) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(path), make_sample(30, random_state=5))


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--rows", "5", "--out", "x.csv"], ["--rows is 5", "at least 20"]),
        (["--rows", "50", "--out", "x.txt"], ["x.txt", ".csv or .parquet"]),
        (["--rows", "many", "--out", "x.csv"], ["--rows", "invalid int"]),
    ],
)
def test_bad_sample_requests_exit_2_with_one_line(tmp_path, capsys, monkeypatch, flags, words):
    monkeypatch.chdir(tmp_path)  # relative paths land in tmp_path, never in the repository
    assert run_main("sample", *flags) == 2
    line = one_error_line(capsys.readouterr().err)
    for word in words:
        assert word in line
    assert list(tmp_path.iterdir()) == []


def test_boundaries_add_a_cluster_map(published, tmp_path, capsys):
    out = published.copy_out(tmp_path)
    ring = [[-76.6, 39.3], [-76.59, 39.3], [-76.59, 39.31], [-76.6, 39.3]]
    geojson = tmp_path / "bounds.geojson"
    geojson.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"neighborhood": name},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                    for name in SAMPLE["neighborhood"][:-3]
                ],
            }
        )
    )
    features = str(published.features)
    args = ("run", "--features", features, "--out", str(out), "--boundaries", str(geojson))
    assert run_main(*args, *FAST) == 0
    latest = out / "latest"
    assert (latest / "cluster_map.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((latest / "run.json").read_text())
    # A second run into `out`: the transitions since the first one come along.
    files = manifest["outputs"]["files"]
    assert files[-1] == "run.json"
    assert sorted(files) == sorted([*ARTIFACTS, "cluster_map.png", CSV_TRANSITIONS])
    assert "3 neighborhoods have no boundary" in capsys.readouterr().err


def test_bad_boundaries_exit_2_and_publish_nothing(published, tmp_path, capsys):
    out = published.copy_out(tmp_path)
    before = tree(out)
    geojson = tmp_path / "bounds.geojson"
    geojson.write_text("{not json")
    args = ("run", "--features", str(published.features), "--out", str(out))
    assert run_main(*args, "--boundaries", str(geojson), *FAST) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "bounds.geojson" in line and "GeoJSON" in line
    assert run_main(*args, "--boundaries", str(tmp_path / "missing.geojson"), *FAST) == 2
    assert "missing.geojson" in one_error_line(capsys.readouterr().err)
    assert tree(out) == before


# --- settings that cannot silently mislead --------------------------------------------------


def test_an_exclusion_typo_is_reported_when_the_input_is_read(published, tmp_path):
    out = tmp_path / "out"
    typo = SAMPLE.loc[3, "neighborhood"][:-1]  # one letter short: matches no row
    args = ("run", "--features", str(published.features), "--out", str(out), *FAST)
    result = cli(*args, "--exclude-neighborhoods", json.dumps(["Inner Harbor", typo]))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    (warning,) = [line for line in lines if line.startswith("warning: ") and FILLED not in line]
    assert f"{typo!r} (did you mean {SAMPLE.loc[3, 'neighborhood']!r}?)" in warning
    assert "EXCLUDE_NEIGHBORHOODS replaces the default list, EXCLUDE_ALSO extends it" in warning
    # Printed as soon as the table is read: before clustering, long before publishing.
    assert lines.index(warning) < next(i for i, line in enumerate(lines) if "clustering" in line)
    manifest = json.loads((out / "latest" / "run.json").read_text())
    assert manifest["input"]["unmatched_exclusions"] == [
        {"name": typo, "did_you_mean": SAMPLE.loc[3, "neighborhood"]}
    ]
    assert warning.removeprefix("warning: ") in manifest["warnings"]


def test_exclude_also_extends_the_default_list(published, tmp_path, capsys):
    extra = RESIDENTIAL_ROWS[0]
    out = tmp_path / "out"
    args = ("run", "--features", str(published.features), "--out", str(out), "--quiet", *FAST)
    assert run_main(*args, "--exclude-also", json.dumps([name(extra)])) == 0
    said = capsys.readouterr().err.splitlines()
    assert not [line for line in said if "warning" in line and FILLED not in line]
    table = pd.read_csv(out / "latest" / "neighborhood_clusters.csv")
    institutional = set(
        table.loc[table["excluded_type"] == "Institutional/Industrial", "neighborhood"]
    )
    listed = set(DEFAULT_EXCLUDE_NEIGHBORHOODS) & set(SAMPLE["neighborhood"])
    assert institutional == listed | {name(extra)}
    manifest = json.loads((out / "latest" / "run.json").read_text())
    assert manifest["settings"]["exclude_also"] == [name(extra)]
    assert manifest["input"]["unmatched_exclusions"] == []


def test_a_feature_typo_exits_2_with_a_did_you_mean(published, tmp_path, capsys):
    out = published.copy_out(tmp_path)
    before = tree(out)
    features = json.dumps(["population", "crime_per_captia", "med_age"])
    args = ("run", "--features", str(published.features), "--out", str(out), "--quiet")
    assert run_main(*args, "--clustering-features", features, *FAST) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no column 'crime_per_captia' (did you mean 'crime_per_capita'?)" in line
    assert "--clustering-features" in line
    assert tree(out) == before


def test_a_semicolon_separated_file_runs_like_a_comma_one(published, tmp_path, capsys):
    features = tmp_path / "features.csv"
    SAMPLE.to_csv(features, sep=";", decimal=",", index=False)
    args = ("run", "--features", str(features), "--out", str(tmp_path / "out"), *FAST)
    assert run_main(*args, "--quiet") == 0
    # Nothing to say about the file itself: only the warnings the comma file gets too.
    warned = capsys.readouterr().err.splitlines()
    assert warned == [w for w in published.result.stderr.splitlines() if w.startswith("warning")]
    ours = pd.read_csv(tmp_path / "out" / "latest" / "neighborhood_clusters.csv")
    theirs = pd.read_csv(published.out / "latest" / "neighborhood_clusters.csv")
    columns = ["neighborhood", "top_cluster", "sub_cluster", "excluded_type"]
    pd.testing.assert_frame_equal(ours[columns], theirs[columns])


def test_the_k_range_is_labelled_a_diagnostic(published):
    run_json = json.loads((published.out / "latest" / "run.json").read_text())
    diagnostics = run_json["diagnostics"]
    assert diagnostics["top_split_k"] == 2
    assert "diagnostic only" in diagnostics["note"]
    best = diagnostics["best_k"]
    assert f"K diagnostic: best silhouette at K={best} (the top split stays K=2)" in (
        published.result.stderr
    )
    run_help = subcommand_help("run")
    for flag in ("--k-min", "--k-max"):
        assert "diagnostic" in run_help[flag] and "top split is always K=2" in run_help[flag]


# --- every flag explains itself -----------------------------------------------------------------


def subcommand_help(command: str) -> dict[str, str]:
    """Each option of a subcommand -> its help as `--help` prints it (defaults expanded)."""
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    sub = commands.choices[command]
    formatter = sub._get_formatter()
    return {
        action.option_strings[0] if action.option_strings else action.dest: " ".join(
            formatter._expand_help(action).split()
        )
        if action.help
        else ""
        for action in sub._actions
        if action.dest != "help"
    }


@pytest.mark.parametrize("command", ["run", "assign", "sample", "settings-table", "send-event"])
def test_every_option_of_every_subcommand_has_help(command):
    for option, text in subcommand_help(command).items():
        assert text, f"{command} {option} has no help"
        assert "\n" not in text


def test_every_setting_flag_shows_its_default_and_its_environment_variable():
    run_help = subcommand_help("run")
    flags = [o for o in OPTIONS if o.flag]
    assert {
        "--k-min",
        "--min-population",
        "--sub-k-max",
        "--severity-feature",
        "--random-state",
        "--exclude-also",
    } <= {o.flag for o in flags}
    for option in flags:
        text = run_help[option.flag]
        if option.env:
            assert f"(default: {option.default_text}; function env {option.env}" in text, text
        else:  # a CLI-only setting
            assert text.endswith(f"(default: {option.default_text})"), text
    assert run_help["--time-budget"].endswith("(default: 21600 (6 hours))")
    assert "(default: 10; function env K_MAX)" in run_help["--k-max"]
    assert "(default: 0)" in subcommand_help("sample")["--random-state"]


def test_an_unknown_flag_points_at_the_subcommands_help_with_a_guess(capsys):
    assert run_main("run", "--kmax", "3") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "unrecognized arguments: --kmax 3" in line
    assert "did you mean --k-max?" in line
    assert line.endswith("(see python -m clustering run --help)")


def test_the_docs_settings_table_is_the_registrys(capsys):
    assert run_main("settings-table") == 0
    printed = capsys.readouterr().out
    assert printed.strip() == settings_table()
    page = doc("configuration.md")
    assert with_settings_table(page) == page, "run `make docs-settings`"
    for option in OPTIONS:
        if option.env:
            assert f"| `{option.env}` |" in page


def test_settings_table_rewrites_a_page_in_place(tmp_path, capsys):
    page = tmp_path / "configuration.md"
    page.write_text(f"# x\n\n{TABLE_BEGIN}\nold\n{TABLE_END}\n\nafter\n", encoding="utf-8")
    assert run_main("settings-table", "--page", str(page)) == 0
    assert page.read_text(encoding="utf-8") == (
        f"# x\n\n{TABLE_BEGIN}\n{settings_table()}\n{TABLE_END}\n\nafter\n"
    )
    page.write_text("no markers\n", encoding="utf-8")
    assert run_main("settings-table", "--page", str(page)) == 2
    assert "markers" in one_error_line(capsys.readouterr().err)
    assert run_main("settings-table", "--page", str(tmp_path / "missing.md")) == 2
    assert "no such file" in one_error_line(capsys.readouterr().err)


def test_a_truncated_table_exits_2_unless_forced(tmp_path, capsys):
    out, features = tmp_path / "out", tmp_path / "features.csv"
    SAMPLE.to_csv(features, index=False)
    assert run_main("run", "--features", str(features), "--out", str(out), "--quiet", *FAST) == 0
    before = tree(out)
    SAMPLE.head(len(SAMPLE) // 3).to_csv(features, index=False)
    capsys.readouterr()

    code = run_main("run", "--features", str(features), "--out", str(out), "--quiet", *FAST)

    (line,) = capsys.readouterr().err.splitlines()
    assert code == 2 and line.startswith("error: ") and "MIN_ROWS_RATIO=0.5" in line
    assert f"of the {len(SAMPLE)} rows of the last published run" in line and "--force" in line
    assert tree(out) == before
    forced = ("run", "--features", str(features), "--out", str(out), "--quiet", "--force")
    assert run_main(*forced, *FAST) == 0


# --- cohorts across runs -----------------------------------------------------------------------


def test_reruns_keep_ids_and_names_and_report_new_cohorts_and_moves(tmp_path):
    features = tmp_path / "features.csv"
    real_table().to_csv(features, index=False)
    out, moves = tmp_path / "out", tmp_path / "transitions.csv"
    common = ("run", "--features", str(features), "--out", str(out), "--quiet")

    def run(*flags: str) -> tuple[pd.DataFrame, dict, str]:
        result = cli(*common, "--transitions-table", str(moves), *flags)
        assert result.returncode == 0, result.stderr
        manifest = json.loads((out / "latest" / "run.json").read_text())
        return pd.read_csv(out / "latest" / "neighborhood_clusters.csv"), manifest, result.stdout

    first, _, _ = run()
    names = first.set_index("neighborhood")[["sub_cluster", "cohort_name", "cohort_stability"]]
    # An identical re-run: same ids, names and stability; nothing moved.
    again, manifest, stdout = run()
    pd.testing.assert_frame_equal(again.set_index("neighborhood")[list(names.columns)], names)
    assert "0 neighborhoods changed cohort since run" in stdout
    assert manifest["transitions"]["moved"] == 0 and not moves.exists()
    # A fourth Stable and Distressed sub-cluster forced: new ids, moves listed and appended.
    more, manifest, stdout = run("--sub-k-min", "4", "--sub-k-max", "4")
    new_ids = sorted(n["current"] for n in manifest["identity"]["new"])
    assert len(new_ids) == 2 and not set(new_ids) & set(names["sub_cluster"])
    changed = more.set_index("neighborhood")["sub_cluster"] != names["sub_cluster"]
    listed = pd.read_csv(out / "latest" / "neighborhood_cluster_transitions.csv")
    assert listed["neighborhood"].tolist() == sorted(changed[changed].index)
    assert pd.read_csv(moves)["neighborhood"].tolist() == listed["neighborhood"].tolist()
    assert f"{int(changed.sum())} neighborhoods changed cohort" in stdout
    # Back to the defaults with a name override: the two new cohorts vanish, the rest return
    # to their ids and the override wins over the generated name.
    target = int(names.loc[names["sub_cluster"] >= 0, "sub_cluster"].iloc[0])
    back, manifest, _ = run("--label-overrides", json.dumps({str(target): "Our cohort"}))
    assert sorted(v["previous"] for v in manifest["identity"]["vanished"]) == new_ids
    back = back.set_index("neighborhood")
    assert (back["sub_cluster"] == names["sub_cluster"]).all()
    assert set(back.loc[back["sub_cluster"] == target, "cohort_name"]) == {"Our cohort"}


# --- a long run: the time budget and the run lock's heartbeat, on the emulators ----------------
#
# A run that outlasts 120 s per job and 600 s in all, scaled down so the test takes seconds: the
# client default a wait would otherwise get (budget.DEFAULT_RETRY_SECONDS, 120 s) becomes 1 s,
# the staleness at which a delivery of the function takes a lock over (600 s) 2 s, and one
# BigQuery job of the run (the scoring query) takes 3 s. The job's slowness is the one stand-in
# here: the emulator's job is real and finishes at once, and `SlowJob` only makes its result
# wait 3 s, as a job 3 s long would (no emulator runs a query for ten minutes on demand).

SLOW_SECONDS = 3.0
STALE_SECONDS = 2.0


class SlowJob:
    """A real BigQuery job of the emulator whose result takes SLOW_SECONDS; meanwhile a
    delivery of the function tries to take the run lock over as stale (`contender`)."""

    def __init__(self, job, contender: Callable[[], str], after: Callable[[], None]) -> None:
        self._job, self._contender, self._after = job, contender, after

    def __getattr__(self, name):
        return getattr(self._job, name)

    def result(self, retry=None, timeout=None):
        from concurrent.futures import TimeoutError as FutureTimeout

        if timeout is not None and timeout < SLOW_SECONDS:
            time.sleep(timeout)
            raise FutureTimeout(f"not done in {timeout:.1f} s")
        time.sleep(SLOW_SECONDS)
        self._contender()
        self._after()
        return self._job.result(retry=retry, timeout=timeout)


@dataclass
class LongRun:
    code: int
    err: str
    contended: list[str]
    bucket: object
    dataset: str


@pytest.fixture
def long_run(gcs_emulator, bigquery_emulator, monkeypatch, capsys):
    """Runs `python -m clustering run` (in process) through the warehouse engine with one slow
    job; returns what happened."""
    from datetime import UTC, datetime

    from clustering.adapters import bigquery as bq_adapter
    from clustering.adapters import budget, claims
    from clustering.adapters.gcs import GcsStore
    from tests import emulators

    monkeypatch.setenv(bq_adapter.EMULATOR_ENV, bigquery_emulator.endpoint)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    monkeypatch.setattr(budget, "DEFAULT_RETRY_SECONDS", 1.0)
    bq = emulators.bigquery_client(bigquery_emulator)
    dataset = f"{bigquery_emulator.project}.long_{uuid.uuid4().hex[:8]}"
    bq.create_dataset(dataset)
    bq.load_table_from_dataframe(make_sample(2_000, random_state=5), f"{dataset}.features").result()
    bucket = emulators.storage_client(gcs_emulator).create_bucket(f"long-{uuid.uuid4().hex[:8]}")
    out = f"gs://{bucket.name}/artifacts"
    contended: list[str] = []

    def contender() -> str:
        now = datetime.now(UTC)
        other = claims.Claim(run_id="function-run", event_id="e-1", claimed_at=now.isoformat())
        outcome, _, _ = claims.claim(GcsStore(out), "e-1", other, now, STALE_SECONDS)
        contended.append(outcome)
        return outcome

    # The run's budget on a clock the test can move on: `jump` seconds pass during the slow job.
    offset = [0.0]
    lasting = budget.Budget.lasting.__func__
    monkeypatch.setattr(
        budget.Budget,
        "lasting",
        classmethod(
            lambda cls, s, clock=None: lasting(cls, s, lambda: time.monotonic() + offset[0])
        ),
    )
    real_wait = bq_adapter.wait
    jump = [0.0]

    def wait(job, what):
        after = lambda: offset.__setitem__(0, offset[0] + jump[0])  # noqa: E731
        real_wait(SlowJob(job, contender, after) if what == "score" else job, what)

    monkeypatch.setattr(bq_adapter, "wait", wait)

    def run(*flags: str, jump_seconds: float = 0.0) -> LongRun:
        jump[0] = jump_seconds
        code = run_main(
            "run",
            "--features",
            f"bq://{dataset}.features",
            "--clusters-table",
            f"bq://{dataset}.clusters",
            "--out",
            out,
            "--engine",
            "warehouse",
            "--sample-rows",
            "1500",
            # The table was loaded a moment ago: settling is not what these tests are about.
            "--settle-seconds",
            "0",
            "--quiet",
            *flags,
        )
        return LongRun(code, capsys.readouterr().err, contended, bucket, dataset)

    yield run
    bq.delete_dataset(dataset, delete_contents=True, not_found_ok=True)


def published_nothing(run: LongRun) -> bool:
    from clustering.adapters import claims

    names = {b.name for b in run.bucket.client.list_blobs(run.bucket)}
    lock = f"artifacts/claims/{claims.LOCK_KEY}"
    return not any("/latest/" in n for n in names) and not any(n.startswith(lock) for n in names)


@pytest.mark.e2e
def test_a_run_longer_than_a_jobs_default_wait_and_the_locks_staleness_completes(
    long_run, monkeypatch
):
    from clustering.adapters import claims

    monkeypatch.setattr(claims, "HEARTBEAT_SECONDS", 0.3)
    run = long_run()
    assert run.code == 0, run.err
    # The slow job was waited on past the 1 s default, and the lock was never stale meanwhile.
    assert run.contended == ["busy"]
    names = {b.name for b in run.bucket.client.list_blobs(run.bucket)}
    assert "artifacts/latest/run.json" in names
    assert not any(n.startswith(f"artifacts/claims/{claims.LOCK_KEY}") for n in names)


@pytest.mark.e2e
def test_without_the_heartbeat_the_long_run_loses_its_lock_in_one_line(long_run, monkeypatch):
    from clustering.adapters import claims

    monkeypatch.setattr(claims, "HEARTBEAT_SECONDS", 3600.0)
    run = long_run()
    assert run.contended == ["claimed"]  # the function's delivery took the stale lock over
    assert run.code == 1, run.err
    assert "lost the run lock" in one_error_line(run.err)
    names = {b.name for b in run.bucket.client.list_blobs(run.bucket)}
    assert not any("/latest/" in n for n in names)


@pytest.mark.e2e
def test_a_run_out_of_its_time_budget_stops_in_one_line_and_publishes_nothing(
    long_run, monkeypatch
):
    from clustering.adapters import claims

    monkeypatch.setattr(claims, "HEARTBEAT_SECONDS", 0.3)
    # The scoring job ends an hour into a ten-minute budget: the next step is never started.
    run = long_run("--time-budget", "600", jump_seconds=3600.0)
    assert run.code == 1, run.err
    line = one_error_line(run.err)
    assert "out of time before" in line and "the run stops without publishing more" in line, line
    assert run.contended == ["busy"]
    assert published_nothing(run), [b.name for b in run.bucket.client.list_blobs(run.bucket)]
