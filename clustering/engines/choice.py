"""Which engine runs: ENGINE, and for auto the table's size from its metadata."""

from __future__ import annotations

from dataclasses import dataclass

from clustering import InputError
from clustering.settings import AUTO, MEMORY, WAREHOUSE, JobSettings, check_no_drop_keys


@dataclass(frozen=True)
class Choice:
    """The engine of a run; for a bq:// source, what one metadata lookup told of the table:
    its rows and its schema (JSON fields)."""

    engine: str
    rows: int | None = None
    schema: tuple[dict, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f["name"] for f in self.schema)


def choose(settings: JobSettings) -> Choice:
    """ENGINE applied: auto takes memory for files and for bq:// tables up to
    MEMORY_MAX_ROWS rows (a row count from the table's metadata: no query), warehouse above."""
    source = settings.features_source or ""
    if settings.engine == MEMORY or not source.startswith("bq://"):
        return Choice(MEMORY)
    from clustering.adapters import bigquery

    table = bigquery.get_table(source)
    rows = int(table.num_rows or 0)
    if settings.engine == AUTO and rows <= settings.memory_max_rows:
        return Choice(MEMORY, rows)
    if not (settings.clusters_table or "").startswith("bq://"):
        raise InputError(
            f"{source} has {rows:,} rows, more than MEMORY_MAX_ROWS={settings.memory_max_rows:,}"
            ", so the warehouse engine clusters it, which writes its rows to a BigQuery table "
            "only: set CLUSTERS_TABLE (--clusters-table) to bq://project.dataset.table"
        )
    transitions = settings.transitions_table
    if transitions and not transitions.startswith("bq://"):
        raise InputError(
            f"TRANSITIONS_TABLE {transitions!r}: the warehouse engine appends its transitions "
            "inside BigQuery: give bq://project.dataset.table or leave it unset"
        )
    check_no_drop_keys(settings.analysis, f"{source} has {rows:,} rows, above MEMORY_MAX_ROWS")
    return Choice(WAREHOUSE, rows, tuple(f.to_api_repr() for f in table.schema))
