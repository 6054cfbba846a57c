"""report.html: what it shows, that it is self-contained and safe, and that a browser draws it."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from clustering.analysis.model import cluster
from clustering.analysis.sample import make_sample
from clustering.job import RunRequest, run_job
from clustering.outputs import report
from clustering.outputs.palette import CohortView
from clustering.settings import AnalysisSettings, JobSettings
from clustering.table import validate_features
from tests.helpers import REAL_FEATURES, REPO, png_colors, png_size, profiles_of, with_cohorts
from tests.test_geo import REAL_BOUNDARIES

ANALYSIS = AnalysisSettings(k_max=4)
FACTS = report.RunFacts(
    run_id="20261129T120000Z-abcdef12",
    started="2026-11-29 12:00:00 UTC",
    trigger="test",
    reason="unit",
    event_id=None,
    source="sample.csv",
    boundaries=None,
    rows=60,
    residential_rows=50,
    excluded_rows=10,
    features_used=("population",),
    features_missing=(),
    warnings=("a warning <b>kept as text</b>",),
    settings=(("K_MAX", "4"),),
)


class Page(HTMLParser):
    """Every tag with its attributes, and the text of <style> blocks."""

    def __init__(self, content: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.styles: list[str] = []
        self.text: list[str] = []
        self._in_style = False
        self.feed(content)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        (self.styles if self._in_style else self.text).append(data)

    def words(self) -> str:
        """The page's text with runs of whitespace as one space, as a reader sees it."""
        return " ".join(" ".join(self.text).split())


