"""report.html: one self-contained page per run, readable offline and printable.

The page is rendered by a chart worker while the other charts are drawn (Jinja2 with
autoescaping, so a row named `<script>` stays text); each image is a placeholder,
`src="png:<artifact name>"`, that `embed` replaces by a data: URI once the PNGs are in. The
placeholder cannot be forged by a name in the data: autoescaping turns its quote into `&#34;`.
Nothing in the page asks for anything outside it: no scripts, no links, no web fonts.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clustering.analysis.assign import BORDERLINE_MARGIN
from clustering.analysis.model import ExcludedGroup
from clustering.analysis.prepare import INSTITUTIONAL, LOW_POPULATION
from clustering.naming import CSV_CLUSTERS, PNG_ELBOW, PNG_HEATMAP, PNG_MAP, PNG_PCA, readable
from clustering.outputs.palette import Cell, CohortView, cell, cohort_labels
from clustering.settings import HIGHER_IS_BETTER

PLACEHOLDER = re.compile(rb'src="png:([A-Za-z0-9_.-]+)"')
# Names listed per cohort, and changes listed, at most: a page for 400,000 rows would weigh
# megabytes; the rest is in the CSVs and tables, which the page points to.
MAX_LISTED = 300
# Captions, in the order the page shows the pictures.
CAPTIONS = {
    PNG_MAP: "Where the cohorts are",
    PNG_PCA: "The residential rows on their first two principal components",
    PNG_HEATMAP: "What sets each cohort apart: better or worse than the residential mean "
    "(index: 100 = the mean; SD for signed features)",
    PNG_ELBOW: "K diagnostics (the top split is always K=2; this range is a diagnostic)",
}
# Borderline neighborhoods listed per cohort, lowest margin first.
BORDERLINE_SHOWN = 5
WHY_EXCLUDED = {
    INSTITUTIONAL: "listed in EXCLUDE_NEIGHBORHOODS or EXCLUDE_ALSO: institutional or "
    "industrial areas whose per-capita figures mislead",
    LOW_POPULATION: "{population} below MIN_POPULATION (or blank): parks and open space, too "
    "few residents for per-capita figures",
}


@dataclass(frozen=True)
class RunFacts:
    """When, why and from what a run happened, as the report's header states it."""

    run_id: str
    started: str
    trigger: str
    reason: str | None
    event_id: str | None
    source: str
    boundaries: str | None
    rows: int
    residential_rows: int
    excluded_rows: int
    features_used: tuple[str, ...]
    features_missing: tuple[str, ...]
    warnings: tuple[str, ...]
    settings: tuple[tuple[str, str], ...]
    notes: tuple[str, ...] = ()
    population_column: str | None = "population"  # None: POPULATION_COLUMN=none
    clusters_table: str | None = None
    # The warehouse engine's runs: the pictures and lists come from a sample, which this says
    # ("drawn from a sample of 200,000 of 8,000,000 rows"), and the transitions listed are the
    # first few of `changes`.
    sample: str | None = None
    changes: int | None = None


# With a sample, each cohort lists this many of its sampled rows.
LISTED_WHEN_SAMPLED = 30


@dataclass(frozen=True)
class Borderline:
    """A row near the edge of its cohort: its key, fit_margin and runner-up cohort."""

    key: str
    margin: float
    runner_up: str


