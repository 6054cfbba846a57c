"""The README's figures and commands are checked against the code, so they cannot go stale."""

from __future__ import annotations

import re
from pathlib import Path

from clustering.analysis.prepare import INSTITUTIONAL, LOW_POPULATION, RESIDENTIAL, row_types
from clustering.analysis.sample import SAMPLE_ROWS, make_sample
from clustering.settings import (
    DEFAULT_CLUSTERING_FEATURES,
    DEFAULT_EXCLUDE_NEIGHBORHOODS,
    AnalysisSettings,
)
from tests.helpers import png_size

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def number(pattern: str) -> int:
    """The number the README states where `pattern` (with one `(\\d+)`) matches, once."""
    found = re.findall(pattern, " ".join(README.split()))
    assert len(found) == 1, f"{pattern!r} matches {len(found)} times in README.md"
    return int(found[0])


def test_the_samples_figures_are_the_samples():
    sample = make_sample()
    types = row_types(sample, AnalysisSettings()).value_counts()
    assert number(r"The built-in sample is synthetic.*?: (\d+) neighborhoods") == SAMPLE_ROWS
    assert number(r"neighborhoods with all (\d+) features") == len(DEFAULT_CLUSTERING_FEATURES)
    assert number(r"(\d+) rows carry the notebook's excluded names") == types[INSTITUTIONAL]
    assert types[INSTITUTIONAL] == len(DEFAULT_EXCLUDE_NEIGHBORHOODS)
    assert number(r"and (\d+) other rows have under 100 residents") == types[LOW_POPULATION]
    assert number(r"so (\d+) rows are clustered as residential") == types[RESIDENTIAL]


def test_the_chart_pictures_exist_and_are_small():
    pictures = re.findall(r"!\[[^\]]*\]\((docs/[^)]+\.png)\)", README)
    assert len(pictures) == 3
    for picture in pictures:
        path = ROOT / picture
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
        assert path.stat().st_size < 64 * 1024, f"{picture}: run `make docs-charts`"
        width, height = png_size(path.read_bytes())
        assert width <= 900 and height <= 600, picture


def test_every_cloud_command_names_its_project():
    commands = [
        line.strip()
        for line in README.splitlines()
        if re.match(r"\s*(gcloud|bq) [-a-z]", line)
        and not re.match(r"\s*gcloud (info|components|auth|billing) ", line)
    ]
    assert len(commands) >= 10
    for command in commands:
        assert "--project" in command or command.startswith(
            "gcloud projects add-iam-policy-binding my-project"
        ), command


def test_the_prerequisites_name_the_versions_the_code_needs():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'requires-python = ">=3.11"' in pyproject
    assert "Python 3.11 or later" in README
    assert "Java 17" in README
