"""report.html: one self-contained page per run, readable offline and printable.

The page is rendered by a chart worker while the other charts are drawn (Jinja2 with
autoescaping, so a neighborhood named `<script>` stays text); each image is a placeholder,
`src="png:<artifact name>"`, that `embed` replaces by a data: URI once the PNGs are in. The
placeholder cannot be forged by a name in the data: autoescaping turns its quote into `&#34;`.
Nothing in the page asks for anything outside it: no scripts, no links, no web fonts.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clustering.analysis.assign import BORDERLINE_MARGIN
from clustering.naming import PNG_ELBOW, PNG_HEATMAP, PNG_MAP, PNG_PCA
from clustering.outputs.palette import CohortView, direction

PLACEHOLDER = re.compile(rb'src="png:([A-Za-z0-9_.-]+)"')
# Captions, in the order the page shows the pictures.
CAPTIONS = {
    PNG_MAP: "Where the cohorts are",
    PNG_PCA: "The residential neighborhoods on their first two principal components",
    PNG_HEATMAP: "What sets each cohort apart (index: 100 = the residential mean)",
    PNG_ELBOW: "K diagnostics (the top split is always K=2; this range is a diagnostic)",
}
# Borderline neighborhoods listed per cohort, lowest margin first.
BORDERLINE_SHOWN = 5
WHY_EXCLUDED = {
    "Institutional/Industrial": "listed in EXCLUDE_NEIGHBORHOODS: institutional or industrial "
    "areas whose per-capita figures mislead",
    "Low Population (Park/Open Space)": "population below MIN_POPULATION (or blank): parks and "
    "open space, too few residents for per-capita figures",
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
    # The warehouse engine's runs: the pictures and lists come from a sample, which this says
    # ("drawn from a sample of 200,000 of 8,000,000 rows"), and the transitions listed are the
    # first few of `changes`.
    sample: str | None = None
    changes: int | None = None


# With a sample, each cohort lists this many of its sampled neighborhoods.
LISTED_WHEN_SAMPLED = 30


@dataclass(frozen=True)
class Borderline:
    """A neighborhood near the edge of its cohort: its fit_margin and its runner-up cohort."""

    neighborhood: str
    margin: float
    runner_up: str


@dataclass(frozen=True)
class CohortEntry:
    """One cohort as the report lists it."""

    label: str
    color: str
    hatched: bool
    group: str
    rows: int
    stability: float | None
    index: tuple[tuple[str, float | None, str], ...]
    neighborhoods: tuple[str, ...]
    why: str
    more: int = 0
    borderline: tuple[Borderline, ...] = ()
    borderline_count: int = 0


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows except the images' bytes."""

    facts: RunFacts
    cohorts: tuple[CohortEntry, ...]
    excluded: tuple[CohortEntry, ...]
    features: tuple[str, ...]
    transitions: tuple[dict, ...] | None
    previous_run_id: str | None
    images: tuple[tuple[str, str], ...]
    borderline_margin: float = BORDERLINE_MARGIN


def report_data(
    facts: RunFacts, view: CohortView, notes: dict[str, str], images: tuple[str, ...]
) -> ReportData:
    """The page's content from the run's facts and cohorts; `notes` explains excluded groups
    by excluded_type (the excluded analysis's note), `images` names the PNGs drawn."""
    table = view.table
    from clustering.outputs.palette import cohort_labels

    labels = cohort_labels(table)
    members = table["neighborhood"].groupby(labels).agg(tuple)
    types = table.groupby(labels)["excluded_type"].first()
    stability = table.groupby(labels)["cohort_stability"].first()
    features = tuple(view.index.index)
    edges = _borderline(table, labels)
    cohorts, excluded = [], []
    for style in view.styles:
        if style.sub_cluster is None:
            kind = str(types[style.label])
            why = "; ".join(filter(None, [WHY_EXCLUDED.get(kind, kind), notes.get(kind)]))
            scores: tuple = ()
        else:
            why = ""
            scores = tuple(
                (f, _number(view.index.at[f, style.sub_cluster]), direction(f)) for f in features
            )
        names = tuple(sorted(members[style.label]))
        listed = names[:LISTED_WHEN_SAMPLED] if facts.sample else names
        entry = CohortEntry(
            label=style.label,
            color=style.color,
            hatched=style.hatch is not None,
            group=style.group,
            rows=style.rows,
            stability=_number(stability[style.label]),
            index=scores,
            neighborhoods=listed,
            why=why,
            more=style.rows - len(listed),
            borderline=edges.get(style.label, ((), 0))[0],
            borderline_count=edges.get(style.label, ((), 0))[1],
        )
        (excluded if style.sub_cluster is None else cohorts).append(entry)
    transitions = None
    if view.transitions is not None:
        transitions = tuple(map(_transition, view.transitions.to_dict("records")))
    return ReportData(
        facts=facts,
        cohorts=tuple(cohorts),
        excluded=tuple(excluded),
        features=features,
        transitions=transitions,
        previous_run_id=view.previous_run_id,
        images=tuple(
            (name, CAPTIONS[name] + (f", {facts.sample}" if facts.sample else ""))
            for name in CAPTIONS
            if name in images
        ),
    )


def _borderline(table: pd.DataFrame, labels: pd.Series) -> dict[str, tuple]:
    """Per cohort label: its BORDERLINE_SHOWN lowest-margin borderline neighborhoods and how
    many it has (fit_margin below BORDERLINE_MARGIN); empty for a table without margins."""
    if "fit_margin" not in table:
        return {}
    edge = table["fit_margin"].astype("float64") < BORDERLINE_MARGIN
    rows = table.loc[edge].assign(label=labels[edge]).sort_values(["fit_margin", "neighborhood"])
    found = {}
    for label, group in rows.groupby("label", sort=False):
        shown = tuple(
            Borderline(str(r.neighborhood), _number(r.fit_margin), _runner_up(r))
            for r in group.head(BORDERLINE_SHOWN).itertuples()
        )
        found[str(label)] = (shown, len(group))
    return found


def _runner_up(row) -> str:
    if _blank(row.runner_up_cluster):
        return "-"
    return f"{int(row.runner_up_cluster)} · {row.runner_up_name}"


def page(
    facts: RunFacts, view: CohortView, notes: dict[str, str], images: tuple[str, ...]
) -> bytes:
    """report_data then render: the chart worker's task, so neither runs in the job's process."""
    return render(report_data(facts, view, notes, images))


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


def _transition(row: dict) -> dict:
    """A transitions row with blanks as None and cohort ids as integers."""
    row = {key: None if _blank(value) else value for key, value in row.items()}
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