@dataclass(frozen=True)
class CohortEntry:
    """One cohort as the report lists it: its cells (feature, cell, direction words), its
    first MAX_LISTED members by name and how many more there are."""

    label: str
    color: str
    hatched: bool
    group: str
    rows: int
    stability: float | None
    index: tuple[tuple[str, Cell, str], ...]
    members: tuple[str, ...]
    more: int
    why: str
    borderline: tuple[Borderline, ...] = ()
    borderline_count: int = 0


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows except the images' bytes.

    rows_called: what the rows are ("neighborhoods"), row_called one of them; key_column
        their column.
    labels: feature -> the words the page shows for it (the profiles' labels).
    more_in: where the members and changes the page does not list are.
    transitions_more: changes not listed.
    """

    facts: RunFacts
    cohorts: tuple[CohortEntry, ...]
    excluded: tuple[CohortEntry, ...]
    features: tuple[str, ...]
    transitions: tuple[dict, ...] | None
    previous_run_id: str | None
    images: tuple[tuple[str, str], ...]
    rows_called: str = "neighborhoods"
    key_column: str = "neighborhood"
    more_in: str = CSV_CLUSTERS
    transitions_more: int = 0
    borderline_margin: float = BORDERLINE_MARGIN
    row_called: str = "neighborhood"
    labels: Mapping[str, str] = field(default_factory=dict)

    def label(self, feature: str) -> str:
        return self.labels.get(feature) or readable(feature)

    @property
    def title(self) -> str:
        return f"{self.row_called.capitalize()} cohorts"


def report_data(
    facts: RunFacts,
    view: CohortView,
    groups: tuple[ExcludedGroup, ...],
    images: tuple[str, ...],
) -> ReportData:
    """The page's content from the run's facts and cohorts; `groups` (the excluded analysis)
    explains the excluded groups, `images` names the PNGs drawn."""
    table = view.table
    labels = cohort_labels(table)
    members = table[view.key_column].groupby(labels).agg(lambda names: tuple(sorted(names)))
    types = table.groupby(labels)["excluded_type"].first()
    stability = table.groupby(labels)["cohort_stability"].first()
    profiles = view.profiles
    by_type = {g.excluded_type: g for g in groups}
    edges = _borderline(table, labels, view.key_column)
    cohorts, excluded = [], []
    for style in view.styles:
        if style.sub_cluster is None:
            why = _why(str(types[style.label]), by_type, facts.population_column)
            cells: tuple = ()
        else:
            why = ""
            cells = tuple(
                (
                    profiles.label(f),
                    cell(profiles, f, style.sub_cluster),
                    _way(profiles.directions.get(f)),
                )
                for f in profiles.features
            )
        names = members[style.label]
        listed = names[:LISTED_WHEN_SAMPLED] if facts.sample else names[:MAX_LISTED]
        entry = CohortEntry(
            label=style.label,
            color=style.color,
            hatched=style.hatch is not None,
            group=style.group,
            rows=style.rows,
            stability=_number(stability[style.label]),
            index=cells,
            members=listed,
            more=max(0, style.rows - len(listed)),
            why=why,
            borderline=edges.get(style.label, ((), 0))[0],
            borderline_count=edges.get(style.label, ((), 0))[1],
        )
        (excluded if style.sub_cluster is None else cohorts).append(entry)
    transitions, more = _listed_transitions(view)
    return ReportData(
        facts=facts,
        cohorts=tuple(cohorts),
        excluded=tuple(excluded),
        features=profiles.features,
        transitions=transitions,
        previous_run_id=view.previous_run_id,
        images=_captions(images, facts.sample),
        rows_called=view.rows_called,
        row_called=view.noun,
        labels={f: profiles.label(f) for f in profiles.features},
        key_column=view.key_column,
        more_in=CSV_CLUSTERS + (f" and {facts.clusters_table}" if facts.clusters_table else ""),
        transitions_more=more,
    )


def _captions(images: tuple[str, ...], sample: str | None) -> tuple[tuple[str, str], ...]:
    """Each drawn picture with its caption, which says so when it is drawn from a sample."""
    tail = f", {sample}" if sample else ""
    return tuple((name, CAPTIONS[name] + tail) for name in CAPTIONS if name in images)


def _listed_transitions(view: CohortView) -> tuple[tuple[dict, ...] | None, int]:
    """The first MAX_LISTED transitions (None without a previous run) and how many more."""
    if view.transitions is None:
        return None, 0
    listed = view.transitions.head(MAX_LISTED).to_dict("records")
    return (
        tuple(_transition(row, view.key_column) for row in listed),
        len(view.transitions) - len(listed),
    )


def _why(kind: str, groups: dict[str, ExcludedGroup], population: str) -> str:
    """Why a group is excluded, and how its type was grouped."""
    reason = WHY_EXCLUDED.get(kind, kind).format(population=population)
    group = groups.get(kind)
    if group is None:
        return reason
    if group.k:
        how = f"one of {group.k} groups a k-means of their own found among its {group.size} rows"
    else:
        how = f"its {group.size} rows are {group.note.split(' - ')[-1].lower()}: one group"
    return f"{reason}; {how}"


def _way(direction: str | None) -> str:
    if direction is None:
        return "no direction known"
    return "higher is better" if direction == HIGHER_IS_BETTER else "higher is worse"


def _borderline(table: pd.DataFrame, labels: pd.Series, key: str) -> dict[str, tuple]:
    """Per cohort label: its BORDERLINE_SHOWN lowest-margin borderline rows and how many it
    has (fit_margin below BORDERLINE_MARGIN); empty for a table without margins."""
    if "fit_margin" not in table:
        return {}
    edge = table["fit_margin"].astype("float64") < BORDERLINE_MARGIN
    rows = table.loc[edge].assign(label=labels[edge]).sort_values(["fit_margin", key])
    found = {}
    for label, group in rows.groupby("label", sort=False):
        shown = tuple(
            Borderline(str(getattr(r, key)), _number(r.fit_margin), _runner_up(r))
            for r in group.head(BORDERLINE_SHOWN).itertuples(index=False)
        )
        found[str(label)] = (shown, len(group))
    return found


def _runner_up(row) -> str:
    if _blank(row.runner_up_cluster):
        return "-"
    return f"{int(row.runner_up_cluster)} · {row.runner_up_name}"


def page(
    facts: RunFacts,
    view: CohortView,
    groups: tuple[ExcludedGroup, ...],
    images: tuple[str, ...],
) -> bytes:
    """report_data then render: the chart worker's task, so neither runs in the job's process."""
    return render(report_data(facts, view, groups, images))


def render(data: ReportData) -> bytes:
    """The page as UTF-8 HTML, images still as placeholders (see `embed`)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    environment = Environment(
        loader=PackageLoader("clustering.outputs", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("report.html.j2").render(data=data).encode()


def embed(page: bytes, images: dict[str, bytes]) -> bytes:
    """Replace each image placeholder by the PNG as a data: URI."""

    def inline(match: re.Match) -> bytes:
        content = images[match.group(1).decode()]
        return b'src="data:image/png;base64,' + base64.b64encode(content) + b'"'

    return PLACEHOLDER.sub(inline, page)


def _transition(row: dict, key_column: str) -> dict:
    """A transitions row with blanks as None, cohort ids as integers and the key as `key`."""
    row = {key: None if _blank(value) else value for key, value in row.items()}
    row["key"] = row.pop(key_column)
    for key in ("sub_cluster", "previous_sub_cluster"):
        if row.get(key) is not None:
            row[key] = int(row[key])
    return row


def _blank(value) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _number(value) -> float | None:
    if _blank(value):
        return None
    return float(np.round(float(value), 3))
