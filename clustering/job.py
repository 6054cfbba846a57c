"""One run of the job: read, validate, cluster, draw, then publish only if all of it worked.

The CLI and the Cloud Function both call `run_job`, so a local run and a deployed run follow
the same steps and produce the same artifacts.
"""

from __future__ import annotations

import io
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version

from clustering import __version__
from clustering.errors import InputError
from clustering.naming import CSV_CLUSTERS, CSV_EXCLUDED, CSV_TRANSITIONS, MANIFEST, new_run_id
from clustering.settings import JobSettings

VERSIONED = ("numpy", "pandas", "scikit-learn", "scipy", "matplotlib")


@dataclass(frozen=True)
class RunRequest:
    """Why and how a run happens: who triggered it and what the event asked for."""

    trigger: str = "cli"
    event_id: str | None = None
    reason: str | None = None
    dry_run: bool = False


@dataclass
class _Stopwatch:
    """Seconds per stage, reported through `progress` as each stage starts."""

    progress: Callable[[str], None]
    timings: dict[str, float] = field(default_factory=dict)
    _stage: str | None = None
    _since: float = 0.0

    def stage(self, name: str, message: str) -> None:
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
) -> RunReport:
    """Run the whole job; raise InputError for bad input, anything else for the unexpected.

    Artifacts go to runs/<run_id>/ first, then the clusters table is replaced in one atomic
    step, then latest/ is replaced (run.json last): a failure before the end leaves the table
    and latest/ as they were. With a RUNS_TABLE, one row is appended per run, failed or not;
    a failure to append it goes to `on_history_error` (default: raise), because the history
    must never turn a published run into a retried one. `run_id` lets a caller log under the
    id before the run starts.
    """
    started = datetime.now(UTC)
    run_id = run_id or new_run_id(started)
    clock = _Stopwatch(progress or (lambda _message: None))
    try:
        report = _run(settings, request, clock, run_id, started)
    except Exception as error:
        _record(settings, request, run_id, started, None, error, on_history_error)
        raise
    _record(settings, request, run_id, started, report, None, on_history_error)
    return report


def _run(settings, request, clock, run_id, started) -> RunReport:
    from clustering import adapters, charts

    store = adapters.artifact_store(settings.artifacts_dest)
    # Fork the chart process first: it imports matplotlib while this one reads and clusters.
    with charts.ChartRenderer() as renderer:
        source = settings.features_source
        analysis = settings.analysis
        clock.stage("read", f"reading features from {source or 'the built-in sample'}")
        if source is None:
            from clustering.sample import make_sample

            frame, where = make_sample(), "the built-in sample"
        else:
            frame, where = adapters.read_features(source)

        from clustering.model import cluster
        from clustering.table import validate_features

        clock.stage("validate", f"validating {len(frame)} rows")
        valid = validate_features(frame, analysis, where)
        boundaries, map_warnings = _boundaries(settings.boundaries_source, valid.frame)
        previous = _previous(store)
        clock.stage("cluster", "clustering")
        try:
            result = cluster(
                valid.frame,
                analysis,
                progress=clock.progress,
                on_diagnostics=lambda search, sampled: _submit(
                    renderer, charts.elbow_task(search, sampled)
                ),
            )
        except InputError as error:
            raise InputError(f"{where}: {error}") from None
        identity = _identify(
            result, previous, settings, run_id, clock,
            lambda renumbered: _submit(
                renderer, charts.result_tasks(renumbered, analysis.random_state, boundaries)
            ),
        )  # fmt: skip
        clock.stage("charts", "drawing charts")
        table = identity.table.assign(run_id=run_id, _clustered_at=started)
        files = {
            CSV_CLUSTERS: table.to_csv(index=False).encode(),
            CSV_EXCLUDED: result.excluded.to_csv(index=False).encode(),
        }
        if identity.transitions is not None:
            files[CSV_TRANSITIONS] = identity.transitions.to_csv(index=False).encode()
        files |= renderer.collect()

    prefix = None if request.dry_run else store.describe(f"runs/{run_id}/")

    def manifest(timings: dict[str, float]) -> dict:
        return _manifest(
            run_id, request, settings, started, valid.warnings + map_warnings, identity,
            timings, prefix, list(files),
        )  # fmt: skip

    if request.dry_run:
        return RunReport(run_id, "dry_run", manifest(clock.done()), None)

    from clustering.table import output_schema

    clock.stage("publish", f"publishing run {run_id}")
    files[MANIFEST] = _json_bytes(manifest(dict(clock.timings)))
    store.write_run(run_id, files)
    if settings.clusters_table:
        adapters.write_clusters(settings.clusters_table, table, output_schema(table))
    # Before latest/ switches: a run that fails after this leaves rows under a run_id that the
    # runs table records as failed, never a published run without its moves.
    _append_transitions(settings.transitions_table, identity.transitions)
    store.promote(run_id, files)
    return RunReport(run_id, "succeeded", manifest(clock.done()), prefix)


