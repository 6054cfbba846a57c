"""clustering.cloud.logs: JSON lines with severity and context, and the pinned set of outcomes that
the alerts count (terraform/monitoring.tf filters on them; tests/test_terraform.py reads both).
Every path of the handler is checked through functions-framework in tests/test_function_e2e.py.
"""

from __future__ import annotations

import io
import json

import pytest

from clustering.cloud.logs import FAILURES, OUTCOMES, JsonLog, Outcome, run_outcome


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_outcome_set_is_pinned():
    # Renaming, adding or removing one changes what the alerts count: do it here on purpose,
    # together with terraform/monitoring.tf and docs/operations.md's list.
    assert {str(o) for o in OUTCOMES} == {
        "run_succeeded",
        "dry_run",
        "run_failed",
        "run_retry",
        "run_busy",
        "event_skipped",
        "event_rejected",
        "duplicate",
        "settings_invalid",
    }
    assert {str(o) for o in FAILURES} == {"run_failed", "event_rejected", "settings_invalid"}
    # Retries are Pub/Sub's to repeat, not a person's to fix at once.
    assert Outcome.RUN_RETRY not in FAILURES and Outcome.RUN_BUSY not in FAILURES


def test_the_event_field_is_written_as_its_plain_name():
    stream = io.StringIO()
    JsonLog(stream, trigger="pubsub").error("boom", event=Outcome.RUN_FAILED)
    (entry,) = lines(stream)
    assert entry["event"] == "run_failed" and entry["severity"] == "ERROR"
    assert entry["trigger"] == "pubsub" and entry["message"] == "boom"


def test_a_line_without_an_outcome_has_no_event_field():
    stream = io.StringIO()
    JsonLog(stream).info("reading features")
    assert "event" not in lines(stream)[0]


@pytest.mark.parametrize("bad", ["run_failure", "RUN_FAILED", "failed"])
def test_an_unknown_event_name_is_refused_before_anything_is_written(bad):
    stream = io.StringIO()
    with pytest.raises(ValueError, match="is not one of"):
        JsonLog(stream).error("boom", event=bad)
    # Also through the context: no line may carry a name no alert counts.
    with pytest.raises(ValueError, match="is not one of"):
        JsonLog(stream, event=bad).info("x")
    assert stream.getvalue() == ""


def test_the_plain_name_is_accepted_as_well_as_the_member():
    stream = io.StringIO()
    JsonLog(stream).info("done", event="duplicate")
    assert lines(stream)[0]["event"] == "duplicate"


def test_a_finished_run_maps_to_its_outcome():
    assert run_outcome("succeeded") is Outcome.RUN_SUCCEEDED
    assert run_outcome("dry_run") is Outcome.DRY_RUN
    with pytest.raises(KeyError):
        run_outcome("failed")  # a failed run never reaches the success line