def assert_self_contained(content: str) -> None:
    page = Page(content)
    names = {tag for tag, _ in page.tags}
    assert not names & {"script", "link", "iframe", "object", "embed", "base", "meta http-equiv"}
    for tag, attrs in page.tags:
        for key in ("src", "href", "srcset", "action", "poster", "data"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith(("data:image/png;base64,", "#")), (tag, key, value[:60])
        assert not any(key.startswith("on") for key in attrs), (tag, attrs)  # no handlers
        assert "url(" not in attrs.get("style", "")
    css = "".join(page.styles) + " ".join(a.get("style", "") for _, a in page.tags)
    assert "@import" not in css and "url(" not in css
    assert not re.search(r"https?://", content)


def view_of(table: pd.DataFrame, features: list[str], transitions=None, previous=None):
    named = with_cohorts(table)
    return CohortView(named, profiles_of(named, features), transitions, previous)


@pytest.fixture(scope="module")
def sample_run():
    frame = validate_features(make_sample(60), ANALYSIS, "sample").frame
    result = cluster(frame, ANALYSIS)
    return result, view_of(result.table, list(result.features.used))


def test_the_page_names_every_cohort_with_its_size_stability_and_neighborhoods(sample_run):
    result, view = sample_run
    data = report.report_data(FACTS, view, {}, ("elbow_silhouette.png",))
    content = report.render(data).decode()
    text = Page(content).words()
    for label, members in view.table.groupby("cohort_name"):
        sub = int(members["sub_cluster"].iloc[0])
        shown = f"{sub} · {label}" if sub >= 0 else label
        assert shown in text
        assert all(name in text for name in members["neighborhood"])
    for cohort in data.cohorts:
        rows = view.table[view.table["sub_cluster"] == int(cohort.label.split(" · ")[0])]
        assert cohort.rows == len(rows)
        assert f"stability {cohort.stability:.2f}" in text
        # The features in people's words (the notebook's lower_snake names, with spaces).
        assert [f for f, _, _ in cohort.index] == [
            f.replace("_", " ") for f in result.features.used
        ]
    assert {c.label for c in data.excluded} == set(result.excluded["excluded_cluster"])
    assert all(c.why for c in data.excluded)  # what was excluded, and why
    assert "a warning <b>kept as text</b>" in text


def test_the_page_shows_the_transitions_since_the_previous_run(sample_run):
    result, _ = sample_run
    features = list(result.features.used)
    moved = pd.DataFrame(
        [
            {
                "neighborhood": "Moved Place",
                "previous_run_id": "old",
                "run_id": FACTS.run_id,
                "previous_top_cluster": 0,
                "previous_sub_cluster": 1.0,
                "previous_cohort_name": "Stable: before",
                "top_cluster": 1,
                "sub_cluster": 10,
                "cohort_name": "Distressed: after",
                "change": "moved",
                "previously_borderline": borderline,
            }
            for borderline in (True, False, None)
        ]
    )
    cases = {
        "No previous run": view_of(result.table, features),
        "No neighborhood changed": view_of(result.table, features, moved.iloc[:0], "old"),
        "3 neighborhoods changed since run old: 3 moved.": view_of(
            result.table, features, moved, "old"
        ),
    }
    for expected, view in cases.items():
        text = Page(report.render(report.report_data(FACTS, view, {}, ())).decode()).words()
        assert expected in text
    assert "1 · Stable: before" in text and "10 · Distressed: after" in text
    # Each move says whether the previous run saw it coming.
    assert "Of the 3 moves, 1 were expected" in text and "1 were surprises worth a look" in text
    assert "the previous run gave the others no margin" in text
    for said in ("yes: an expected move", "no: a surprise worth a look", "Distressed: after -"):
        assert said in text


def test_each_cohort_lists_its_borderline_neighborhoods_lowest_margin_first(sample_run):
    result, _ = sample_run
    table = result.table.copy()
    residential = table["excluded_type"] == "Residential"
    margins = pd.Series(0.5, index=table.index).where(residential)
    first = table.loc[residential, "sub_cluster"].iloc[0]
    members = table.index[residential & (table["sub_cluster"] == first)]
    # Seven borderline members of one cohort, one of them below 0; the rest are clear.
    lows = [0.09, -0.2, 0.05, 0.0, 0.08, 0.01, 0.07][: len(members)]
    margins[members[: len(lows)]] = lows
    table = table.assign(
        fit_margin=margins,
        runner_up_cluster=pd.array([99] * len(table), dtype="Int64"),
        runner_up_name="Elsewhere",
    )
    data = report.report_data(FACTS, view_of(table, list(result.features.used)), {}, ())
    listed = {c.label: c for c in data.cohorts if c.borderline}
    assert len(listed) == 1
    (entry,) = listed.values()
    assert entry.borderline_count == len(lows)
    assert [b.margin for b in entry.borderline] == sorted(lows)[: report.BORDERLINE_SHOWN]
    assert entry.borderline[0].runner_up == "99 · Elsewhere"
    names = {b.key for b in entry.borderline}
    assert names <= set(table.loc[members, "neighborhood"])
    text = Page(report.render(data).decode()).words()
    assert f"Borderline ({len(lows)} with a fit margin below 0.1; the 5 lowest)" in text
    assert "-0.200" in text and "No borderline neighborhood" in text


def test_names_are_escaped_and_cannot_forge_an_image(tmp_path):
    """A neighborhood named like markup stays text, and one written like the image placeholder
    is not replaced by an image."""
    table = make_sample(40)
    hostile = ['<script>alert("x")</script> Park', 'Q src="png:elbow_silhouette.png" Hill']
    table.loc[[0, 1], "neighborhood"] = hostile
    features = tmp_path / "features.csv"
    table.to_csv(features, index=False)
    settings = JobSettings(
        features_source=str(features), artifacts_dest=str(tmp_path / "out"), analysis=ANALYSIS
    )
    done = run_job(settings, RunRequest(trigger="test"))
    content = (tmp_path / "out" / "latest" / "report.html").read_text(encoding="utf-8")
    page = Page(content)
    assert "script" not in {tag for tag, _ in page.tags}
    text = page.words()
    assert all(name in text for name in hostile)
    assert "&lt;script&gt;" in content
    assert len(re.findall(r'src="data:image/png', content)) == 3  # the three charts, no more
    assert_self_contained(content)
    assert done.status == "succeeded"


def test_embed_inlines_each_image_as_a_data_uri():
    images = {"a.png": b"\x89PNG one", "b.png": b"\x89PNG two"}
    page = b'<img src="png:a.png"><img src="png:b.png"><p>src=&#34;png:a.png&#34;</p>'
    embedded = report.embed(page, images)
    uris = re.findall(rb'src="data:image/png;base64,([^"]+)"', embedded)
    assert [base64.b64decode(u) for u in uris] == [images["a.png"], images["b.png"]]
    assert b"src=&#34;png:a.png&#34;" in embedded  # escaped text is left alone


# --- a real run: the map, the size, and a browser --------------------------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    settings = JobSettings(
        features_source=str(REAL_FEATURES),
        artifacts_dest=str(root / "out"),
        boundaries_source=str(REAL_BOUNDARIES),
        analysis=ANALYSIS,
    )
    messages: list[str] = []
    done = run_job(settings, RunRequest(trigger="test", reason="report"), messages.append)
    return root / "out", done, messages