def _previous(store):
    """The last published run (latest/ of the artifacts destination), None on the first run.

    Centroids, names and ids come from its run.json; each neighborhood's previous cohort from
    its clusters CSV, the published record of that run: run.json stays one entry per cohort
    whatever the number of rows, and nothing is stored twice.
    """
    import pandas as pd

    from clustering.identity import previous_run
    from clustering.transitions import PREVIOUS_COLUMNS

    raw = store.read_latest(MANIFEST)
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
    content = store.read_latest(CSV_CLUSTERS)
    if content is None:
        return previous_run(manifest, None)
    wanted = {*PREVIOUS_COLUMNS, "cluster_label", "run_id"}
    rows = pd.read_csv(io.BytesIO(content), usecols=lambda c: c in wanted,
                       dtype={"neighborhood": str}, keep_default_na=False,
                       na_values=[""])  # fmt: skip
    if set(rows["run_id"].astype(str)) - {run_id}:
        # latest/ is switched file by file in Cloud Storage: this is a switch in progress.
        raise RuntimeError(f"{store.describe('latest/')} holds files of more than one run")
    if "cohort_name" not in rows:  # published before cohorts had names
        rows["cohort_name"] = rows["cluster_label"]
    return previous_run(manifest, rows[list(PREVIOUS_COLUMNS)])


def _identify(result, previous, settings, run_id, clock, draw):
    """Stable ids and names; then the renumbered result goes to `draw` (the charts), and
    the bootstrap stability is computed while the chart workers draw."""
    from clustering.identity import identify, with_stability

    against = f"run {previous.run_id}" if previous else "nothing (first run)"
    clock.stage("identity", f"matching cohorts to {against}")
    named = identify(result, previous, dict(settings.label_overrides), run_id)
    draw(named.result)
    clock.stage("stability", "bootstrapping cohort stability")
    return with_stability(named, _stability(named, settings.analysis))


def _append_transitions(dest, moves) -> None:
    """Append the run's moves to TRANSITIONS_TABLE, if configured and there are any."""
    if not dest or moves is None or moves.empty:
        return
    from clustering import adapters
    from clustering.table import table_schema

    adapters.append_transitions(dest, moves, list(table_schema("transitions_table")))


def _stability(identity, analysis):
    from clustering.stability import bootstrap_stability

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
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "status": report.status if report else "failed",
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


def _boundaries(source: str | None, table) -> tuple[dict | None, tuple[str, ...]]:
    """The parsed boundaries (None without a source) and a warning for unmapped rows."""
    if not source:
        return None, ()
    from clustering import adapters
    from clustering.geo import parse_boundaries

    shapes = parse_boundaries(adapters.read_bytes(source), source)
    unmapped = [name for name in table["neighborhood"] if name not in shapes]
    if not unmapped:
        return shapes, ()
    shown = ", ".join(unmapped[:5]) + (", ..." if len(unmapped) > 5 else "")
    return shapes, (f"{len(unmapped)} neighborhoods have no boundary in {source}: {shown}",)


def _manifest(run_id, request, settings, started, input_warnings, identity, timings, prefix, files):
    from clustering.identity import manifest_entries

    result = identity.result
    counts = result.table["excluded_type"].value_counts()
    diagnostics = result.diagnostics
    return {
        "run_id": run_id,
        "trigger": request.trigger,
        "event_id": request.event_id,
        "reason": request.reason,
        "dry_run": request.dry_run,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "input": {
            "source": settings.features_source or "built-in sample",
            "boundaries": settings.boundaries_source,
            "rows": len(result.table),
            "residential_rows": int(result.residential.sum()),
            "excluded_rows": len(result.excluded),
            "rows_by_type": {str(k): int(v) for k, v in counts.items()},
        },
        "outputs": {
            "artifacts": prefix,
            "clusters_table": settings.clusters_table,
            "files": [*(name for name in files if name != MANIFEST), MANIFEST],
        },
        "features": {
            "used": list(result.features.used),
            "missing": list(result.features.missing),
            "all_blank": list(result.features.all_blank),
        },
        "settings": asdict(settings.analysis),
        "silhouette": {
            "method": "sampled" if result.silhouette_sample_size else "exact",
            "sample_size": result.silhouette_sample_size,
        },
        "diagnostics": {
            "k": list(diagnostics.ks),
            "inertia": [round(v, 6) for v in diagnostics.inertias],
            "silhouette": [round(v, 6) for v in diagnostics.silhouettes],
            "best_k": diagnostics.best_k,
        },
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
        "summary": json.loads(result.summary.to_json(orient="records")),
        **manifest_entries(identity),
        "label_overrides": {str(sub): name for sub, name in settings.label_overrides},
        "warnings": list(input_warnings) + list(result.warnings) + list(identity.warnings),
        "timings_seconds": timings,
        "versions": {
            "neighborhood-clusters": __version__,
            "python": platform.python_version(),
            # From the installed metadata: importing matplotlib here would undo the chart
            # process's head start.
            **{name: version(name) for name in VERSIONED},
        },
    }


def _scores(search) -> dict[str, float] | None:
    if search is None:
        return None
    return {str(k): round(s, 6) for k, s in zip(search.ks, search.silhouettes, strict=True)}


def _json_bytes(document: dict) -> bytes:
    return (json.dumps(document, indent=2, default=str) + "\n").encode()
