"""One run of the job: read, validate, cluster, draw, then publish only if all of it worked.

The CLI and the Cloud Function both call `run_job`, so a local run and a deployed run follow
the same steps and produce the same artifacts.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version

from clustering import InputError, __version__
from clustering.adapters import budget
from clustering.naming import (
    CSV_CLUSTERS,
    CSV_EXCLUDED,
    CSV_TRANSITIONS,
    HTML_REPORT,
    MANIFEST,
    PNG_ELBOW,
    PNG_HEATMAP,
    new_run_id,
)
from clustering.settings import JobSettings

VERSIONED = ("numpy", "pandas", "scikit-learn", "scipy", "matplotlib")
# Publishing (run folder, table load, pointer) does not start with less time than this left
# of the run's budget: a run that cannot finish publishing stops before it begins.
PUBLISH_RESERVE_SECONDS = 30.0
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


class NotSettled(RuntimeError):
    """The features table was still changing when the run read it (SETTLE_SECONDS): nothing
    is published, and the event is retried, by when the refresh has finished."""


class PublishInterrupted(RuntimeError):
    """The clusters table holds the run but latest/ does not point to it yet. Transient on
    purpose, whatever the cause: the redelivery runs the event again and publishes both, which
    repairs the disagreement (and so would any later successful run)."""


@dataclass(frozen=True)
class RunRequest:
    """Why and how a run happens: who triggered it and what the event asked for."""

    trigger: str = "cli"
    event_id: str | None = None
    reason: str | None = None
    dry_run: bool = False
    force: bool = False


@dataclass
class _Stopwatch:
    """Seconds per stage, reported through `progress` as each stage starts."""

    progress: Callable[[str], None]
    timings: dict[str, float] = field(default_factory=dict)
    _stage: str | None = None
    _since: float = 0.0

    def stage(self, name: str, message: str) -> None:
        # Stage boundaries are where a run past its deadline stops (clustering.adapters.budget).
        active = budget.active()
        if active is not None:
            active.check(name, PUBLISH_RESERVE_SECONDS if name == "publish" else 0.0)
        self._close()
        self._stage, self._since = name, time.perf_counter()
        self.progress(message)

    def _close(self) -> None:
        if self._stage is not None:
            self.timings[self._stage] = round(time.perf_counter() - self._since, 3)
            self._stage = None

    def done(self) -> dict[str, float]:
        self._close()
        return self.timings


@dataclass(frozen=True)
class RunReport:
    """What a finished run did: its manifest (run.json) and where the artifacts went."""

    run_id: str
    status: str
    manifest: dict
    artifact_prefix: str | None


def run_job(
    settings: JobSettings,
    request: RunRequest = RunRequest(),
    progress: Callable[[str], None] | None = None,
    on_history_error: Callable[[Exception], None] | None = None,
    run_id: str | None = None,
    on_warning: Callable[[str], None] | None = None,
    fence: Callable[[str], None] | None = None,
) -> RunReport:
    """Run the whole job; raise InputError for bad input, anything else for the unexpected.

    Artifacts go to runs/<run_id>/ first, then the clusters table is replaced in one atomic
    load job, then latest/ switches to the run in one conditional step: a failure before the
    load leaves the table and latest/ as they were, one after it raises PublishInterrupted.
    `fence(step)` is called before each publishing step and raises when the run may no longer
    publish (it lost its claim). With a RUNS_TABLE, one row is appended per run, failed or
    not; a failure to append it goes to `on_history_error` (default: raise), because the
    history must never turn a published run into a retried one. `run_id` lets a caller log
    under the id before the run starts. `on_warning` receives each warning as soon as it is
    known (those about the input when the input is read), long before publishing; run.json
    lists them all.
    """
    started = datetime.now(UTC)
    run_id = run_id or new_run_id(started)
    run = _Run(
        settings,
        request,
        run_id,
        started,
        _Stopwatch(progress or (lambda _message: None)),
        on_warning or (lambda _w: None),
        fence or (lambda _step: None),
    )
    try:
        report = _run(run)
    except Exception as error:
        _record(settings, request, run_id, started, None, error, on_history_error)
        raise
    _record(settings, request, run_id, started, report, None, on_history_error)
    return report


@dataclass(frozen=True)
class _Run:
    """One run's fixed inputs, which every step of it reads."""

    settings: JobSettings
    request: RunRequest
    run_id: str
    started: datetime
    clock: _Stopwatch
    warn: Callable[[str], None]
    fence: Callable[[str], None]


