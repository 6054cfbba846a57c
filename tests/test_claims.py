"""The claim protocol on both stores: local files, and Cloud Storage on fake-gcs-server."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from clustering import claims
from clustering.adapters.gcs import GcsStore
from clustering.adapters.local import LocalStore
from tests.emulators import storage_client

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def mine(run_id: str, at: datetime = NOW) -> claims.Claim:
    return claims.Claim(run_id=run_id, event_id="e-1", claimed_at=at.isoformat())


@pytest.fixture(params=["local", "gcs"])
def store(request, tmp_path, monkeypatch):
    if request.param == "local":
        return LocalStore(str(tmp_path / "artifacts"))
    emulator = request.getfixturevalue("gcs_emulator")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.endpoint)
    bucket = f"claims-{uuid.uuid4().hex[:8]}"
    storage_client(emulator).create_bucket(bucket)
    return GcsStore(f"gs://{bucket}/prefix")


def test_the_first_claim_wins_and_a_fresh_running_claim_is_busy(store):
    assert claims.claim(store, "k", mine("run-a"), NOW) == ("claimed", None)
    outcome, found = claims.claim(store, "k", mine("run-b"), NOW + timedelta(seconds=30))
    assert outcome == "busy" and found.run_id == "run-a" and found.state == claims.RUNNING


def test_a_finished_claim_makes_every_redelivery_a_duplicate(store):
    claims.claim(store, "k", mine("run-a"), NOW)
    claims.finish(store, "k", mine("run-a"))
    much_later = NOW + timedelta(days=1)
    outcome, found = claims.claim(store, "k", mine("run-b", much_later), much_later)
    assert outcome == "done" and found.run_id == "run-a" and found.state == claims.DONE


def test_a_stale_running_claim_is_taken_over_once(store):
    claims.claim(store, "k", mine("run-a"), NOW)
    later = NOW + timedelta(seconds=claims.STALE_AFTER_SECONDS + 1)
    outcome, found = claims.claim(store, "k", mine("run-b", later), later)
    assert outcome == "claimed" and found.run_id == "run-a"
    # The takeover wrote a fresh claim: a third delivery finds run-b running.
    outcome, found = claims.claim(store, "k", mine("run-c", later), later)
    assert outcome == "busy" and found.run_id == "run-b"


def test_a_takeover_loses_to_a_claim_changed_since_it_was_read(store):
    claims.claim(store, "k", mine("run-a"), NOW)
    _, token = store.read_claim("k")
    assert store.replace_claim("k", mine("run-b").encode(), token)
    assert not store.replace_claim("k", mine("run-c").encode(), token)  # token is stale now
    assert claims.decode(store.read_claim("k")[0]).run_id == "run-b"


def test_a_released_claim_can_be_claimed_again(store):
    claims.claim(store, "k", mine("run-a"), NOW)
    store.release("k")
    assert store.read_claim("k") is None
    assert claims.claim(store, "k", mine("run-b"), NOW)[0] == "claimed"


def test_an_unreadable_claim_counts_as_done(store):
    assert store.create_claim("k", b"not json")
    assert claims.claim(store, "k", mine("run-b"), NOW + timedelta(days=1)) == ("done", None)


def test_keys_with_slashes_are_separate_claims(store):
    assert claims.claim(store, "projects/p/jobs/1", mine("a"), NOW)[0] == "claimed"
    assert claims.claim(store, "projects/p/jobs/2", mine("b"), NOW)[0] == "claimed"
