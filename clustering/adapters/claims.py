"""Idempotency claims and the run lock: which delivery runs, and whether it may still publish.

Two kinds of record live under claims/ in the artifact store, each a small JSON `Claim`:

- one per event key, written "done" once the event is handled (run, failed for good, or
  covered by another run): every later delivery of that key is a duplicate, acked;
- one run lock (`LOCK_KEY`), created exclusively (Cloud Storage `if_generation_match=0`,
  locally O_EXCL) by the delivery that runs, and deleted when it ends. Runs of different
  events replace the same table and latest/, so one lock for all of them is what keeps two
  runs, of one revision or of two during a redeploy, from ever publishing together.

The lock's version token (the object's generation; locally inode and mtime) is the run's
fencing token: every publishing step first checks that the lock still has that token
(`Fence.check`), and the final release deletes the lock only if it does. A lock older than
`stale_after` belongs to a run that died (a crash, or a timeout whose release was lost); a
delivery takes it over with a compare-and-swap, so only one can. The takeover is safe because
a run stops itself (clustering.adapters.budget) before the function timeout, and `stale_after` is
longer than that timeout: by then the old run can no longer publish. A run that may last longer
than any staleness (the CLI's, whose budget is hours) holds the lock through a `Heartbeat`,
which renews the lock's time while the run lasts, so it never looks stale.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Literal, Protocol

RUNNING = "running"
DONE = "done"
LOCK_KEY = "run-lock"
# The run that last started a load of the clusters table: the next run waits for that load
# job to end before its own (clustering.adapters.bigquery.await_load).
LAST_LOAD_KEY = "last-load"
# Longer than any run can last (the function's 540 s timeout by default, after which a run
# has stopped itself), so a lock this old belongs to a run that is gone.
STALE_AFTER_SECONDS = 600
# How much longer than the function timeout a lock must be before it is stale: covers clock
# skew between instances and the release of a run that stopped at its deadline.
STALE_MARGIN_SECONDS = 60
# How often a Heartbeat renews the lock: far inside the shortest staleness a delivery applies
# (the function's shortest timeout, 120 s, plus the margin).
HEARTBEAT_SECONDS = 30.0

Outcome = Literal["claimed", "done", "busy"]


class ClaimLost(RuntimeError):
    """This run no longer holds the run lock (it was taken over): it must not publish."""


class ClaimStore(Protocol):
    """Exclusive create, read with a version token, compare-and-swap replace and delete."""

    def create_claim(self, key: str, content: bytes) -> object | None: ...

    def read_claim(self, key: str) -> tuple[bytes, object] | None: ...

    def replace_claim(self, key: str, content: bytes, token: object | None) -> object | None: ...

    def release(self, key: str, token: object | None = None) -> bool: ...


@dataclass(frozen=True)
class Claim:
    """Who holds an event or the lock: the run started for it, when, and whether it is over."""

    run_id: str
    event_id: str | None
    claimed_at: str
    state: str = RUNNING
    key: str | None = None

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    def age_seconds(self, now: datetime) -> float | None:
        try:
            return (now - datetime.fromisoformat(self.claimed_at)).total_seconds()
        except (TypeError, ValueError):
            return None


def decode(content: bytes) -> Claim | None:
    """The claim in `content`, or None when it cannot be read."""
    try:
        fields = json.loads(content)
        return Claim(
            **{k: fields[k] for k in ("run_id", "event_id", "claimed_at", "state")},
            key=fields.get("key"),
        )
    except (ValueError, TypeError, KeyError):
        return None


def stale_after(function_timeout_seconds: int | None) -> float:
    """Age at which a lock is stale: past the function timeout, plus a margin."""
    if function_timeout_seconds is None:
        return STALE_AFTER_SECONDS
    return function_timeout_seconds + STALE_MARGIN_SECONDS


@dataclass(frozen=True)
class Fence:
    """What a run holds: the lock's token, checked before every publishing step."""

    store: ClaimStore
    key: str
    mine: Claim
    token: object

    def holds(self) -> bool:
        found = self.store.read_claim(LOCK_KEY)
        return found is not None and found[1] == self.token

    def check(self, step: str) -> None:
        """Raise ClaimLost unless the lock is still this run's."""
        if not self.holds():
            raise _lost(self.mine, step)

    def finish(self) -> None:
        """Mark the event done (every later delivery is a duplicate), then release the lock
        if it is still ours, even when the mark failed: a lock left behind would hold every
        other event back until it is stale."""
        try:
            mark_done(self.store, self.key, self.mine)
        finally:
            self.release()

    def release(self) -> bool:
        return self.store.release(LOCK_KEY, self.token)


