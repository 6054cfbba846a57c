"""The claim protocol and the run lock on both stores: local files, and Cloud Storage on
fake-gcs-server (whose preconditions are the real ones' semantics)."""

import json
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clustering.adapters import claims
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


def holder(store) -> str | None:
    found = store.read_claim(claims.LOCK_KEY)
    return claims.decode(found[0]).run_id if found else None


def test_the_first_claim_wins_and_holds_the_lock_for_every_event(store):
    outcome, found, fence = claims.claim(store, "k", mine("run-a"), NOW)
    assert (outcome, found) == ("claimed", None) and fence.holds()
    # Another delivery of the same event, and an event of its own: both must wait.
    for key in ("k", "other"):
        outcome, found, none = claims.claim(store, key, mine("run-b"), NOW + timedelta(seconds=30))
        assert (outcome, found.run_id, none) == ("busy", "run-a", None)


def test_a_finished_event_is_a_duplicate_and_frees_the_lock(store):
    _, _, fence = claims.claim(store, "k", mine("run-a"), NOW)
    fence.finish()
    assert holder(store) is None
    much_later = NOW + timedelta(days=1)
    outcome, found, _ = claims.claim(store, "k", mine("run-b", much_later), much_later)
    assert outcome == "done" and found.run_id == "run-a" and found.state == claims.DONE
    assert claims.claim(store, "next", mine("run-c"), much_later)[0] == "claimed"


def test_a_stale_lock_is_taken_over_once_and_fences_out_its_old_holder(store):
    _, _, old = claims.claim(store, "k", mine("run-a"), NOW)
    later = NOW + timedelta(seconds=claims.STALE_AFTER_SECONDS + 1)
    outcome, found, new = claims.claim(store, "k", mine("run-b", later), later)
    assert outcome == "claimed" and found.run_id == "run-a"
    assert new.holds() and not old.holds()
    with pytest.raises(claims.ClaimLost, match="run-a lost the run lock before publishing"):
        old.check("publishing")
    # The old run's release cannot delete the new holder's lock.
    assert old.release() is False and holder(store) == "run-b"
    outcome, found, _ = claims.claim(store, "k", mine("run-c", later), later)
    assert outcome == "busy" and found.run_id == "run-b"


def test_a_lock_just_younger_than_stale_is_busy(store):
    claims.claim(store, "k", mine("run-a"), NOW)
    almost = NOW + timedelta(seconds=claims.STALE_AFTER_SECONDS - 1)
    assert claims.claim(store, "k", mine("run-b", almost), almost)[0] == "busy"


def test_stale_after_outlasts_the_function_timeout():
    assert claims.stale_after(None) == claims.STALE_AFTER_SECONDS
    assert claims.stale_after(540) == 540 + claims.STALE_MARGIN_SECONDS
    assert claims.stale_after(540) > 540


def test_a_takeover_loses_to_a_lock_changed_since_it_was_read(store):
    claims.claim(store, "k", mine("run-a"), NOW)
    _, token = store.read_claim(claims.LOCK_KEY)
    assert store.replace_claim(claims.LOCK_KEY, mine("run-b").encode(), token) is not None
    assert store.replace_claim(claims.LOCK_KEY, mine("run-c").encode(), token) is None
    assert holder(store) == "run-b"


def test_the_lock_released_between_create_and_read_is_claimed_again(store):
    class ReleasedMeanwhile:
        """The store as a delivery sees it when the holder releases between two calls."""

        def __init__(self, inner) -> None:
            self.inner, self.creates = inner, 0

        def create_claim(self, key, content):
            self.creates += 1
            if key == claims.LOCK_KEY and self.creates == 1:
                return None  # the holder still had it at this instant
            return self.inner.create_claim(key, content)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    racing = ReleasedMeanwhile(store)
    outcome, found, fence = claims.claim(racing, "k", mine("run-b"), NOW)
    assert (outcome, found) == ("claimed", None) and fence.holds()


def test_an_event_finished_while_waiting_for_the_lock_is_done(store):
    _, _, first = claims.claim(store, "k", mine("run-a"), NOW)

    class FinishesMeanwhile:
        """The first run finishes right after the second delivery checked the event."""

        def __init__(self, inner) -> None:
            self.inner, self.reads = inner, 0

        def read_claim(self, key):
            found = self.inner.read_claim(key)
            if key == "k":
                self.reads += 1
                if self.reads == 1:
                    first.finish()  # just after this delivery saw the event unfinished
            return found

        def __getattr__(self, name):
            return getattr(self.inner, name)

    outcome, found, fence = claims.claim(FinishesMeanwhile(store), "k", mine("run-b"), NOW)
    # The second delivery got the lock after run-a finished, saw the event done, let go.
    assert (outcome, found.run_id, fence) == ("done", "run-a", None)
    assert holder(store) is None


