"""The checks that stop a run before it publishes: a table still changing (settling), a
table that lost most of its rows (the row-drop guard), and the validation of what was read."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from clustering import InputError
from clustering.stages.context import Input, NotSettled, Rows, Run


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


def manifest_of(pointer: bytes | None) -> dict | None:
    """The manifest latest/run.json holds, None when absent or unreadable."""
    if pointer is None:
        return None
    try:
        document = json.loads(pointer)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def validate(run: Run, rows: Rows, pointer: bytes | None) -> Input:
    """What an engine read, validated: the features' rules, the row-drop guard over the whole
    table, OUTPUT_COLUMNS against the table's columns, and the boundaries."""
    from clustering.stages.publish import boundaries
    from clustering.table import check_output_columns, validate_features

    run.clock.stage("validate", f"validating {len(rows.frame):,} rows")
    valid = validate_features(rows.frame, run.settings.analysis, rows.where)
    check_row_drop(
        rows.total,
        manifest_of(pointer),
        run.settings.min_rows_ratio,
        run.request.force,
        rows.where,
    )
    check_output_columns(run.settings.output_columns, rows.columns, rows.where)
    shapes, map_warnings = boundaries(run.settings, valid.frame)
    warnings = tuple(valid.warnings) + tuple(map_warnings)
    for warning in warnings:
        run.warn(warning)
    for note in valid.notes:
        run.clock.progress(f"note: {note}")
    return Input(valid.frame, rows.where, shapes, warnings, valid.notes, rows.columns)
