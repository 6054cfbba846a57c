"""One run of the job: its stages, in order, whichever engine reads and scores the rows.

The CLI and the Cloud Function both call `run_job`, so a local run and a deployed run follow
the same steps and produce the same artifacts. Every stage lives once, in clustering.stages;
an engine (clustering.engines) supplies only what truly differs between reading every row
into this process and scoring every row inside BigQuery:

1. self-repair: the clusters table and latest/ name the same run again (stages.publish);
2. read, settled: every row or the key-hashed sample, of one state of the table (engine);
3. validate: the features' rules, the row-drop guard, OUTPUT_COLUMNS (stages.guards);
4. fit, identity, stability and the model document (stages.fit);
5. assign every row by the document and count every row (engine);
6. draw the charts and the report (stages.drawing), write the CSVs (engine);
7. publish: run folder, clusters table, transitions, latest/ (stages.publish, fenced);
8. the history row, failed or not (stages.history).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from clustering.naming import HTML_REPORT, MANIFEST, new_run_id
from clustering.settings import JobSettings
from clustering.stages.context import (
    Analysed,
    NotSettled,
    PublishInterrupted,
    Run,
    RunReport,
    RunRequest,
    Stopwatch,
)
from clustering.stages.history import record, record_failure

__all__ = (
    "NotSettled",
    "PublishInterrupted",
    "RunReport",
    "RunRequest",
    "record_failure",
    "run_job",
)


def run_job(
    settings: JobSettings,
    request: RunRequest = RunRequest(),  # noqa: B008 (frozen: one shared default is safe)
    progress: Callable[[str], None] | None = None,
    on_history_error: Callable[[Exception], None] | None = None,
    run_id: str | None = None,
    on_warning: Callable[[str], None] | None = None,
    fence: Callable[[str], None] | None = None,
) -> RunReport:
    """Run the whole job; raise InputError for bad input, anything else for the unexpected.

    Artifacts go to runs/<run_id>/ first, then the clusters table is replaced in one atomic
    job, then latest/ switches to the run in one conditional step: a failure before the
    table is replaced leaves the table and latest/ as they were, one after it raises
    PublishInterrupted. `fence(step)` is called before each publishing step and raises when
    the run may no longer publish (it lost its claim). With a RUNS_TABLE, one row is appended
    per run, failed or not; a failure to append it goes to `on_history_error` (default:
    raise), because the history must never turn a published run into a retried one. `run_id`
    lets a caller log under the id before the run starts. `on_warning` receives each warning
    as soon as it is known (those about the input when the input is read), long before
    publishing; run.json lists them all.
    """
    started = datetime.now(UTC)
    run_id = run_id or new_run_id(started)
    run = Run(
        settings,
        request,
        run_id,
        started,
        Stopwatch(progress or (lambda _message: None)),
        on_warning or (lambda _w: None),
        fence or (lambda _step: None),
    )
    try:
        report = _run(run)
    except Exception as error:
        record(settings, request, run_id, started, None, error, on_history_error)
        raise
    record(settings, request, run_id, started, report, None, on_history_error)
    return report


def _run(run: Run) -> RunReport:
    from clustering import adapters, engines
    from clustering.stages.publish import repair

    store = adapters.artifact_store(run.settings.artifacts_dest)
    # Read once, before the data: the last published run (row count for the row-drop guard,
    # cohorts for stable ids) and the pointer's version, which the switch of latest/ is
    # conditional on.
    pointer, pointer_token = store.read_pointer()
    engine = engines.engine_for(run)
    try:
        if run.settings.clusters_table and not run.request.dry_run:
            pointer, pointer_token = repair(run, store, pointer, pointer_token, engine)
        done = _analyse(run, store, pointer, engine)
        return _publish(run, store, done, pointer_token, engine)
    finally:
        engine.close()


def _analyse(run: Run, store, pointer: bytes | None, engine) -> Analysed:
    """Read, validate, fit, name, assign, draw: the whole run up to publishing."""
    from clustering.outputs import charts, report
    from clustering.stages import drawing, fit
    from clustering.stages.guards import validate
    from clustering.stages.previous import key_change

    analysis = run.settings.analysis
    # Fork the chart process first: it imports matplotlib while this one reads and clusters.
    with charts.ChartRenderer() as renderer:
        given = validate(run, engine.read(run, pointer), pointer)
        previous = engine.previous(run, store, pointer)
        result = fit.cluster(run, renderer, given)
        drawer = drawing.named_drawer(run, renderer, given.boundaries)
        note = key_change(pointer, analysis.key_column)
        named = fit.identify(result, previous, run, drawer, note)
        identity, model = fit.through_model(named, run)
        for warning in result.warnings + identity.warnings:
            run.warn(warning)
        identity, counts = engine.assign(run, identity, model, previous)
        run.clock.stage("charts", "drawing charts")
        view = drawing.cohort_view(identity, analysis, counts.sizes if counts else None)
        drawing.submit(renderer, charts.heatmap_task(view))
        warnings = given.warnings + result.warnings + identity.warnings
        facts = drawing.report_facts(run, identity.result, warnings, given.notes, counts)
        drawing.submit(renderer, drawing.report_task(facts, result, view, given.boundaries))
        # The CSVs are encoded while the chart workers draw.
        table, files = engine.files(run, given, identity)
        files |= renderer.collect(drawing.time_left())
        files[HTML_REPORT] = report.embed(files[HTML_REPORT], files)
    return Analysed(given, identity, table, files, engine.document(model, counts), counts)


def _publish(run: Run, store, done: Analysed, pointer_token, engine) -> RunReport:
    """run.json, then (unless a dry run) the engine's exports and the publishing steps."""
    from clustering.stages import manifest, publish

    dry_run = run.request.dry_run
    prefix = None if dry_run else store.describe(f"runs/{run.run_id}/")
    exported: dict[str, str] = {}

    def document(timings: dict[str, float]) -> dict:
        written = manifest.manifest(run, done, timings, prefix)
        written["engine"] = engine.name
        outputs = written["outputs"]
        outputs["report"] = None if dry_run else store.describe(f"runs/{run.run_id}/{HTML_REPORT}")
        outputs["exported"] = dict(exported)
        return written

    if dry_run:
        return RunReport(run.run_id, "dry_run", document(run.clock.done()), None)
    exported |= engine.export(run, store)
    run.clock.stage("publish", f"publishing run {run.run_id}")
    done.files[MANIFEST] = manifest.json_bytes(document(dict(run.clock.timings)))
    publish.publish(run, store, done.files, pointer_token, engine.steps(run, store, done))
    run.clock.progress(f"report: {store.describe(f'latest/{HTML_REPORT}')}")
    return RunReport(run.run_id, "succeeded", document(run.clock.done()), prefix)
