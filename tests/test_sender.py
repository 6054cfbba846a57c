"""The CloudEvent builders and the `send-event` command.

The builders must produce events that `decide` reads as intended (a round trip through the
cloudevents SDK that functions-framework uses), and the command must post them in structured
mode to a real HTTP server.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cloudevents.http import from_http

from clustering.cloud.events import Decision, decide, envelope_from_cloudevent
from clustering.cloud.sender import (
    SINK_SUBSCRIPTION,
    STRUCTURED_CONTENT_TYPE,
    bigquery_log_entry,
    pubsub_event,
    register,
    table_change_event,
)
from clustering.settings import JobSettings

OWN_ACCOUNT = "neighborhood-clusters@baltimore-data.iam.gserviceaccount.com"
WATCHED = "baltimore-data.neighborhoods.features"
SETTINGS = JobSettings(
    features_source=f"bq://{WATCHED}",
    artifacts_dest="gs://baltimore-data-artifacts/neighborhood-clusters",
    clusters_table="bq://baltimore-data.neighborhoods.clusters",
    allowed_features_tables=("baltimore-data.neighborhoods.features_2023",),
    function_service_account=OWN_ACCOUNT,
    table_changes_subscription=SINK_SUBSCRIPTION,
)


def received_by_function(event: dict[str, Any]) -> Any:
    """The CloudEvent object functions-framework would build from this structured POST body."""
    return from_http({"Content-Type": STRUCTURED_CONTENT_TYPE}, json.dumps(event).encode())


def decide_now(event: dict[str, Any]) -> Decision:
    return decide(
        envelope_from_cloudevent(received_by_function(event)), SETTINGS, datetime.now(UTC)
    )


# --- Builders round trip through decide ------------------------------------------------------


def test_pubsub_event_with_a_body_runs_keyed_by_its_message_id() -> None:
    event = pubsub_event({"reason": "manual refresh", "dry_run": True}, message_id="4242")
    decision = decide_now(event)
    assert (decision.action, decision.trigger, decision.key) == ("run", "pubsub", "4242")
    assert decision.dry_run is True
    assert decision.message_reason == "manual refresh"
    assert event["id"] == event["data"]["message"]["messageId"] == "4242"


def test_pubsub_event_without_a_body_runs_with_the_defaults() -> None:
    event = pubsub_event(attributes={"origin": "test"})
    assert "data" not in event["data"]["message"]
    decision = decide_now(event)
    assert (decision.action, decision.features_source) == ("run", None)


def test_pubsub_event_sends_text_as_is_so_malformed_bodies_can_be_tested() -> None:
    assert decide_now(pubsub_event("{not json")).action == "reject"
    assert decide_now(pubsub_event(b"\xff\xfe")).action == "reject"


def test_pubsub_event_can_choose_an_allowlisted_table() -> None:
    event = pubsub_event({"features_table": "baltimore-data.neighborhoods.features_2023"})
    decision = decide_now(event)
    assert decision.features_source == "bq://baltimore-data.neighborhoods.features_2023"


def test_pubsub_event_publish_time_drives_the_age_check() -> None:
    event = pubsub_event({}, publish_time=datetime.now(UTC) - timedelta(days=1))
    decision = decide_now(event)
    assert decision.action == "skip"
    assert "dropped" in decision.reason


def test_sink_style_log_entry_through_pubsub_runs_as_a_table_change() -> None:
    entry = bigquery_log_entry(WATCHED, job_id="load_features_42")
    decision = decide_now(pubsub_event(entry, subscription=SINK_SUBSCRIPTION))
    assert (decision.action, decision.trigger) == ("run", "table-change")
    assert decision.key == "projects/baltimore-data/jobs/load_features_42"


def test_table_change_event_of_the_watched_table_runs_keyed_by_its_job() -> None:
    event = table_change_event(WATCHED, job_id="load_features_7")
    decision = decide_now(event)
    assert (decision.action, decision.trigger) == ("run", "table-change")
    assert decision.key == "projects/baltimore-data/jobs/load_features_7"


def test_table_change_event_carries_the_eventarc_attributes() -> None:
    received = received_by_function(table_change_event(WATCHED))
    resource = "projects/baltimore-data/datasets/neighborhoods/tables/features"
    assert received["type"] == "google.cloud.audit.log.v1.written"
    assert received["servicename"] == "bigquery.googleapis.com"
    assert received["methodname"] == "google.cloud.bigquery.v2.JobService.InsertJob"
    assert received["resourcename"] == resource
    assert received["subject"] == f"bigquery.googleapis.com/{resource}"
    assert received.data["protoPayload"]["resourceName"] == resource


def test_table_change_event_time_drives_the_age_check() -> None:
    event = table_change_event(WATCHED, time=datetime.now(UTC) - timedelta(hours=25))
    assert event["time"] == event["recordedtime"] == event["data"]["timestamp"]
    decision = decide_now(event)
    assert decision.action == "run" and decision.late
    assert "late: 1d 1h 0m old" in decision.reason
    assert decision.changed_at == datetime.fromisoformat(event["data"]["timestamp"])


@pytest.mark.parametrize(
    ("kwargs", "cause"),
    [
        ({"read": True}, "tableDataRead"),
        ({"principal": OWN_ACCOUNT}, "own service account"),
    ],
)
def test_table_change_event_variants_are_skipped(kwargs: dict[str, Any], cause: str) -> None:
    decision = decide_now(table_change_event(WATCHED, **kwargs))
    assert decision.action == "skip"
    assert cause in decision.reason


def test_table_change_event_of_our_clusters_table_is_skipped() -> None:
    decision = decide_now(table_change_event("baltimore-data.neighborhoods.clusters"))
    assert decision.action == "skip"
    assert "clusters table" in decision.reason


def test_builders_reject_a_malformed_table() -> None:
    with pytest.raises(ValueError, match="not a table id"):
        table_change_event("x.y.z; DROP TABLE t")


# --- The send-event command against a real HTTP server ---------------------------------------


@dataclass
class Receiver:
    """A local HTTP server that records what it receives and answers with `status`."""

    url: str
    status: int = 200
    answer: bytes | None = None
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append((dict(self.headers.items()), body))
            self.send_response(state.status)
            self.end_headers()
            default = b"OK" if state.status == 200 else b"boom"
            self.wfile.write(state.answer if state.answer is not None else default)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll interval keeps shutdown() from adding half a second to every test.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_cli(*argv: str) -> int:
    """Parse `send-event ARGS` the way the top-level CLI does, then run the command."""
    parser = argparse.ArgumentParser(prog="clustering")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["send-event", *argv])
    return args.func(args)


def test_cli_posts_a_structured_pubsub_event(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli("pubsub", "--url", receiver.url, "--data", '{"reason": "cli"}', "--id", "77")
    assert code == 0
    assert capsys.readouterr().out.strip() == "HTTP 200 OK"
    ((headers, body),) = receiver.requests
    assert headers["Content-Type"] == STRUCTURED_CONTENT_TYPE
    event = json.loads(body)
    assert event["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert event["data"]["message"]["messageId"] == "77"
    decision = decide_now(event)
    assert (decision.action, decision.key, decision.message_reason) == ("run", "77", "cli")


def test_cli_posts_a_table_change_that_decide_runs(receiver: Receiver) -> None:
    assert run_cli("table-change", "--url", receiver.url, "--table", WATCHED, "--id", "j1") == 0
    ((_, body),) = receiver.requests
    event = json.loads(body)
    assert event["id"] == "j1"
    assert event["resourcename"].endswith("/tables/features")
    decision = decide_now(event)
    assert (decision.action, decision.key) == ("run", "projects/baltimore-data/jobs/j1")


def test_cli_read_flag_sends_a_table_data_read(receiver: Receiver) -> None:
    assert run_cli("table-change", "--url", receiver.url, "--table", WATCHED, "--read") == 0
    ((_, body),) = receiver.requests
    entry = json.loads(body)["data"]
    assert "tableDataRead" in entry["protoPayload"]["metadata"]
    assert decide_now(json.loads(body)).action == "skip"


def test_cli_principal_flag_sets_the_caller(receiver: Receiver) -> None:
    argv = ("table-change", "--url", receiver.url, "--table", WATCHED, "--principal", OWN_ACCOUNT)
    assert run_cli(*argv) == 0
    ((_, body),) = receiver.requests
    event = json.loads(body)
    assert event["data"]["protoPayload"]["authenticationInfo"]["principalEmail"] == OWN_ACCOUNT


def test_cli_prints_the_functions_json_decision(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    decision = {"event": "run_succeeded", "action": "run", "reason": "r", "run_id": "20261127"}
    receiver.answer = json.dumps(decision).encode()
    assert run_cli("pubsub", "--url", receiver.url) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "HTTP 200"
    assert json.loads(out.split("\n", 1)[1]) == decision


def test_cli_exits_1_on_a_non_2xx_answer(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver.status = 500
    assert run_cli("pubsub", "--url", receiver.url) == 1
    assert capsys.readouterr().out.strip() == "HTTP 500 boom"


def test_cli_exits_1_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert run_cli("pubsub", "--url", f"http://127.0.0.1:{port}/", "--timeout", "5") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not reach")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "cause"),
    [
        ((), "needs a kind"),
        (("gcs",), "needs a kind"),
        (("table-change",), "needs --table"),
        (("table-change", "--table", "x.y.z; DROP TABLE t"), "not a table id"),
        (("table-change", "--table", WATCHED, "--data", "{}"), "--data applies to pubsub"),
        (("pubsub", "--table", WATCHED), "--table applies to table-change"),
        (("pubsub", "--read"), "--read applies to table-change"),
        (("pubsub", "--principal", OWN_ACCOUNT), "--principal applies to table-change"),
        (("pubsub", "--url", "ftp://host/"), "not an http(s) URL"),
        (("pubsub", "--timeout", "soon"), "--timeout"),
        (("pubsub", "--timeout", "-1"), "--timeout"),
        (("table-change", "--table", WATCHED, "--rows", "many"), "--rows 'many' must be a whole"),
    ],
)
def test_bad_arguments_exit_2_with_one_error_line(
    argv: tuple[str, ...], cause: str, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    with_url = argv if "--url" in argv else (*argv, "--url", receiver.url)
    assert run_cli(*with_url) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert captured.err.count("\n") == 1
    assert cause in captured.err
    assert receiver.requests == []


# --- The rows a table change states (issue 21) ------------------------------------------------


def inserted(receiver: Receiver) -> str | None:
    ((_, body),) = receiver.requests
    change = json.loads(body)["data"]["protoPayload"]["metadata"]["tableDataChange"]
    return change.get("insertedRowsCount")


def test_the_rows_flag_states_the_rows_inserted(receiver: Receiver, monkeypatch) -> None:
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    assert run_cli("table-change", "--url", receiver.url, "--table", WATCHED, "--rows", "77") == 0
    assert inserted(receiver) == "77"
    ((_, body),) = receiver.requests
    assert "77 rows inserted" in decide_now(json.loads(body)).reason


def test_without_an_emulator_or_the_flag_no_count_is_made_up(receiver: Receiver, monkeypatch):
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    assert run_cli("table-change", "--url", receiver.url, "--table", WATCHED) == 0
    assert inserted(receiver) is None  # not Baltimore's 279 whatever the table


@pytest.mark.e2e
def test_on_the_emulator_the_change_states_the_tables_own_row_count(
    receiver: Receiver, bigquery_emulator, monkeypatch, capsys
) -> None:
    import uuid

    import pandas as pd

    from tests.emulators import bigquery_client

    client = bigquery_client(bigquery_emulator)
    dataset = f"{bigquery_emulator.project}.sender_{uuid.uuid4().hex[:8]}"
    client.create_dataset(dataset)
    try:
        frame = pd.DataFrame({"area": [f"Area {i}" for i in range(77)], "x": range(77)})
        client.load_table_from_dataframe(frame, f"{dataset}.areas").result()
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator.endpoint)
        assert run_cli("table-change", "--url", receiver.url, "--table", f"{dataset}.areas") == 0
        assert inserted(receiver) == "77"
        receiver.requests.clear()
        missing = f"{dataset}.nothing"
        assert run_cli("table-change", "--url", receiver.url, "--table", missing) == 0
        assert inserted(receiver) is None
        assert f"warning: {missing} does not exist on the emulator" in capsys.readouterr().err
    finally:
        client.delete_dataset(dataset, delete_contents=True)
