"""The Cloud Function's work: decide on a delivery, claim it, run, and answer.

Every delivery ends in one `Answer` and one final log line whose `event` field says which
(clustering.cloud.logs.Outcome: run_succeeded, dry_run, run_failed, event_skipped, event_rejected,
duplicate, run_retry or run_busy). Permanent
failures (a rejected event, bad data, bad settings) are logged, recorded in the run history and
acked (HTTP 200), because a retry would fail the same way for a day. Transient failures (5xx,
throttling, timeouts, the run's own deadline, a lost claim, another run in progress) release
what the run holds and answer 500, so the push subscription delivers the event again.

Each event is claimed before it runs (clustering.adapters.claims): one run lock for all events,
whose token fences every publishing step, and a "done" record per event so redeliveries are
duplicates. A run works inside a time budget that ends before the function timeout
(clustering.adapters.budget), so it stops, releases and asks for a retry instead of being cut off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clustering import InputError, one_line
from clustering.adapters import budget, claims
from clustering.cloud.events import (
    Decision,
    EventEnvelope,
    covered_by,
    decide,
    envelope_from_cloudevent,
    envelope_from_http,
)
from clustering.cloud.logs import JsonLog, Outcome, run_outcome
from clustering.job import NotSettled, PublishInterrupted, RunRequest, record_failure, run_job
from clustering.naming import new_run_id
from clustering.settings import JobSettings

# The run's budget ends this long before the function timeout: time left to release the
# claim and append the history row after the run stopped.
DEADLINE_MARGIN_SECONDS = 30


class EventBusy(RuntimeError):
    """Another run holds the run lock: raised so the event is retried."""


@dataclass(frozen=True)
class Answer:
    """The outcome of one delivery: the HTTP answer's JSON body and status.

    event: how the delivery ended (clustering.cloud.logs.Outcome), also its final log line's field.
    action: the decision on the event (run, skip, reject).
    """

    event: Outcome
    action: str
    reason: str
    run_id: str | None = None

    @property
    def retry(self) -> bool:
        return self.event in (Outcome.RUN_RETRY, Outcome.RUN_BUSY)

    @property
    def status(self) -> int:
        # 500 makes the push subscription redeliver; everything else is acked.
        return 500 if self.retry else 200

    def body(self) -> dict[str, Any]:
        found = {"event": str(self.event), "action": self.action, "reason": self.reason}
        return found | ({"run_id": self.run_id} if self.run_id else {})


def load_settings(environ: Mapping[str, str] = os.environ, log: JsonLog | None = None):
    """The function's settings, validated at start-up: a bad value stops the instance with
    one clear log line instead of failing every event later."""
    try:
        return JobSettings.from_env(environ)
    except InputError as error:
        (log or JsonLog())(
            "CRITICAL", f"invalid function configuration: {error}", event=Outcome.SETTINGS_INVALID
        )
        raise


def log_warnings(log: JsonLog) -> None:
    """Send Python warnings through the JSON log: Cloud Logging makes an entry of every
    output line, and a plain-text warning would land without severity or context."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        log.warning(f"{category.__name__}: {message}", source=f"{filename}:{lineno}")

    warnings.showwarning = show


def respond(
    body: bytes,
    headers: Mapping[str, str],
    path: str,
    settings: JobSettings,
    log: JsonLog | None = None,
) -> tuple[dict[str, Any], int]:
    """Answer one HTTP delivery: (JSON body, status). Never raises: an unexpected error is
    logged as one JSON line and answered 500, so the delivery is retried."""
    log = log or JsonLog()
    try:
        answer = handle(envelope_from_http(body, headers, path), settings, log)
    except Exception as error:
        import traceback

        log.error(
            f"unexpected failure, will be retried: {type(error).__name__}: {one_line(error)}",
            event=Outcome.RUN_RETRY,
            traceback=traceback.format_exc(),
        )
        answer = Answer(Outcome.RUN_RETRY, "run", f"unexpected failure: {one_line(error)}")
    return answer.body(), answer.status