def test_an_unreadable_event_record_counts_as_done(store):
    assert store.create_claim("k", b"not json") is not None
    assert claims.claim(store, "k", mine("run-b"), NOW + timedelta(days=1))[0] == "done"


def test_keys_with_slashes_are_separate_events(store):
    _, _, fence = claims.claim(store, "projects/p/jobs/1", mine("a"), NOW)
    fence.finish()
    assert claims.claim(store, "projects/p/jobs/2", mine("b"), NOW)[0] == "claimed"


def test_racing_deliveries_get_the_lock_once(store):
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(
            pool.map(lambda i: claims.claim(store, "k", mine(f"run-{i}"), NOW)[0], range(8))
        )
    assert sorted(outcomes) == ["busy"] * 7 + ["claimed"]


def test_the_pointer_switches_only_from_the_version_that_was_read(store):
    assert store.read_pointer() == (None, 0)
    files = {"run.json": json.dumps({"run_id": "r1"}).encode()}
    store.write_run("r1", files)
    assert store.switch_latest("r1", files, 0)
    content, token = store.read_pointer()
    assert json.loads(content)["run_id"] == "r1"

    second = {"run.json": json.dumps({"run_id": "r2"}).encode()}
    store.write_run("r2", second)
    assert not store.switch_latest("r2", second, 0)  # read before r1 published: refused
    assert json.loads(store.read_pointer()[0])["run_id"] == "r1"
    assert store.switch_latest("r2", second, token)
    assert json.loads(store.read_pointer()[0])["run_id"] == "r2"


def test_a_lost_response_to_a_conditional_create_is_success(gcs_emulator, monkeypatch):
    from tests.emulators import FaultProxy

    bucket = f"lost-{uuid.uuid4().hex[:8]}"
    storage_client(gcs_emulator).create_bucket(bucket)
    dropped = []

    def lose_the_first_lock_upload(method: str, path: str, body: bytes):
        # The claim's first create is the lock's (the event is only read before it).
        if (
            method == "POST"
            and "/upload/" in path
            and "ifGenerationMatch=0" in path
            and not dropped
        ):
            dropped.append(path)
            return "drop"
        return "pass"

    with FaultProxy(gcs_emulator.endpoint, lose_the_first_lock_upload) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.endpoint)
        store = GcsStore(f"gs://{bucket}/p")
        outcome, found, fence = claims.claim(store, "k", mine("run-a"), NOW)

    # The upload landed, its answer was lost, the client's retry met it as a 412: ours.
    assert dropped and outcome == "claimed" and found is None
    uploads = [r for r in proxy.requests if "/upload/" in r]
    assert len(uploads) == 2, proxy.requests
    assert fence.holds() and holder(store) == "run-a"


def test_the_lock_is_released_even_when_marking_the_event_done_fails(store):
    class CannotMark:
        """The store as a run sees it when the event's record cannot be written."""

        def __init__(self, inner) -> None:
            self.inner = inner

        def create_claim(self, key, content):
            if key == "k":
                raise OSError("disk full")
            return self.inner.create_claim(key, content)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    _, _, fence = claims.claim(CannotMark(store), "k", mine("run-a"), NOW)
    with pytest.raises(OSError, match="disk full"):
        fence.finish()
    assert holder(store) is None
    assert claims.claim(store, "other", mine("run-b"), NOW)[0] == "claimed"


def test_a_lock_released_then_retaken_before_the_second_try_is_busy(store):
    claims.claim(store, "k", mine("run-a"), NOW)

    class ReleasedThenRetaken:
        """run-b finds the lock gone when it reads it; run-c takes it before run-b retries."""

        def __init__(self, inner) -> None:
            self.inner = inner

        def read_claim(self, key):
            if key == claims.LOCK_KEY:
                self.inner.release(claims.LOCK_KEY)
                found = None
                claims.claim(self.inner, "c", mine("run-c"), NOW)
                return found
            return self.inner.read_claim(key)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    outcome, found, fence = claims.claim(ReleasedThenRetaken(store), "k", mine("run-b"), NOW)
    assert (outcome, found, fence) == ("busy", None, None)
    assert holder(store) == "run-c"


# --- Rules pinned by mutation testing (tools/mutation.py) ------------------------------------


def test_a_lock_exactly_ten_minutes_old_is_stale_without_a_function_timeout(store):
    claims.claim(store, "k", mine("run-a"), NOW)
    ten_minutes = NOW + timedelta(seconds=600)
    outcome, found, fence = claims.claim(store, "k", mine("run-b", ten_minutes), ten_minutes)
    assert (outcome, found.run_id) == ("claimed", "run-a") and fence.holds()


def test_the_stale_age_is_the_function_timeout_plus_a_minute():
    assert claims.stale_after(540) == 600
    assert claims.stale_after(120) == 180


