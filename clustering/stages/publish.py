"""Publishing: the run folder, the clusters table, the transitions and the switch of
latest/, in that order and fenced, so a failure leaves the last published run in place."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from clustering import one_line
from clustering.settings import JobSettings
from clustering.stages.context import PublishInterrupted, Run


@dataclass(frozen=True)
class Steps:
    """What an engine does at the publishing steps: `replace` the clusters table (None
    without one), `move` the transitions into TRANSITIONS_TABLE, and `check` the source just
    before the table is replaced (a source that changed since it was read stops the run)."""

    replace: Callable[[], None] | None
    move: Callable[[], None]
    check: Callable[[], None] = lambda: None


def publish(run: Run, store, files: dict[str, bytes], pointer_token, steps: Steps) -> None:
    """Run folder, then the clusters table, then the transitions and the switch of latest/;
    a failure after the table was replaced is a PublishInterrupted."""
    from clustering import adapters

    clusters_table = run.settings.clusters_table
    run.fence("writing the run folder")
    store.write_run(run.run_id, files)
    if steps.replace is None:
        steps.move()
        switch_latest(store, run.run_id, files, pointer_token, run.fence)
        return
    steps.check()
    run.fence("replacing the clusters table")
    # A cancelled load or copy of an earlier run may still commit: wait for the one recorded
    # last, and record this one, whatever engine replaces the table.
    adapters.after_last_load(store, clusters_table, run.run_id)
    steps.replace()
    try:
        if not adapters.clusters_hold(clusters_table, run.run_id):
            raise RuntimeError(
                f"{clusters_table} holds another run's rows after the "
                "load (a late load job of an earlier run)"
            )
        steps.move()
        switch_latest(store, run.run_id, files, pointer_token, run.fence)
    except Exception as error:
        raise PublishInterrupted(
            f"run {run.run_id} was loaded into {clusters_table} but latest/ was not "
            f"switched to it ({one_line(error)}); the redelivery of the event publishes again"
        ) from error


def switch_latest(store, run_id: str, files: dict[str, bytes], token, fence) -> None:
    from clustering.adapters.claims import ClaimLost

    fence("switching latest/")
    if not store.switch_latest(run_id, files, token):
        raise ClaimLost(
            f"latest/ changed since run {run_id} read it (another run published "
            "meanwhile): this run does not overwrite it"
        )


def append_transitions(dest, moves, fence, key_column: str) -> None:
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


def with_shapes(table, boundaries: dict | None, key_column: str = "neighborhood"):
    """The clusters table with each row's shape as WKT in `<key_column>_shape` (GEOGRAPHY in
    BigQuery, for Looker Studio's filled map) when boundaries are configured; null where a
    row has no boundary."""
    if not boundaries:
        return table
    from clustering.table import shape_column

    shapes = shapes_wkt(boundaries)
    return table.assign(**{shape_column(key_column): table[key_column].map(shapes)})


def shapes_wkt(boundaries: dict) -> dict[str, str]:
    """Each boundary as WKT, by the key it belongs to."""
    from clustering.outputs.geo import to_wkt

    return {name: to_wkt(rings) for name, rings in boundaries.items()}


def boundaries(settings: JobSettings, table) -> tuple[dict | None, tuple[str, ...]]:
    """The parsed boundaries (None without a source) and a warning for unmapped rows."""
    source = settings.boundaries_source
    if not source:
        return None, ()
    from clustering import adapters

    shapes = adapters.read_boundaries(
        source,
        settings.boundaries_key_column,
        settings.boundaries_geography_column,
        settings.maximum_bytes_billed,
    )
    key = settings.analysis.key_column
    unmapped = [name for name in table[key] if name not in shapes]
    if not unmapped:
        return shapes, ()
    shown = ", ".join(unmapped[:5]) + (", ..." if len(unmapped) > 5 else "")
    called = settings.analysis.rows_called
    return shapes, (f"{len(unmapped)} {called} have no boundary in {source}: {shown}",)


def repair(run: Run, store, pointer: bytes | None, token, engine):
    """Self-repair (clustering.adapters.repair) of a disagreement between the clusters table and
    latest/, first, whatever becomes of this run; the pointer it goes on with. A run that
    latest/ was switched to never finished publishing: what it would have done after its
    table replacement (`recover`) is done now."""
    from clustering.adapters.repair import Repair, repair

    def shaped(rows):
        key = run.settings.analysis.key_column
        return with_shapes(rows, boundaries(run.settings, rows)[0], key)

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
    repaired, repaired_token = repair(store, pointer, token, job)
    if repaired is not None and repaired != pointer:
        recover(run, store, json.loads(repaired), engine)
    return repaired, repaired_token


def recover(run: Run, store, manifest: dict, engine) -> None:
    """The steps after the table replacement of run `manifest` (stopped after it: killed, or
    out of time), unless they happened: its transitions appended, its history row written."""
    from clustering import adapters
    from clustering.stages.context import RunReport, RunRequest
    from clustering.stages.history import record

    settings, run_id = run.settings, str(manifest["run_id"])
    moves = manifest.get("transitions") or {}
    changes = sum(moves.get(k) or 0 for k in ("moved", "appeared", "disappeared"))
    dest = settings.transitions_table
    done = []
    if dest and changes and not adapters.holds_run(dest, run_id):
        run.fence("recovering the transitions")
        engine.recover_transitions(run, store, run_id)
        done.append("transitions")
    if settings.runs_table and not adapters.holds_run(settings.runs_table, run_id):
        request = RunRequest(
            trigger=str(manifest.get("trigger") or "recovered"),
            event_id=manifest.get("event_id"),
            reason=manifest.get("reason"),
        )
        report = RunReport(run_id, "succeeded", manifest, manifest["outputs"].get("artifacts"))
        started = datetime.fromisoformat(manifest["started_at"])
        record(settings, request, run_id, started, report, None, lambda e: run.warn(str(e)))
        done.append("history row")
    if done:
        run.warn(
            f"recovered: run {run_id} stopped after its table was replaced; its "
            f"{' and '.join(done)} were completed now"
        )
