"""The memory engine: every row read into this process, fitted and assigned with numpy, the
clusters table replaced by one load job, the CSVs written from memory."""

from __future__ import annotations

from dataclasses import dataclass

from clustering.naming import CSV_CLUSTERS, CSV_EXCLUDED, CSV_TRANSITIONS
from clustering.settings import MEMORY
from clustering.stages.context import Analysed, Counts, Input, Rows, Run
from clustering.stages.publish import Steps, append_transitions, with_shapes


@dataclass(frozen=True)
class MemoryEngine:
    """Every row in memory (clustering.engines's docstring says when it runs)."""

    name: str = MEMORY

    def read(self, run: Run, pointer: bytes | None) -> Rows:
        """Every row, from a table that did not change while it was read (settling)."""
        from clustering import adapters
        from clustering.stages.guards import check_settled

        source = run.settings.features_source
        run.clock.stage("read", f"reading features from {source or 'the built-in sample'}")
        if source is None:
            from clustering.analysis.sample import make_sample

            frame, where = make_sample(), "the built-in sample"
        else:
            before = adapters.source_version(source)
            frame, where = adapters.read_features(source, run.settings.memory_max_rows)
            after = adapters.source_version(source)
            check_settled(where, before, after, run.settings.settle_seconds)
        return Rows(frame, where, len(frame), tuple(map(str, frame.columns)))

    def previous(self, run: Run, store, pointer: bytes | None):
        """The last published run with its rows, from latest/'s clusters CSV (or the
        clusters table, for a run the warehouse engine published)."""
        from clustering.stages.previous import previous

        table = run.settings.clusters_table
        table = table if table and table.startswith("bq://") else None
        return previous(store, pointer, run.settings.analysis.key_column, table=table)

    def assign(self, run: Run, identity, model, previous) -> tuple[object, Counts | None]:
        """Every row was fitted, so the model document's assignment of them is the run's."""
        return identity, None

    def document(self, model, counts: Counts | None) -> dict:
        from clustering.analysis.document import document

        return document(model)

    def files(self, run: Run, given: Input, identity) -> tuple[object, dict[str, bytes]]:
        """The clusters table's rows (run_id and time stamped, OUTPUT_COLUMNS applied) and
        the people-facing CSVs of them."""
        from clustering.table import people_csv, withheld_columns

        key = run.settings.analysis.key_column
        withheld = withheld_columns(given.columns, run.settings.output_columns, key)

        def published(frame):
            return frame.drop(columns=[c for c in withheld if c in frame.columns])

        table = published(identity.table).assign(run_id=run.run_id, _clustered_at=run.started)
        excluded = published(identity.result.excluded)
        files = {CSV_CLUSTERS: people_csv(table), CSV_EXCLUDED: people_csv(excluded)}
        if identity.transitions is not None:
            files[CSV_TRANSITIONS] = people_csv(identity.transitions)
        return table, files

    def export(self, run: Run, store) -> dict[str, str]:
        return {}  # the CSVs are files of the run folder already

    def steps(self, run: Run, store, done: Analysed) -> Steps:
        """One load job of every row (None without a clusters table), and the transitions'
        append from memory."""
        settings = run.settings
        key = settings.analysis.key_column
        moves = done.identity.transitions

        def move() -> None:
            append_transitions(settings.transitions_table, moves, run.fence, key)

        if not settings.clusters_table:
            return Steps(None, move)

        def replace() -> None:
            from clustering import adapters
            from clustering.table import output_schema

            population = settings.analysis.population_column
            clusters = with_shapes(done.table, done.input.boundaries, key)
            schema = output_schema(clusters, key, population)
            adapters.write_clusters(settings.clusters_table, clusters, schema, run.run_id)

        return Steps(replace, move)

    def recover_transitions(self, run: Run, store, run_id: str) -> None:
        """Run `run_id`'s transitions, from its run folder's CSV."""
        from clustering.table import read_people_csv, table_schema, typed_rows

        content = store.read_run_file(run_id, CSV_TRANSITIONS)
        if content is None:
            return
        key = run.settings.analysis.key_column
        schema = table_schema("transitions_table", key)
        rows = read_people_csv(content, dtype={key: str}, keep_default_na=False, na_values=[""])
        moves = typed_rows(rows, schema)
        append_transitions(run.settings.transitions_table, moves, run.fence, key)

    def close(self) -> None:
        """Nothing is staged outside this process."""