def test_a_claim_without_a_time_reads_the_clock(store):
    fresh = claims.Claim(run_id="run-a", event_id="e-1", claimed_at=datetime.now(UTC).isoformat())
    assert claims.claim(store, "k", fresh)[0] == "claimed"
    # Without `now` the age is measured against the clock: a lock taken just now is busy.
    outcome, found, fence = claims.claim(store, "other", mine("run-b"))
    assert (outcome, found.run_id, fence) == ("busy", "run-a", None)


def test_a_released_lock_is_no_longer_held_and_fences_its_run(store):
    _, _, fence = claims.claim(store, "k", mine("run-a"), NOW)
    assert fence.release() is True
    assert fence.holds() is False
    with pytest.raises(claims.ClaimLost, match="run-a lost the run lock before the table load"):
        fence.check("the table load")


def test_an_unreadable_lock_is_taken_over(store):
    # A lock whose content cannot be read has no age: it cannot prove a live run holds it.
    assert store.create_claim(claims.LOCK_KEY, b"not json") is not None
    outcome, found, fence = claims.claim(store, "k", mine("run-b"), NOW)
    assert (outcome, found) == ("claimed", None) and fence.holds()
    assert holder(store) == "run-b"


def test_a_takeover_beaten_by_another_delivery_is_busy(store):
    claims.claim(store, "k", mine("run-a"), NOW)

    class BeatenToIt:
        """Another delivery replaces the stale lock between this one's read and its swap."""

        def __init__(self, inner) -> None:
            self.inner = inner

        def replace_claim(self, key, content, token):
            self.inner.replace_claim(key, mine("run-c").encode(), token)
            return self.inner.replace_claim(key, content, token)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    later = NOW + timedelta(seconds=claims.STALE_AFTER_SECONDS + 1)
    outcome, found, fence = claims.claim(BeatenToIt(store), "k", mine("run-b", later), later)
    assert (outcome, found.run_id, fence) == ("busy", "run-a", None)
    assert holder(store) == "run-c"


def test_finishing_replaces_a_running_record_of_the_event(store):
    running = claims.Claim(run_id="run-0", event_id="e-1", claimed_at=NOW.isoformat())
    assert store.create_claim("k", running.encode()) is not None  # not done: the event runs
    _, _, fence = claims.claim(store, "k", mine("run-a"), NOW)
    fence.finish()
    done, found = claims.is_done(store, "k")
    assert done and (found.run_id, found.state, found.key) == ("run-a", claims.DONE, "k")


def test_finishing_writes_the_record_even_if_it_vanished_after_the_create(store):
    class VanishedMeanwhile:
        """The event's record exists at the create and is gone when read back."""

        def __init__(self, inner) -> None:
            self.inner = inner

        def create_claim(self, key, content):
            return None if key == "k" else self.inner.create_claim(key, content)

        def read_claim(self, key):
            return None if key == "k" else self.inner.read_claim(key)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    claims.claim(store, "other", mine("run-a"), NOW)  # the run holds the lock
    claims.mark_done(VanishedMeanwhile(store), "k", mine("run-a"))
    assert claims.is_done(store, "k")[0]


def test_a_finished_event_is_a_duplicate_even_while_another_run_holds_the_lock(store):
    _, _, first = claims.claim(store, "k", mine("run-a"), NOW)
    first.finish()
    claims.claim(store, "other", mine("run-b"), NOW)  # now run-b holds the lock
    outcome, found, fence = claims.claim(store, "k", mine("run-c"), NOW)
    assert (outcome, found.run_id, fence) == ("done", "run-a", None)


# --- the heartbeat of a long run (the CLI's) ---------------------------------------------------


def claimed_at(store) -> datetime:
    return datetime.fromisoformat(claims.decode(store.read_claim(claims.LOCK_KEY)[0]).claimed_at)


def test_a_heartbeat_keeps_a_long_runs_lock_from_looking_stale(store):
    now = datetime.now(UTC)
    started = now - timedelta(seconds=claims.STALE_AFTER_SECONDS - 1)
    _, _, fence = claims.claim(store, "cli-a", mine("run-a", started), started)
    beat = claims.Heartbeat(fence, interval=3600)
    later = now + timedelta(seconds=2)
    beat.renew()
    # Two seconds on, the run has lasted 601 s, but its lock was written just now: busy.
    outcome, found, _ = claims.claim(store, "k", mine("run-b", later), later)
    assert (outcome, found.run_id) == ("busy", "run-a")
    assert claimed_at(store) >= now
    # The heartbeat fences with the token it wrote; the claim's first token is gone.
    beat.check("publishing")
    assert not fence.holds()


