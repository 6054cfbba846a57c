"""A bounded local fuzz of the function's door (clustering.cloud.handler.respond).

Deliveries shaped like Google's (a Pub/Sub push of a manual message or of a log sink's
LogEntry, structured and binary CloudEvents) are mutated at random with a fixed seed: hostile
times, data that is not ASCII or not base64, lone surrogates, wrong types, missing keys,
truncated and deeply nested JSON, random headers. Every answer must be a decision, acked:
a malformed delivery is never a 5xx (which Pub/Sub would retry into the dead letter) and never
a traceback. A run that the fuzz happens to request fails fast on a missing features file.
The loop is bounded in count and in time; `fuzz_figures` is what the README quotes.
"""

from __future__ import annotations

import base64
import collections
import copy
import io
import json
import random
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clustering.cloud.handler import respond
from clustering.cloud.logs import JsonLog
from clustering.settings import JobSettings

FIXTURES = Path(__file__).parent / "fixtures" / "events"
REQUESTS = 5000
TIME_LIMIT_SECONDS = 120.0
SEED = 16
WATCHED = "baltimore-data.neighborhoods.features"
SINK_SUBSCRIPTION = "projects/baltimore-data/subscriptions/neighborhood-clusters-table-changes-push"

HOSTILE_TIMES = (
    "9999-12-31T23:59:59-05:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59.999999+00:00",
    "0001-01-01",
    "2024-02-30T00:00:00Z",
    "2024-05-01T12:00:00+99:00",
    "yesterday",
    "",
    "\u00e9t\u00e9",
    "2024-05-01T12:00:00\x00Z",
)
ODD_VALUES = (
    None,
    True,
    0,
    -1,
    10**400,
    1.5e308,
    "",
    "\u00e9\u00e8\u4e2d\u6587",
    "\ud800",
    '=HYPERLINK("http://example.com","x")',
    [],
    [1, "a", None],
    {},
    {"nested": {"deeper": [1, 2, {"x": None}]}},
    "A" * 5000,
)


def _seeds() -> list[tuple[bytes, dict[str, str]]]:
    """Valid deliveries of every shape the function accepts."""
    push_ce = json.loads((FIXTURES / "pubsub_manual_publish.json").read_text())
    sink_ce = json.loads((FIXTURES / "pubsub_sink_table_data_change.json").read_text())
    audit_ce = json.loads((FIXTURES / "audit_table_data_change.json").read_text())
    now = datetime.now(UTC).isoformat()
    seeds = []
    for event in (push_ce, sink_ce):
        message = dict(event["data"]["message"], publishTime=now)
        body = {"message": message, "subscription": event["data"]["subscription"]}
        seeds.append((json.dumps(body).encode(), {"Content-Type": "application/json"}))
    for event in (push_ce, audit_ce):
        event = dict(event, time=now)
        structured = {"Content-Type": "application/cloudevents+json"}
        seeds.append((json.dumps(event).encode(), structured))
    binary = {
        "ce-specversion": "1.0",
        "ce-type": audit_ce["type"],
        "ce-source": audit_ce["source"],
        "ce-id": "fuzz-1",
        "ce-time": now,
        "Content-Type": "application/json",
    }
    seeds.append((json.dumps(audit_ce["data"]).encode(), binary))
    return seeds


def _paths(document, prefix=()):
    """Every (path, value) of a JSON document."""
    yield prefix, document
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from _paths(value, (*prefix, index))


def _set(document, path, value):
    holder = document
    for step in path[:-1]:
        holder = holder[step]
    if value is _DELETE:
        del holder[path[-1]]
    else:
        holder[path[-1]] = value


_DELETE = object()
TIME_KEYS = ("publishTime", "publish_time", "time", "timestamp", "receiveTimestamp")


def _mutate_json(rng: random.Random, document):
    """One random mutation of a parsed delivery (message data decoded and re-encoded)."""
    document = copy.deepcopy(document)
    message = document.get("message") if isinstance(document, dict) else None
    inner = None
    if isinstance(message, dict) and isinstance(message.get("data"), str):
        try:
            inner = json.loads(base64.b64decode(message["data"]))
        except (ValueError, RecursionError):
            inner = None
    target = inner if inner is not None and rng.random() < 0.5 else document
    paths = [p for p, _ in _paths(target) if p]
    if not paths:
        return document
    choice = rng.random()
    if choice < 0.3:
        times = [p for p in paths if p[-1] in TIME_KEYS] or paths
        _set(target, rng.choice(times), rng.choice(HOSTILE_TIMES))
    elif choice < 0.6:
        _set(target, rng.choice(paths), rng.choice(ODD_VALUES))
    elif choice < 0.75:
        _set(target, rng.choice(paths), _DELETE)
    elif isinstance(message, dict):
        message["data"] = rng.choice(
            (
                "\u00e9" * rng.randint(1, 8),
                "eyJyZWFzb24iOiAi\u00e9In0=",
                base64.b64encode(rng.randbytes(rng.randint(1, 64))).decode(),
                base64.b64encode(b'{"reason": "\\ud800 x"}').decode(),
                base64.b64encode(b'{"reason": "\xff\xfe"}').decode(),
                base64.b64encode(b"[" * 5000).decode(),
                "%%%",
            )
        )
        inner = None
    if inner is not None and target is inner and isinstance(message, dict):
        message["data"] = base64.b64encode(json.dumps(inner).encode()).decode()
    return document


