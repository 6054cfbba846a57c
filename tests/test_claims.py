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


# --- Races and limits pinned by mutation testing (tools/mutation.py) -------------------------


class Interleaved:
    """A real claim store (local files or Cloud Storage on the emulator) that lets another
    delivery act once at a chosen moment: just before or just after this delivery reads the
    claim, or just before it swaps a stale claim. No call is faked: every write is real."""

    def __init__(self, store, *, before_read=None, after_read=None, before_replace=None):
        self.store = store
        self.hooks = {"before_read": before_read, "after_read": after_read,
                      "before_replace": before_replace}  # fmt: skip

    def _at(self, moment: str) -> None:
        hook = self.hooks.pop(moment, None)
        if hook:
            hook()

    def create_claim(self, key, content):
        return self.store.create_claim(key, content)

    def read_claim(self, key):
        self._at("before_read")
        found = self.store.read_claim(key)
        self._at("after_read")
        return found

    def replace_claim(self, key, content, token):
        self._at("before_replace")
        return self.store.replace_claim(key, content, token)

    def release(self, key):
        self.store.release(key)


def test_a_claim_released_between_create_and_read_is_claimed_on_the_second_try(store):
    claims.claim(store, "k", mine("run-a"), NOW)
    racing = Interleaved(store, before_read=lambda: store.release("k"))
    assert claims.claim(racing, "k", mine("run-b"), NOW) == ("claimed", None)
    assert claims.decode(store.read_claim("k")[0]).run_id == "run-b"


def test_a_claim_released_then_retaken_before_the_second_try_is_busy(store):
    claims.claim(store, "k", mine("run-a"), NOW)
    # run-b finds the claim gone when it reads, and run-c creates it before run-b retries.
    racing = Interleaved(
        store,
        before_read=lambda: store.release("k"),
        after_read=lambda: claims.claim(store, "k", mine("run-c"), NOW),
    )
    assert claims.claim(racing, "k", mine("run-b"), NOW) == ("busy", None)
    assert claims.decode(store.read_claim("k")[0]).run_id == "run-c"


def test_a_takeover_that_loses_the_swap_to_another_delivery_is_busy(store):
    claims.claim(store, "k", mine("run-a"), NOW)
    later = NOW + timedelta(seconds=claims.STALE_AFTER_SECONDS + 1)
    racing = Interleaved(
        store, before_replace=lambda: claims.claim(store, "k", mine("run-c", later), later)
    )
    outcome, found = claims.claim(racing, "k", mine("run-b", later), later)
    assert (outcome, found.run_id) == ("busy", "run-a")
    assert claims.decode(store.read_claim("k")[0]).run_id == "run-c"


def test_a_running_claim_is_stale_from_ten_minutes_on(store):
    # Ten minutes: longer than the function's 540 s timeout, so its run is gone.
    claims.claim(store, "k", mine("run-a"), NOW)
    just_before = NOW + timedelta(seconds=599)
    assert claims.claim(store, "k", mine("run-b", just_before), just_before)[0] == "busy"
    at_limit = NOW + timedelta(seconds=600)
    assert claims.claim(store, "k", mine("run-b", at_limit), at_limit)[0] == "claimed"
