"""The runs table: one row per run, failed or not (clustering/schemas/runs_table.json)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from clustering import InputError, one_line
from clustering.adapters import budget
from clustering.naming import new_run_id
from clustering.settings import JobSettings
from clustering.stages.context import PublishInterrupted, RunRequest


def record(settings, request, run_id, started, report, error, on_error) -> None:
    """Append the run's row to RUNS_TABLE (success or failure), if one is configured; a
    failure to append it goes to `on_error` (raised when None)."""
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


def record_failure(
    settings: JobSettings,
    request: RunRequest,
    error: str,
    on_history_error: Callable[[Exception], None] | None = None,
) -> None:
    """Record a run that never started (a rejected event) in RUNS_TABLE, if configured."""
    started = datetime.now(UTC)
    run_id = new_run_id(started)
    record(settings, request, run_id, started, None, InputError(error), on_history_error)


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
