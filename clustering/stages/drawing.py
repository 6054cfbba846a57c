"""The pictures and the report: what they are drawn from, and how they reach the chart
workers (clustering.outputs.charts.ChartRenderer)."""

from __future__ import annotations

from collections.abc import Callable

from clustering.adapters import budget
from clustering.naming import HTML_REPORT
from clustering.stages.context import Run

# The analytic settings report.html states, in its order.
REPORTED_SETTINGS = (
    "min_population",
    "k_min",
    "k_max",
    "sub_k_min",
    "sub_k_max",
    "random_state",
    "severity_feature",
)


def submit(renderer, tasks: dict[str, tuple]) -> None:
    """Hand chart tasks (name -> draw function, arguments) to the chart workers."""
    for name, (draw, args) in tasks.items():
        renderer.submit(name, draw, *args)


def named_drawer(run: Run, renderer, boundaries) -> Callable:
    """What to do once ids and names are final: the scatter and the map start while the
    stability is bootstrapped; the heatmap shows stability, so it waits for it."""
    from clustering.outputs import charts

    run_date = f"{run.started:%Y-%m-%d %H:%M} UTC"
    random_state = run.settings.analysis.random_state

    def draw_named(named) -> None:
        view = cohort_view(named, run.settings.analysis)
        submit(renderer, charts.named_tasks(named.result, view, random_state, boundaries, run_date))

    return draw_named


def cohort_view(identity, analysis, sizes: dict[str, int] | None = None):
    """The one input of the pictures and the report: the identity step's table (stable ids,
    cohort_name, cohort_stability), its cohorts' profiles (index scores and SDs, with the
    features' directions) and its transitions; `sizes` counts each cohort's rows over the
    whole table when the fit saw a sample."""
    import pandas as pd

    from clustering.outputs.palette import CohortView, Profiles

    used = list(identity.result.features.used)
    columns = [c.sub_cluster for c in identity.cohorts]
    index = pd.DataFrame({c.sub_cluster: c.index_scores for c in identity.cohorts}, columns=columns)
    sd = pd.DataFrame({c.sub_cluster: c.sd_scores for c in identity.cohorts}, columns=columns)
    directions = {f: d for f, d in analysis.directions.items() if f in used}
    labels = {f: analysis.label(f) for f in used}
    profiles = Profiles(
        index.reindex(used), sd.reindex(used), identity.measures, directions, labels
    )
    view = CohortView(
        identity.table,
        profiles,
        identity.transitions,
        identity.previous_run_id,
        analysis.key_column,
        row_noun=analysis.noun,
    )
    if sizes is None:
        return view
    from dataclasses import replace

    return replace(view, sizes=sizes)


def report_facts(run: Run, result, warnings, notes=(), counts=None):
    """The report's header: when, why and from what the run happened, and its row counts
    (`counts`, clustering.stages.context.Counts, when the fit saw a sample)."""
    from dataclasses import replace

    from clustering.outputs import report

    settings, request = run.settings, run.request
    facts = report.RunFacts(
        run_id=run.run_id,
        started=f"{run.started:%Y-%m-%d %H:%M:%S} UTC",
        trigger=request.trigger,
        reason=request.reason,
        event_id=request.event_id,
        source=settings.features_source or "built-in sample",
        boundaries=settings.boundaries_source,
        rows=len(result.table),
        residential_rows=int(result.residential.sum()),
        excluded_rows=len(result.excluded),
        features_used=tuple(result.features.used),
        features_missing=tuple(result.features.missing),
        warnings=tuple(warnings),
        settings=tuple(
            (name.upper(), str(getattr(settings.analysis, name))) for name in REPORTED_SETTINGS
        ),
        notes=tuple(notes),
        population_column=settings.analysis.population_column,
        clusters_table=settings.clusters_table,
    )
    if counts is None:
        return facts
    return replace(
        facts,
        rows=counts.rows,
        residential_rows=counts.residential,
        excluded_rows=counts.rows - counts.residential,
        sample=counts.sample,
        changes=counts.changes,
    )


def report_task(facts, result, view, boundaries) -> dict:
    """report.html's task: rendered by a chart worker, its images embedded after collect()."""
    from clustering.naming import PNG_ELBOW, PNG_HEATMAP, PNG_MAP, PNG_PCA
    from clustering.outputs import report

    images = (PNG_ELBOW, PNG_PCA, PNG_HEATMAP, *((PNG_MAP,) if boundaries else ()))
    return {HTML_REPORT: (report.page, (facts, view, result.excluded_groups, images))}


def time_left() -> float | None:
    """Seconds left of the run's budget (publishing checks its own reserve); None without."""
    active = budget.active()
    return None if active is None else max(active.remaining(), 0.0)