def test_without_a_heartbeat_the_same_lock_is_taken_over(store):
    now = datetime.now(UTC)
    started = now - timedelta(seconds=claims.STALE_AFTER_SECONDS - 1)
    _, _, fence = claims.claim(store, "cli-a", mine("run-a", started), started)
    later = now + timedelta(seconds=2)
    assert claims.claim(store, "k", mine("run-b", later), later)[0] == "claimed"
    assert not fence.holds()


def test_a_heartbeat_renews_by_itself_and_releases_the_lock_at_the_end(store):
    _, _, fence = claims.claim(store, "cli-a", mine("run-a"), NOW)
    with claims.Heartbeat(fence, interval=0.05) as beat:
        deadline = time.monotonic() + 10
        while claimed_at(store) == NOW and time.monotonic() < deadline:
            time.sleep(0.05)
        assert claimed_at(store) > NOW
        beat.check("publishing")
    assert holder(store) is None


def test_a_lock_taken_over_stays_lost_and_is_not_released_by_its_old_heartbeat(store):
    _, _, fence = claims.claim(store, "cli-a", mine("run-a"), NOW)
    with claims.Heartbeat(fence, interval=3600) as beat:
        later = NOW + timedelta(seconds=claims.STALE_AFTER_SECONDS + 1)
        assert claims.claim(store, "k", mine("run-b", later), later)[0] == "claimed"
        beat.renew()  # cannot write over the new holder's lock
        assert holder(store) == "run-b"
        with pytest.raises(claims.ClaimLost, match="run-a lost the run lock before publishing"):
            beat.check("publishing")
    assert holder(store) == "run-b"


class Counted:
    """A store that counts the writes made to it (a real store underneath)."""

    def __init__(self, inner) -> None:
        self.inner, self.writes = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def replace_claim(self, key, content, token):
        self.writes.append(("replace", key))
        return self.inner.replace_claim(key, content, token)

    def release(self, key, token=None):
        self.writes.append(("release", key))
        return self.inner.release(key, token)


def test_a_heartbeat_that_lost_its_lock_writes_nothing_more(store):
    counted = Counted(store)
    _, _, fence = claims.claim(counted, "cli-a", mine("run-a"), NOW)
    with claims.Heartbeat(fence, interval=3600) as beat:
        later = NOW + timedelta(seconds=claims.STALE_AFTER_SECONDS + 1)
        assert claims.claim(store, "k", mine("run-b", later), later)[0] == "claimed"
        beat.renew()  # finds the lock taken: lost
        assert counted.writes == [("replace", claims.LOCK_KEY)]
        beat.renew()
    # Neither a second renewal nor the release at the end writes over run-b's lock.
    assert counted.writes == [("replace", claims.LOCK_KEY)] and holder(store) == "run-b"


def test_a_heartbeat_whose_check_found_the_lock_gone_writes_nothing_more(store):
    counted = Counted(store)
    _, _, fence = claims.claim(counted, "cli-a", mine("run-a"), NOW)
    with claims.Heartbeat(fence, interval=3600) as beat:
        store.release(claims.LOCK_KEY)  # an operator cleared the lock
        with pytest.raises(claims.ClaimLost):
            beat.check("publishing")
        beat.renew()
    assert counted.writes == [] and holder(store) is None


def test_a_heartbeat_runs_as_a_daemon_thread_that_ends_with_its_block(store):
    _, _, fence = claims.claim(store, "cli-a", mine("run-a"), NOW)
    with claims.Heartbeat(fence, interval=3600):
        (beating,) = [t for t in threading.enumerate() if t.name == "run-lock-heartbeat"]
        # A crashed CLI exits without waiting an interval for its heartbeat.
        assert beating.daemon and beating.is_alive()
    assert not beating.is_alive()


def test_the_heartbeat_interval_is_the_documented_one_far_inside_the_shortest_staleness():
    docs = {
        "configuration.md": r"renews the run lock it holds every (\d+) s",
        "operations.md": r"a heartbeat every (\d+) s",
    }
    for name, words in docs.items():
        (given,) = re.findall(words, Path("docs", name).read_text())
        assert float(given) == claims.HEARTBEAT_SECONDS, name
    # Three beats fit inside the staleness of the shortest function timeout (120 s).
    assert claims.HEARTBEAT_SECONDS * 3 < 120 + claims.STALE_MARGIN_SECONDS


def test_the_last_load_is_none_until_recorded_then_the_latest_recorder(store):
    assert claims.last_load(store) is None
    claims.record_load(store, mine("run-a"))
    assert claims.last_load(store) == "run-a"
    claims.record_load(store, mine("run-b"))  # over an existing record
    assert claims.last_load(store) == "run-b"
    found = store.read_claim(claims.LAST_LOAD_KEY)
    assert claims.decode(found[0]).key == claims.LAST_LOAD_KEY


def test_an_unreadable_last_load_record_names_no_run(store):
    store.create_claim(claims.LAST_LOAD_KEY, b"not json")
    assert claims.last_load(store) is None
