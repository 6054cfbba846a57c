"""The README's and docs/'s figures, commands and links are checked against the code and the
files, so they cannot go stale."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from clustering.analysis.prepare import INSTITUTIONAL, LOW_POPULATION, RESIDENTIAL, row_types
from clustering.analysis.sample import SAMPLE_ROWS, make_sample
from clustering.naming import PNG_ELBOW, PNG_HEATMAP, PNG_PCA
from clustering.settings import (
    DEFAULT_CLUSTERING_FEATURES,
    DEFAULT_EXCLUDE_NEIGHBORHOODS,
    AnalysisSettings,
)
from tests.emulators import bigquery_client
from tests.helpers import png_size
from tests.test_layers import FORBIDDEN, LAYERS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# The README and every page under docs/, by path: the README is the door, docs/ the rooms.
PAGES = {
    path: path.read_text(encoding="utf-8")
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
}


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
    shown = {}
    for page, text in PAGES.items():
        for picture in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text):
            shown.setdefault(page, []).append((page.parent / picture).resolve())
    assert len(shown[ROOT / "README.md"]) == 1, "the README shows one picture"
    pictures = {path for paths in shown.values() for path in paths}
    assert {path.name for path in pictures} == {PNG_ELBOW, PNG_PCA, PNG_HEATMAP}
    for path in pictures:
        assert path.parent == ROOT / "docs", path
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        assert path.stat().st_size < 64 * 1024, f"{path}: run `make docs-charts`"
        width, height = png_size(path.read_bytes())
        assert width <= 900 and height <= 600, path


def test_every_cloud_command_names_its_project():
    commands = [
        line.strip()
        for text in PAGES.values()
        for line in text.splitlines()
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


# --- Links: every relative link of README.md and docs/*.md reaches a file and a heading -------


def prose(text: str) -> str:
    """`text` without its fenced code blocks and inline code, where a `#` or `[x](y)` is code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(text: str) -> set[str]:
    """The `#...` anchors GitHub gives the page's headings: lower case, punctuation dropped,
    spaces as hyphens, a repeated heading numbered -1, -2..."""
    found: set[str] = set()
    unfenced = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    for heading in re.findall(r"^#{1,6} (.+)$", unfenced, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def links(text: str) -> list[str]:
    """The targets of the page's Markdown links and pictures, web addresses left out."""
    targets = re.findall(r"\]\(([^)\s]+)\)", prose(text))
    return [target for target in targets if not re.match(r"[a-z]+:", target)]


def test_every_relative_link_reaches_a_file_and_a_heading():
    checked = 0
    for page, text in PAGES.items():
        for target in links(text):
            path, _, anchor = target.partition("#")
            goal = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            assert goal.exists(), f"{where}: no such file"
            if anchor:
                assert goal.suffix == ".md", f"{where}: an anchor into a file that is not a page"
                assert anchor in anchors(goal.read_text(encoding="utf-8")), f"{where}: no heading"
            checked += 1
    assert checked >= 30


def test_the_link_checks_catch_a_missing_file_and_a_missing_heading():
    page = "# Title\n\n## What `make test` checks\n\n```sh\n# a comment\n```\n\n## Title\n"
    assert anchors(page) == {"title", "what-make-test-checks", "title-1"}
    text = "[a](docs/x.md#y), `[code](z.md)`, ![p](p.png) and [web](https://example.com)"
    assert links(text) == ["docs/x.md#y", "p.png"]


def test_the_readme_links_every_page_under_docs():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(README)}
    assert set((ROOT / "docs").glob("*.md")) <= linked


def test_the_readme_draws_the_layers_the_layer_test_enforces():
    flat = " ".join(README.split())
    found = re.search(r"From the bottom up: (.+?)\. A layer may import", flat)
    assert found, "the README's layer picture names the layers from the bottom up"
    names = [name for name, _ in LAYERS]
    assert found.group(1).split(" -> ") == [*names[:-1], "cli/main.py"]
    for package in FORBIDDEN["analysis"]:
        assert f"`{package}" in flat, package


@pytest.mark.e2e
def test_the_walkthroughs_loader_takes_any_tables_schema_from_the_file(
    bigquery_emulator, gcs_emulator, tmp_path
):
    # The loader of docs/development.md, run as written (only the endpoints and the names
    # moved to this session's emulators) on a table unlike the seed's: upper-case names,
    # 77 rows, whole numbers with a blank (issue 21: it hard-coded the seed's two columns).
    page = PAGES[ROOT / "docs" / "development.md"]
    section = page.split("### Against the emulators", 1)[1]
    loader = section.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    features = tmp_path / "city.csv"
    rows = [f"Area {i:02d},{1000 + i},{'' if i == 5 else i * 3},{i / 100}" for i in range(77)]
    features.write_text(
        "COMMUNITY_AREA_NAME,TOTAL_POP,HARDSHIP_INDEX,PCT_POVERTY\n" + "\n".join(rows) + "\n"
    )
    dataset, bucket = f"walk_{uuid.uuid4().hex[:8]}", f"walk-{uuid.uuid4().hex[:8]}"
    for old, new in (
        ("http://127.0.0.1:9050", bigquery_emulator.endpoint),
        ("http://127.0.0.1:4443", gcs_emulator.endpoint),
        ("test-project", bigquery_emulator.project),
        ('"analytics"', f'"{dataset}"'),
        (".analytics.", f".{dataset}."),
        ('"artifacts"', f'"{bucket}"'),
        ("output/features.csv", str(features)),
    ):
        assert old in loader, old
        loader = loader.replace(old, new)
    done = subprocess.run(
        [sys.executable, "-c", loader], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    table = bigquery_client(bigquery_emulator).get_table(
        f"{bigquery_emulator.project}.{dataset}.neighborhood_features"
    )
    assert table.num_rows == 77
    assert [(f.name, f.field_type) for f in table.schema] == [
        ("COMMUNITY_AREA_NAME", "STRING"),
        ("TOTAL_POP", "INTEGER"),
        ("HARDSHIP_INDEX", "INTEGER"),
        ("PCT_POVERTY", "FLOAT"),
    ]


def test_the_walkthrough_says_what_settle_seconds_does_locally_and_how_to_pass_it():
    from clustering.options import DEFAULTS

    section = PAGES[ROOT / "docs" / "development.md"].split("### Against the emulators", 1)[1]
    section = " ".join(section.split("## What `make test` checks offline", 1)[0].split())
    assert "The first event after a load answers `HTTP 500`, `run_retry`" in section
    assert f"`SETTLE_SECONDS` ({DEFAULTS['settle_seconds']} seconds by default)" in section
    assert "`SETTLE_SECONDS=0` (no check)" in section and "`--settle-seconds 0`" in section