def _request(rng: random.Random, seeds) -> tuple[bytes, dict[str, str]]:
    body, headers = rng.choice(seeds)
    headers = dict(headers)
    roll = rng.random()
    if roll < 0.08:
        return rng.randbytes(rng.randint(0, 200)), headers
    if roll < 0.14:
        cut = body[: rng.randint(0, len(body))]
        return rng.choice((cut, b"[" * 20000, b'{"message": {"data": "\\ud800"}}')), headers
    if roll < 0.22 and "ce-time" in headers:
        headers["ce-time"] = rng.choice(HOSTILE_TIMES)
        return body, headers
    if roll < 0.28:
        headers[rng.choice(("ce-specversion", "ce-type", "ce-id", "ce-time"))] = rng.choice(
            ("1.0", "", "\u00e9", "x" * 300, HOSTILE_TIMES[0])
        )
    document = json.loads(body)
    # Fresh ids, so that most deliveries reach the decision and the run, not the duplicate check.
    fresh = f"fuzz-{rng.getrandbits(48)}"
    if isinstance(document.get("message"), dict):
        document["message"]["messageId"] = fresh
    elif "ce-id" in headers:
        headers["ce-id"] = fresh
    else:
        document["id"] = fresh
    for _ in range(rng.randint(1, 3)):
        document = _mutate_json(rng, document)
    return json.dumps(document).encode(), headers


def fuzz_figures(tmp_path: Path, requests: int = REQUESTS, seed: int = SEED) -> dict:
    """Run the fuzz; its figures: requests sent, answers by status and by outcome."""
    settings = JobSettings(
        features_source=str(tmp_path / "missing.csv"),
        artifacts_dest=str(tmp_path / "out"),
        watched_table=WATCHED,
        function_service_account="fn@baltimore-data.iam.gserviceaccount.com",
        table_changes_subscription=SINK_SUBSCRIPTION,
    )
    rng = random.Random(seed)
    seeds = _seeds()
    statuses, outcomes = collections.Counter(), collections.Counter()
    failures = []
    stream = io.StringIO()
    began = time.monotonic()
    sent = 0
    while sent < requests and time.monotonic() - began < TIME_LIMIT_SECONDS:
        body, headers = _request(rng, seeds)
        answer, status = respond(body, headers, "/projects/p/topics/t", settings, JsonLog(stream))
        sent += 1
        statuses[status] += 1
        outcomes[answer["event"]] += 1
        if status >= 500 and len(failures) < 5:
            failures.append((body[:300], headers, answer))
    lines = stream.getvalue().splitlines()
    return {
        "requests": sent,
        "seconds": round(time.monotonic() - began, 1),
        "statuses": dict(statuses),
        "outcomes": dict(outcomes),
        "failures": failures,
        "tracebacks": sum("traceback" in json.loads(line) for line in lines),
    }


def test_a_fuzz_of_the_door_gets_a_logged_acked_decision_for_every_delivery(tmp_path) -> None:
    figures = fuzz_figures(tmp_path)
    assert figures["requests"] >= 1000, figures
    assert figures["failures"] == [], figures
    assert set(figures["statuses"]) == {200}, figures
    assert figures["tracebacks"] == 0, figures
    # The fuzz reaches every kind of decision, not only the first rejection.
    assert {"event_rejected", "event_skipped", "run_failed"} <= set(figures["outcomes"]), figures


