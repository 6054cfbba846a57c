"""The analysis stages: the fit, cohort identity and stability, and the model document
every row is assigned by."""

from __future__ import annotations

from clustering import InputError
from clustering.stages.context import Input, Run
from clustering.stages.drawing import submit


def cluster(run: Run, renderer, given: Input):
    """The clustering itself; the elbow chart starts as soon as the K diagnostic is known."""
    from clustering.analysis.model import TOP_K, cluster
    from clustering.outputs import charts

    def diagnosed(search, sampled, seen) -> None:
        submit(renderer, charts.elbow_task(search, sampled, seen))
        run.clock.progress(
            f"K diagnostic: best silhouette at K={search.best_k} (the top split stays K={TOP_K})"
        )

    run.clock.stage("cluster", f"clustering {len(given.frame):,} rows")
    try:
        return cluster(
            given.frame,
            run.settings.analysis,
            progress=run.clock.progress,
            on_diagnostics=diagnosed,
        )
    except InputError as error:
        raise InputError(f"{given.where}: {error}") from None


def identify(result, previous, run: Run, draw, note: str | None = None):
    """Stable ids and names; then the named cohorts go to `draw` (the charts that need no
    stability). `note` (a KEY_COLUMN change) joins the identity's warnings."""
    from dataclasses import replace

    from clustering.analysis.identity import identify

    against = f"run {previous.run_id}" if previous else "nothing (first run)"
    run.clock.stage("identity", f"matching cohorts to {against}")
    analysis = run.settings.analysis
    overrides = dict(run.settings.label_overrides)
    named = identify(
        result,
        previous,
        overrides,
        run.run_id,
        analysis.key_column,
        analysis.directions,
        analysis.labels,
    )
    if note is not None:
        named = replace(named, warnings=(*named.warnings, note))
    draw(named)
    return named


def through_model(named, run: Run):
    """The model of the run, and the identity with every fitted row assigned by its rules
    (the fitted rows' assignments are the document's: one path from fit to assign) and each
    cohort's bootstrap stability, which the cores compute while this process assigns."""
    from clustering.analysis import fits
    from clustering.analysis.document import fitted_model, through_model
    from clustering.analysis.identity import with_stability

    analysis = run.settings.analysis
    with fits.executor_for(len(named.result.scaled)) as pool:
        run.clock.stage("model", "assigning the fitted rows by the model document")
        stability = _stability(named, analysis, pool)
        model = fitted_model(named, analysis)
        assigned = through_model(named, model)
        run.clock.stage("stability", "bootstrapping cohort stability")
        return with_stability(assigned, stability()), model


def _stability(identity, analysis, pool):
    from clustering.analysis.stability import submit_stability

    rows = identity.table.loc[identity.result.residential]
    return submit_stability(
        pool,
        identity.result.scaled,
        rows["top_cluster"].to_numpy(dtype="int64"),
        rows["sub_cluster"].to_numpy(dtype="int64"),
        analysis.random_state,
        analysis.silhouette_sample_size,
    )
