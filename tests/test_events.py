"""Every run/skip/reject rule of clustering.cloud.events, on events shaped like Google's deliveries.

The fixtures in tests/fixtures/events/ are structured-mode CloudEvents as Eventarc and Pub/Sub
send them; "now" is fixed five minutes after they were published.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import from_http

from clustering.cloud.events import (
    ALLOWED_MESSAGE_KEYS,
    JOB_LABELS,
    Decision,
    EventEnvelope,
    covered_by,
    decide,
    envelope_from_cloudevent,
    envelope_from_http,
    envelope_from_structured,
)
from clustering.settings import MAX_CLOCK_SKEW_SECONDS, JobSettings

FIXTURES = Path(__file__).parent / "fixtures" / "events"
NOW = datetime(2024, 5, 1, 12, 5, tzinfo=UTC)
OWN_ACCOUNT = "neighborhood-clusters@baltimore-data.iam.gserviceaccount.com"
WATCHED = "baltimore-data.neighborhoods.features"
SETTINGS = JobSettings(
    features_source=f"bq://{WATCHED}",
    artifacts_dest="gs://baltimore-data-artifacts/neighborhood-clusters",
    clusters_table="bq://baltimore-data.neighborhoods.clusters",
    runs_table="bq://baltimore-data.neighborhoods.cluster_runs",
    allowed_features_tables=("baltimore-data.neighborhoods.features_2023",),
    function_service_account=OWN_ACCOUNT,
    max_event_age_seconds=3600,
    table_changes_subscription="projects/baltimore-data/subscriptions/neighborhood-clusters-table-changes-push",
)
ALL_FIXTURES = sorted(path.stem for path in FIXTURES.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def decide_on(
    event: dict[str, Any], settings: JobSettings = SETTINGS, now: datetime = NOW
) -> Decision:
    return decide(envelope_from_structured(event), settings, now)


def decide_fixture(name: str, settings: JobSettings = SETTINGS, now: datetime = NOW) -> Decision:
    return decide_on(load(name), settings, now)


SINK = "pubsub_sink_table_data_change"


def with_message_text(text: str, name: str = "pubsub_manual_publish") -> dict[str, Any]:
    """A fixture Pub/Sub event whose message data is replaced by `text`."""
    event = load(name)
    event["data"]["message"]["data"] = base64.b64encode(text.encode()).decode()
    return event


def assert_decision(
    decision: Decision, action: str, trigger: str, key: str | None, *mentions: str
) -> None:
    assert (decision.action, decision.trigger, decision.key) == (action, trigger, key), decision
    for word in mentions:
        assert word in decision.reason, f"{word!r} not in reason: {decision.reason}"


# --- Manual Pub/Sub messages -----------------------------------------------------------------


def test_manual_publish_runs_and_keeps_the_publishers_reason() -> None:
    decision = decide_fixture("pubsub_manual_publish")
    assert_decision(decision, "run", "pubsub", "11529734001", "weekly refresh")
    assert decision.message_reason == "weekly refresh after the 311 import"
    assert decision.features_source is None
    assert decision.dry_run is False
    assert decision.should_run


@pytest.mark.parametrize("name", ["pubsub_empty_body", "pubsub_empty_object"])
def test_empty_message_runs_with_the_configured_settings(name: str) -> None:
    decision = decide_fixture(name)
    assert decision.action == "run"
    assert decision.trigger == "pubsub"
    assert (decision.features_source, decision.dry_run, decision.message_reason) == (
        None,
        False,
        None,
    )
    assert "configured features" in decision.reason


def test_whitespace_only_message_counts_as_empty() -> None:
    decision = decide_on(with_message_text("  \n"))
    assert decision.action == "run"
    assert decision.features_source is None


def test_reason_and_dry_run_are_carried_to_the_runner() -> None:
    decision = decide_fixture("pubsub_reason_dry_run")
    assert_decision(decision, "run", "pubsub", "11529734004", "dry run", "check new K range")
    assert decision.dry_run is True
    assert decision.message_reason == "check new K range"


def test_allowlisted_features_table_becomes_the_features_source() -> None:
    decision = decide_fixture("pubsub_features_table_allowed")
    assert_decision(decision, "run", "pubsub", "11529734005", "features_2023")
    assert decision.features_source == "bq://baltimore-data.neighborhoods.features_2023"


def test_the_configured_features_table_is_always_allowed() -> None:
    decision = decide_on(with_message_text(json.dumps({"features_table": WATCHED})))
    assert decision.action == "run"
    assert decision.features_source == f"bq://{WATCHED}"


def test_features_table_outside_the_allowlist_is_rejected() -> None:
    decision = decide_fixture("pubsub_features_table_not_allowed")
    assert_decision(
        decision,
        "reject",
        "pubsub",
        "11529734006",
        "baltimore-data.scratch.features_copy",
        "not allowed",
        "ALLOWED_FEATURES_TABLES",
    )
    assert decision.features_source is None
    assert not decision.should_run


def test_injection_attempt_in_features_table_is_rejected_before_any_lookup() -> None:
    decision = decide_fixture("pubsub_features_table_injection")
    assert_decision(decision, "reject", "pubsub", "11529734007", "is not a table id")
    assert decision.features_source is None


@pytest.mark.parametrize(
    ("name", "key", "cause"),
    [
        ("pubsub_invalid_base64", "11529734008", "not valid base64"),
        ("pubsub_not_utf8", "11529734012", "not UTF-8"),
        ("pubsub_invalid_json", "11529734009", "not valid JSON"),
        ("pubsub_json_array", "11529734010", "an array"),
        ("pubsub_wrong_type", "11529734013", "`dry_run` must be true or false"),
    ],
)
def test_malformed_messages_are_rejected_with_the_cause(name: str, key: str, cause: str) -> None:
    assert_decision(decide_fixture(name), "reject", "pubsub", key, cause)


def test_unknown_key_is_rejected_naming_the_allowed_keys() -> None:
    decision = decide_fixture("pubsub_unknown_key")
    assert_decision(
        decision, "reject", "pubsub", "11529734011", "'k_max'", ", ".join(ALLOWED_MESSAGE_KEYS)
    )


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        ({"reason": 42}, "`reason` must be a string"),
        ({"reason": "x" * 201}, "201 characters"),
        ({"features_table": ["a.b.c"]}, "`features_table` must be a string"),
        ({"features_table": "bq://baltimore-data.neighborhoods.features"}, "not a table id"),
        ({"dry_run": 1}, "`dry_run` must be true or false"),
        ("plain words", "not valid JSON"),
        ("42", "a JSON int"),
    ],
)
def test_wrong_values_are_rejected(body: Any, cause: str) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    decision = decide_on(with_message_text(text))
    assert_decision(decision, "reject", "pubsub", "11529734001", cause)


def test_untrusted_text_echoed_in_the_reason_is_cut_short() -> None:
    long_table = "p." + "d" * 500 + ".t; DROP TABLE t"
    decision = decide_on(with_message_text(json.dumps({"features_table": long_table})))
    assert decision.action == "reject"
    assert "..." in decision.reason
    assert len(decision.reason) < 250


def test_pubsub_event_without_a_message_is_rejected() -> None:
    event = load("pubsub_manual_publish")
    event["data"] = {"subscription": "projects/p/subscriptions/s"}
    assert_decision(decide_on(event), "reject", "pubsub", "11529734001", "no `message`")


def test_message_id_falls_back_to_the_cloudevent_id() -> None:
    event = load("pubsub_manual_publish")
    del event["data"]["message"]["messageId"]
    event["id"] = "ce-7"
    assert decide_on(event).key == "ce-7"


# --- Audit logs delivered by a logging sink through Pub/Sub ----------------------------------


def test_sink_delivered_table_data_change_runs_as_a_table_change() -> None:
    decision = decide_fixture("pubsub_sink_table_data_change")
    assert_decision(
        decision,
        "run",
        "table-change",
        "projects/baltimore-data/jobs/bqjob_r1a2b3c4d5_0000018f3a20aa11_1",
        "log sink",
        WATCHED,
        "279 rows inserted",
    )
    assert decision.features_source is None


def test_sink_delivered_read_is_skipped() -> None:
    entry = load("audit_table_data_read")["data"]
    decision = decide_on(with_message_text(json.dumps(entry), SINK))
    assert_decision(decision, "skip", "table-change", "-r7a1b2c3d4e5", "tableDataRead")


def test_log_entry_is_recognised_by_its_log_name_alone() -> None:
    entry = load("audit_table_data_change")["data"]
    del entry["protoPayload"]["@type"]
    decision = decide_on(with_message_text(json.dumps(entry), SINK))
    assert (decision.action, decision.trigger) == ("run", "table-change")


# --- Audit logs delivered directly by Eventarc -----------------------------------------------


def test_data_change_of_the_watched_table_runs() -> None:
    decision = decide_fixture("audit_table_data_change")
    assert_decision(
        decision,
        "run",
        "table-change",
        "projects/baltimore-data/jobs/bqjob_r5e1d0b2c3_0000018f3a1c2d4e_1",
        f"data change of the watched table {WATCHED}",
        "table truncated",
    )


def test_read_of_the_watched_table_is_skipped() -> None:
    decision = decide_fixture("audit_table_data_read")
    assert_decision(
        decision,
        "skip",
        "table-change",
        "-r7a1b2c3d4e5",
        "a read of baltimore-data.neighborhoods.features",
        "tableDataRead",
    )


def test_data_change_of_another_table_is_skipped() -> None:
    decision = decide_fixture("audit_other_table")
    assert_decision(
        decision,
        "skip",
        "table-change",
        "projects/baltimore-data/jobs/bqjob_r0a0b0c0d0_0000018f3a1c0000_1",
        "baltimore-data.neighborhoods.permits",
        "not of the watched table",
    )


def test_write_to_our_clusters_table_is_skipped_explicitly() -> None:
    decision = decide_fixture("audit_clusters_table")
    assert_decision(
        decision, "skip", "table-change", decision.key, "own clusters table (CLUSTERS_TABLE)"
    )


def test_write_to_our_runs_table_is_skipped_explicitly() -> None:
    event = load("audit_clusters_table")
    resource = "projects/baltimore-data/datasets/neighborhoods/tables/cluster_runs"
    event["data"]["protoPayload"]["resourceName"] = resource
    decision = decide_on(event)
    assert_decision(decision, "skip", "table-change", decision.key, "run history table")


def test_events_caused_by_our_service_account_are_skipped() -> None:
    decision = decide_fixture("audit_own_service_account")
    assert_decision(decision, "skip", "table-change", "-s1e2l3f4r5d6", "own service account")
    assert OWN_ACCOUNT in decision.reason


def test_our_own_change_of_the_watched_table_is_skipped() -> None:
    event = load("audit_table_data_change")
    event["data"]["protoPayload"]["authenticationInfo"]["principalEmail"] = OWN_ACCOUNT
    decision = decide_on(event)
    assert_decision(decision, "skip", "table-change", decision.key, "own service account")


def test_job_carrying_our_label_is_skipped() -> None:
    decision = decide_fixture("audit_job_with_label")
    assert_decision(
        decision, "skip", "table-change", "-l1a2b3e4l5s6", "our label", "app=neighborhood-clusters"
    )


def test_job_insertion_carrying_our_label_is_skipped() -> None:
    event = load("audit_job_with_label")
    metadata = event["data"]["protoPayload"]["metadata"]
    metadata["jobInsertion"] = metadata.pop("jobChange")
    assert_decision(decide_on(event), "skip", "table-change", "-l1a2b3e4l5s6", "our label")


def test_failed_job_without_a_table_data_change_is_skipped() -> None:
    decision = decide_fixture("audit_failed_job")
    assert_decision(
        decision, "skip", "table-change", "-f1a2i3l4e5d6", "not a tableDataChange", "jobChange"
    )


def test_partition_decorator_names_the_watched_table() -> None:
    event = load("audit_table_data_change")
    payload = event["data"]["protoPayload"]
    payload["resourceName"] += "$20240501"
    assert decide_on(event).action == "run"


def test_table_change_without_job_name_is_keyed_by_insert_id() -> None:
    event = load("audit_table_data_change")
    del event["data"]["protoPayload"]["metadata"]["tableDataChange"]["jobName"]
    assert decide_on(event).key == "-k2m4a9e1b7x"


def test_resource_name_falls_back_to_the_eventarc_attribute() -> None:
    event = load("audit_table_data_change")
    del event["data"]["protoPayload"]["resourceName"]
    assert decide_on(event).action == "run"


def test_audit_log_of_another_service_is_skipped() -> None:
    event = load("audit_table_data_change")
    event["data"]["protoPayload"]["serviceName"] = "storage.googleapis.com"
    decision = decide_on(event)
    assert_decision(decision, "skip", "table-change", decision.key, "storage.googleapis.com")


def test_without_a_watched_table_table_changes_are_skipped() -> None:
    local = JobSettings(features_source="data/features.csv", artifacts_dest="output")
    assert local.watched_table is None
    decision = decide_fixture("audit_table_data_change", settings=local)
    assert_decision(decision, "skip", "table-change", decision.key, "no watched table")


@pytest.mark.parametrize("data", [None, "text", ["a"]])
def test_audit_event_whose_data_is_not_a_log_entry_is_rejected(data: Any) -> None:
    event = load("audit_table_data_change")
    event["data"] = data
    decision = decide_on(event)
    assert (decision.action, decision.trigger) == ("reject", "table-change")
    assert "not a JSON LogEntry" in decision.reason


def test_log_entry_without_proto_payload_is_rejected() -> None:
    event = load("audit_table_data_change")
    del event["data"]["protoPayload"]
    assert_decision(decide_on(event), "reject", "table-change", "-k2m4a9e1b7x", "no protoPayload")


# --- Event age and unknown types -------------------------------------------------------------


def test_too_old_audit_event_still_runs_marked_late_for_the_coverage_check() -> None:
    decision = decide_fixture("audit_too_old")
    assert_decision(
        decision,
        "run",
        "table-change",
        "projects/baltimore-data/jobs/bqjob_r0o0l0d0e0_0000018f39e05555_1",
        "late: 3h 50m old",
        "MAX_EVENT_AGE_SECONDS=3600",
        "runs only if no run covers it",
    )
    assert decision.late and decision.changed_at == datetime(2024, 5, 1, 8, 14, 2, 1234, UTC)


def test_an_audit_event_just_within_the_age_limit_is_not_late() -> None:
    event = load("audit_table_data_change")
    changed = datetime.fromisoformat(event["data"]["timestamp"])
    at_limit = changed + timedelta(seconds=SETTINGS.max_event_age_seconds)
    assert not decide_on(event, now=at_limit).late
    assert decide_on(event, now=at_limit + timedelta(seconds=1)).late


def test_too_old_pubsub_message_is_dropped_as_a_warning() -> None:
    decision = decide_fixture("pubsub_manual_publish", now=NOW + timedelta(days=2))
    assert_decision(decision, "skip", "pubsub", "11529734001", "dropped", "2d 0h 5m old")
    assert decision.warn


def test_publish_time_is_used_when_the_event_has_no_time() -> None:
    event = load("pubsub_manual_publish")
    del event["time"]
    assert decide_on(event, now=NOW + timedelta(hours=2)).action == "skip"


def test_event_without_any_time_is_not_dropped() -> None:
    event = load("pubsub_manual_publish")
    del event["time"]
    del event["data"]["message"]["publishTime"]
    assert decide_on(event, now=NOW + timedelta(days=30)).action == "run"


def test_unreadable_time_is_not_dropped() -> None:
    event = load("pubsub_manual_publish")
    event["time"] = "yesterday"
    assert decide_on(event, now=NOW + timedelta(days=30)).action == "run"


def test_event_from_the_future_is_not_dropped() -> None:
    assert decide_fixture("pubsub_manual_publish", now=NOW - timedelta(hours=1)).action == "run"


def test_naive_now_is_taken_as_utc() -> None:
    naive = NOW.replace(tzinfo=None) + timedelta(hours=3)
    assert decide_fixture("pubsub_manual_publish", now=naive).action == "skip"


def test_malformed_old_message_is_still_rejected_not_dropped() -> None:
    decision = decide_fixture("pubsub_invalid_json", now=NOW + timedelta(days=1))
    assert decision.action == "reject"


def test_unknown_event_type_is_skipped_and_acked() -> None:
    decision = decide_fixture("unknown_type")
    assert_decision(
        decision,
        "skip",
        "unknown",
        "9958374615372011",
        "google.cloud.storage.object.v1.finalized",
        "does not handle",
    )


# --- Envelope, API shape ---------------------------------------------------------------------


def _binary_mode(event: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    headers = {
        f"ce-{name}": str(value)
        for name, value in event.items()
        if name not in ("data", "datacontenttype")
    }
    headers["Content-Type"] = event.get("datacontenttype", "application/json")
    return headers, json.dumps(event.get("data")).encode()


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_the_cloudevent_functions_framework_builds_gives_the_same_decision(name: str) -> None:
    event = load(name)
    expected = decide_on(copy.deepcopy(event))
    structured = from_http(
        {"Content-Type": "application/cloudevents+json"}, json.dumps(event).encode()
    )
    assert decide(envelope_from_cloudevent(structured), SETTINGS, NOW) == expected
    binary = from_http(*_binary_mode(event))
    assert decide(envelope_from_cloudevent(binary), SETTINGS, NOW) == expected


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_decision_has_a_one_line_reason(name: str) -> None:
    decision = decide_fixture(name)
    assert decision.reason.strip()
    assert "\n" not in decision.reason
    assert decision.trigger in ("pubsub", "table-change", "unknown")


def test_decide_accepts_a_structured_mapping_directly() -> None:
    event = load("pubsub_manual_publish")
    assert decide(event, SETTINGS, NOW) == decide_on(event)


def test_envelope_reads_data_base64() -> None:
    body = {"specversion": "1.0", "type": "t", "source": "s", "id": "1", "data_base64": "AQI="}
    assert envelope_from_structured(body).data == b"\x01\x02"


def test_envelope_attribute_names_are_case_insensitive() -> None:
    envelope = EventEnvelope(attributes={"Type": "t", "ID": "9", "resourceName": "r"})
    assert (envelope.type, envelope.id, envelope.attribute("resourcename")) == ("t", "9", "r")


def test_decisions_are_frozen() -> None:
    decision = decide_fixture("pubsub_manual_publish")
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.action = "skip"  # type: ignore[misc]


def test_job_labels_are_valid_bigquery_labels() -> None:
    assert JOB_LABELS == {"app": "neighborhood-clusters"}
    for key, value in JOB_LABELS.items():
        assert re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key)
        assert re.fullmatch(r"[a-z0-9_-]{0,63}", value)


# --- Rules pinned by mutation testing (tools/mutation.py) ------------------------------------
# Each test below fails when one rule of clustering/cloud/events.py is broken (a comparison flipped,
# a fallback dropped, a constant bumped); `make mutation` shows which rules no test pins.


@pytest.fixture
def local_time_zone():
    """Switch the process's local time zone (TZ + tzset) for one test, then restore it, so a
    rule about naive times is checked the same way on every machine."""
    saved = os.environ.get("TZ")

    def use(name: str) -> None:
        os.environ["TZ"] = name
        time.tzset()

    yield use
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


@pytest.mark.parametrize(
    ("zone", "naive_now", "action"),
    [
        # 15:05 taken as UTC is 3 h after the 12:00 publish: too old. Read as Tokyo time it
        # would be 06:05 UTC, before the publish, and run.
        ("Asia/Tokyo", datetime(2024, 5, 1, 15, 5), "skip"),
        # 12:05 taken as UTC is 5 min after the publish: runs. Read as Los Angeles time it
        # would be 19:05 UTC, 7 h later, and be dropped.
        ("America/Los_Angeles", datetime(2024, 5, 1, 12, 5), "run"),
    ],
)
def test_naive_now_is_utc_whatever_the_machines_time_zone(
    local_time_zone, zone: str, naive_now: datetime, action: str
) -> None:
    local_time_zone(zone)
    assert decide_fixture("pubsub_manual_publish", now=naive_now).action == action


@pytest.mark.parametrize(
    ("event_time", "action"),
    [
        ("2024-05-01T07:00:00-05:00", "run"),  # 12:00 UTC: 5 min old
        ("2024-05-01T12:00:00+09:00", "skip"),  # 03:00 UTC: 9 h old
        ("2024-05-01T13:00:00+01:00", "run"),
    ],
)
def test_event_times_with_a_utc_offset_are_compared_in_utc(event_time: str, action: str) -> None:
    event = load("pubsub_manual_publish")
    event["time"] = event_time
    assert decide_on(event).action == action


def test_an_event_exactly_as_old_as_the_limit_still_runs() -> None:
    at_limit = NOW.replace(minute=0) + timedelta(seconds=SETTINGS.max_event_age_seconds)
    assert decide_fixture("pubsub_manual_publish", now=at_limit).action == "run"
    one_more = at_limit + timedelta(seconds=1)
    assert decide_fixture("pubsub_manual_publish", now=one_more).action == "skip"


def test_the_age_of_a_dropped_event_is_shown_in_hours_and_minutes() -> None:
    later = NOW.replace(minute=0) + timedelta(seconds=3_900)
    decision = decide_fixture("pubsub_manual_publish", now=later)
    assert "1h 5m old" in decision.reason, decision.reason


def test_sink_delivery_without_times_is_aged_by_the_log_entry_timestamp() -> None:
    # A sink delivery whose CloudEvent and message carry no time: the LogEntry's own
    # timestamp (11:59:58) is what makes it late (a late table change still runs, marked).
    event = load("pubsub_sink_table_data_change")
    del event["time"]
    del event["data"]["message"]["publishTime"]
    decision = decide_on(event, now=NOW + timedelta(hours=2))
    assert_decision(decision, "run", "table-change", decision.key, "late", "2h 5m old")
    assert decision.late


def test_eventarc_event_without_a_time_is_aged_by_the_log_entry_timestamp() -> None:
    event = load("audit_table_data_change")
    del event["time"]
    decision = decide_on(event, now=NOW + timedelta(hours=2))
    assert_decision(decision, "run", "table-change", decision.key, "late", "2h 5m old")
    assert decision.late


@pytest.mark.parametrize("data", [12345, ["eyJ9"], {"reason": "x"}, True])
def test_non_string_message_data_is_rejected(data: Any) -> None:
    event = load("pubsub_manual_publish")
    event["data"]["message"]["data"] = data
    decision = decide_on(event)
    assert_decision(
        decision, "reject", "pubsub", "11529734001", f"is a {type(data).__name__}", "base64"
    )


@pytest.mark.parametrize("garbage", ["!!", "$", " ?", "@@@@"])
def test_base64_with_trailing_garbage_is_rejected(garbage: str) -> None:
    # Without validation the decoder would silently drop the stray characters and run.
    event = load("pubsub_manual_publish")
    event["data"]["message"]["data"] += garbage
    assert_decision(decide_on(event), "reject", "pubsub", "11529734001", "not valid base64")


def test_a_reason_of_exactly_the_limit_is_accepted() -> None:
    reason = "r" * 200
    decision = decide_on(with_message_text(json.dumps({"reason": reason})))
    assert decision.action == "run"
    assert decision.message_reason == reason


def test_an_integer_message_id_falls_back_to_the_cloudevent_id() -> None:
    # Pub/Sub message ids are strings; a number is not trusted as a key or a log label.
    event = load("pubsub_manual_publish")
    event["data"]["message"]["messageId"] = 42
    event["id"] = "ce-9"
    decision = decide_on(event)
    assert decision.key == "ce-9"
    assert "Pub/Sub message ce-9 " in decision.reason


def test_ids_name_the_event_in_every_reason() -> None:
    assert "Pub/Sub message 11529734001 " in decide_fixture("pubsub_manual_publish").reason
    unknown = load("unknown_type")
    assert f"event {unknown['id']} " in decide_on(unknown).reason
    del unknown["id"]
    assert "event (no id) " in decide_on(unknown).reason
    no_message = load("pubsub_manual_publish")
    no_message["data"] = {}
    assert "Pub/Sub event 11529734001 " in decide_on(no_message).reason
    del no_message["id"]
    assert "Pub/Sub event (no id) " in decide_on(no_message).reason


def test_a_message_without_any_id_is_labelled_no_id() -> None:
    event = load("pubsub_manual_publish")
    del event["id"]
    del event["data"]["message"]["messageId"]
    decision = decide_on(event)
    assert (decision.action, decision.key) == ("run", None)
    assert "Pub/Sub message (no id) " in decision.reason


def test_audit_reasons_name_the_entry_by_insert_id_else_event_id() -> None:
    event = load("audit_table_data_change")
    assert "audit log -k2m4a9e1b7x: " in decide_on(event).reason
    del event["data"]["insertId"]
    assert f"audit log {event['id']}: " in decide_on(event).reason
    del event["id"]
    assert "audit log (no id): " in decide_on(event).reason
    not_an_entry = load("audit_table_data_change")
    not_an_entry["data"] = "text"
    assert f"audit-log event {not_an_entry['id']}: " in decide_on(not_an_entry).reason
    del not_an_entry["id"]
    assert "audit-log event (no id): " in decide_on(not_an_entry).reason


def test_a_table_change_run_is_never_a_dry_run() -> None:
    decision = decide_fixture("audit_table_data_change")
    assert decision.action == "run"
    assert decision.dry_run is False
    assert decision.features_source is None and decision.message_reason is None


def test_change_summary_names_the_job_and_counts_missing_as_zero() -> None:
    event = load("audit_table_data_change")
    assert "job projects/baltimore-data/jobs/bqjob_r5e1d0b2c3" in decide_on(event).reason
    change = event["data"]["protoPayload"]["metadata"]["tableDataChange"]
    for name in ("insertedRowsCount", "deletedRowsCount", "truncated", "jobName"):
        del change[name]
    reason = decide_on(event).reason
    assert reason.endswith("(0 rows inserted, 0 deleted)"), reason


def test_a_log_entry_is_recognised_by_its_audit_type_alone() -> None:
    entry = load("audit_table_data_change")["data"]
    del entry["logName"]
    decision = decide_on(with_message_text(json.dumps(entry), SINK))
    assert (decision.action, decision.trigger) == ("run", "table-change")


def test_method_and_resource_of_a_non_change_are_named_with_fallbacks() -> None:
    event = load("audit_table_data_change")
    payload = event["data"]["protoPayload"]
    payload["metadata"] = {"tableCreation": {"reason": "JOB"}}
    del payload["methodName"]
    reason = decide_on(event).reason
    assert "google.cloud.bigquery.v2.JobService.InsertJob on projects/baltimore-data/" in reason
    assert "(tableCreation)" in reason
    del event["methodname"], event["resourcename"], payload["resourceName"]
    reason = decide_on(event).reason
    assert "the call on an unnamed resource is not a tableDataChange" in reason


def test_a_change_without_any_resource_name_is_skipped() -> None:
    event = load("audit_table_data_change")
    del event["resourcename"], event["data"]["protoPayload"]["resourceName"]
    decision = decide_on(event)
    assert decision.action == "skip"
    assert "not of the watched table" in decision.reason


@pytest.mark.parametrize(
    "resource",
    [
        "projects/baltimore-data/datasets/neighborhoods/routines/features",
        "projects/baltimore-data/datasets/neighborhoods/tables/features/extra",
        "projects/baltimore-data/datasets/neighborhoods",
    ],
)
def test_a_resource_that_is_not_a_table_path_never_matches_the_watched_table(
    resource: str,
) -> None:
    event = load("audit_table_data_change")
    event["data"]["protoPayload"]["resourceName"] = resource
    assert decide_on(event).action == "skip"


def test_features_table_is_allowed_without_a_configured_source() -> None:
    sample = dataclasses.replace(SETTINGS, features_source=None)
    decision = decide_on(
        with_message_text(json.dumps({"features_table": SETTINGS.allowed_features_tables[0]})),
        settings=sample,
    )
    assert decision.action == "run"
    local = JobSettings(
        features_source="data/features.csv",
        allowed_features_tables=SETTINGS.allowed_features_tables,
    )
    decision = decide_on(
        with_message_text(json.dumps({"features_table": SETTINGS.allowed_features_tables[0]})),
        settings=local,
    )
    assert decision.action == "run"


def test_a_refused_features_table_lists_the_allowed_ones_or_none() -> None:
    other = {"features_table": "baltimore-data.neighborhoods.other"}
    reason = decide_on(with_message_text(json.dumps(other))).reason
    assert f"allowed tables: {WATCHED}, baltimore-data.neighborhoods.features_2023 " in reason
    nothing = JobSettings(features_source="data/features.csv")
    reason = decide_on(with_message_text(json.dumps(other)), settings=nothing).reason
    assert "allowed tables: none " in reason


def test_echoed_text_is_cut_at_sixty_characters() -> None:
    def shown(key: str) -> str:
        reason = decide_on(with_message_text(json.dumps({key: 1}))).reason
        return reason.split("unknown key(s) ")[1].split(" in the message")[0]

    assert shown("k" * 60) == repr("k" * 60)
    assert shown("k" * 61) == repr("k" * 57 + "...")


# --- Raw HTTP deliveries, coalescing, Storage Write API reasons, force -------------------------


def push_body(message: dict[str, Any]) -> bytes:
    return json.dumps({"message": message, "subscription": "projects/p/subscriptions/s"}).encode()


def test_a_push_body_becomes_the_messagepublished_event_functions_framework_would_build() -> None:
    body = push_body(
        {
            "data": base64.b64encode(b'{"reason": "push"}').decode(),
            "messageId": "42",
            "publishTime": "2024-05-01T12:00:00Z",
        }
    )
    envelope = envelope_from_http(
        body, {"Content-Type": "application/json"}, "/projects/p/topics/runs"
    )
    assert envelope.type == "google.cloud.pubsub.topic.v1.messagePublished"
    assert (envelope.id, envelope.time) == ("42", "2024-05-01T12:00:00Z")
    assert envelope.attribute("source") == "//pubsub.googleapis.com/projects/p/topics/runs"
    decision = decide(envelope, SETTINGS, NOW)
    assert (decision.action, decision.key, decision.message_reason) == ("run", "42", "push")


def test_a_snake_case_push_without_data_runs_with_its_attribute_options() -> None:
    body = push_body(
        {
            "message_id": "43",
            "publish_time": "2024-05-01T12:00:00Z",
            "attributes": {
                "reason": "attrs",
                "dry_run": "TRUE",
                "force": "false",
                "googclient_x": "ignored",
            },
        }
    )
    decision = decide(envelope_from_http(body, {}), SETTINGS, NOW)
    assert (decision.action, decision.key) == ("run", "43")
    assert (decision.message_reason, decision.dry_run, decision.force) == ("attrs", True, False)


def test_a_body_takes_precedence_over_attributes() -> None:
    data = base64.b64encode(b'{"reason": "body"}').decode()
    body = push_body({"data": data, "messageId": "44", "attributes": {"reason": "attr"}})
    assert decide(envelope_from_http(body, {}), SETTINGS, NOW).message_reason == "body"


def test_structured_and_binary_cloudevents_are_read_from_http() -> None:
    event = load("pubsub_manual_publish")
    structured = envelope_from_http(
        json.dumps(event).encode(), {"Content-Type": "application/cloudevents+json"}
    )
    headers = {f"Ce-{k}": str(v) for k, v in event.items() if k != "data"}
    binary = envelope_from_http(json.dumps(event["data"]).encode(), headers)
    assert decide(structured, SETTINGS, NOW) == decide(binary, SETTINGS, NOW)
    assert decide(binary, SETTINGS, NOW).action == "run"


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"specversion": "1.0", "type": "x", "data_base64": "!!"}', "not base64"),
        (b" " * (16 * 1024**2 + 1), "more than the"),
    ],
    ids=["not-utf8", "truncated", "array", "nested", "bad-base64", "oversized"],
)
def test_an_unreadable_request_is_rejected_with_the_cause(body: bytes, cause: str) -> None:
    decision = decide(envelope_from_http(body, {}), SETTINGS, NOW)
    assert decision.action == "reject" and cause in decision.reason


def test_an_oversized_message_is_rejected_before_it_is_decoded() -> None:
    raw = "A" * (4 * 1024**2 // 3 + 8)
    event = load("pubsub_manual_publish")
    event["data"]["message"]["data"] = raw
    assert "more than the 1,048,576" in decide_on(event).reason


def test_force_is_a_boolean_option_of_the_message() -> None:
    assert decide_on(with_message_text('{"force": true}')).force
    assert not decide_on(with_message_text("{}")).force
    rejected = decide_on(with_message_text('{"force": "yes"}'))
    assert rejected.action == "reject" and "`force` must be true or false" in rejected.reason


def change_with_reason(reason: str) -> dict[str, Any]:
    event = load("audit_table_data_change")
    change = event["data"]["protoPayload"]["metadata"]["tableDataChange"]
    change["reason"] = reason
    change.pop("jobName", None)
    change["streamName"] = "projects/p/datasets/d/tables/t/streams/_default"
    return event


@pytest.mark.parametrize("reason", ["WRITE_API_APPEND_ROWS", "FINALIZE"])
def test_unfinished_storage_write_api_entries_do_not_start_a_run(reason: str) -> None:
    decision = decide_on(change_with_reason(reason))
    assert decision.action == "skip" and f"a {reason} entry" in decision.reason


@pytest.mark.parametrize("reason", ["BATCH_COMMIT", "FLUSH", "JOB", "QUERY", "TRUNCATE_TABLE"])
def test_finished_changes_start_a_run_keyed_by_their_entry(reason: str) -> None:
    decision = decide_on(change_with_reason(reason))
    # Without a jobName the entry's insertId is the key; coalescing bounds the runs.
    assert (decision.action, decision.key) == ("run", "-k2m4a9e1b7x")


def test_a_change_before_the_last_run_started_is_covered() -> None:
    decision = decide_fixture("audit_table_data_change")
    changed = decision.changed_at
    skew = timedelta(seconds=MAX_CLOCK_SKEW_SECONDS)
    covered = covered_by(decision, "run-1", changed + skew + timedelta(microseconds=1))
    assert covered.action == "skip" and "already covered by run run-1" in covered.reason
    # At or after the change, within the tolerated clock skew of it, or without any run, it
    # still runs.
    assert covered_by(decision, "run-1", changed) == decision
    assert covered_by(decision, "run-1", changed + skew) == decision
    assert covered_by(decision, None, None) == decision
    # Manual messages are requests, never coalesced.
    manual = decide_fixture("pubsub_manual_publish")
    assert covered_by(manual, "run-1", NOW + timedelta(days=1)) == manual


# --- Rules pinned by mutation testing (tools/mutation.py): the delivery code -------------------


def test_decisions_are_not_forced_late_or_warned_unless_said() -> None:
    for decision in (
        decide_fixture("audit_table_data_change"),  # a run
        decide_fixture("audit_other_table"),  # a skip
        decide_fixture("pubsub_invalid_json"),  # a reject
    ):
        assert (decision.force, decision.late, decision.warn) == (False, False, False), decision


def test_a_request_body_of_exactly_the_limit_is_read() -> None:
    limit = 16 * 1024**2
    at_limit = push_body({"messageId": "45"}).ljust(limit)  # JSON allows trailing blanks
    assert decide(envelope_from_http(at_limit, {}), SETTINGS, NOW).action == "run"
    over = decide(envelope_from_http(at_limit + b" ", {}), SETTINGS, NOW)
    assert over.action == "reject" and f"{limit + 1:,} bytes, more than the {limit:,}" in (
        over.reason
    )


def test_a_binary_cloudevent_keeps_its_own_attributes() -> None:
    event = load("pubsub_manual_publish")
    headers = {f"Ce-{k}": str(v) for k, v in event.items() if k != "data"}
    headers["Ce-Id"] = "binary-1"
    envelope = envelope_from_http(json.dumps(event["data"]).encode(), headers, "/")
    # Its id and source are the CloudEvent's, not rebuilt from the message as for a push.
    assert (envelope.id, envelope.attribute("source")) == ("binary-1", event["source"])


def test_an_unreadable_delivery_is_rejected_under_its_trigger_and_id() -> None:
    unparsed = decide(envelope_from_http(b"{", {}), SETTINGS, NOW)
    assert (unparsed.trigger, unparsed.key) == ("unknown", None)
    assert unparsed.reason.startswith("rejected delivery (no id): the request body is not valid")
    event = {**load("pubsub_manual_publish"), "data_base64": "!!"}
    del event["data"]
    bad = decide(envelope_from_structured(event), SETTINGS, NOW)
    assert (bad.action, bad.trigger, bad.key) == ("reject", "pubsub", "11529734001")
    assert bad.reason.startswith("rejected delivery 11529734001: the CloudEvent's data_base64")


@pytest.mark.parametrize("value", ["yes", "1", ""])
def test_an_attribute_option_that_is_not_true_or_false_is_rejected(value: str) -> None:
    body = push_body({"messageId": "46", "attributes": {"dry_run": value}})
    decision = decide(envelope_from_http(body, {}), SETTINGS, NOW)
    assert_decision(decision, "reject", "pubsub", "46", "attribute `dry_run` must be true or false")


def test_message_data_at_the_size_limit_is_read_and_just_over_it_is_refused_unread() -> None:
    limit = 1024**2 * 4 // 3 + 4  # base64 characters of a 1 MiB message, and its padding
    one_mib = base64.b64encode(b'{"reason": "big"}'.ljust(1024**2)).decode()
    assert len(one_mib) <= limit
    assert decide_on(with_base64_data(one_mib)).message_reason == "big"
    read = decide_on(with_base64_data("A" * limit))  # read, and found not to be base64
    assert read.action == "reject" and "not valid base64" in read.reason
    refused = decide_on(with_base64_data("A" * (limit + 1)))
    assert_decision(
        refused,
        "reject",
        "pubsub",
        "11529734001",
        "message data has 1,048,579 bytes, more than the 1,048,576",
    )


def with_base64_data(data: str) -> dict[str, Any]:
    event = load("pubsub_manual_publish")
    event["data"]["message"]["data"] = data
    return event


def test_only_invalid_json_gets_the_hint_of_a_valid_message() -> None:
    hint = 'publish a JSON object such as {"reason": "manual refresh"}'
    assert hint in decide_on(with_message_text("{bad")).reason
    not_utf8 = decide_on(with_base64_data(base64.b64encode(b"\xff\xfe").decode()))
    assert "not UTF-8 text" in not_utf8.reason and hint not in not_utf8.reason


def test_a_forced_run_says_so_in_its_reason() -> None:
    forced = decide_on(with_message_text('{"force": true}'))
    assert "forced: the row-drop guard is off" in forced.reason
    assert "forced" not in decide_on(with_message_text("{}")).reason


def test_an_eventarc_entry_without_a_timestamp_is_timed_by_its_event() -> None:
    event = load("audit_table_data_change")
    del event["data"]["timestamp"]
    decision = decide_on(event, now=NOW + timedelta(hours=2))
    assert decision.changed_at == datetime(2024, 5, 1, 11, 59, 59, 120884, UTC)
    assert decision.late


def test_a_sink_entry_without_a_timestamp_is_timed_by_its_message() -> None:
    event = load("pubsub_sink_table_data_change")
    entry = json.loads(base64.b64decode(event["data"]["message"]["data"]))
    del entry["timestamp"]
    event["data"]["message"]["data"] = base64.b64encode(json.dumps(entry).encode()).decode()
    decision = decide_on(event, now=NOW + timedelta(hours=2))
    assert decision.changed_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # its publish time
    assert decision.late


# --- Hardening (issue 16) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        b'{"reason": "refresh \\ud800"}',
        b'{"reason": "ok", "\\udfff": 1}',
        b'{"features_table": "\\ud83d"}',
    ],
)
def test_text_that_cannot_be_encoded_is_rejected_at_the_door(message: bytes) -> None:
    body = {"message": {"data": base64.b64encode(message).decode(), "messageId": "77"}}
    envelope = envelope_from_http(json.dumps(body).encode(), {}, "/projects/p/topics/t")
    decision = decide(envelope, SETTINGS, NOW)
    assert_decision(decision, "reject", "pubsub", "77", "cannot be encoded as UTF-8")
    decision.reason.encode("utf-8")  # the reason itself is printable in any log


def test_a_push_body_with_an_escaped_lone_surrogate_is_rejected_unparsed() -> None:
    body = b'{"message": {"data": "e30=", "messageId": "\\ud800"}}'
    decision = decide(envelope_from_http(body, {}, "/"), SETTINGS, NOW)
    assert decision.action == "reject"
    assert "cannot be encoded as UTF-8" in decision.reason


@pytest.mark.parametrize("hostile", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00"])
def test_a_time_utc_cannot_hold_counts_as_missing(hostile: str) -> None:
    event = load("pubsub_manual_publish")
    event["time"] = hostile
    event["data"]["message"]["publishTime"] = hostile
    assert decide_on(event, now=NOW + timedelta(days=30)).action == "run"
    change = load("audit_table_data_change")
    change["time"] = hostile
    change["data"]["timestamp"] = hostile
    decision = decide_on(change)
    assert (decision.action, decision.changed_at, decision.late) == ("run", None, False)


def test_message_data_that_is_not_ascii_is_not_valid_base64() -> None:
    event = load("pubsub_manual_publish")
    event["data"]["message"]["data"] = "eyJyZWFzb24iOiAi\u00e9In0="
    decision = decide_on(event)
    assert_decision(decision, "reject", "pubsub", "11529734001", "not valid base64")


def test_a_change_just_before_a_run_started_by_another_clock_is_not_covered() -> None:
    decision = decide_fixture("audit_table_data_change")
    # Logging's clock says the change came 0.5 s before the run's start on the instance's
    # clock; within the tolerated skew it may have come after the run read the table.
    started = decision.changed_at + timedelta(seconds=0.5)
    assert covered_by(decision, "run-1", started) == decision


def test_a_log_entry_published_to_the_run_topic_is_never_a_table_change() -> None:
    # Anyone who may publish a manual run could otherwise forge a table change: skip the
    # age limit, or take a future job's idempotency key.
    forged = load("pubsub_sink_table_data_change")
    forged["data"]["subscription"] = load("pubsub_manual_publish")["data"]["subscription"]
    decision = decide_on(forged)
    assert_decision(decision, "reject", "pubsub", "11529734014", "never taken as a table change")
    unset = dataclasses.replace(SETTINGS, table_changes_subscription=None)
    assert decide_fixture("pubsub_sink_table_data_change", unset).action == "reject"


def test_the_table_change_subscription_carries_only_log_entries() -> None:
    manual = load("pubsub_manual_publish")
    manual["data"]["subscription"] = SETTINGS.table_changes_subscription
    decision = decide_on(manual)
    assert_decision(decision, "reject", "pubsub", "11529734001", "carries only the log sink's")
    assert decide_fixture("pubsub_sink_table_data_change").action == "run"
