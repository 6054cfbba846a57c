"""What every stage of a run reads: its request, its fixed inputs, its clock, and the typed
results one stage hands the next."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from clustering.adapters import budget
from clustering.settings import JobSettings

# Publishing (run folder, table load, pointer) does not start with less time than this left
# of the run's budget: a run that cannot finish publishing stops before it begins.
PUBLISH_RESERVE_SECONDS = 30.0


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


@dataclass(frozen=True)
class RunReport:
    """What a finished run did: its manifest (run.json) and where the artifacts went."""

    run_id: str
    status: str
    manifest: dict
    artifact_prefix: str | None


@dataclass
class Stopwatch:
    """Seconds per stage, reported through `progress` as each stage starts."""

    progress: Callable[[str], None]
    timings: dict[str, float] = field(default_factory=dict)
    current: str | None = None
    since: float = 0.0

    def stage(self, name: str, message: str) -> None:
        # Stage boundaries are where a run past its deadline stops (clustering.adapters.budget).
        active = budget.active()
        if active is not None:
            active.check(name, PUBLISH_RESERVE_SECONDS if name == "publish" else 0.0)
        self.close()
        self.current, self.since = name, time.perf_counter()
        self.progress(message)

    def close(self) -> None:
        if self.current is not None:
            self.timings[self.current] = round(time.perf_counter() - self.since, 3)
            self.current = None

    def done(self) -> dict[str, float]:
        self.close()
        return self.timings


@dataclass(frozen=True)
class Run:
    """One run's fixed inputs, which every stage of it reads."""

    settings: JobSettings
    request: RunRequest
    run_id: str
    started: datetime
    clock: Stopwatch
    warn: Callable[[str], None]
    fence: Callable[[str], None]


@dataclass(frozen=True)
class Rows:
    """What an engine read: the rows the model is fitted on (every row, or the sample) and
    what it knows of the whole table, for the checks that must count every row."""

    frame: object  # a DataFrame
    where: str  # the source as messages name it
    total: int  # the table's rows (the row-drop guard compares this)
    columns: tuple[str, ...]  # every column of the table (OUTPUT_COLUMNS is checked on them)


@dataclass(frozen=True)
class Input:
    """The validated input of a run and what reading it had to say."""

    frame: object  # the validated features (a DataFrame)
    where: str
    boundaries: dict | None
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    columns: tuple[str, ...] = ()  # every column of the source table


@dataclass(frozen=True)
class Counts:
    """Row counts over the whole table when the model saw a sample of it (the warehouse
    engine): the report and run.json count every row, not the sample."""

    rows: int
    residential: int
    fitted: int  # the rows the model was fitted on (the sample's)
    sample: str  # how the report says what the model was drawn from
    changes: int | None  # transitions of every row (None without a previous run)
    sizes: dict[str, int]  # rows per cohort label, as the pictures name cohorts


@dataclass(frozen=True)
class Analysed:
    """Everything a run computed, ready to publish: nothing is written yet."""

    input: Input
    identity: object  # clustering.analysis.identity.Identity
    table: object | None  # the clusters table's rows (a DataFrame), when held in memory
    files: dict[str, bytes]
    model: dict  # run.json's "model": the model document
    counts: Counts | None = None