def handle(
    event: Any,
    settings: JobSettings,
    log: JsonLog | None = None,
    now: datetime | None = None,
    run_budget: budget.Budget | None = None,
) -> Answer:
    """Handle one delivery (an EventEnvelope or a CloudEvent) and say what happened."""
    log = log or JsonLog()
    envelope = event if isinstance(event, EventEnvelope) else envelope_from_cloudevent(event)
    decision = decide(envelope, settings, now or datetime.now(UTC))
    log = log.bind(trigger=decision.trigger, event_id=envelope.id, idempotency_key=decision.key)

    if decision.action == "reject":
        log.error(f"event rejected, not retried: {decision.reason}", event=Outcome.EVENT_REJECTED)
        record_failure(
            settings, _request(decision, envelope.id), decision.reason, _history_error(log)
        )
        return Answer(Outcome.EVENT_REJECTED, decision.action, decision.reason)
    if decision.action == "skip":
        return _skipped(decision, log)
    if run_budget is None and settings.function_timeout_seconds:
        run_budget = budget.Budget.lasting(
            settings.function_timeout_seconds - DEADLINE_MARGIN_SECONDS
        )
    with budget.bounded(run_budget):
        return _claim_and_run(decision, envelope, settings, log)


def _skipped(decision: Decision, log: JsonLog) -> Answer:
    log(
        "WARNING" if decision.warn else "INFO",
        f"event skipped: {decision.reason}",
        event=Outcome.EVENT_SKIPPED,
    )
    return Answer(Outcome.EVENT_SKIPPED, "skip", decision.reason)


def _claim_and_run(
    decision: Decision, envelope: EventEnvelope, settings: JobSettings, log: JsonLog
) -> Answer:
    from clustering.adapters import artifact_store

    key = decision.key or envelope.id or "no-id"
    started = datetime.now(UTC)
    run_id = new_run_id(started)
    mine = claims.Claim(run_id=run_id, event_id=envelope.id, claimed_at=started.isoformat())
    try:
        store = artifact_store(settings.artifacts_dest)
        # Before the lock, so a covered change of a burst is skipped without waiting for it.
        covered = _coalesced(decision, store, settings.features_source)
        if covered.action == "skip":
            return _skipped(covered, log)
        stale = claims.stale_after(settings.function_timeout_seconds)
        outcome, found, fence = claims.claim(store, key, mine, started, stale)
        if fence is not None:
            # Again under the lock: a run may have finished since the first look.
            covered = _coalesced(decision, store, settings.features_source)
            if covered.action == "skip":
                fence.finish()
                return _skipped(covered, log)
    except Exception as error:
        return _claim_failed(error, decision, key, settings, log)
    if outcome == "done":
        log.info(f"duplicate delivery skipped: {key} was already handled", event=Outcome.DUPLICATE)
        return Answer(Outcome.DUPLICATE, decision.action, f"{key} was already handled")
    if outcome == "busy":
        holder = f"run {found.run_id} since {found.claimed_at}" if found else "another run"
        reason = f"{holder} holds the run lock; event {key} will be retried"
        log.warning(reason, event=Outcome.RUN_BUSY)
        return Answer(Outcome.RUN_BUSY, decision.action, reason)
    if found is not None:
        log.warning(f"took over the run lock of run {found.run_id}, which never finished")
    if decision.late:
        log.warning(
            f"late table change runs: no successful run started since it happened "
            f"({decision.reason})"
        )
    return _run(decision, fence, settings, log.bind(run_id=run_id))


def _coalesced(decision: Decision, store, source: str | None) -> Decision:
    """The decision, made a skip when the last successful run covers its table change (only
    table changes with a time are ever covered, so nothing else reads the store)."""
    if decision.trigger != "table-change" or decision.changed_at is None:
        return decision
    return covered_by(decision, *_last_run(store, source))


