"""Self-repair: the clusters table and latest/ name the same run again.

After every completed event the table's run_id is the run latest/ names (DESIGN.md). A run
interrupted between its table load and its switch of latest/ (PublishInterrupted) leaves them
apart, and so does one whose redelivery then failed for good or went to the dead letter: a
later delivery of the same event is a duplicate, and nothing else would ever bring them
together. So every run that may publish first compares the two and repairs what it finds,
whatever becomes of the run itself (a run the row-drop guard then refuses included):

- the table holds a run newer than latest/'s whose folder runs/<id>/ is complete (its
  run.json, written last, and every file it lists): latest/ is switched to that run;
- otherwise (the folder expired, or the table holds no run of ours): the table is loaded
  again from latest/'s clusters CSV, the run latest/ names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from clustering.naming import CSV_CLUSTERS, MANIFEST


@dataclass(frozen=True)
class Repair:
    """What a run needs to repair: where, with what, and how to say so."""

    dest: str  # the clusters table
    run_id: str  # the repairing run (its repair load is named after it)
    fence: Callable[[str], None]
    warn: Callable[[str], None]
    with_shapes: Callable[[object], object]  # the table's rows, given their shapes if any
    key_column: str = "neighborhood"
    population_column: str | None = "population"


def repair(store, pointer: bytes | None, token, job: Repair) -> tuple[bytes | None, object]:
    """Bring latest/ and the clusters table together if they disagree; the pointer and
    token the run then goes on with (changed when latest/ was switched)."""
    from clustering import adapters

    latest_run = _run_id(pointer)
    table_run = adapters.clusters_run_id(job.dest)
    if table_run == latest_run:
        return pointer, token
    # latest/ only moves forward: a table holding an older run (run ids sort by start time)
    # is loaded again from latest/, never followed back.
    newer = table_run is not None and (latest_run is None or table_run > latest_run)
    files = _complete_run(store, table_run) if newer else None
    if files is not None:
        from clustering.adapters.claims import ClaimLost

        job.fence("repairing latest/")
        if not store.switch_latest(table_run, files, token):
            raise ClaimLost(f"latest/ changed while run {job.run_id} repaired it")
        job.warn(
            f"repaired: {job.dest} held run {table_run} but latest/ named "
            f"{latest_run or 'no run'}; latest/ now points to run {table_run}"
        )
        return store.read_pointer()
    if latest_run is not None and _reload(store, latest_run, job):
        job.warn(
            f"repaired: {job.dest} held {f'run {table_run}' if table_run else 'no run'} but "
            f"latest/ names run {latest_run}, whose rows were loaded into it again"
        )
    return pointer, token


def _run_id(pointer: bytes | None) -> str | None:
    try:
        return str(json.loads(pointer)["run_id"]) if pointer else None
    except (ValueError, KeyError, TypeError):
        return None


def _complete_run(store, run_id: str) -> dict[str, bytes] | None:
    """Every file of runs/<run_id>/, run.json last; None unless all of them are there."""
    manifest = store.read_run_file(run_id, MANIFEST)
    try:
        names = [n for n in json.loads(manifest)["outputs"]["files"] if n != MANIFEST]
    except (ValueError, KeyError, TypeError):
        return None
    files = {name: store.read_run_file(run_id, name) for name in names}
    if any(content is None for content in files.values()):
        return None
    return files | {MANIFEST: manifest}


def _reload(store, latest_run: str, job: Repair) -> bool:
    """Load latest/'s clusters CSV into the table again; False when latest/ has none."""
    from clustering import adapters
    from clustering.table import output_schema, read_people_csv, typed_clusters

    content = store.read_latest_file(CSV_CLUSTERS)
    if content is None:
        job.warn(f"{job.dest} and latest/ disagree, and latest/ has no {CSV_CLUSTERS} to repair")
        return False
    key, population = job.key_column, job.population_column
    rows = read_people_csv(content, dtype={key: str}, keep_default_na=False, na_values=[""])
    rows = typed_clusters(rows, key, population)
    if set(rows["run_id"].dropna()) != {latest_run}:
        job.warn(f"latest/{CSV_CLUSTERS} is not run {latest_run}'s: the table is not repaired")
        return False
    rows = job.with_shapes(rows)
    # A load of its own, named after the repairing run: it waits for the last load, like any.
    repair_load = f"{job.run_id}-repair"
    job.fence("repairing the clusters table")
    adapters.after_last_load(store, job.dest, repair_load)
    adapters.write_clusters(job.dest, rows, output_schema(rows, key, population), repair_load)
    return True
