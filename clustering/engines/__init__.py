"""The engines (DESIGN.md, "Engines"): which one clusters a run.

memory (clustering.engines.memory): every row in this process. warehouse
(clustering.engines.warehouse):
a sample of SAMPLE_ROWS rows, chosen by a hash of the key alone (the same neighborhoods run
after run, so identity matching compares like with like), is fitted in this process as the
memory engine fits a whole table, and the fitted model is applied to every row inside
BigQuery. ENGINE=auto takes memory for files and for bq:// tables up to MEMORY_MAX_ROWS rows:
below it one function clusters the table in seconds, above it reading every row would take the
function's memory and time.
"""

from __future__ import annotations

from typing import Protocol

from clustering.engines.choice import Choice, choose
from clustering.settings import MEMORY, WAREHOUSE
from clustering.stages.context import Analysed, Counts, Input, Rows, Run
from clustering.stages.publish import Steps

__all__ = ("MEMORY", "WAREHOUSE", "Choice", "Engine", "choose", "engine_for")


class Engine(Protocol):
    """What an engine supplies to a run (clustering.job strings the stages together)."""

    name: str

    def read(self, run: Run, pointer: bytes | None) -> Rows:
        """The rows to fit on (every row, or the sample) from one settled state of the
        source, with the whole table's row count and columns."""

    def previous(self, run: Run, store, pointer: bytes | None):
        """The last published run as identity compares with it (analysis.identity)."""

    def assign(self, run: Run, identity, model, previous) -> tuple[object, Counts | None]:
        """Every row assigned by the model; the identity with every row's counts and
        transitions, and the whole table's counts when the fit saw a sample."""

    def document(self, model, counts: Counts | None) -> dict:
        """run.json's model document."""

    def files(self, run: Run, given: Input, identity) -> tuple[object, dict[str, bytes]]:
        """The clusters table's rows when held in memory, and the CSVs written from memory."""

    def export(self, run: Run, store) -> dict[str, str]:
        """The CSVs written outside this process: artifact name -> where."""

    def steps(self, run: Run, store, done: Analysed) -> Steps:
        """How the clusters table is replaced and the transitions appended."""

    def close(self) -> None:
        """Drop what the run staged, whatever became of it."""


def engine_for(run: Run) -> Engine:
    """The engine ENGINE (and, for auto, the table's size) chooses for the run."""
    choice = choose(run.settings)
    if choice.engine == WAREHOUSE:
        from clustering.engines.warehouse import WarehouseEngine

        return WarehouseEngine.open(run, choice)
    from clustering.engines.memory import MemoryEngine

    return MemoryEngine()
