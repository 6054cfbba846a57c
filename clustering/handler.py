"""The Cloud Function's work: decide on an event, claim it, run, and ack or raise.

Permanent failures (a rejected event, bad data, bad settings) are logged, recorded in the run
history and acked by returning normally, because a retry would fail the same way for a day.
Transient failures (5xx, timeouts, a dropped connection) release the claim and raise, so the
trigger's retry policy delivers the event again and that delivery can claim it. Each event is
claimed before it runs (clustering.claims): a redelivery of a handled event is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from clustering import claims
from clustering.errors import InputError
from clustering.events import Decision, decide, envelope_from_cloudevent
from clustering.job import RunRequest, one_line, record_failure, run_job
from clustering.logs import JsonLog, Outcome, run_outcome
from clustering.naming import new_run_id
from clustering.settings import JobSettings


class EventBusy(RuntimeError):
    """Another delivery of the event holds a fresh claim: raised so the event is retried."""


def load_settings(environ: Mapping[str, str] = os.environ, log: JsonLog | None = None):
    """The function's settings, validated at start-up: a bad value stops the instance with
    one clear log line instead of failing every event later."""
    try:
        return JobSettings.from_env(environ)
    except InputError as error:
        (log or JsonLog())("CRITICAL", f"invalid function configuration: {error}",
                           event=Outcome.SETTINGS_INVALID)  # fmt: skip
        raise


def log_warnings(log: JsonLog) -> None:
    """Send Python warnings through the JSON log: Cloud Logging makes an entry of every
    output line, and a plain-text warning would land without severity or context."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        log.warning(f"{category.__name__}: {message}", source=f"{filename}:{lineno}")

    warnings.showwarning = show


def handle(cloud_event: Any, settings: JobSettings, log: JsonLog | None = None,
           now: datetime | None = None) -> Decision:  # fmt: skip
    """Handle one delivery; returns the decision (acked) or raises (retried)."""
    log = log or JsonLog()
    envelope = envelope_from_cloudevent(cloud_event)
    decision = decide(envelope, settings, now or datetime.now(UTC))
    log = log.bind(trigger=decision.trigger, event_id=envelope.id, idempotency_key=decision.key)

    def history_error(error: Exception) -> None:
        log.error(f"run history not written: {one_line(error)}")

    if decision.action == "reject":
        log.error(f"event rejected, not retried: {decision.reason}", event=Outcome.EVENT_REJECTED)
        record_failure(settings, _request(decision, envelope.id), decision.reason, history_error)
        return decision
    if decision.action == "skip":
        log.info(f"event skipped: {decision.reason}", event=Outcome.EVENT_SKIPPED)
        return decision

    from clustering.adapters import artifact_store

    key = decision.key or envelope.id or "no-id"
    store = artifact_store(settings.artifacts_dest)
    started = datetime.now(UTC)
    run_id = new_run_id(started)
    mine = claims.Claim(run_id=run_id, event_id=envelope.id, claimed_at=started.isoformat())
    try:
        outcome, found = claims.claim(store, key, mine, started)
    except Exception as error:
        if is_transient(error):
            log.error(f"the claim store is unreachable, will be retried: {one_line(error)}",
                      event=Outcome.RUN_RETRY)  # fmt: skip
            raise
        # A missing bucket or a denied write fails the same way on every retry.
        log.error(f"cannot claim the event in {store.describe('claims/')}, not retried: "
                  f"{one_line(error)}", event=Outcome.RUN_FAILED)  # fmt: skip
        record_failure(
            settings, _request(decision, key), f"claim failed: {one_line(error)}", history_error
        )
        return decision
    if outcome == "done":
        log.info(f"duplicate delivery skipped: {key} was already handled", event=Outcome.DUPLICATE)
        return decision
    if outcome == "busy":
        log.warning(f"event {key} is claimed by run {found.run_id if found else '?'} since "
                    f"{found.claimed_at if found else '?'}; will be retried",
                    event=Outcome.RUN_BUSY)  # fmt: skip
        raise EventBusy(f"{key} is being handled by another delivery")
    if found is not None:
        log.warning(f"took over the claim of run {found.run_id}, which never finished")
    log = log.bind(run_id=run_id)
    log.info(f"run starting: {decision.reason}")
    settings = (settings.with_features_source(decision.features_source)
                if decision.features_source else settings)  # fmt: skip
    try:
        report = run_job(
            settings,
            _request(decision, key),
            progress=log.info,
            on_history_error=history_error,
            run_id=run_id,
        )
    except Exception as error:
        if is_transient(error):
            _release(store, key, log)
            log.error(f"run failed with a transient error, will be retried: {one_line(error)}",
                      event=Outcome.RUN_RETRY)  # fmt: skip
            raise
        severity = "WARNING" if isinstance(error, InputError) else "ERROR"
        log(severity, f"run failed, not retried: {one_line(error)}",
            error_type=type(error).__name__, event=Outcome.RUN_FAILED)  # fmt: skip
        _finish(store, key, mine, log)
        return decision
    _finish(store, key, mine, log)
    manifest = report.manifest
    log.info(
        f"run {report.status}: {manifest['input']['rows']} rows, best K "
        f"{manifest['diagnostics']['best_k']}, artifacts {report.artifact_prefix}",
        timings=manifest["timings_seconds"],
        status=report.status,
        event=run_outcome(report.status),
    )
    return decision


def is_transient(error: BaseException) -> bool:
    """True for failures a retry can fix: server errors, throttling, timeouts, lost
    connections. Client errors (400, 403, 404, 412) and bad data are permanent."""
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth
    from requests import exceptions as http

    retryable = (
        EventBusy,
        api.ServerError,
        api.TooManyRequests,
        api.RetryError,
        auth.TransportError,
        http.ConnectionError,
        http.Timeout,
        ConnectionError,
        TimeoutError,
    )
    return isinstance(error, retryable)


def _request(decision: Decision, event_id: str | None) -> RunRequest:
    return RunRequest(
        trigger=decision.trigger,
        event_id=event_id,
        reason=decision.message_reason or decision.reason,
        dry_run=decision.dry_run,
    )


def _release(store, key: str, log: JsonLog) -> None:
    try:
        store.release(key)
    except Exception as error:
        log.error(f"claim {key} could not be released: a redelivery waits until it is "
                  f"{claims.STALE_AFTER_SECONDS} s old, then takes it over: "
                  f"{one_line(error)}")  # fmt: skip


def _finish(store, key: str, mine: claims.Claim, log: JsonLog) -> None:
    try:
        claims.finish(store, key, mine)
    except Exception as error:  # the outputs are published; at worst a late duplicate reruns
        log.error(f"claim {key} could not be marked done: {one_line(error)}")
