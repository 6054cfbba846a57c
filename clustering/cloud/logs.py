"""Structured logs: one JSON object per line, the shape Cloud Logging parses.

Cloud Logging reads `severity` and `message` from a JSON line on stdout and keeps the other
keys as `jsonPayload` fields, so `run_id` and `trigger` can be filtered in Logs Explorer.

The line that ends the handling of a delivery carries `event`, one of `Outcome`: the stable
machine field the log-based metrics and alerts of terraform/monitoring.tf filter on, so that no
alert depends on a message's wording.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TextIO


class Outcome(StrEnum):
    """How the handling of a delivery ended: the `event` field of its final log line.

    The values are a contract with terraform/monitoring.tf (tests/test_logs.py reads both):
    renaming one silences the alert that counts it."""

    RUN_SUCCEEDED = "run_succeeded"  # a run published its outputs
    DRY_RUN = "dry_run"  # a dry run finished; it published nothing, by request
    RUN_FAILED = "run_failed"  # a permanent failure (bad data, a missing bucket): recorded, acked
    RUN_RETRY = "run_retry"  # a transient failure: raised, so Pub/Sub delivers the event again
    RUN_BUSY = "run_busy"  # another delivery of the event holds a fresh claim: raised, retried
    EVENT_SKIPPED = "event_skipped"  # not for this job (a read, its own write, too old): acked
    EVENT_REJECTED = "event_rejected"  # a malformed or disallowed message: recorded, acked
    DUPLICATE = "duplicate"  # a redelivery of an event already handled: acked
    SETTINGS_INVALID = "settings_invalid"  # the configuration is wrong: the instance stops


OUTCOMES = frozenset(Outcome)

# The outcomes a person must act on (terraform/monitoring.tf counts them as failed runs).
# run_retry and run_busy are not among them: Pub/Sub retries those, and retries that keep
# failing show up as function errors and, at last, as a dead letter.
FAILURES = frozenset({Outcome.RUN_FAILED, Outcome.EVENT_REJECTED, Outcome.SETTINGS_INVALID})


def run_outcome(status: str) -> Outcome:
    """The outcome of a finished run from its status (clustering.job.RunReport.status)."""
    return {"succeeded": Outcome.RUN_SUCCEEDED, "dry_run": Outcome.DRY_RUN}[status]


class JsonLog:
    """Writes log lines carrying the context given at construction (run_id, trigger...)."""

    def __init__(self, stream: TextIO | None = None, **context: Any) -> None:
        self._stream = stream
        self._context = {k: v for k, v in context.items() if v is not None}

    def bind(self, **context: Any) -> JsonLog:
        """A logger with more context, writing to the same stream."""
        return JsonLog(self._stream, **(self._context | context))

    def __call__(self, severity: str, message: str, **fields: Any) -> None:
        entry = {
            "severity": severity,
            "message": message,
            "time": datetime.now(UTC).isoformat(),
            **self._context,
            **{k: v for k, v in fields.items() if v is not None},
        }
        event = entry.get("event")
        if event is not None and event not in OUTCOMES:
            # A name outside the set would be counted by no alert.
            raise ValueError(f"log event {event!r} is not one of {sorted(OUTCOMES)}")
        stream = self._stream or sys.stdout
        stream.write(json.dumps(entry, default=str) + "\n")
        stream.flush()

    def info(self, message: str, **fields: Any) -> None:
        self("INFO", message, **fields)

    def warning(self, message: str, **fields: Any) -> None:
        self("WARNING", message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        self("ERROR", message, **fields)
