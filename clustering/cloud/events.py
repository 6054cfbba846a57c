"""Decide what an incoming event means for the job: run, skip, or reject, and say why.

Deliveries reach the function as raw HTTP requests (`envelope_from_http`): the deployed push
subscription posts Pub/Sub's push body (a manual publish, or a Cloud Logging sink forwarding an
audit LogEntry), and local tools post CloudEvents in structured or binary mode (a Pub/Sub
`messagePublished` event, or an Eventarc `google.cloud.audit.log.v1.written` event whose data
is the LogEntry itself). The function parses the body itself, so every message Pub/Sub can
push, an attributes-only one or malformed JSON included, gets a decision here instead of a
framework 400. Everything here is pure (no I/O, no google imports, `now` passed in) so every
rule is tested on fixtures.

Actions:
- "run": the runner starts a clustering run, with the message's validated overrides.
- "skip": a valid event that must not trigger a run (a read, another table, our own write, a
  duplicate source, an event too old); acked and logged.
- "reject": a malformed or forbidden event; acked with an error log and never run. Raising
  would make Pub/Sub retry it for a day, and it would fail the same way every time.

Table changes also coalesce (`covered_by`): a change that happened before the start of the
last successful run is already in that run's input, so it is skipped. The handler applies it,
since it needs the store; it also replaces the age limit for table changes: a late change
still runs unless such a run covers it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

from clustering.naming import JOB_LABELS
from clustering.settings import TABLE_ID_PATTERN, JobSettings, bq_table_id

PUBSUB_MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
AUDIT_LOG_WRITTEN = "google.cloud.audit.log.v1.written"

AUDIT_LOG_TYPE = "type.googleapis.com/google.cloud.audit.AuditLog"
BIGQUERY_SERVICE = "bigquery.googleapis.com"


# What a Pub/Sub message body may carry; anything else is rejected, so a typo never silently
# runs with defaults.
ALLOWED_MESSAGE_KEYS: tuple[str, ...] = ("reason", "features_table", "dry_run", "force")
# Message attributes that may carry options when the body is empty (`gcloud pubsub topics
# publish TOPIC --attribute=reason=...,dry_run=true`); other attributes are ignored.
ATTRIBUTE_OPTIONS: tuple[str, ...] = ("reason", "dry_run", "force")
MAX_MESSAGE_REASON_CHARS = 200
# Message data above this is refused unread: an audit LogEntry is at most 256 KB, a manual
# message a few hundred bytes. A whole request above the larger limit is refused too.
MAX_MESSAGE_BYTES = 1024**2
MAX_REQUEST_BYTES = 16 * 1024**2
# tableDataChange reasons that do not start a run: a Storage Write API append is not final
# (pending streams become visible at BATCH_COMMIT, buffered ones at FLUSH) and FINALIZE
# changes no data. The log sink's filter in terraform/triggers.tf excludes the same reasons
# (tests/test_terraform.py checks both agree). Producers writing to committed or default
# streams should publish a message to the run topic when their refresh is complete.
NON_RUN_REASONS: tuple[str, ...] = ("WRITE_API_APPEND_ROWS", "FINALIZE")
# Message text echoed into a log line is cut to this length: the publisher is not trusted.
MAX_ECHOED_CHARS = 60

Action = Literal["run", "skip", "reject"]
Trigger = Literal["pubsub", "table-change", "unknown"]


@dataclass(frozen=True)
class EventEnvelope:
    """The parts of a CloudEvent the decision needs.

    attributes: every context attribute, lower-cased as CloudEvents requires (type, id, source,
        time, subject, and extensions such as servicename, methodname, resourcename).
    data: the payload as functions-framework hands it over: a dict for JSON, bytes for
        data_base64, a str for other text, or None.
    """

    attributes: Mapping[str, Any]
    data: Any = None
    problem: str | None = None

    def __post_init__(self) -> None:
        lowered = {str(key).lower(): value for key, value in self.attributes.items()}
        object.__setattr__(self, "attributes", MappingProxyType(lowered))

    @property
    def type(self) -> str:
        return str(self.attributes.get("type") or "")

    @property
    def id(self) -> str | None:
        value = self.attributes.get("id")
        return str(value) if value else None

    @property
    def time(self) -> str | None:
        value = self.attributes.get("time")
        return str(value) if value else None

    def attribute(self, name: str) -> str | None:
        value = self.attributes.get(name.lower())
        return str(value) if value else None


@dataclass(frozen=True)
class Decision:
    """What to do with one event, and the sentence that explains it in the logs.

    key: the idempotency key: the Pub/Sub messageId (else the CloudEvent id); for an audit log
        the tableDataChange jobName (else the LogEntry insertId, else the message/event id).
        It may contain "/" (job names do): encode it before using it as an object name.
    features_source: `bq://project.dataset.table` chosen by the message, already validated
        against the allowlist; None means the configured source.
    dry_run: the message asked for the analysis without publishing anything.
    force: the message overrides the row-drop guard (MIN_ROWS_RATIO).
    message_reason: the free-text `reason` a manual publisher gave, for the run record.
    changed_at: when the watched table changed (the LogEntry's timestamp), for coalescing.
    late: the table change is older than MAX_EVENT_AGE_SECONDS; it runs only if no
        successful run has started since it happened.
    warn: a skip of an event that was meant to run (logged as WARNING, not INFO).
    """

    action: Action
    reason: str
    trigger: Trigger
    key: str | None
    features_source: str | None = None
    dry_run: bool = False
    force: bool = False
    message_reason: str | None = None
    changed_at: datetime | None = None
    late: bool = False
    warn: bool = False

    @property
    def should_run(self) -> bool:
        return self.action == "run"


def envelope_from_cloudevent(event: Any) -> EventEnvelope:
    """Build the envelope from the `cloudevents.http.CloudEvent` functions-framework passes.

    Duck-typed on purpose (iteration over attribute names, `event[name]`, `event.data`) so this
    module never imports the SDK.
    """
    attributes = {name: event[name] for name in event}
    return EventEnvelope(attributes=attributes, data=event.data)


def envelope_from_structured(body: Mapping[str, Any]) -> EventEnvelope:
    """Build the envelope from a structured-mode CloudEvent (the JSON object of the HTTP body)."""
    attributes = {k: v for k, v in body.items() if k not in ("data", "data_base64")}
    if "data_base64" in body:
        try:
            data: Any = base64.b64decode(body["data_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            return EventEnvelope(attributes, problem="the CloudEvent's data_base64 is not base64")
    else:
        data = body.get("data")
    return EventEnvelope(attributes=attributes, data=data)


def envelope_from_http(body: bytes, headers: Mapping[str, str], path: str = "/") -> EventEnvelope:
    """The envelope of one HTTP delivery, whatever its shape; `problem` says why it is none.

    Accepted: Pub/Sub's push body (`{"message": {...}, "subscription": ...}`, camelCase or
    snake_case, `data` and `attributes` optional), converted to the same messagePublished
    event functions-framework would build (the request path names the topic); a structured
    CloudEvent (`application/cloudevents+json`); a binary-mode CloudEvent (`ce-*` headers).
    """
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    if len(body) > MAX_REQUEST_BYTES:
        return _unparsed(
            f"the request body has {len(body):,} bytes, more than the "
            f"{MAX_REQUEST_BYTES:,} a delivery may have"
        )
    parsed, problem = _loads(body, "the request body")
    if problem:
        return _unparsed(problem)
    if "ce-specversion" in lowered:
        attributes = {k[3:]: v for k, v in lowered.items() if k.startswith("ce-")}
        return EventEnvelope(attributes=attributes, data=parsed)
    if not isinstance(parsed, Mapping):
        return _unparsed("the request body is not a JSON object (a Pub/Sub push or a CloudEvent)")
    if "specversion" in parsed:
        return envelope_from_structured(parsed)
    message = parsed.get("message")
    if isinstance(message, Mapping):
        message_id = message.get("messageId", message.get("message_id"))
        published = message.get("publishTime", message.get("publish_time"))
        attributes = {
            "specversion": "1.0",
            "type": PUBSUB_MESSAGE_PUBLISHED,
            "source": f"//pubsub.googleapis.com/{path.strip('/')}",
            "id": str(message_id) if message_id is not None else None,
            "time": published if isinstance(published, str) else None,
        }
        return EventEnvelope(attributes={k: v for k, v in attributes.items() if v}, data=parsed)
    return _unparsed(
        "the request body is neither a Pub/Sub push (no `message` object) nor a CloudEvent "
        "(no `specversion`)"
    )


def _unparsed(problem: str) -> EventEnvelope:
    return EventEnvelope(attributes={}, problem=problem)


def _loads(raw: bytes | str, what: str) -> tuple[Any, str | None]:
    """JSON from bytes or text; None for an empty body; or the reason it is malformed."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        return None, f"{what} is not UTF-8 text"
    if not text.strip():
        return None, None
    try:
        return json.loads(text), None
    except json.JSONDecodeError as err:
        return None, (
            f"{what} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        )
    except RecursionError:
        return None, f"{what} is JSON nested too deeply to read"


def decide(
    event: EventEnvelope | Mapping[str, Any], settings: JobSettings, now: datetime
) -> Decision:
    """Decide whether `event` starts a run, is skipped, or is rejected, with a reason.

    `event` is an envelope or a structured-mode CloudEvent mapping. `now` must be the current
    time (timezone-aware; naive values are taken as UTC).
    """
    envelope = event if isinstance(event, EventEnvelope) else envelope_from_structured(event)
    now = _as_utc(now)
    if envelope.problem:
        trigger: Trigger = "pubsub" if envelope.type == PUBSUB_MESSAGE_PUBLISHED else "unknown"
        return _reject(
            trigger, envelope.id, f"delivery {envelope.id or '(no id)'}: {envelope.problem}"
        )
    if envelope.type == PUBSUB_MESSAGE_PUBLISHED:
        return _decide_pubsub(envelope, settings, now)
    if envelope.type == AUDIT_LOG_WRITTEN:
        return _decide_audit_event(envelope, settings, now)
    return Decision(
        action="skip",
        reason=(
            f"event {envelope.id or '(no id)'} has type {envelope.type or '(none)'!r}, which "
            f"this function does not handle (expected {PUBSUB_MESSAGE_PUBLISHED} or "
            f"{AUDIT_LOG_WRITTEN}); acked without a run"
        ),
        trigger="unknown",
        key=envelope.id,
    )


# --- Pub/Sub ---------------------------------------------------------------------------------


def _decide_pubsub(envelope: EventEnvelope, settings: JobSettings, now: datetime) -> Decision:
    data = envelope.data
    message = data.get("message") if isinstance(data, Mapping) else None
    if not isinstance(message, Mapping):
        return _reject(
            "pubsub",
            envelope.id,
            f"Pub/Sub event {envelope.id or '(no id)'} has no `message` object in its data; "
            "it is not a messagePublished payload",
        )
    message_id = _text(message.get("messageId")) or envelope.id
    label = f"Pub/Sub message {message_id or '(no id)'}"
    event_time = envelope.time or _text(message.get("publishTime"))

    body, problem = _decode_message_body(message.get("data"))
    if problem:
        return _reject("pubsub", message_id, f"{label}: {problem}")
    if body is None:
        body, problem = _attribute_options(message.get("attributes"))
        if problem:
            return _reject("pubsub", message_id, f"{label}: {problem}")

    if isinstance(body, Mapping) and _is_log_entry(body):
        return _decide_log_entry(
            body,
            settings,
            now,
            event_time=event_time or _text(body.get("timestamp")),
            fallback_key=message_id,
            via=f"{label} (a log sink delivery)",
            attributes={},
        )

    too_old = _too_old(event_time, settings, now, "pubsub", message_id, label)
    if too_old:
        return too_old
    return _decide_manual_message(body, settings, message_id, label)


def _decode_message_body(raw: Any) -> tuple[Any, str | None]:
    """The JSON body of a Pub/Sub message (None when empty), or the reason it is malformed."""
    if raw is None or raw == "":
        return None, None
    if not isinstance(raw, str):
        return None, f"message data is a {type(raw).__name__}, expected a base64 string"
    if len(raw) > MAX_MESSAGE_BYTES * 4 // 3 + 4:
        return None, (
            f"message data has {len(raw) * 3 // 4:,} bytes, more than the "
            f"{MAX_MESSAGE_BYTES:,} a message may carry"
        )
    try:
        decoded = base64.b64decode(raw, validate=True)
    except binascii.Error:
        return None, "message data is not valid base64"
    body, problem = _loads(decoded, "message data")
    if problem and "valid JSON" in problem:
        problem += '; publish a JSON object such as {"reason": "manual refresh"}'
    return body, problem


def _attribute_options(attributes: Any) -> tuple[dict[str, Any], str | None]:
    """The run options an attributes-only message carries (reason, dry_run, force)."""
    if not isinstance(attributes, Mapping):
        return {}, None
    options: dict[str, Any] = {}
    for name in ATTRIBUTE_OPTIONS:
        value = attributes.get(name)
        if value is None:
            continue
        if name == "reason":
            options[name] = value
        elif str(value).lower() in ("true", "false"):
            options[name] = str(value).lower() == "true"
        else:
            return {}, f"attribute `{name}` must be true or false, got {_shown(value)}"
    return options, None


def _decide_manual_message(
    body: Any, settings: JobSettings, message_id: str | None, label: str
) -> Decision:
    problem = _message_shape_problem(body) or _message_value_problem(body)
    if problem:
        return _reject("pubsub", message_id, f"{label}: {problem}")
    features_source = None
    if "features_table" in body:
        features_source, problem = _allowed_features_source(body["features_table"], settings)
        if problem:
            return _reject("pubsub", message_id, f"{label}: {problem}")
    return _manual_run(body, features_source, message_id, label)


def _message_shape_problem(body: Any) -> str | None:
    """Why a manual message's body is not a JSON object of allowed keys, or None."""
    if not isinstance(body, Mapping):
        kind = "an array" if isinstance(body, list) else f"a JSON {type(body).__name__}"
        return (
            f"the message body is {kind}; it must be a JSON object with only the "
            f"keys {', '.join(ALLOWED_MESSAGE_KEYS)}"
        )
    unknown = sorted(str(key) for key in body if key not in ALLOWED_MESSAGE_KEYS)
    if unknown:
        return (
            f"unknown key(s) {_shown(', '.join(unknown))} in the message; "
            f"allowed keys are {', '.join(ALLOWED_MESSAGE_KEYS)}"
        )
    return None


def _message_value_problem(body: Mapping[str, Any]) -> str | None:
    """Why a manual message's `reason`, `dry_run` or `force` is refused, or None."""
    message_reason = body.get("reason")
    if message_reason is not None:
        if not isinstance(message_reason, str):
            return "`reason` must be a string"
        if len(message_reason) > MAX_MESSAGE_REASON_CHARS:
            return (
                f"`reason` has {len(message_reason)} characters; keep it to "
                f"{MAX_MESSAGE_REASON_CHARS} or fewer"
            )
    for flag in ("dry_run", "force"):
        if not isinstance(body.get(flag, False), bool):
            return f"`{flag}` must be true or false (a JSON boolean), got {_shown(body[flag])}"
    return None


def _manual_run(
    body: Mapping[str, Any], features_source: str | None, message_id: str | None, label: str
) -> Decision:
    """The run a valid manual message asks for, with its options spelled out in the reason."""
    message_reason = body.get("reason")
    dry_run, force = body.get("dry_run", False), body.get("force", False)
    details = [
        f"reason: {message_reason!r}" if message_reason else "no reason given",
        f"features from {features_source}" if features_source else "configured features",
    ]
    if dry_run:
        details.append("dry run: nothing will be published")
    if force:
        details.append("forced: the row-drop guard is off")
    return Decision(
        action="run",
        reason=f"{label} asks for a run ({'; '.join(details)})",
        trigger="pubsub",
        key=message_id,
        features_source=features_source,
        dry_run=dry_run,
        force=force,
        message_reason=message_reason,
    )


def _allowed_features_source(table: Any, settings: JobSettings) -> tuple[str | None, str | None]:
    """`bq://table` for an allowed `features_table`, or the reason it is refused."""
    if not isinstance(table, str):
        return None, "`features_table` must be a string like project.dataset.table"
    # Checked before the allowlist so no malformed text ever reaches a lookup or a query.
    if not TABLE_ID_PATTERN.fullmatch(table):
        return None, (
            f"`features_table` {_shown(table)} is not a table id; write it as "
            "project.dataset.table (letters, digits, _ and -)"
        )
    allowed = set(settings.allowed_features_tables)
    source = settings.features_source
    if source and source.startswith("bq://"):
        allowed.add(bq_table_id(source, "FEATURES_SOURCE"))
    if table not in allowed:
        listed = ", ".join(sorted(allowed)) or "none"
        return None, (
            f"features_table {_shown(table)} is not allowed; allowed tables: {listed} "
            "(add it to ALLOWED_FEATURES_TABLES to permit it)"
        )
    return f"bq://{table}", None


# --- Audit logs ------------------------------------------------------------------------------


def _decide_audit_event(envelope: EventEnvelope, settings: JobSettings, now: datetime) -> Decision:
    entry = envelope.data
    if not isinstance(entry, Mapping):
        return _reject(
            "table-change",
            envelope.id,
            f"audit-log event {envelope.id or '(no id)'}: the data is not a JSON LogEntry object",
        )
    # The insertId names the entry in Logs Explorer; Eventarc's event id is long and opaque.
    return _decide_log_entry(
        entry,
        settings,
        now,
        event_time=envelope.time or _text(entry.get("timestamp")),
        fallback_key=envelope.id,
        via=f"audit log {_text(entry.get('insertId')) or envelope.id or '(no id)'}",
        attributes=envelope.attributes,
    )


def _is_log_entry(body: Mapping[str, Any]) -> bool:
    payload = body.get("protoPayload")
    if isinstance(payload, Mapping) and payload.get("@type") == AUDIT_LOG_TYPE:
        return True
    log_name = body.get("logName")
    return isinstance(log_name, str) and "cloudaudit.googleapis.com" in log_name


def _decide_log_entry(
    entry: Mapping[str, Any],
    settings: JobSettings,
    now: datetime,
    *,
    event_time: str | None,
    fallback_key: str | None,
    via: str,
    attributes: Mapping[str, Any],
) -> Decision:
    payload = entry.get("protoPayload")
    if not isinstance(payload, Mapping):
        return _reject(
            "table-change",
            _text(entry.get("insertId")) or fallback_key,
            f"{via}: the log entry has no protoPayload object, so it is not an audit log",
        )
    call = _audit_call(payload, attributes)
    key = (
        (_text(call.change.get("jobName")) if call.change else None)
        or _text(entry.get("insertId"))
        or fallback_key
    )
    why = (
        _unwatched_source(call, settings)
        or _own_work(call, settings)
        or _not_a_watched_change(call, settings)
    )
    if why:
        return Decision(action="skip", reason=f"{via}: {why}", trigger="table-change", key=key)
    changed_at = _parse_time(_text(entry.get("timestamp")) or event_time)
    late, note = _lateness(changed_at, now, settings)
    counts = _change_summary(call.change)
    return Decision(
        action="run",
        reason=f"{via}: data change of the watched table {call.table} ({counts}){note}",
        trigger="table-change",
        key=key,
        changed_at=changed_at,
        late=late,
    )


@dataclass(frozen=True)
class _AuditCall:
    """The parts of an audit log's protoPayload the decision reads.

    service, resource, method: from the payload, else from the event's attributes.
    table: `project.dataset.table` of the resource, None when it names no table.
    metadata: the BigQuery metadata ({} when absent); change its tableDataChange, if any.
    principal: who made the call (authenticationInfo.principalEmail), if given.
    """

    service: str | None
    resource: str | None
    method: str | None
    table: str | None
    metadata: Mapping[str, Any]
    change: Mapping[str, Any] | None
    principal: str | None


def _audit_call(payload: Mapping[str, Any], attributes: Mapping[str, Any]) -> _AuditCall:
    metadata = payload.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    change = metadata.get("tableDataChange")
    authentication = payload.get("authenticationInfo")
    resource = _text(payload.get("resourceName")) or _text(attributes.get("resourcename"))
    return _AuditCall(
        service=_text(payload.get("serviceName")) or _text(attributes.get("servicename")),
        resource=resource,
        method=_text(payload.get("methodName")) or _text(attributes.get("methodname")),
        table=_table_id(resource),
        metadata=metadata,
        change=change if isinstance(change, Mapping) else None,
        principal=(
            _text(authentication.get("principalEmail"))
            if isinstance(authentication, Mapping)
            else None
        ),
    )


def _unwatched_source(call: _AuditCall, settings: JobSettings) -> str | None:
    """Why the call cannot concern a watched BigQuery table, or None."""
    if call.service != BIGQUERY_SERVICE:
        return f"the audit log comes from {call.service or 'an unnamed service'}, not BigQuery"
    if not settings.watched_table:
        return (
            "no watched table is configured (set WATCHED_TABLE or a bq:// FEATURES_SOURCE), "
            "so table changes never trigger a run"
        )
    return None


def _own_work(call: _AuditCall, settings: JobSettings) -> str | None:
    """Why the call is the function's own (its account, its job label, its tables), or None."""
    principal = call.principal
    if principal and principal == settings.function_service_account:
        return (
            f"caused by the function's own service account {principal}; our own reads and "
            "writes never trigger a run"
        )
    if _carries_our_labels(call.metadata):
        labels = ", ".join(f"{k}={v}" for k, v in JOB_LABELS.items())
        return f"the job carries our label ({labels}), so it is one of the function's own"
    table = call.table
    own_tables = {
        "clusters table (CLUSTERS_TABLE)": settings.clusters_table,
        "run history table (RUNS_TABLE)": settings.runs_table,
    }
    for name, uri in own_tables.items():
        if table and uri and uri.startswith("bq://") and uri.removeprefix("bq://") == table:
            return f"{table} is the function's own {name}; writing it must not re-trigger"
    return None


def _not_a_watched_change(call: _AuditCall, settings: JobSettings) -> str | None:
    """Why the call is not a finished data change of the watched table, or None."""
    table, resource, metadata, change = call.table, call.resource, call.metadata, call.change
    if "tableDataRead" in metadata:
        return f"a read of {table or resource} (tableDataRead), not a data change"
    if change is None:
        kinds = ", ".join(k for k in metadata if k != "@type") or "no BigQuery metadata"
        return (
            f"{call.method or 'the call'} on {resource or 'an unnamed resource'} is not a "
            f"tableDataChange ({kinds}); only data changes of the watched table trigger a run"
        )
    if table != settings.watched_table:
        return (
            f"data change of {table or resource}, not of the watched table {settings.watched_table}"
        )
    change_reason = _text(change.get("reason"))
    if change_reason in NON_RUN_REASONS:
        return (
            f"a {change_reason} entry of {table} (Storage Write API) is not a finished change; "
            "runs start at BATCH_COMMIT or FLUSH, or when the producer publishes to the run topic"
        )
    return None


def _lateness(
    changed_at: datetime | None, now: datetime, settings: JobSettings
) -> tuple[bool, str]:
    """Whether a table change is older than MAX_EVENT_AGE_SECONDS, and the note saying so."""
    age = (now - changed_at).total_seconds() if changed_at else 0.0
    late = age > settings.max_event_age_seconds
    note = (
        (
            f"; late: {_duration(age)} old, more than MAX_EVENT_AGE_SECONDS="
            f"{settings.max_event_age_seconds}, runs only if no run covers it"
        )
        if late
        else ""
    )
    return late, note


def covered_by(decision: Decision, run_id: str | None, run_started: datetime | None) -> Decision:
    """Coalescing: a table change that happened before the start of successful run `run_id`
    is in that run's input (the run read the table after it started), so it becomes a skip;
    any other decision is returned unchanged. A change without a time is never covered."""
    if (
        decision.action != "run"
        or decision.trigger != "table-change"
        or decision.changed_at is None
        or run_started is None
        or decision.changed_at >= _as_utc(run_started)
    ):
        return decision
    return dataclasses.replace(
        decision,
        action="skip",
        reason=(
            f"{decision.reason}: already covered by run {run_id}, which started at "
            f"{_as_utc(run_started).isoformat()}, after this change"
        ),
    )


def _carries_our_labels(metadata: Mapping[str, Any]) -> bool:
    for holder in ("jobInsertion", "jobChange"):
        section = metadata.get(holder)
        job = section.get("job") if isinstance(section, Mapping) else None
        config = job.get("jobConfig") if isinstance(job, Mapping) else None
        labels = config.get("labels") if isinstance(config, Mapping) else None
        if isinstance(labels, Mapping) and all(labels.get(k) == v for k, v in JOB_LABELS.items()):
            return True
    return False


def _table_id(resource: str | None) -> str | None:
    """`project.dataset.table` of `projects/P/datasets/D/tables/T`, None for other resources.

    A partition decorator (`T$20240101`) names the same table.
    """
    if not resource:
        return None
    parts = resource.split("/")
    if len(parts) != 6 or parts[0::2] != ["projects", "datasets", "tables"]:
        return None
    return f"{parts[1]}.{parts[3]}.{parts[5].split('$', 1)[0]}"


def _change_summary(change: Mapping[str, Any]) -> str:
    inserted = change.get("insertedRowsCount", 0)
    deleted = change.get("deletedRowsCount", 0)
    summary = f"{inserted} rows inserted, {deleted} deleted"
    if change.get("truncated"):
        summary += ", table truncated"
    job = _text(change.get("jobName"))
    return f"{summary}, job {job}" if job else summary


# --- Shared ----------------------------------------------------------------------------------


def _too_old(
    event_time: str | None,
    settings: JobSettings,
    now: datetime,
    trigger: Trigger,
    key: str | None,
    label: str,
) -> Decision | None:
    when = _parse_time(event_time)
    if when is None:
        return None
    age = (now - when).total_seconds()
    if age <= settings.max_event_age_seconds:
        return None
    return Decision(
        action="skip",
        reason=(
            f"{label} dropped: it is {_duration(age)} old (sent {when.isoformat()}), older than "
            f"MAX_EVENT_AGE_SECONDS={settings.max_event_age_seconds}; a message this late "
            "is not run: publish it again if the run is still wanted"
        ),
        trigger=trigger,
        key=key,
        warn=True,
    )


def _parse_time(value: str | None) -> datetime | None:
    # An unreadable timestamp counts as missing: dropping on it would lose real events.
    if not value:
        return None
    try:
        return _as_utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > MAX_ECHOED_CHARS:
        text = text[: MAX_ECHOED_CHARS - 3] + "..."
    return repr(text)


def _reject(trigger: Trigger, key: str | None, reason: str) -> Decision:
    return Decision(action="reject", reason=f"rejected {reason}", trigger=trigger, key=key)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


__all__ = [
    "ALLOWED_MESSAGE_KEYS",
    "AUDIT_LOG_WRITTEN",
    "JOB_LABELS",
    "NON_RUN_REASONS",
    "PUBSUB_MESSAGE_PUBLISHED",
    "Decision",
    "EventEnvelope",
    "covered_by",
    "decide",
    "envelope_from_cloudevent",
    "envelope_from_http",
    "envelope_from_structured",
]