def test_the_report_is_published_with_the_run_and_listed_in_run_json(real_run):
    out, done, messages = real_run
    folder = out / "runs" / done.run_id
    page = (folder / "report.html").read_bytes()
    assert (out / "latest" / "report.html").read_bytes() == page
    manifest = json.loads((folder / "run.json").read_text())
    assert manifest["outputs"]["files"][-2:] == ["report.html", "run.json"]
    assert manifest["outputs"]["report"] == str(folder / "report.html")
    assert f"report: {out / 'latest' / 'report.html'}" in messages
    assert len(page) < 3 * 1024 * 1024
    content = page.decode()
    assert_self_contained(content)
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', content)
    names = ["cluster_map.png", "pca_clusters.png", "cluster_heatmap.png", "elbow_silhouette.png"]
    assert [base64.b64decode(e) for e in embedded] == [(folder / n).read_bytes() for n in names]
    assert 'src="png:' not in content
    assert "@media print" in content


def chromium_flags() -> list[str]:
    """The offline flags of make/chromium.mk, the one place they are written."""
    text = (REPO / "make" / "chromium.mk").read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.startswith("CHROMIUM_FLAGS :="))
    return line.split(":=", 1)[1].split()


def test_headless_chromium_draws_the_report(real_run, tmp_path):
    browser = shutil.which("chromium")
    assert browser, "Debian's chromium is missing: run `make chromium` (make/chromium.mk)"
    out, _, _ = real_run
    shot = tmp_path / "report.png"
    width, height = 1280, 2400
    completed = subprocess.run(
        [
            browser,
            *chromium_flags(),
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--window-size={width},{height}",
            f"--screenshot={shot}",
            (out / "latest" / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), completed.stderr[-2000:]
    content = shot.read_bytes()
    assert png_size(content) == (width, height)
    colors = png_colors(content)
    assert len(colors) > 200  # text, swatches and the map: not a blank page
    table = pd.read_csv(out / "latest" / "neighborhood_clusters.csv")
    swatches = {
        c.color for c in report.report_data(FACTS, view_of(table, ["population"]), {}, ()).cohorts
    }
    assert swatches <= colors  # the at-a-glance swatches are painted in the palette's colours
    Path(shot).unlink()


def test_long_cohorts_and_transitions_are_cut_at_a_few_hundred_names(sample_run, monkeypatch):
    # A 400,000-row run listed every name; the page lists MAX_LISTED per cohort and points on.
    assert 100 <= report.MAX_LISTED <= 500
    _, view = sample_run
    monkeypatch.setattr(report, "MAX_LISTED", 3)
    moved = view.table.head(5).assign(change="moved", previous_run_id="old", run_id="new")
    moved = moved.assign(
        previous_sub_cluster=0, previous_cohort_name="x", previously_borderline=None
    )
    view = CohortView(view.table, view.profiles, moved, "old")
    facts = dataclasses.replace(FACTS, clusters_table="bq://p.d.clusters")
    data = report.report_data(facts, view, (), ())
    for entry in data.cohorts + data.excluded:
        assert len(entry.members) == min(3, entry.rows)
        assert entry.more == entry.rows - len(entry.members)
    assert len(data.transitions) == 3 and data.transitions_more == 2
    text = Page(report.render(data).decode()).words()
    biggest = max(data.cohorts, key=lambda c: c.rows)
    assert (
        f"... and {biggest.rows - 3} more: see neighborhood_clusters.csv and bq://p.d.clusters"
        in text
    )
    assert "5 neighborhoods changed since run old (the first 3 are listed" in text


def test_the_page_says_whether_there_is_a_population_column(sample_run):
    _, view = sample_run
    images = ("elbow_silhouette.png",)

    def words(facts) -> str:
        return Page(report.render(report.report_data(facts, view, {}, images)).decode()).words()

    with_one = words(FACTS)
    assert "Population population: rows below MIN_POPULATION (or blank) are analysed" in with_one
    without = words(dataclasses.replace(FACTS, population_column=None))
    assert (
        "Population none (POPULATION_COLUMN=none): every row is clustered unless excluded by "
        "name; there is no Low Population group"
    ) in without
    assert "POPULATION_COLUMN=none" not in with_one
