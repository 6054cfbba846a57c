"""Post realistic CloudEvents to a running function, as Pub/Sub or Eventarc would.

`python -m clustering send-event pubsub|table-change --url URL ...` builds a structured-mode
CloudEvent (`Content-Type: application/cloudevents+json`) shaped like Google's own deliveries
and posts it with the standard library, so a local functions-framework server can be exercised
end to end without any cloud. The builders are public so tests post exactly the same events.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from clustering import InputError
from clustering.cloud.events import AUDIT_LOG_TYPE, AUDIT_LOG_WRITTEN, PUBSUB_MESSAGE_PUBLISHED
from clustering.settings import check_table_id

DEFAULT_URL = "http://127.0.0.1:8080"
TOPIC = "projects/local-project/topics/neighborhood-clusters"
SUBSCRIPTION = "projects/local-project/subscriptions/neighborhood-clusters-trigger"
# The push subscription of the log sink's own topic (TABLE_CHANGES_SUBSCRIPTION).
SINK_SUBSCRIPTION = "projects/local-project/subscriptions/neighborhood-clusters-table-changes"
DEFAULT_PRINCIPAL = "analyst@example.com"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"

BIGQUERY_AUDIT_METADATA_TYPE = "type.googleapis.com/google.cloud.audit.BigQueryAuditMetadata"
# Load, query, DML and copy jobs all log their table reads and writes under this method.
INSERT_JOB_METHOD = "google.cloud.bigquery.v2.JobService.InsertJob"
LOG_ENTRY_DATA_SCHEMA = (
    "https://googleapis.github.io/google-cloudevents/jsonschema/google/events/cloud/audit/v1/"
    "LogEntryData.json"
)


def pubsub_event(
    body: str | bytes | Mapping[str, Any] | None = None,
    *,
    message_id: str | None = None,
    publish_time: datetime | None = None,
    attributes: Mapping[str, str] | None = None,
    subscription: str = SUBSCRIPTION,
) -> dict[str, Any]:
    """A structured `messagePublished` CloudEvent carrying `body` as the message data, as
    pushed by `subscription` (SINK_SUBSCRIPTION for what the log sink publishes).

    `body` is sent as is when it is text or bytes (so malformed payloads can be tested), as
    JSON when it is a mapping, and omitted when None (an attributes-only message).
    """
    message_id = message_id or _numeric_id()
    published = _rfc3339(publish_time or datetime.now(UTC))
    message: dict[str, Any] = {}
    if body is not None:
        if isinstance(body, Mapping):
            raw = json.dumps(body).encode("utf-8")
        elif isinstance(body, str):
            raw = body.encode("utf-8")
        else:
            raw = body
        message["data"] = base64.b64encode(raw).decode("ascii")
    if attributes:
        message["attributes"] = dict(attributes)
    message["messageId"] = message_id
    message["publishTime"] = published
    return {
        "specversion": "1.0",
        "type": PUBSUB_MESSAGE_PUBLISHED,
        "source": f"//pubsub.googleapis.com/{TOPIC}",
        "id": message_id,
        "time": published,
        "datacontenttype": "application/json",
        "data": {"subscription": subscription, "message": message},
    }


def bigquery_log_entry(
    table: str,
    *,
    principal: str = DEFAULT_PRINCIPAL,
    read: bool = False,
    job_id: str | None = None,
    timestamp: datetime | None = None,
    rows: int | None = None,
) -> dict[str, Any]:
    """A BigQuery data_access LogEntry for a load job that replaced `table` (or read it).

    The change is a WRITE_TRUNCATE reload that inserted `rows` rows (the table's row count);
    None leaves the count out, as an entry whose job inserted nothing states none.

    `table` is `project.dataset.table`. The entry is what Eventarc puts in the event data and
    what a logging sink publishes to Pub/Sub.
    """
    project, dataset, name = check_table_id(table, "table").split(".")
    job_id = job_id or f"bqjob_{uuid.uuid4().hex[:16]}"
    job_name = f"projects/{project}/jobs/{job_id}"
    when = _rfc3339(timestamp or datetime.now(UTC))
    if read:
        detail = {"tableDataRead": {"reason": "JOB", "jobName": job_name}}
        permission = "bigquery.tables.getData"
    else:
        counted = {} if rows is None else {"insertedRowsCount": str(rows)}
        detail = {
            "tableDataChange": {**counted, "truncated": True, "reason": "JOB", "jobName": job_name}
        }
        permission = "bigquery.tables.updateData"
    resource = f"projects/{project}/datasets/{dataset}/tables/{name}"
    return {
        "insertId": uuid.uuid4().hex[:12],
        "logName": f"projects/{project}/logs/cloudaudit.googleapis.com%2Fdata_access",
        "protoPayload": {
            "@type": AUDIT_LOG_TYPE,
            "status": {},
            "authenticationInfo": {"principalEmail": principal},
            "requestMetadata": {"callerSuppliedUserAgent": "clustering-send-event"},
            "serviceName": "bigquery.googleapis.com",
            "methodName": INSERT_JOB_METHOD,
            "authorizationInfo": [
                {"resource": resource, "permission": permission, "granted": True}
            ],
            "resourceName": resource,
            "metadata": {"@type": BIGQUERY_AUDIT_METADATA_TYPE, **detail},
        },
        "resource": {
            "type": "bigquery_dataset",
            "labels": {"project_id": project, "dataset_id": dataset},
        },
        "timestamp": when,
        "severity": "INFO",
        "receiveTimestamp": when,
    }


def table_change_event(
    table: str,
    *,
    principal: str = DEFAULT_PRINCIPAL,
    read: bool = False,
    event_id: str | None = None,
    job_id: str | None = None,
    time: datetime | None = None,
    rows: int | None = None,
) -> dict[str, Any]:
    """A structured `google.cloud.audit.log.v1.written` CloudEvent as Eventarc delivers it
    (`rows`: the rows the change inserted, see `bigquery_log_entry`).

    The Eventarc extension attributes (servicename, methodname, resourcename) are lower-case,
    as CloudEvents requires of attribute names.
    """
    when = _utc(time or datetime.now(UTC))
    entry = bigquery_log_entry(
        table, principal=principal, read=read, job_id=job_id, timestamp=when, rows=rows
    )
    payload = entry["protoPayload"]
    project = table.split(".", 1)[0]
    # Eventarc derives the id from the log name, the insertId and the entry's microseconds.
    default_id = f"{entry['logName']}-{entry['insertId']}{int(when.timestamp() * 1_000_000)}"
    return {
        "specversion": "1.0",
        "type": AUDIT_LOG_WRITTEN,
        "source": f"//cloudaudit.googleapis.com/projects/{project}/logs/data_access",
        "subject": f"{payload['serviceName']}/{payload['resourceName']}",
        "id": event_id or default_id,
        "time": entry["receiveTimestamp"],
        "recordedtime": entry["timestamp"],
        "datacontenttype": "application/json; charset=utf-8",
        "dataschema": LOG_ENTRY_DATA_SCHEMA,
        "servicename": payload["serviceName"],
        "methodname": payload["methodName"],
        "resourcename": payload["resourceName"],
        "data": entry,
    }


def post_event(url: str, event: Mapping[str, Any], timeout: float = 30.0) -> tuple[int, str]:
    """POST `event` in structured mode; return the HTTP status and the response body."""
    request = urllib.request.Request(
        url,
        data=json.dumps(event).encode("utf-8"),
        headers={"Content-Type": STRUCTURED_CONTENT_TYPE},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `send-event` command; its `func` takes the Namespace and returns an exit code."""
    parser = subparsers.add_parser(
        "send-event",
        help="post a Pub/Sub or BigQuery table-change CloudEvent to a running function",
        description=(
            "Post a CloudEvent shaped like Google's to a running function (for example "
            "`functions-framework --target=recluster`) and print its JSON answer."
        ),
    )
    # Kind and numbers are checked by `send_event`, not argparse, so every mistake ends in the
    # same single `error:` line whatever parser class the top-level CLI uses.
    parser.add_argument("kind", nargs="?", help="pubsub or table-change")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"function URL (default {DEFAULT_URL})")
    parser.add_argument(
        "--data",
        help='pubsub only: the message body, sent as is, e.g. \'{"reason": "manual"}\'',
    )
    parser.add_argument("--table", help="table-change only: project.dataset.table that changed")
    parser.add_argument(
        "--principal",
        help=f"table-change only: who changed the table (default {DEFAULT_PRINCIPAL})",
    )
    parser.add_argument(
        "--read", action="store_true", help="table-change only: send a tableDataRead instead"
    )
    parser.add_argument(
        "--rows",
        help="table-change only: the rows the change inserted (default: the table's row "
        "count, asked of BigQuery when BIGQUERY_EMULATOR_HOST is set; else none stated)",
    )
    parser.add_argument(
        "--id", help="event id: the Pub/Sub messageId, or the event and BigQuery job id"
    )
    parser.add_argument("--timeout", default="30", help="seconds to wait for the response")
    parser.set_defaults(func=send_event)


