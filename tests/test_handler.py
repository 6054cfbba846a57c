"""clustering.cloud.handler.handle on real local adapters: what each kind of event leaves behind.

Events are built with clustering.cloud.sender and parsed by the cloudevents SDK exactly as
functions-framework parses a structured-mode request; the artifacts, the claims, the clusters
table and the run history are local files; logs are captured from a real JsonLog.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cloudevents.http import from_http
from google.api_core import exceptions

from clustering import InputError
from clustering.adapters import claims
from clustering.adapters.budget import Budget
from clustering.adapters.local import LocalStore
from clustering.analysis.sample import make_sample
from clustering.cloud.handler import handle, is_transient, respond
from clustering.cloud.logs import JsonLog
from clustering.cloud.sender import pubsub_event, table_change_event
from clustering.settings import AnalysisSettings, JobSettings
from tests.helpers import ARTIFACTS, MANIFEST

ROWS = 40
# K up to 4 keeps each run around a second; nothing here depends on the K range.
ANALYSIS = AnalysisSettings(k_max=4)
WATCHED = "local-project.analytics.neighborhood_features"
SERVICE_ACCOUNT = "recluster@local-project.iam.gserviceaccount.com"


def cloud_event(event: dict):
    """The CloudEvent functions-framework hands to `recluster` for this structured request."""
    return from_http({"Content-Type": "application/cloudevents+json"}, json.dumps(event).encode())


@dataclass
class Local:
    """A function configured on local files, and what its runs leave there."""

    settings: JobSettings
    out: Path
    clusters: Path
    runs: Path
    features: Path
    stream: io.StringIO

    def handle(self, event: dict, settings: JobSettings | None = None, run_budget=None):
        return handle(
            cloud_event(event),
            settings or self.settings,
            JsonLog(self.stream),
            run_budget=run_budget,
        )

    def logs(self) -> list[dict]:
        """Every line written so far, each parsed as one JSON object (or the test fails)."""
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def history(self) -> list[dict]:
        if not self.runs.exists():
            return []
        return [json.loads(line) for line in self.runs.read_text().splitlines()]

    def tree(self, folder: str) -> dict[str, str]:
        root = self.out / folder
        return {
            str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }

    def run_ids(self) -> set[str]:
        runs = self.out / "runs"
        return {p.name for p in runs.iterdir()} if runs.exists() else set()

    def claims(self) -> set[str]:
        claims = self.out / "claims"
        if not claims.exists():
            return set()
        return {p.name for p in claims.iterdir()}


@pytest.fixture
def local(tmp_path) -> Local:
    features = tmp_path / "features.csv"
    make_sample(ROWS).to_csv(features, index=False)
    settings = JobSettings(
        features_source=str(features),
        artifacts_dest=str(tmp_path / "out"),
        clusters_table=str(tmp_path / "tables" / "clusters.csv"),
        runs_table=str(tmp_path / "tables" / "runs.jsonl"),
        watched_table=WATCHED,
        function_service_account=SERVICE_ACCOUNT,
        analysis=ANALYSIS,
    )
    return Local(
        settings=settings,
        out=tmp_path / "out",
        clusters=tmp_path / "tables" / "clusters.csv",
        runs=tmp_path / "tables" / "runs.jsonl",
        features=features,
        stream=io.StringIO(),
    )


def with_message(entries: list[dict], start: str) -> dict:
    found = [e for e in entries if e["message"].startswith(start)]
    assert len(found) == 1, f"expected one entry starting {start!r} in {entries}"
    return found[0]


# --- Runs ------------------------------------------------------------------------------------


def test_a_manual_publish_runs_publishes_and_records_the_run(local):
    event = pubsub_event({"reason": "unit"}, message_id="1001")

    answer = local.handle(event)

    assert answer.event == "run_succeeded" and answer.status == 200
    (row,) = local.history()
    run_id = row["run_id"]
    assert answer.body() == {
        "event": "run_succeeded",
        "action": "run",
        "reason": answer.reason,
        "run_id": run_id,
    }
    assert row["status"] == "succeeded" and row["error"] is None
    assert (row["trigger"], row["event_id"], row["reason"]) == ("pubsub", "1001", "unit")
    assert row["input_rows"] == row["output_rows"] == ROWS
    assert row["artifact_prefix"] == str(local.out / "runs" / run_id)
    assert sorted(local.tree(f"runs/{run_id}")) == sorted(ARTIFACTS)
    assert local.tree("latest") == local.tree(f"runs/{run_id}")
    assert json.loads((local.out / "latest" / MANIFEST).read_text())["run_id"] == run_id
    assert local.clusters.read_text().count(run_id) == ROWS
    assert len(local.claims()) == 1

    entries = local.logs()
    starting = with_message(entries, "run starting")
    done = with_message(entries, "run succeeded")
    for entry in (starting, done):
        assert entry["severity"] == "INFO"
        assert (entry["run_id"], entry["trigger"], entry["event_id"]) == (run_id, "pubsub", "1001")
    assert done["status"] == "succeeded" and set(done["timings"]) >= {"read", "publish"}
    assert done["event"] == "run_succeeded"
    # Every line of the run (progress included) carries the run id and the trigger.
    after_start = entries[entries.index(starting) :]
    assert all(e["run_id"] == run_id and e["trigger"] == "pubsub" for e in after_start)


def test_a_change_of_the_watched_table_runs_keyed_by_its_job(local):
    event = table_change_event(WATCHED, job_id="bqjob_unit_1")

    answer = local.handle(event)

    assert answer.event == "run_succeeded"
    (row,) = local.history()
    assert row["status"] == "succeeded" and row["trigger"] == "table-change"
    assert row["event_id"] == "projects/local-project/jobs/bqjob_unit_1"
    assert with_message(local.logs(), "run starting")["trigger"] == "table-change"


def test_a_duplicate_delivery_is_acked_without_a_second_run(local):
    event = pubsub_event({"reason": "twice"}, message_id="2002")
    local.handle(event)
    latest, runs, history = local.tree("latest"), local.run_ids(), local.history()

    answer = local.handle(event)

    assert (answer.event, answer.action, answer.status) == ("duplicate", "run", 200)
    duplicate = with_message(local.logs(), "duplicate delivery skipped")
    assert duplicate["event"] == "duplicate"
    assert duplicate["severity"] == "INFO" and duplicate["idempotency_key"] == "2002"
    assert "run_id" not in duplicate
    assert (local.tree("latest"), local.run_ids(), local.history()) == (latest, runs, history)


@pytest.mark.parametrize(
    ("event", "cause"),
    [
        (table_change_event(WATCHED, read=True), "(tableDataRead), not a data change"),
        (table_change_event(WATCHED, principal=SERVICE_ACCOUNT), "own service account"),
        (table_change_event("local-project.analytics.other_table"), "not of the watched table"),
    ],
    ids=["read", "own-principal", "other-table"],
)
def test_a_skipped_event_is_logged_and_touches_nothing(local, event, cause):
    answer = local.handle(event)

    assert (answer.event, answer.action) == ("event_skipped", "skip")
    (entry,) = local.logs()
    assert entry["severity"] == "INFO" and entry["message"].startswith("event skipped: ")
    assert entry["event"] == "event_skipped"
    assert cause in entry["message"] and entry["trigger"] == "table-change"
    assert not local.out.exists() and local.history() == []


# --- Permanent failures: logged, recorded, acked -----------------------------------------------


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        ("{not json", "message data is not valid JSON"),
        ({"reason": "x", "k_max": 3}, "unknown key(s) 'k_max'"),
        ({"features_table": "other.dataset.table"}, "is not allowed"),
    ],
    ids=["invalid-json", "unknown-key", "table-not-allowlisted"],
)
def test_a_rejected_event_logs_an_error_and_records_a_failed_run(local, body, cause):
    event = pubsub_event(body, message_id="3003")

    answer = local.handle(event)

    assert (answer.event, answer.action, answer.status) == ("event_rejected", "reject", 200)
    (entry,) = local.logs()
    assert entry["severity"] == "ERROR" and entry["event"] == "event_rejected"
    assert entry["message"].startswith("event rejected, not retried: ")
    assert cause in entry["message"] and entry["trigger"] == "pubsub"
    (row,) = local.history()
    assert row["status"] == "failed" and row["event_id"] == "3003"
    assert row["trigger"] == "pubsub" and cause in row["error"]
    assert not local.out.exists()  # never claimed, never run


def test_bad_data_is_acked_with_a_warning_and_leaves_latest_and_table_unchanged(local):
    local.handle(pubsub_event({"reason": "good"}, message_id="4001"))
    latest, table, runs = local.tree("latest"), local.clusters.read_bytes(), local.run_ids()
    frame = make_sample(ROWS)
    frame.loc[3, "neighborhood"] = frame.loc[2, "neighborhood"]
    frame.to_csv(local.features, index=False)

    answer = local.handle(pubsub_event({"reason": "bad"}, message_id="4002"))

    assert (answer.event, answer.status) == ("run_failed", 200)  # acked
    warning = with_message(local.logs(), "run failed, not retried")
    assert warning["severity"] == "WARNING" and warning["error_type"] == "InputError"
    assert warning["event"] == "run_failed"
    assert "appears more than once" in warning["message"]
    good, bad = local.history()
    assert (good["status"], bad["status"]) == ("succeeded", "failed")
    assert bad["event_id"] == "4002" and bad["run_id"] == warning["run_id"]
    assert str(local.features) in bad["error"] and "appears more than once" in bad["error"]
    assert local.tree("latest") == latest
    assert local.clusters.read_bytes() == table
    assert local.run_ids() == runs
    assert len(local.claims()) == 2  # acked: a redelivery is a duplicate


def test_a_claim_store_that_cannot_be_written_is_acked_and_recorded(local):
    local.out.write_text("a file where the artifacts folder should be\n")

    answer = local.handle(pubsub_event(None, message_id="5005"))

    error = with_message(local.logs(), "cannot claim the event")
    assert error["severity"] == "ERROR" and "not retried" in error["message"]
    assert (answer.event, answer.status) == ("run_failed", 200)
    (row,) = local.history()
    assert row["status"] == "failed" and row["error"].startswith("claim failed: ")


def test_a_history_that_cannot_be_written_does_not_turn_a_run_into_a_retry(local, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder\n")
    settings = JobSettings(
        features_source=str(local.features),
        artifacts_dest=str(local.out),
        runs_table=str(blocked / "runs.jsonl"),
        analysis=ANALYSIS,
    )

    local.handle(pubsub_event(None, message_id="6006"), settings)

    entries = local.logs()
    assert with_message(entries, "run succeeded")["severity"] == "INFO"
    assert with_message(entries, "run history not written")["severity"] == "ERROR"
    assert (local.out / "latest" / MANIFEST).exists()


# --- Transient failures: released and raised ------------------------------------------------


class FailingLoadJobs:
    """A BigQuery endpoint whose every load job ends with `backendError`, as a real load job can
    during a BigQuery incident.

    Why a fake endpoint: a refused connection or a 5xx answer is retried by the Google clients
    themselves for 120 s (Storage) to 600 s (BigQuery) before the handler sees it (the
    end-to-end storage-outage test waits that out); a job that finished with backendError is
    reported at once, which lets this test reach the handler's transient branch in a second.
    The unmodified client parses the job and raises InternalServerError from it.
    """

    def __init__(self) -> None:
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append(f"{self.command} {self.path}")
                error = {"reason": "backendError", "message": "Backend error. Job aborted."}
                body = json.dumps(
                    {
                        "kind": "bigquery#job",
                        "jobReference": {"projectId": "p", "jobId": "j1", "location": "US"},
                        "configuration": {"jobType": "LOAD", "load": {}},
                        "status": {"state": "DONE", "errorResult": error, "errors": [error]},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def failing_bigquery(monkeypatch) -> Iterator[FailingLoadJobs]:
    fake = FailingLoadJobs()
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", fake.endpoint)
    yield fake
    fake.close()


def test_a_transient_failure_raises_releases_the_claim_and_the_retry_runs(local, failing_bigquery):
    local.handle(pubsub_event({"reason": "before"}, message_id="7001"))
    latest, table, claims = local.tree("latest"), local.clusters.read_bytes(), local.claims()
    to_bigquery = JobSettings(
        features_source=local.settings.features_source,
        artifacts_dest=local.settings.artifacts_dest,
        clusters_table="bq://test-project.analytics.neighborhood_clusters",
        runs_table=local.settings.runs_table,
        analysis=ANALYSIS,
    )
    event = pubsub_event({"reason": "during an incident"}, message_id="7002")

    answer = local.handle(event, to_bigquery)

    assert (answer.event, answer.status) == ("run_retry", 500)
    assert "backendError" in answer.reason
    assert failing_bigquery.requests  # the load job really was sent
    error = with_message(local.logs(), "run failed with a transient error, will be retried")
    assert error["severity"] == "ERROR" and error["event_id"] == "7002"
    # Released: the redelivery may claim it. The run recorded its load as the last one
    # started (a later run waits for that job to end before loading).
    assert {c for c in local.claims() if not c.startswith("last-load-")} == claims
    assert local.tree("latest") == latest and local.clusters.read_bytes() == table
    failed = local.history()[-1]
    assert failed["status"] == "failed" and failed["event_id"] == "7002"
    assert failed["run_id"] == error["run_id"]

    # The redelivery (BigQuery has recovered; here: the local table) claims and runs.
    assert local.handle(event).event == "run_succeeded"
    retried = local.history()[-1]
    assert retried["status"] == "succeeded" and retried["event_id"] == "7002"
    assert json.loads((local.out / "latest" / MANIFEST).read_text())["event_id"] == "7002"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_is_transient_tells_outages_from_permanent_errors(monkeypatch):
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{closed_port()}")
    blob = storage.Client().bucket("artifacts").blob("claims/x")
    # retry=None: the error the client would retry for 120 s (then raise as RetryError).
    with pytest.raises(Exception) as refused:
        blob.upload_from_string(b"{}", if_generation_match=0, retry=None)
    assert "refused" in str(refused.value).lower()

    assert is_transient(refused.value)
    assert is_transient(exceptions.RetryError("deadline exceeded", refused.value))
    assert is_transient(exceptions.ServiceUnavailable("try again"))
    assert is_transient(exceptions.InternalServerError("backendError"))
    assert is_transient(exceptions.TooManyRequests("slow down"))
    assert is_transient(TimeoutError("read timed out"))
    assert not is_transient(exceptions.NotFound("no such bucket"))
    assert not is_transient(exceptions.Forbidden("denied"))
    assert not is_transient(exceptions.PreconditionFailed("claimed"))
    assert not is_transient(exceptions.BadRequest("bad schema"))
    assert not is_transient(InputError("bad data"))
    assert not is_transient(ValueError("bug"))


# --- Claims left behind by runs that never finished -------------------------------------------


def leave_running_claim(local: Local, key: str, age_seconds: float) -> None:
    """The run lock a delivery leaves when its instance dies mid-run (timeout, crash)."""
    from datetime import UTC, datetime, timedelta

    at = datetime.now(UTC) - timedelta(seconds=age_seconds)
    dead = claims.Claim(run_id="dead-run", event_id=key, claimed_at=at.isoformat(), key=key)
    assert LocalStore(str(local.out)).create_claim(claims.LOCK_KEY, dead.encode())


def test_a_fresh_unfinished_claim_is_retried_later_without_running(local):
    leave_running_claim(local, "8001", age_seconds=30)
    answer = local.handle(pubsub_event({"reason": "redelivery"}, message_id="8001"))
    assert (answer.event, answer.status) == ("run_busy", 500)  # delivered again later
    busy = with_message(local.logs(), "run dead-run since")
    assert busy["severity"] == "WARNING" and busy["event"] == "run_busy"
    assert "holds the run lock; event 8001 will be retried" in busy["message"]
    assert local.history() == [] and not (local.out / "latest").exists()


def test_a_stale_unfinished_claim_is_taken_over_and_the_event_runs(local):
    from clustering.adapters.claims import STALE_AFTER_SECONDS

    leave_running_claim(local, "8002", age_seconds=STALE_AFTER_SECONDS + 60)
    answer = local.handle(pubsub_event({"reason": "after a crash"}, message_id="8002"))
    assert answer.event == "run_succeeded"
    with_message(local.logs(), "took over the run lock of run dead-run")
    (row,) = local.history()
    assert row["status"] == "succeeded" and row["event_id"] == "8002"
    # Finished: a further redelivery is a plain duplicate.
    local.handle(pubsub_event({"reason": "again"}, message_id="8002"))
    with_message(local.logs(), "duplicate delivery skipped: 8002")
    assert len(local.history()) == 1


# --- Deadlines, fencing, coalescing ---------------------------------------------------------


def published_state(local: Local) -> tuple:
    table = local.clusters.read_bytes() if local.clusters.exists() else None
    latest = local.tree("latest") if (local.out / "latest").exists() else {}
    return latest, table, local.run_ids()


def test_a_run_stopped_by_its_deadline_publishes_nothing_and_the_redelivery_publishes_once(local):
    event = pubsub_event({"reason": "slow"}, message_id="9001")
    # 20 s lets every stage start but not publishing, which needs 30 s left (job.py).
    answer = local.handle(event, run_budget=Budget.lasting(20))

    assert (answer.event, answer.status) == ("run_retry", 500)
    assert "out of time before publish" in answer.reason
    assert published_state(local) == ({}, None, set())
    assert local.claims() == set()  # the lock is released, the event not marked done
    (failed,) = local.history()
    assert failed["status"] == "failed" and "out of time" in failed["error"]

    assert local.handle(event).event == "run_succeeded"
    assert len(local.run_ids()) == 1
    assert [r["status"] for r in local.history()] == ["failed", "succeeded"]
    assert local.handle(event).event == "duplicate"


def test_is_transient_covers_deadlines_lost_claims_throttling_and_partial_publication():
    from clustering.adapters.budget import OutOfTime
    from clustering.job import PublishInterrupted

    assert is_transient(OutOfTime("late"))
    assert is_transient(claims.ClaimLost("taken over"))
    assert is_transient(PublishInterrupted("loaded, not switched"))
    for reason in ("rateLimitExceeded", "quotaExceeded"):
        assert is_transient(exceptions.Forbidden("slow down", errors=[{"reason": reason}]))
    assert not is_transient(exceptions.Forbidden("denied", errors=[{"reason": "accessDenied"}]))


class TakeoverAt(io.StringIO):
    """A log stream that, when the run logs `trigger`, lets another delivery take the run
    lock over (as a redelivery does once it believes the run dead): a real write to the store
    at exactly that point of the run."""

    def __init__(self, out: Path, trigger: str) -> None:
        super().__init__()
        self.out, self.trigger, self.done = out, trigger, False

    def write(self, text: str) -> int:
        if not self.done and self.trigger in text:
            self.done = True
            thief = claims.Claim("thief-run", "other", "2026-01-01T00:00:00+00:00")
            store = LocalStore(str(self.out))
            assert store.replace_claim(claims.LOCK_KEY, thief.encode(), None) is not None
        return super().write(text)


def test_a_run_whose_lock_was_taken_over_publishes_nothing(local):
    local.handle(pubsub_event({"reason": "before"}, message_id="9101"))
    before = published_state(local)
    local.stream = TakeoverAt(local.out, "publishing run")

    answer = local.handle(pubsub_event({"reason": "overtaken"}, message_id="9102"))

    assert (answer.event, answer.status) == ("run_retry", 500)
    lost = with_message(local.logs(), "run stopped, will be retried")
    assert "lost the run lock before writing the run folder" in lost["message"]
    assert published_state(local) == before
    # Not ours any more: the thief's lock is left alone.
    found = LocalStore(str(local.out)).read_claim(claims.LOCK_KEY)
    assert claims.decode(found[0]).run_id == "thief-run"


def test_two_deliveries_of_one_event_racing_publish_once(local):
    from concurrent.futures import ThreadPoolExecutor

    event = pubsub_event({"reason": "race"}, message_id="9201")
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: local.handle(event), range(2)))

    events = sorted(a.event for a in answers)
    # The loser met the done record (duplicate) or the winner's lock (busy, or its own
    # lock-taking lost the race and it stopped before running: retry).
    assert events in (
        ["duplicate", "run_succeeded"],
        ["run_busy", "run_succeeded"],
        ["run_retry", "run_succeeded"],
    ), events
    assert len(local.run_ids()) == 1 and len(local.history()) == 1
    assert local.handle(event).event == "duplicate"


def test_a_burst_of_table_changes_runs_once_on_the_final_data(local):
    from datetime import UTC, datetime, timedelta

    burst = [
        table_change_event(
            WATCHED, job_id=f"bqjob_burst_{i}", time=datetime.now(UTC) - timedelta(seconds=5 - i)
        )
        for i in range(5)
    ]
    answers = [local.handle(event) for event in burst]

    assert [a.event for a in answers] == ["run_succeeded"] + ["event_skipped"] * 4
    run_id = answers[0].run_id
    for answer in answers[1:]:
        assert f"already covered by run {run_id}" in answer.reason
    assert local.run_ids() == {run_id}


def test_a_change_after_the_last_run_started_runs_again(local):
    from datetime import UTC, datetime, timedelta

    first = local.handle(table_change_event(WATCHED, job_id="bqjob_a"))
    later = datetime.now(UTC) + timedelta(seconds=1)
    second = local.handle(table_change_event(WATCHED, job_id="bqjob_b", time=later))
    assert (first.event, second.event) == ("run_succeeded", "run_succeeded")


def test_a_late_table_change_runs_unless_a_later_run_covers_it(local):
    from datetime import UTC, datetime, timedelta

    old = datetime.now(UTC) - timedelta(seconds=local.settings.max_event_age_seconds + 60)
    late = local.handle(table_change_event(WATCHED, job_id="bqjob_late", time=old))
    assert late.event == "run_succeeded"  # nothing has run since it happened
    assert with_message(local.logs(), "late table change runs")["severity"] == "WARNING"

    again = local.handle(table_change_event(WATCHED, job_id="bqjob_later", time=old))
    assert again.event == "event_skipped" and "already covered" in again.reason


def test_a_truncated_table_is_refused_unless_the_message_forces_it(local):
    from dataclasses import replace

    guarded = replace(local.settings, min_rows_ratio=0.8)
    local.handle(pubsub_event({"reason": "full"}, message_id="9301"), guarded)
    before = published_state(local)
    make_sample(ROWS).head(30).to_csv(local.features, index=False)

    refused = local.handle(pubsub_event({"reason": "truncated"}, message_id="9302"), guarded)

    assert (refused.event, refused.status) == ("run_failed", 200)
    assert f"has 30 rows, fewer than MIN_ROWS_RATIO=0.8 of the {ROWS} rows" in refused.reason
    assert '{"force": true}' in refused.reason and "--force" in refused.reason
    assert published_state(local) == before
    assert local.history()[-1]["status"] == "failed"

    forced = local.handle(pubsub_event({"force": True}, message_id="9303"), guarded)
    assert forced.event == "run_succeeded"
    manifest = json.loads((local.out / "latest" / MANIFEST).read_text())
    assert manifest["input"]["rows"] == 30


# --- Raw deliveries (what the HTTP entry point hands over) ---------------------------------------


def push(message: dict) -> bytes:
    return json.dumps({"message": message, "subscription": "projects/p/subscriptions/s"}).encode()


def respond_to(local: Local, body: bytes, headers: dict | None = None):
    return respond(
        body,
        headers or {"Content-Type": "application/json"},
        "/projects/p/topics/runs",
        local.settings,
        JsonLog(local.stream),
    )


def test_an_attribute_only_push_runs_with_the_options_of_its_attributes(local):
    body = push(
        {"attributes": {"reason": "from attributes", "dry_run": "true"}, "messageId": "9401"}
    )

    answer, status = respond_to(local, body)

    assert status == 200 and answer["event"] == "dry_run", answer
    (row,) = local.history()
    assert (row["status"], row["reason"], row["event_id"]) == ("dry_run", "from attributes", "9401")
    assert not (local.out / "latest").exists()


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        (b"{not json", "the request body is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"hello": "world"}', "neither a Pub/Sub push"),
        (
            push({"data": base64.b64encode(b"[" * 50_000).decode(), "messageId": "9501"}),
            "message data is JSON nested too deeply",
        ),
        (push({"data": "A" * 2_000_000, "messageId": "9502"}), "more than the 1,048,576"),
        (push({"attributes": {"force": "yes"}, "messageId": "9503"}), "`force` must be true"),
    ],
    ids=["not-json", "nested-body", "no-message", "nested-data", "oversized-data", "bad-attr"],
)
def test_a_malformed_delivery_is_rejected_with_a_reason_and_a_history_row(local, body, cause):
    answer, status = respond_to(local, body)

    assert status == 200 and answer["event"] == "event_rejected", answer
    assert cause in answer["reason"]
    (row,) = local.history()
    assert row["status"] == "failed" and cause in row["error"]
    assert not local.out.exists()


def test_an_empty_data_push_and_a_binary_cloudevent_run(local):
    answer, _ = respond_to(local, push({"data": "", "messageId": "9601"}))
    assert answer["event"] == "run_succeeded"
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-id": "9602",
        "ce-source": "//pubsub.googleapis.com/projects/p/topics/t",
        "Content-Type": "application/json",
    }
    body = json.dumps({"message": {"messageId": "9602"}}).encode()
    answer, _ = respond_to(local, body, headers)
    assert answer["event"] == "run_succeeded"
    assert [r["event_id"] for r in local.history()] == ["9601", "9602"]


def test_a_features_file_above_the_size_limit_is_refused_as_bad_data(local, monkeypatch):
    from clustering.adapters import local as local_adapter

    size = local.features.stat().st_size
    monkeypatch.setattr(local_adapter, "MAX_FEATURES_BYTES", size - 1)

    answer = local.handle(pubsub_event({"reason": "too big"}, message_id="9701"))

    assert (answer.event, answer.status) == ("run_failed", 200)
    assert f"is {size:,} bytes, more than the {size - 1:,}" in answer.reason
    assert published_state(local) == ({}, None, set())


@pytest.mark.parametrize(("source", "covered"), [("configured", True), ("bq://p.d.other", False)])
def test_only_a_run_on_the_watched_source_covers_a_change(local, source, covered):
    from datetime import UTC, datetime, timedelta

    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    source = local.settings.features_source if source == "configured" else source
    pointer = {"run_id": "r0", "started_at": later, "input": {"source": source, "rows": ROWS}}
    (local.out / "latest").mkdir(parents=True)
    (local.out / "latest" / MANIFEST).write_text(json.dumps(pointer))

    answer = local.handle(table_change_event(WATCHED, job_id="bqjob_cover"))

    assert answer.event == ("event_skipped" if covered else "run_succeeded"), answer


def test_the_run_summary_says_the_top_split_is_k2_and_the_diagnostic_only_informs():
    from clustering.cloud.handler import run_summary
    from clustering.job import RunReport

    manifest = {
        "settings": {"key_column": "community_area"},
        "input": {"rows": 77},
        "top_groups": [{"label": "Stable", "rows": 40}, {"label": "Distressed", "rows": 30}],
        "diagnostics": {"top_split_k": 2, "best_k": 3},
    }
    summary = run_summary(RunReport("r1", "succeeded", manifest, "gs://b/runs/r1/"))
    assert summary == (
        "run succeeded: 77 community areas, top split K=2 (Stable 40, Distressed 30); the K "
        "diagnostic's best silhouette is at K=3 (informative only); artifacts gs://b/runs/r1/"
    )


# --- Cold start ------------------------------------------------------------------------------

# What a fresh instance loads to answer a delivery it skips, run in its own interpreter: the
# deliveries are answered by main.py's module through clustering.cloud.handler.respond.
COLD_START = """
import json, sys
import main
from clustering.cloud.handler import respond
answers = []
for body in json.load(sys.stdin):
    answer, _ = respond(
        body.encode(), {"Content-Type": "application/cloudevents+json"}, "/", main.SETTINGS
    )
    answers.append(answer["event"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("pandas", "sklearn", "matplotlib"))
print(json.dumps({"answers": answers, "heavy": heavy}))
"""


def test_a_cold_start_answers_skipped_deliveries_without_pandas_sklearn_or_matplotlib(local):
    import os
    import subprocess
    import sys
    from datetime import UTC, datetime, timedelta

    done = pubsub_event({"reason": "first"}, message_id="9801")
    assert local.handle(done).event == "run_succeeded"
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    deliveries = [
        done,
        table_change_event(WATCHED, job_id="bqjob_covered", time=earlier),
        table_change_event("local-project.analytics.other_table"),
    ]
    settings = local.settings
    env = os.environ | {
        "FEATURES_SOURCE": settings.features_source,
        "ARTIFACTS_DEST": settings.artifacts_dest,
        "CLUSTERS_TABLE": settings.clusters_table,
        "RUNS_TABLE": settings.runs_table,
        "WATCHED_TABLE": WATCHED,
        "FUNCTION_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
    }
    found = subprocess.run(
        [sys.executable, "-c", COLD_START],
        input=json.dumps([json.dumps(event) for event in deliveries]),
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parent.parent,
        check=True,
    )
    result = json.loads(found.stdout.splitlines()[-1])
    assert result == {"answers": ["duplicate", "event_skipped", "event_skipped"], "heavy": []}
