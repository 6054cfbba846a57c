"""Structured logs: one JSON object per line, the shape Cloud Logging parses.

Cloud Logging reads `severity` and `message` from a JSON line on stdout and keeps the other
keys as `jsonPayload` fields, so `run_id` and `trigger` can be filtered in Logs Explorer.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO


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
        stream = self._stream or sys.stdout
        stream.write(json.dumps(entry, default=str) + "\n")
        stream.flush()

    def info(self, message: str, **fields: Any) -> None:
        self("INFO", message, **fields)

    def warning(self, message: str, **fields: Any) -> None:
        self("WARNING", message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        self("ERROR", message, **fields)