@dataclass(frozen=True)
class _Input:
    """The validated input of a run and what reading it had to say."""

    frame: object  # the validated features (a DataFrame)
    where: str
    boundaries: dict | None
    warnings: tuple[str, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Analysed:
    """Everything a run computed, ready to publish: nothing is written yet."""

    input: _Input
    identity: object  # clustering.analysis.identity.Identity
    table: object  # the clusters table's rows (a DataFrame), run_id and time stamped
    files: dict[str, bytes]
    model: dict  # run.json's "model": the model document


def _run(run: _Run) -> RunReport:
    from clustering import adapters

    store = adapters.artifact_store(run.settings.artifacts_dest)
    # Read once, before the data: the last published run (row count for the row-drop guard,
    # cohorts for stable ids) and the pointer's version, which the switch of latest/ is
    # conditional on.
    pointer, pointer_token = store.read_pointer()
    if run.settings.clusters_table and not run.request.dry_run:
        pointer, pointer_token = _repair(run, store, pointer, pointer_token)
    from clustering import engines

    choice = engines.choose(run.settings)
    if choice.engine == engines.WAREHOUSE:
        from clustering.engines import warehouse

        return warehouse.run_warehouse(run, store, pointer, pointer_token, choice)
    done = _analyse(run, store, pointer)
    dry_run = run.request.dry_run
    prefix = None if dry_run else store.describe(f"runs/{run.run_id}/")
    page = None if dry_run else store.describe(f"runs/{run.run_id}/{HTML_REPORT}")

    def manifest(timings: dict[str, float]) -> dict:
        document = _manifest(run, done, timings, prefix)
        document["outputs"]["report"] = page
        return document

    if dry_run:
        return RunReport(run.run_id, "dry_run", manifest(run.clock.done()), None)
    run.clock.stage("publish", f"publishing run {run.run_id}")
    done.files[MANIFEST] = _json_bytes(manifest(dict(run.clock.timings)))
    _publish(run, store, done.files, pointer_token, _loader(run, store, done), _mover(run, done))
    run.clock.progress(f"report: {store.describe(f'latest/{HTML_REPORT}')}")
    return RunReport(run.run_id, "succeeded", manifest(run.clock.done()), prefix)


def _repair(run: _Run, store, pointer: bytes | None, token):
    """Self-repair (clustering.adapters.repair) of a disagreement between the clusters table and
    latest/, first, whatever becomes of this run; the pointer it goes on with."""
    from clustering.adapters.repair import Repair, repair

    def shaped(rows):
        key = run.settings.analysis.key_column
        return with_shapes(rows, _boundaries(run.settings, rows)[0], key)

    analysis = run.settings.analysis
    job = Repair(
        run.settings.clusters_table,
        run.run_id,
        run.fence,
        run.warn,
        shaped,
        analysis.key_column,
        analysis.population_column,
    )
    return repair(store, pointer, token, job)


def _analyse(run: _Run, store, pointer: bytes | None) -> _Analysed:
    """Read, validate, cluster, name, draw: the whole run up to publishing."""
    from clustering.outputs import charts, report
    from clustering.table import people_csv

    # Fork the chart process first: it imports matplotlib while this one reads and clusters.
    with charts.ChartRenderer() as renderer:
        given = _read_input(run, pointer)
        previous = _previous(store, pointer, run.settings.analysis.key_column)
        run.clock.stage("cluster", "clustering")
        result = _cluster(run, renderer, given)
        analysis = run.settings.analysis
        named = _identify(result, previous, run, _named_drawer(run, renderer, given))
        identity, model = _through_model(named, run)
        for warning in result.warnings + identity.warnings:
            run.warn(warning)
        run.clock.stage("charts", "drawing charts")
        view = cohort_view(identity, analysis)
        _submit(renderer, charts.heatmap_task(view))
        warnings = given.warnings + result.warnings + identity.warnings
        facts = report_facts(run, identity.result, warnings, given.notes)
        _submit(renderer, report_task(facts, identity.result, view, given.boundaries))
        # The CSVs are encoded while the chart workers draw.
        inputs, keep = given.frame.columns, run.settings.output_columns
        table = published_columns(identity.table, inputs, keep, analysis.key_column)
        table = table.assign(run_id=run.run_id, _clustered_at=run.started)
        excluded = published_columns(result.excluded, inputs, keep, analysis.key_column)
        files = {CSV_CLUSTERS: people_csv(table), CSV_EXCLUDED: people_csv(excluded)}
        if identity.transitions is not None:
            files[CSV_TRANSITIONS] = people_csv(identity.transitions)
        files |= renderer.collect(_time_left())
        files[HTML_REPORT] = report.embed(files[HTML_REPORT], files)
    return _Analysed(given, identity, table, files, model)


def _named_drawer(run: _Run, renderer, given: _Input) -> Callable:
    """What to do once ids and names are final: the scatter and the map start while the
    stability is bootstrapped; the heatmap shows stability, so it waits for it."""
    from clustering.outputs import charts

    run_date = f"{run.started:%Y-%m-%d %H:%M} UTC"
    random_state = run.settings.analysis.random_state

    def draw_named(named) -> None:
        view = cohort_view(named, run.settings.analysis)
        tasks = charts.named_tasks(named.result, view, random_state, given.boundaries, run_date)
        _submit(renderer, tasks)

    return draw_named


def _read_input(run: _Run, pointer: bytes | None) -> _Input:
    """The features, validated and checked against the last run's size, and the boundaries."""
    from clustering import adapters
    from clustering.table import validate_features

    source = run.settings.features_source
    run.clock.stage("read", f"reading features from {source or 'the built-in sample'}")
    if source is None:
        from clustering.analysis.sample import make_sample

        frame, where = make_sample(), "the built-in sample"
    else:
        before = adapters.source_version(source)
        frame, where = adapters.read_features(source, run.settings.memory_max_rows)
        check_settled(where, before, adapters.source_version(source), run.settings.settle_seconds)
    run.clock.stage("validate", f"validating {len(frame)} rows")
    valid = validate_features(frame, run.settings.analysis, where)
    check_row_drop(
        len(valid.frame),
        _manifest_of(pointer),
        run.settings.min_rows_ratio,
        run.request.force,
        where,
    )
    _check_output_columns(run.settings.output_columns, valid.frame.columns, where)
    boundaries, map_warnings = _boundaries(run.settings, valid.frame)
    warnings = tuple(valid.warnings) + tuple(map_warnings)
    for warning in warnings:
        run.warn(warning)
    for note in valid.notes:
        run.clock.progress(f"note: {note}")
    return _Input(valid.frame, where, boundaries, warnings, valid.notes)


def published_columns(frame, inputs, keep: tuple[str, ...], key: str = "neighborhood"):
    """`frame` without the input columns OUTPUT_COLUMNS leaves out (the key column and every
    column the run added stay); every column when `keep` is empty."""
    if not keep:
        return frame
    dropped = [c for c in inputs if c != key and c not in keep]
    return frame.drop(columns=[c for c in dropped if c in frame.columns])


def _check_output_columns(keep: tuple[str, ...], columns, where: str) -> None:
    from clustering.table import did_you_mean

    for name in keep:
        if name not in columns:
            hint = did_you_mean(name, columns)
            raise InputError(
                f"{where} has no column {name!r}{hint}, which OUTPUT_COLUMNS (--output-columns) "
                "names: fix the name or remove it"
            )


def _cluster(run: _Run, renderer, given: _Input):
    """The clustering itself; the elbow chart starts as soon as the K diagnostic is known."""
    from clustering.analysis.model import cluster
    from clustering.outputs import charts

    def diagnosed(search, sampled) -> None:
        _diagnosed(renderer, run.clock, charts.elbow_task(search, sampled), search.best_k)

    try:
        return cluster(
            given.frame,
            run.settings.analysis,
            progress=run.clock.progress,
            on_diagnostics=diagnosed,
        )
    except InputError as error:
        raise InputError(f"{given.where}: {error}") from None


def _publish(run: _Run, store, files: dict[str, bytes], pointer_token, load, move) -> None:
    """Run folder, then the clusters table (`load`, None without one), then the transitions
    (`move`) and the switch of latest/; a failure after the load is a PublishInterrupted."""
    from clustering import adapters

    clusters_table = run.settings.clusters_table
    run.fence("writing the run folder")
    store.write_run(run.run_id, files)
    if load is None:
        move()
        _switch_latest(store, run.run_id, files, pointer_token, run.fence)
        return
    run.fence("loading the clusters table")
    load()
    try:
        if not adapters.clusters_hold(clusters_table, run.run_id):
            raise RuntimeError(
                f"{clusters_table} holds another run's rows after the "
                "load (a late load job of an earlier run)"
            )
        move()
        _switch_latest(store, run.run_id, files, pointer_token, run.fence)
    except Exception as error:
        raise PublishInterrupted(
            f"run {run.run_id} was loaded into {clusters_table} but latest/ was not "
            f"switched to it ({one_line(error)}); the redelivery of the event publishes again"
        ) from error


def _time_left() -> float | None:
    """Seconds left of the run's budget (publishing checks its own reserve); None without."""
    active = budget.active()
    return None if active is None else max(active.remaining(), 0.0)


def _loader(run: _Run, store, done: _Analysed):
    """The memory engine's table load: one load job of every row, None without a table."""
    if not run.settings.clusters_table:
        return None

    def load() -> None:
        from clustering import adapters
        from clustering.table import output_schema

        analysis, dest = run.settings.analysis, run.settings.clusters_table
        key, population = analysis.key_column, analysis.population_column
        adapters.after_last_load(store, dest, run.run_id)
        clusters = with_shapes(done.table, done.input.boundaries, key)
        adapters.write_clusters(
            dest, clusters, output_schema(clusters, key, population), run.run_id
        )

    return load


def _mover(run: _Run, done: _Analysed):
    """The memory engine's transitions append (nothing when there are none)."""
    moves, key = done.identity.transitions, run.settings.analysis.key_column
    return lambda: _append_transitions(run.settings.transitions_table, moves, run.fence, key)


def _chart_names(boundaries) -> tuple[str, ...]:
    """The pictures the report embeds, in its order (the map only with boundaries)."""
    from clustering.naming import PNG_MAP, PNG_PCA

    return (PNG_ELBOW, PNG_PCA, PNG_HEATMAP, *((PNG_MAP,) if boundaries else ()))


def _diagnosed(renderer, clock: _Stopwatch, tasks: dict[str, tuple], best_k: int) -> None:
    """Start the elbow chart and say what the K diagnostic found, and what it does not decide."""
    from clustering.analysis.model import TOP_K

    _submit(renderer, tasks)
    clock.progress(f"K diagnostic: best silhouette at K={best_k} (the top split stays K={TOP_K})")


def with_shapes(table, boundaries: dict | None, key_column: str = "neighborhood"):
    """The clusters table with each row's shape as WKT in `<key_column>_shape` (GEOGRAPHY in
    BigQuery, for Looker Studio's filled map) when boundaries are configured; null where a
    row has no boundary."""
    if not boundaries:
        return table
    from clustering.outputs.geo import to_wkt
    from clustering.table import shape_column

    shapes = {name: to_wkt(rings) for name, rings in boundaries.items()}
    return table.assign(**{shape_column(key_column): table[key_column].map(shapes)})


def cohort_view(identity, analysis):
    """The one input of the pictures and the report: the identity step's table (stable ids,
    cohort_name, cohort_stability), its cohorts' profiles (index scores and SDs, with the
    features' directions) and its transitions."""
    import pandas as pd

    from clustering.outputs.palette import CohortView, Profiles

    used = list(identity.result.features.used)
    columns = [c.sub_cluster for c in identity.cohorts]
    index = pd.DataFrame({c.sub_cluster: c.index_scores for c in identity.cohorts}, columns=columns)
    sd = pd.DataFrame({c.sub_cluster: c.sd_scores for c in identity.cohorts}, columns=columns)
    directions = {f: d for f, d in analysis.directions.items() if f in used}
    profiles = Profiles(index.reindex(used), sd.reindex(used), identity.measures, directions)
    return CohortView(
        identity.table,
        profiles,
        identity.transitions,
        identity.previous_run_id,
        analysis.key_column,
    )


def report_facts(run: _Run, result, warnings, notes=()):
    """The report's header: when, why and from what the run happened, and its row counts."""
    from clustering.outputs import report

    settings, request = run.settings, run.request
    return report.RunFacts(
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


def report_task(facts, result, view, boundaries) -> dict:
    """report.html's task: rendered by a chart worker, its images embedded after collect()."""
    from clustering.outputs import report

    images = _chart_names(boundaries)
    return {HTML_REPORT: (report.page, (facts, view, result.excluded_groups, images))}


def _switch_latest(store, run_id: str, files: dict[str, bytes], token, fence) -> None:
    from clustering.adapters.claims import ClaimLost

    fence("switching latest/")
    if not store.switch_latest(run_id, files, token):
        raise ClaimLost(
            f"latest/ changed since run {run_id} read it (another run published "
            "meanwhile): this run does not overwrite it"
        )


def _manifest_of(pointer: bytes | None) -> dict | None:
    """The manifest latest/run.json holds, None when absent or unreadable."""
    if pointer is None:
        return None
    try:
        document = json.loads(pointer)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def check_settled(where: str, before, after, settle_seconds: int, now=None) -> None:
    """Raise NotSettled when the table changed while it was read (its version before and
    after differ) or was last modified less than `settle_seconds` ago: a refresh spread over
    several load or DML jobs must not be published half loaded. The modified time is
    BigQuery's; `now` is this instance's clock, which may differ from it by at most
    MAX_CLOCK_SKEW_SECONDS (the window is that much shorter or longer, never skipped)."""
    if before is None or settle_seconds <= 0:
        return
    if after != before:
        raise NotSettled(
            f"{where} changed while it was read (last modified {before[0]}, {before[1]} rows "
            f"before; {after[0] if after else '?'}, {after[1] if after else '?'} rows after): "
            "nothing was published, the run is retried"
        )
    age = ((now or datetime.now(UTC)) - before[0]).total_seconds() if before[0] else None
    if age is not None and age < settle_seconds:
        raise NotSettled(
            f"{where} was modified {max(age, 0):.0f} s before it was read, less than "
            f"SETTLE_SECONDS={settle_seconds}: a refresh may still be loading, so nothing was "
            "published and the run is retried"
        )


def check_row_drop(rows: int, previous: dict | None, ratio: float, force: bool, where: str) -> None:
    """The row-drop guard: an input with fewer than `ratio` times the rows of the last
    published run is refused as bad data (a truncated refresh would otherwise replace good
    results), unless the run is forced. No previous run, or ratio 0, means no guard."""
    if force or not previous or ratio <= 0:
        return
    before = (previous.get("input") or {}).get("rows")
    if not isinstance(before, int) or rows >= ratio * before:
        return
    raise InputError(
        f"{where} has {rows} rows, fewer than MIN_ROWS_RATIO={ratio:g} of the {before} rows of "
        f"the last published run {previous.get('run_id', '?')}; nothing was published. If the "
        'drop is real, run with --force (CLI) or publish {"force": true} to the run topic'
    )


def _previous(
    store, pointer: bytes | None, key_column: str = "neighborhood", with_rows: bool = True
):
    """The last published run (the run latest/run.json points to), None on the first run.

    Centroids, names and ids come from its run.json; each neighborhood's previous cohort from
    its clusters CSV, read from latest/, which never expires (runs/<run_id>/ does, after
    artifact_retention_days): run.json stays one entry per cohort whatever the number of
    rows, and nothing is stored twice. Without `with_rows` (the warehouse engine, which
    compares rows inside BigQuery) the CSV is not read.
    """
    from clustering.analysis.identity import previous_run
    from clustering.analysis.transitions import PREVIOUS_MARGIN, previous_columns

    raw = pointer
    if raw is None:
        return None
    where = store.describe(f"latest/{MANIFEST}")
    try:
        manifest = json.loads(raw)
        run_id = str(manifest["run_id"])
    except (ValueError, KeyError, TypeError):
        raise InputError(
            f"{where} is not a run manifest: restore it from runs/<run_id>/run.json, or remove "
            "latest/ to number the cohorts afresh"
        ) from None
    rows = _previous_rows(store, run_id, key_column) if with_rows else None
    if rows is None:
        return previous_run(manifest, None)
    if key_column not in rows:  # published under another KEY_COLUMN: no row to compare
        return previous_run(manifest, None)
    if "cohort_name" not in rows:  # published before cohorts had names
        rows["cohort_name"] = rows["cluster_label"]
    margin = [PREVIOUS_MARGIN] if PREVIOUS_MARGIN in rows else []
    return previous_run(manifest, rows[[*previous_columns(key_column), *margin]])


def _previous_rows(store, run_id: str, key_column: str):
    """The clusters CSV rows of run `run_id`: latest/'s copy, else (latest/ was left holding
    another run's copy by an interrupted switch) its run folder's; None when neither has it."""
    from clustering.analysis.transitions import PREVIOUS_MARGIN, previous_columns
    from clustering.table import read_people_csv

    wanted = {*previous_columns(key_column), PREVIOUS_MARGIN, "cluster_label", "run_id"}
    for read in (store.read_latest_file, lambda name: store.read_run_file(run_id, name)):
        content = read(CSV_CLUSTERS)
        if content is None:
            continue
        rows = read_people_csv(
            content,
            usecols=lambda c: c in wanted,
            dtype={key_column: str},
            keep_default_na=False,
            na_values=[""],
        )
        if "run_id" not in rows or (rows["run_id"] == run_id).all():
            return rows
    return None


def _identify(result, previous, run: _Run, draw):
    """Stable ids and names; then the named cohorts go to `draw` (the charts that need no
    stability), and the bootstrap stability is computed while the chart workers draw."""
    from clustering.analysis.identity import identify, with_stability

    against = f"run {previous.run_id}" if previous else "nothing (first run)"
    run.clock.stage("identity", f"matching cohorts to {against}")
    analysis = run.settings.analysis
    overrides = dict(run.settings.label_overrides)
    named = identify(
        result, previous, overrides, run.run_id, analysis.key_column, analysis.directions
    )
    draw(named)
    run.clock.stage("stability", "bootstrapping cohort stability")
    return with_stability(named, _stability(named, run.settings.analysis))


def _through_model(identity, run: _Run):
    """The model document of the run, and the identity with every row assigned by its rules
    (the memory engine's assignments are the document's: one path from fit to assign)."""
    from clustering.analysis.document import document, fitted_model, through_model

    run.clock.stage("model", "assigning every row by the model document")
    model = fitted_model(identity, run.settings.analysis)
    return through_model(identity, model), document(model)


def _append_transitions(dest, moves, fence, key_column: str) -> None:
    """Append the run's moves to TRANSITIONS_TABLE, if configured and there are any. Before
    latest/ switches: a run that fails after this leaves rows under a run_id that the runs
    table records as failed, never a published run without its moves."""
    if not dest or moves is None or moves.empty:
        return
    fence("appending the transitions")
    from clustering import adapters
    from clustering.table import table_schema

    schema = table_schema("transitions_table", key_column)
    adapters.append_transitions(dest, moves, list(schema))


def _stability(identity, analysis):
    from clustering.analysis.stability import bootstrap_stability

    rows = identity.table.loc[identity.result.residential]
    return bootstrap_stability(
        identity.result.scaled,
        rows["top_cluster"].to_numpy(dtype="int64"),
        rows["sub_cluster"].to_numpy(dtype="int64"),
        analysis.random_state,
        analysis.silhouette_sample_size,
    )


def _submit(renderer, tasks: dict[str, tuple]) -> None:
    """Hand chart tasks (name -> draw function, arguments) to the chart workers."""
    for name, (draw, args) in tasks.items():
        renderer.submit(name, draw, *args)


@dataclass(frozen=True)
class Assigned:
    """What `assign_table` did: the rows it assigned, by whose model, and where they went."""

    run_id: str
    rows: int
    residential: int
    dest: str


def assign_table(run: str, features: str, dest: str) -> Assigned:
    """`python -m clustering assign`: the model document of `run` (a run folder, its
    run.json, or a gs:// latest/ or run folder) applied to the table at `features`, without
    refitting; `dest` (.csv, .parquet or bq://) gets the key column and the cohort columns."""
    from clustering import adapters
    from clustering.analysis.assign import assign
    from clustering.analysis.document import read_model
    from clustering.table import output_schema, validate_for_model

    _check_destination(dest)
    manifest, where = _read_manifest(run)
    model = read_model(manifest, where)
    frame, source = adapters.read_features(features)
    rows = assign(validate_for_model(frame, model.key_column, model.columns, source), model)
    schema = output_schema(rows, model.key_column, model.population_column)
    adapters.write_clusters(dest, rows, schema)
    residential = int((rows["excluded_type"] == "Residential").sum())
    return Assigned(str(manifest.get("run_id", "?")), len(rows), residential, dest)


def _read_manifest(run: str) -> tuple[dict, str]:
    """The run.json `run` names, and where it was read."""
    from pathlib import Path

    from clustering import adapters

    if run.endswith(".json"):
        where = run
    elif run.startswith("gs://"):
        where = f"{run.rstrip('/')}/{MANIFEST}"
    else:
        folder = Path(run)
        # An artifacts folder stands for its latest run.
        inside = [folder / MANIFEST, folder / "latest" / MANIFEST]
        where = str(next((p for p in inside if p.is_file()), inside[0]))
    content = adapters.read_bytes(where)
    try:
        manifest = json.loads(content)
    except ValueError:  # not JSON, or not text at all
        manifest = None
    if not isinstance(manifest, dict):
        raise InputError(
            f"{where} is not a run manifest: give --run a run folder, its run.json, or a "
            "latest/ folder as the job wrote it"
        )
    return manifest, where


def _check_destination(dest: str) -> None:
    """Refuse an --out that cannot be written before any work is done."""
    from pathlib import PurePosixPath

    from clustering.settings import TABLE_ID_PATTERN

    if dest.startswith("bq://"):
        if not TABLE_ID_PATTERN.match(dest.removeprefix("bq://")):
            raise InputError(f"--out {dest}: write a BigQuery table as bq://project.dataset.table")
    elif PurePosixPath(dest).suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"--out {dest}: give a .csv or .parquet path, or a bq:// table")


def record_failure(
    settings: JobSettings,
    request: RunRequest,
    error: str,
    on_history_error: Callable[[Exception], None] | None = None,
) -> None:
    """Record a run that never started (a rejected event) in RUNS_TABLE, if configured."""
    started = datetime.now(UTC)
    _record(
        settings, request, new_run_id(started), started, None, InputError(error), on_history_error
    )


def _record(settings, request, run_id, started, report, error, on_error) -> None:
    """Append the run's row to RUNS_TABLE (success or failure), if one is configured."""
    if not settings.runs_table:
        return
    from clustering import adapters

    row = history_row(settings, request, run_id, started, report, error)
    try:
        # A budget of its own: a run stopped by its deadline is still recorded.
        with budget.bounded(budget.Budget.lasting(budget.FINAL_STEP_SECONDS)):
            adapters.append_run(settings.runs_table, row)
    except Exception as history_error:
        if on_error is None:
            raise
        on_error(history_error)


def history_row(settings, request, run_id, started, report, error) -> dict:
    """One row of the runs table (clustering/schemas/runs_table.json)."""
    finished = datetime.now(UTC)
    row = {
        "run_id": run_id,
        "trigger": request.trigger,
        "event_id": request.event_id,
        "reason": request.reason,
        "source_table": settings.features_source or "built-in sample",
        "key_column": settings.analysis.key_column,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "status": report.status if report else _failed_status(error),
        "error": one_line(error) if error else None,
        "duration_seconds": round((finished - started).total_seconds(), 3),
    }
    if report is None:
        return row
    manifest = report.manifest
    groups = {g["label"]: g["sub_k"] for g in manifest["top_groups"]}
    diagnostics = manifest["diagnostics"]
    return row | {
        "input_rows": manifest["input"]["rows"],
        "residential_rows": manifest["input"]["residential_rows"],
        "excluded_rows": manifest["input"]["excluded_rows"],
        "output_rows": None if report.status == "dry_run" else manifest["input"]["rows"],
        "features_used": json.dumps(manifest["features"]["used"]),
        "features_missing": json.dumps(manifest["features"]["missing"]),
        "best_k": diagnostics["best_k"],
        "stable_sub_k": groups.get("Stable"),
        "distressed_sub_k": groups.get("Distressed"),
        "silhouette_by_k": json.dumps(
            dict(zip(map(str, diagnostics["k"]), diagnostics["silhouette"], strict=True))
        ),
        "silhouette_sample_size": manifest["silhouette"]["sample_size"],
        **_moves(manifest),
        "artifact_prefix": report.artifact_prefix,
    }


def _failed_status(error: BaseException | None) -> str:
    """`published_partially` when the table holds the run but latest/ does not (repaired by
    the redelivery, whose own row then says `succeeded`); `failed` otherwise."""
    return "published_partially" if isinstance(error, PublishInterrupted) else "failed"


def _moves(manifest: dict) -> dict:
    """The runs table's transition and stability counts."""
    moves = manifest["transitions"]
    bar = manifest["stability"]["threshold"]
    scores = [c["stability"] for c in manifest["cohorts"] if c["stability"] is not None]
    return {
        "previous_run_id": moves["previous_run_id"],
        "moved_neighborhoods": moves["moved"],
        "moved_stable_distressed": moves["between_top_groups"],
        "appeared_neighborhoods": moves["appeared"],
        "disappeared_neighborhoods": moves["disappeared"],
        "unstable_cohorts": sum(1 for score in scores if score < bar),
    }


def one_line(error: BaseException) -> str:
    """An error as one line: its message, or its type when it has none."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _boundaries(settings: JobSettings, table) -> tuple[dict | None, tuple[str, ...]]:
    """The parsed boundaries (None without a source) and a warning for unmapped rows."""
    source = settings.boundaries_source
    if not source:
        return None, ()
    from clustering import adapters
    from clustering.naming import plural

    shapes = adapters.read_boundaries(
        source, settings.boundaries_key_column, settings.boundaries_geography_column
    )
    key = settings.analysis.key_column
    unmapped = [name for name in table[key] if name not in shapes]
    if not unmapped:
        return shapes, ()
    shown = ", ".join(unmapped[:5]) + (", ..." if len(unmapped) > 5 else "")
    return shapes, (f"{len(unmapped)} {plural(key)} have no boundary in {source}: {shown}",)


def _manifest(run: _Run, done: _Analysed, timings: dict[str, float], prefix) -> dict:
    """run.json: what the run read, decided and wrote (docs/analysis.md, "Outputs")."""
    from clustering.analysis.identity import manifest_entries

    request, settings, identity = run.request, run.settings, done.identity
    result = identity.result
    return {
        "run_id": run.run_id,
        "trigger": request.trigger,
        "event_id": request.event_id,
        "reason": request.reason,
        "dry_run": request.dry_run,
        "started_at": run.started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "input": _input_entry(settings, result),
        "outputs": {
            "artifacts": prefix,
            "clusters_table": settings.clusters_table,
            "files": [*(name for name in done.files if name != MANIFEST), MANIFEST],
        },
        "features": _features_entry(result.features, identity.measures, settings.analysis),
        "settings": asdict(settings.analysis)
        | {"feature_directions": settings.analysis.directions},
        "silhouette": {
            "method": "sampled" if result.silhouette_sample_size else "exact",
            "sample_size": result.silhouette_sample_size,
        },
        "diagnostics": _diagnostics_entry(result.diagnostics),
        **_group_entries(result),
        "summary": json.loads(result.summary.to_json(orient="records")),
        **manifest_entries(identity),
        "model": done.model,
        "label_overrides": {str(sub): name for sub, name in settings.label_overrides},
        "warnings": [*done.input.warnings, *result.warnings, *identity.warnings],
        "notes": list(done.input.notes),
        "timings_seconds": timings,
        "versions": _versions(),
    }


def _features_entry(features, measures: dict[str, str], analysis) -> dict:
    """Which features the run used, and how each is described (index or SD) and read."""
    return {
        "used": list(features.used),
        "missing": list(features.missing),
        "all_blank": list(features.all_blank),
        # "index": cohort mean / residential mean x 100; "sd": standard deviations from the
        # residential mean (features that take negative values, or whose mean is not positive).
        "measures": measures,
        "directions": {f: analysis.directions.get(f) for f in features.used},
    }


def _input_entry(settings: JobSettings, result) -> dict:
    from clustering.table import unmatched_exclusions

    unmatched = unmatched_exclusions(result.table[settings.analysis.key_column], settings.analysis)
    counts = result.table["excluded_type"].value_counts()
    return {
        "source": settings.features_source or "built-in sample",
        # Exclusion names that match no row: typos, or names the table spells otherwise.
        "unmatched_exclusions": [asdict(u) for u in unmatched],
        "boundaries": settings.boundaries_source,
        "rows": len(result.table),
        "residential_rows": int(result.residential.sum()),
        "excluded_rows": len(result.excluded),
        "rows_by_type": {str(k): int(v) for k, v in counts.items()},
    }


def _diagnostics_entry(diagnostics) -> dict:
    from clustering.analysis.model import TOP_K

    return {
        "note": f"K_MIN..K_MAX is a diagnostic only: the top split is always K={TOP_K}, as "
        "in the notebook; best_k is the K with the highest silhouette",
        "top_split_k": TOP_K,
        "k": list(diagnostics.ks),
        "inertia": [round(v, 6) for v in diagnostics.inertias],
        "silhouette": [round(v, 6) for v in diagnostics.silhouettes],
        "best_k": diagnostics.best_k,
    }


def _group_entries(result) -> dict:
    """The top groups' and the excluded groups' sizes and chosen Ks."""
    return {
        "top_groups": [
            {
                "top_cluster": g.top,
                "label": g.label,
                "rows": g.size,
                "sub_k": g.sub_k,
                "silhouette_by_k": _scores(g.search),
            }
            for g in result.top_groups
        ],
        "excluded_groups": [
            {
                "excluded_type": g.excluded_type,
                "rows": g.size,
                "k": g.k,
                "note": g.note,
                "silhouette_by_k": _scores(g.search),
            }
            for g in result.excluded_groups
        ],
    }


def _versions() -> dict[str, str]:
    return {
        "neighborhood-clusters": __version__,
        "python": platform.python_version(),
        # From the installed metadata: importing matplotlib here would undo the chart
        # process's head start.
        **{name: version(name) for name in VERSIONED},
    }


def _scores(search) -> dict[str, float] | None:
    if search is None:
        return None
    return {str(k): round(s, 6) for k, s in zip(search.ks, search.silhouettes, strict=True)}


def _json_bytes(document: dict) -> bytes:
    return (json.dumps(document, indent=2, default=str) + "\n").encode()