def test_hostile_times_and_bytes_from_the_review_are_acked(tmp_path) -> None:
    settings = JobSettings(
        features_source=str(tmp_path / "missing.csv"),
        artifacts_dest=str(tmp_path / "out"),
        watched_table=WATCHED,
    )
    hostile = "9999-12-31T23:59:59-05:00"
    sink = json.loads((FIXTURES / "pubsub_sink_table_data_change.json").read_text())
    entry = json.loads(base64.b64decode(sink["data"]["message"]["data"]))
    entry["timestamp"] = hostile
    sink_message = dict(
        sink["data"]["message"], data=base64.b64encode(json.dumps(entry).encode()).decode()
    )
    deliveries = {
        "publishTime": {"message": {"data": "e30=", "messageId": "1", "publishTime": hostile}},
        "timestamp": {"message": sink_message},
        "non-ASCII data": {"message": {"data": "eyJyZWFzb24iOiAi\u00e9In0=", "messageId": "2"}},
    }
    for name, body in deliveries.items():
        stream = io.StringIO()
        answer, status = respond(json.dumps(body).encode(), {}, "/", settings, JsonLog(stream))
        assert status == 200, (name, answer)
        assert "traceback" not in stream.getvalue(), name
    headers = {"ce-specversion": "1.0", "ce-type": "x.y", "ce-id": "3", "ce-time": hostile}
    answer, status = respond(b"{}", headers, "/", settings, JsonLog(io.StringIO()))
    assert status == 200, answer
    published = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    structured = json.loads((FIXTURES / "pubsub_manual_publish.json").read_text())
    structured["time"] = published
    structured["data"]["message"]["publishTime"] = hostile
    answer, status = respond(
        json.dumps(structured).encode(),
        {"Content-Type": "application/cloudevents+json"},
        "/",
        settings,
        JsonLog(io.StringIO()),
    )
    assert status == 200, answer


# --- the model document: `python -m clustering assign` on mutated run.json files ---------------
#
# A valid model document (the real table's run) is mutated at random with a fixed seed, one
# mutation each, and applied with `assign` (cli.main in process). Most mutations make it
# invalid by construction, decided here from DESIGN's description of the document, not from
# clustering.analysis.document: a wrong type, NaN or infinity, a scale <= 0, a negative
# min_population, clip bounds swapped, an id out of range, a field missing or stray, truncated
# or endlessly nested JSON. Those must end in exit 2 with one error line and no output; the
# rest (a random value wherever) may run or be refused, but never end in a traceback.

DOCUMENT_MUTATIONS = 600
DOCUMENT_TIME_LIMIT_SECONDS = 120.0
DOCUMENT_SEED = 23
NOT_NUMBERS = (None, True, "1", [], {}, float("nan"), float("inf"), -float("inf"), 10**400, 1.5e308)
NOT_TEXTS = (None, 1, True, "", "   ", [], {}, "A" * 1001)
NOT_IDS = ("-1", "1" * 20, "01", " 1", "x", "1.5", "")
# Objects whose fields are all required and fixed (the others map ids or names to values).
FIXED_FIELDS = {(), ("residential",)}


def _document_kind(path: tuple) -> str | None:
    """What DESIGN says the value at `path` of the model document is, where it says so."""
    if path == ("min_population",):
        return "nonneg"
    if len(path) >= 2 and path[-2] == "scale":
        return "positive"
    if len(path) >= 2 and path[-2] in ("impute", "center", "centroid"):
        return "number"
    if len(path) == 4 and path[:2] == ("residential", "top"):
        return "number"
    if len(path) == 5 and path[0] == "excluded" and path[2] == "groups":
        return "number"
    if len(path) == 4 and path[:2] == ("residential", "clip"):
        return "number"
    if path[-1] in ("name", "label", "key_column", "population_column"):
        return "text"
    if len(path) >= 2 and path[-2] in ("features", "excluded_keys"):
        return "text"
    if len(path) == 3 and path[:2] == ("residential", "top_labels"):
        return "text"
    return None


def _fixed(path: tuple) -> bool:
    """Whether the object at `path` has fixed, required fields only."""
    return (
        path in FIXED_FIELDS
        or (len(path) == 3 and path[:2] == ("residential", "sub"))
        or (len(path) == 2 and path[0] == "excluded")
    )