def _lost(mine: Claim, step: str) -> ClaimLost:
    return ClaimLost(
        f"run {mine.run_id} lost the run lock before {step} (a delivery took it over as "
        "stale): it stops without publishing"
    )


class Heartbeat:
    """The run lock of a run that may outlast its staleness, kept fresh: every `interval`
    seconds a thread rewrites the lock with the time now (compare-and-swap on its token), so no
    delivery takes it over as stale while the run lives. It fences like `Fence` (`check`,
    with the token it wrote last); leaving the block stops it and releases the lock."""

    def __init__(self, fence: Fence, interval: float = HEARTBEAT_SECONDS) -> None:
        self._store, self._mine, self._token = fence.store, fence.mine, fence.token
        self._lost = False
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(interval,), name="run-lock-heartbeat", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        from clustering.adapters import budget

        self._stop.set()
        self._thread.join()
        # A run stopped by its deadline still releases its lock: with a budget of its own.
        with self._guard, budget.bounded(budget.Budget.lasting(budget.FINAL_STEP_SECONDS)):
            if not self._lost:
                self._store.release(LOCK_KEY, self._token)

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.renew()

    def renew(self) -> None:
        """Rewrite the lock with the time now; a lock no longer ours stays lost."""
        with self._guard:
            if self._lost:
                return
            fresh = replace(self._mine, claimed_at=datetime.now(UTC).isoformat())
            try:
                token = self._store.replace_claim(LOCK_KEY, fresh.encode(), self._token)
            except Exception:  # a failed renewal (a network error) is retried at the next beat
                return
            if token is None:
                self._lost = True
            else:
                self._token = token

    def check(self, step: str) -> None:
        """Raise ClaimLost unless the lock is still the one this heartbeat wrote last."""
        with self._guard:
            found = self._store.read_claim(LOCK_KEY)
            if self._lost or found is None or found[1] != self._token:
                self._lost = True
                raise _lost(self._mine, step)


def mark_done(store: ClaimStore, key: str, mine: Claim) -> None:
    """Record the event as handled by `mine`."""
    done = replace(mine, state=DONE, key=key).encode()
    if store.create_claim(key, done) is None:
        found = store.read_claim(key)
        store.replace_claim(key, done, found[1] if found else None)


def is_done(store: ClaimStore, key: str) -> tuple[bool, Claim | None]:
    """Whether the event was handled; an unreadable record counts as done (running an event
    twice is worse than skipping it)."""
    found = store.read_claim(key)
    if found is None:
        return False, None
    existing = decode(found[0])
    return existing is None or existing.state == DONE, existing


def claim(
    store: ClaimStore,
    key: str,
    mine: Claim,
    now: datetime | None = None,
    stale_after: float = STALE_AFTER_SECONDS,
) -> tuple[Outcome, Claim | None, Fence | None]:
    """Claim event `key` for `mine`: "done" (a duplicate), "busy" (a run holds the lock: the
    found holder is returned), or "claimed" with the Fence (and the stale holder taken over,
    if any)."""
    done, found = is_done(store, key)
    if done:
        return "done", found, None
    mine = replace(mine, key=key)
    outcome, holder, token = _lock(store, mine, now or datetime.now(UTC), stale_after)
    if outcome == "busy":
        return "busy", holder, None
    fence = Fence(store, key, mine, token)
    # A run of this very event may have finished between the first check and the lock.
    done, found = is_done(store, key)
    if done:
        fence.release()
        return "done", found, None
    return "claimed", holder, fence


def _lock(store: ClaimStore, mine: Claim, now: datetime, stale_after: float):
    token = store.create_claim(LOCK_KEY, mine.encode())
    if token is not None:
        return "claimed", None, token
    found = store.read_claim(LOCK_KEY)
    if found is None:  # released between the two calls: try once more
        token = store.create_claim(LOCK_KEY, mine.encode())
        return ("claimed", None, token) if token is not None else ("busy", None, None)
    content, found_token = found
    holder = decode(content)
    age = holder.age_seconds(now) if holder else None
    if age is not None and age < stale_after:
        return "busy", holder, None
    token = store.replace_claim(LOCK_KEY, mine.encode(), found_token)
    return ("claimed", holder, token) if token is not None else ("busy", holder, None)


def last_load(store: ClaimStore) -> str | None:
    """The run that last started a load of the clusters table, None if none is recorded."""
    found = store.read_claim(LAST_LOAD_KEY)
    record = decode(found[0]) if found else None
    return record.run_id if record else None


def record_load(store: ClaimStore, mine: Claim) -> None:
    """Record that run `mine` starts its load (only the run lock's holder writes it)."""
    content = replace(mine, key=LAST_LOAD_KEY).encode()
    if store.create_claim(LAST_LOAD_KEY, content) is None:
        store.replace_claim(LAST_LOAD_KEY, content, None)