def _last_run(store, source: str | None) -> tuple[str | None, datetime | None]:
    """(run id, start) of the run latest/ points to, or Nones. A run that read another
    table (a message's features_table) covers no change of the watched one."""
    import json

    content, _ = store.read_pointer()
    try:
        manifest = json.loads(content) if content else {}
        if manifest["input"]["source"] != (source or "built-in sample"):
            return None, None
        return manifest.get("run_id"), datetime.fromisoformat(manifest["started_at"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None, None


def _claim_failed(
    error: Exception, decision: Decision, key: str, settings: JobSettings, log: JsonLog
) -> Answer:
    if is_transient(error):
        reason = f"the claim store is unreachable, will be retried: {one_line(error)}"
        log.error(reason, event=Outcome.RUN_RETRY)
        return Answer(Outcome.RUN_RETRY, decision.action, reason)
    # A missing bucket or a denied write fails the same way on every retry.
    where = settings.artifacts_dest.rstrip("/") + "/claims/"
    reason = f"cannot claim the event in {where}, not retried: {one_line(error)}"
    log.error(reason, event=Outcome.RUN_FAILED)
    record_failure(
        settings, _request(decision, key), f"claim failed: {one_line(error)}", _history_error(log)
    )
    return Answer(Outcome.RUN_FAILED, decision.action, reason)


def _run(decision: Decision, fence: claims.Fence, settings: JobSettings, log: JsonLog) -> Answer:
    run_id = fence.mine.run_id
    log.info(f"run starting: {decision.reason}")
    if decision.features_source:
        settings = settings.with_features_source(decision.features_source)
    try:
        report = run_job(
            settings,
            _request(decision, fence.key),
            progress=log.info,
            on_warning=log.warning,
            on_history_error=_history_error(log),
            run_id=run_id,
            fence=fence.check,
        )
    except claims.ClaimLost as error:
        # Released only if the lock still has our token (it may have looked lost because the
        # store did not answer): a lock taken over is left to its new holder. The retry is
        # skipped if a later run covers the event.
        _settle(fence.release, fence.key, log, "released")
        reason = f"run stopped, will be retried: {one_line(error)}"
        log.warning(reason, event=Outcome.RUN_RETRY)
        return Answer(Outcome.RUN_RETRY, decision.action, reason, run_id)
    except Exception as error:
        if is_transient(error):
            _settle(fence.release, fence.key, log, "released")
            reason = f"run failed with a transient error, will be retried: {one_line(error)}"
            log.error(reason, event=Outcome.RUN_RETRY, error_type=type(error).__name__)
            return Answer(Outcome.RUN_RETRY, decision.action, reason, run_id)
        severity = "WARNING" if isinstance(error, InputError) else "ERROR"
        reason = f"run failed, not retried: {one_line(error)}"
        log(severity, reason, error_type=type(error).__name__, event=Outcome.RUN_FAILED)
        _settle(fence.finish, fence.key, log, "marked done")
        return Answer(Outcome.RUN_FAILED, decision.action, reason, run_id)
    _settle(fence.finish, fence.key, log, "marked done")
    reason = run_summary(report)
    outcome = run_outcome(report.status)
    timings = report.manifest["timings_seconds"]
    log.info(reason, timings=timings, status=report.status, event=outcome)
    return Answer(outcome, decision.action, reason, run_id)


def run_summary(report) -> str:
    """What a finished run did, in one line: its rows, its top split (always K=2) and the
    diagnostic's best K, said to be a diagnostic, and where its artifacts are."""
    from clustering.naming import rows_called as called

    manifest = report.manifest
    chosen = manifest["settings"]
    rows_called = called(chosen["key_column"], chosen.get("row_noun"))
    split = ", ".join(f"{g['label']} {g['rows']}" for g in manifest["top_groups"])
    diagnostics = manifest["diagnostics"]
    return (
        f"run {report.status}: {manifest['input']['rows']} {rows_called}, top split "
        f"K={diagnostics['top_split_k']} ({split}); the K diagnostic's best silhouette is at "
        f"K={diagnostics['best_k']} (informative only); artifacts {report.artifact_prefix}"
    )


def is_transient(error: BaseException) -> bool:
    """True for failures a retry can fix: server errors, throttling (429, and 403
    rateLimitExceeded/quotaExceeded), timeouts and the run's own deadline, lost connections,
    a lost claim, a table still changing (NotSettled), and a publication interrupted after
    the table load (the retry repairs it).
    Other client errors (400, 403, 404, 412) and bad data are permanent."""
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth
    from requests import exceptions as http

    from clustering.adapters.bigquery import is_rate_limited

    retryable = (
        EventBusy,
        NotSettled,
        claims.ClaimLost,
        PublishInterrupted,
        api.ServerError,
        api.TooManyRequests,
        api.RetryError,
        auth.TransportError,
        http.ConnectionError,
        http.Timeout,
        ConnectionError,
        TimeoutError,
    )
    return isinstance(error, retryable) or is_rate_limited(error)


def _request(decision: Decision, event_id: str | None) -> RunRequest:
    return RunRequest(
        trigger=decision.trigger,
        event_id=event_id,
        reason=decision.message_reason or decision.reason,
        dry_run=decision.dry_run,
        force=decision.force,
    )


def _history_error(log: JsonLog):
    def report(error: Exception) -> None:
        log.error(f"run history not written: {one_line(error)}")

    return report


def _settle(step, key: str, log: JsonLog, what: str) -> None:
    """Release or finish the claim; a failure is logged, never raised: the run's outcome is
    decided, and a lock left behind goes stale and is taken over."""
    try:
        # A budget of its own: releasing must still be tried after the run ran out of time.
        with budget.bounded(budget.Budget.lasting(budget.FINAL_STEP_SECONDS)):
            step()
    except Exception as error:
        log.error(
            f"claim {key} could not be {what}: the run lock is taken over once it is "
            f"stale: {one_line(error)}"
        )