def _mutate_document(rng: random.Random, valid: dict) -> tuple[str, str, bool]:
    """(run.json text, what was done, whether it is invalid by construction)."""
    manifest = copy.deepcopy(valid)
    model = manifest["model"]
    paths = [p for p, _ in _paths(model) if p]
    roll = rng.random()
    if roll < 0.04:
        text = json.dumps(manifest)
        return text[: rng.randint(0, len(text) - 1)], "truncated", True
    if roll < 0.06:
        return '{"model": ' + "[" * 50_000 + "]" * 50_000 + "}", "nested", True
    if roll < 0.45:
        path = rng.choice([p for p in paths if _document_kind(p)])
        kind = _document_kind(path)
        pool = NOT_TEXTS if kind == "text" else NOT_NUMBERS
        pool += {"positive": (0, -1.5, 1e-300), "nonneg": (-1, -0.5)}.get(kind, ())
        _set(model, path, rng.choice(pool))
        return json.dumps(manifest), f"{kind} at {path}", True
    if roll < 0.55:
        lo, hi = rng.choice(model["residential"]["clip"])
        if lo < hi:
            pair = rng.choice([p for p in model["residential"]["clip"] if p[0] < p[1]])
            pair[0], pair[1] = pair[1], pair[0]
            return json.dumps(manifest), "clip swapped", True
    if roll < 0.65:
        mapping = rng.choice((("top",), ("sub",), ("top_labels",)))
        holder = model["residential"][mapping[0]]
        holder[rng.choice(NOT_IDS)] = holder.pop(rng.choice(sorted(holder)))
        return json.dumps(manifest), f"id in {mapping[0]}", True
    if roll < 0.8:
        path = rng.choice([(), *(p for p in paths if isinstance(_get(model, p), dict))])
        if _fixed(path):
            holder = _get(model, path)
            if rng.random() < 0.5:
                del holder[rng.choice(sorted(holder))]
                return json.dumps(manifest), f"field missing at {path}", True
            holder["zz"] = 1
            return json.dumps(manifest), f"stray field at {path}", True
    path = rng.choice(paths)
    _set(model, path, rng.choice(ODD_VALUES))
    return json.dumps(manifest), f"odd value at {path}", False


def _get(document, path):
    for step in path:
        document = document[step]
    return document


def document_fuzz_figures(tmp_path: Path, capsys, mutations: int = DOCUMENT_MUTATIONS) -> dict:
    """Run the document fuzz; its figures: runs by exit code, invalid ones by exit code."""
    from clustering.analysis.document import document, fitted_model
    from clustering.analysis.identity import identify
    from clustering.analysis.model import cluster
    from clustering.settings import AnalysisSettings
    from clustering.table import validate_features
    from tests.helpers import REAL_FEATURES, real_table
    from tests.test_cli import run_main

    settings = AnalysisSettings()
    frame = validate_features(real_table(), settings, "fuzz").frame
    identity = identify(cluster(frame, settings), None, {}, "fuzz-run")
    valid = json.loads(
        json.dumps({"run_id": "fuzz-run", "model": document(fitted_model(identity, settings))})
    )
    rng = random.Random(DOCUMENT_SEED)
    codes, invalid_codes = collections.Counter(), collections.Counter()
    failures, began, done = [], time.monotonic(), 0
    run, dest = tmp_path / "run.json", tmp_path / "assigned.csv"
    while done < mutations and time.monotonic() - began < DOCUMENT_TIME_LIMIT_SECONDS:
        text, what, invalid = _mutate_document(rng, valid)
        run.write_text(text, encoding="utf-8", errors="surrogatepass")
        dest.unlink(missing_ok=True)
        with warnings.catch_warnings():
            # numpy's overflow or invalid-value warning is a row assigned by an inf or NaN
            # distance: as an error it ends in exit 1, which fails the fuzz.
            warnings.simplefilter("error", RuntimeWarning)
            code = run_main(
                "assign",
                "--run",
                str(run),
                "--features",
                str(REAL_FEATURES),
                "--out",
                str(dest),
            )
        err = capsys.readouterr().err
        done += 1
        codes[code] += 1
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        one_line = code != 2 or (len(lines) == 1 and "Traceback" not in err and not dest.exists())
        if invalid:
            invalid_codes[code] += 1
        wrong = (invalid and code != 2) or code not in (0, 2) or not one_line
        if wrong and len(failures) < 5:
            failures.append((what, code, err[-500:]))
    return {
        "mutations": done,
        "seconds": round(time.monotonic() - began, 1),
        "exit_codes": dict(codes),
        "invalid_exit_codes": dict(invalid_codes),
        "failures": failures,
    }


def test_a_fuzz_of_model_documents_never_runs_an_invalid_one_or_ends_in_a_traceback(
    tmp_path, capsys
) -> None:
    figures = document_fuzz_figures(tmp_path, capsys)
    assert figures["failures"] == [], figures
    assert figures["mutations"] >= 200, figures
    # Invalid by construction: every one refused with exit 2 (0 silent runs), most of the fuzz.
    assert set(figures["invalid_exit_codes"]) == {2}, figures
    assert figures["invalid_exit_codes"][2] >= figures["mutations"] // 2, figures
    # The fuzz does not only refuse: some mutated documents still apply.
    assert figures["exit_codes"].get(0, 0) > 0 and 1 not in figures["exit_codes"], figures