def send_event(args: argparse.Namespace) -> int:
    """Run `send-event`: 0 on a 2xx answer, 1 on any other answer, 2 on bad arguments."""
    try:
        event, timeout = _event_from_args(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        status, body = post_event(args.url, event, timeout)
    except OSError as err:  # URLError (refused, unknown host) and timeouts are all OSErrors
        reason = getattr(err, "reason", err)
        print(
            f"error: could not reach {args.url}: {reason}; is the function running?",
            file=sys.stderr,
        )
        return 1
    print(describe_answer(status, body))
    return 0 if 200 <= status < 300 else 1


def describe_answer(status: int, body: str) -> str:
    """The function's answer as the user reads it: its JSON decision (event, action, reason,
    run_id) pretty-printed under the status line, or the raw body when it is not JSON."""
    try:
        decision = json.loads(body)
    except ValueError:
        decision = None
    if isinstance(decision, dict):
        return f"HTTP {status}\n{json.dumps(decision, indent=2)}"
    return f"HTTP {status}" + (f" {body.strip()}" if body.strip() else "")


def _event_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    parsed = urllib.parse.urlparse(args.url or "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InputError(f"--url {args.url!r} is not an http(s) URL, e.g. {DEFAULT_URL}")
    try:
        timeout = float(args.timeout)
    except ValueError:
        timeout = 0.0
    if timeout <= 0:
        raise InputError(f"--timeout {args.timeout!r} must be a positive number of seconds")

    if args.kind == "pubsub":
        if args.table:
            raise InputError(
                "--table applies to table-change only; a pubsub message chooses its table "
                'with --data \'{"features_table": "project.dataset.table"}\''
            )
        for flag, used in (("--read", args.read), ("--principal", args.principal)):
            if used:
                raise InputError(f"{flag} applies to table-change only, not to pubsub")
        return pubsub_event(args.data, message_id=args.id), timeout
    if args.kind == "table-change":
        if args.data is not None:
            raise InputError("--data applies to pubsub only; table-change takes --table")
        if not args.table:
            raise InputError("table-change needs --table project.dataset.table")
        check_table_id(args.table, "--table")
        event = table_change_event(
            args.table,
            principal=args.principal or DEFAULT_PRINCIPAL,
            read=args.read,
            event_id=args.id,
            job_id=args.id,
            rows=None if args.read else _rows(args),
        )
        return event, timeout
    raise InputError(
        f"send-event needs a kind, pubsub or table-change (got {args.kind!r}); "
        'e.g. send-event pubsub --data \'{"reason": "manual"}\''
    )


def _rows(args: argparse.Namespace) -> int | None:
    """The rows a table change states: --rows, else the table's own count on the BigQuery
    emulator (local emulation; outside it send-event asks no cloud service), else none."""
    if args.rows is not None:
        if not args.rows.strip().isdigit():
            raise InputError(f"--rows {args.rows!r} must be a whole number of rows, e.g. 77")
        return int(args.rows)
    from clustering.adapters import bigquery

    if not os.environ.get(bigquery.EMULATOR_ENV):
        return None
    try:
        rows = bigquery.row_count(args.table)
    except Exception as error:  # unreachable, refused, denied: say so, state no count
        print(f"warning: could not count the rows of {args.table} ({error})", file=sys.stderr)
        return None
    if rows is None:
        print(f"warning: {args.table} does not exist on the emulator", file=sys.stderr)
    return rows


def _numeric_id() -> str:
    # Pub/Sub message ids are decimal strings; mimic them so logs look like production ones.
    return str(uuid.uuid4().int % 10**16)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _rfc3339(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")
