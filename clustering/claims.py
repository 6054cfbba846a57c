"""Idempotency claims: the first delivery of an event runs it, the others do not.

A claim is a small JSON record stored under claims/ in the artifact store, created
exclusively (GCS `if_generation_match=0`, locally O_EXCL). It is "running" while its run goes
on and "done" once the run succeeded or failed for good, so:

- a redelivery of a done event is a duplicate: acked and skipped;
- a redelivery that finds the event running is retried later, unless the claim is older than
  a run can last: then its run died (timeout, crash, a release lost in an outage) and the
  redelivery takes the claim over, with a compare-and-swap so only one delivery can.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

RUNNING = "running"
DONE = "done"
# Longer than any run can last (the function's 540 s timeout), so a running claim this old
# belongs to a run that is gone.
STALE_AFTER_SECONDS = 600

Outcome = Literal["claimed", "done", "busy"]


class ClaimStore(Protocol):
    """Exclusive create, read with a version token, and compare-and-swap replace."""

    def create_claim(self, key: str, content: bytes) -> bool: ...

    def read_claim(self, key: str) -> tuple[bytes, object] | None: ...

    def replace_claim(self, key: str, content: bytes, token: object | None) -> bool: ...

    def release(self, key: str) -> None: ...


@dataclass(frozen=True)
class Claim:
    """Who holds an event: the run started for it, when, and whether it is over."""

    run_id: str
    event_id: str | None
    claimed_at: str
    state: str = RUNNING

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
        return Claim(**{k: fields[k] for k in ("run_id", "event_id", "claimed_at", "state")})
    except (ValueError, TypeError, KeyError):
        return None


def claim(
    store: ClaimStore, key: str, mine: Claim, now: datetime | None = None,
    stale_after: float = STALE_AFTER_SECONDS,
) -> tuple[Outcome, Claim | None]:  # fmt: skip
    """Claim `key` for `mine`; returns the outcome and the claim found, if any."""
    if store.create_claim(key, mine.encode()):
        return "claimed", None
    found = store.read_claim(key)
    if found is None:  # released between the two calls: try once more
        return ("claimed", None) if store.create_claim(key, mine.encode()) else ("busy", None)
    content, token = found
    existing = decode(content)
    if existing is None or existing.state == DONE:
        # An unreadable claim counts as done: running an event twice is worse than skipping.
        return "done", existing
    age = existing.age_seconds(now or datetime.now(UTC))
    if age is not None and age < stale_after:
        return "busy", existing
    if store.replace_claim(key, mine.encode(), token):
        return "claimed", existing
    return "busy", existing


def finish(store: ClaimStore, key: str, mine: Claim) -> None:
    """Mark the event done: every later delivery of it is a duplicate."""
    store.replace_claim(key, Claim(mine.run_id, mine.event_id, mine.claimed_at, DONE).encode(),
                        None)  # fmt: skip
