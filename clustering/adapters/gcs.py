"""Cloud Storage: the artifact store (runs/<id>/, latest/, claims/) and gs:// feature files.

Every call carries a per-request timeout and a retry deadline from the run's budget
(clustering.adapters.budget). Writes that must not overwrite anything are creates with
`if_generation_match=0`, and replacements are conditional on the generation that was read:
the storage client retries such a request when its response is lost, and the retry then meets
its own first attempt as a 412. So a 412 is a success when the object now holds exactly the
bytes we sent (claims and pointers are unique per run: their bytes name the run).
"""

from __future__ import annotations

import contextlib
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from clustering import InputError
from clustering.adapters import budget
from clustering.adapters.local import READERS, parse_table, table_bytes
from clustering.naming import MANIFEST, claim_name, content_type
from clustering.settings import MAX_BOUNDARIES_BYTES, MAX_FEATURES_BYTES

if TYPE_CHECKING:
    import pandas as pd


def split_uri(uri: str) -> tuple[str, str]:
    """('bucket', 'prefix/without/slashes/at/the/ends') of a gs:// URI."""
    bucket, _, prefix = uri.removeprefix("gs://").partition("/")
    if not bucket:
        raise InputError(f"{uri}: no bucket name: write it as gs://bucket/prefix")
    return bucket, prefix.strip("/")


def client():
    """A storage client; with STORAGE_EMULATOR_HOST set it talks to the emulator."""
    from google.cloud import storage

    return storage.Client()


def limits(step: str) -> dict:
    """timeout= and retry= for one storage call, within the run's remaining time."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    deadline, timeout = budget.call_limits(step)
    return {"timeout": timeout, "retry": DEFAULT_RETRY.with_timeout(deadline)}


def read_bytes(uri: str, max_bytes: int = MAX_BOUNDARIES_BYTES) -> bytes:
    """The object's bytes; one larger than `max_bytes` is refused before it is downloaded."""
    bucket, name = split_uri(uri)
    blob = client().bucket(bucket).get_blob(name, **limits(f"looking up {uri}"))
    if blob is None:
        raise InputError(f"{uri}: no such object: check the URI")
    if blob.size is not None and blob.size > max_bytes:
        raise InputError(
            f"{uri} is {blob.size:,} bytes, more than the {max_bytes:,} this job reads "
            "(see docs/configuration.md, Limits): split or shrink the file"
        )
    return blob.download_as_bytes(if_generation_match=blob.generation, **limits(f"reading {uri}"))


def read_table(uri: str) -> pd.DataFrame:
    _, name = split_uri(uri)
    kind = READERS.get(PurePosixPath(name).suffix.lower())
    if kind is None:
        raise InputError(f"{uri}: unknown format: give a .csv or .parquet object")
    content = read_bytes(uri, MAX_FEATURES_BYTES)
    if not content:
        raise InputError(f"{uri} is empty: give a file with a header row and rows")
    return parse_table(content, kind, uri)


def replace_table(uri: str, frame: pd.DataFrame) -> None:
    """Replace a .csv/.parquet object: one upload, which readers see whole or not at all."""
    bucket, name = split_uri(uri)
    content = table_bytes(frame, name)
    blob = client().bucket(bucket).blob(name)
    # The same bytes twice is harmless, so a retried upload needs no precondition.
    blob.upload_from_string(content, content_type=content_type(name), **limits(f"writing {uri}"))


class GcsStore:
    """The artifact layout in a bucket.

    runs/<id>/ holds every file of a run; latest/run.json is the pointer to the current run:
    the run's manifest, whose outputs.artifacts names runs/<id>/. Cloud Storage cannot swap a
    folder in one step, so the pointer is replaced by one conditional write, and only then are
    the run's other files copied beside it (server-side), for people who open
    latest/report.html: a reader who must never see two runs mixed follows the pointer to
    runs/<id>/. A failure while copying is a failure to publish, so the event is retried and
    the next run copies everything again. Claims are created with if_generation_match=0, so
    only the first one wins, and their generation is the fencing token.
    """

    def __init__(self, dest: str) -> None:
        self.bucket_name, self.prefix = split_uri(dest)
        self._bucket = client().bucket(self.bucket_name)

    def _name(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def describe(self, path: str = "") -> str:
        return f"gs://{self.bucket_name}/{self._name(path)}"

    def _write(self, path: str, content: bytes, expected: int) -> int | None:
        """Write `path` if its generation is `expected` (0: absent); the new generation, or
        None when someone else's write is there."""
        from google.api_core import exceptions

        blob = self._bucket.blob(self._name(path))
        try:
            blob.upload_from_string(
                content,
                content_type=content_type(path),
                if_generation_match=expected,
                **limits(f"writing {self.describe(path)}"),
            )
        except exceptions.PreconditionFailed:
            found = self._read(path)
            # Our own earlier attempt, whose response was lost: the retry met it.
            return found[1] if found and found[0] == content else None
        return blob.generation

    def _read(self, path: str) -> tuple[bytes, int] | None:
        from google.api_core import exceptions

        step = f"reading {self.describe(path)}"
        blob = self._bucket.get_blob(self._name(path), **limits(step))
        if blob is None:
            return None
        try:
            content = blob.download_as_bytes(if_generation_match=blob.generation, **limits(step))
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            return None  # replaced or deleted between the two calls
        return content, blob.generation

    def write_run(self, run_id: str, files: dict[str, bytes]) -> None:
        for name, content in files.items():
            if self._write(f"runs/{run_id}/{name}", content, 0) is None:
                raise RuntimeError(
                    f"{self.describe(f'runs/{run_id}/{name}')} exists already "
                    "with other content: run ids never repeat"
                )

    def read_run_file(self, run_id: str, name: str) -> bytes | None:
        found = self._read(f"runs/{run_id}/{name}")
        return found[0] if found else None

    def read_latest_file(self, name: str) -> bytes | None:
        found = self._read(f"latest/{name}")
        return found[0] if found else None

    def read_pointer(self) -> tuple[bytes | None, int]:
        """latest/run.json and its generation (0 when there is none)."""
        found = self._read(f"latest/{MANIFEST}")
        return (found[0], found[1]) if found else (None, 0)

    def switch_latest(self, run_id: str, files: dict[str, bytes], token: object) -> bool:
        """Point latest/ at runs/<run_id>/ in one conditional write of latest/run.json, then
        copy the run's other files beside it and drop those it did not write; False (nothing
        changed) when the pointer changed since it was read (another run published)."""
        if self._write(f"latest/{MANIFEST}", files[MANIFEST], int(token or 0)) is None:
            return False
        for name in files:
            if name != MANIFEST:
                source = self._bucket.blob(self._name(f"runs/{run_id}/{name}"))
                self._bucket.copy_blob(
                    source,
                    self._bucket,
                    self._name(f"latest/{name}"),
                    **limits(f"copying {name} to latest/"),
                )
        latest = self._name("latest/")
        for blob in client().list_blobs(
            self.bucket_name, prefix=latest, **limits("listing latest/")
        ):
            if blob.name[len(latest) :] not in files:
                with contextlib.suppress(Exception):  # a file of an older run: best effort
                    blob.delete(if_generation_match=blob.generation, **limits("cleaning latest/"))
        return True

    def create_claim(self, key: str, content: bytes) -> int | None:
        """Create the claim; its generation (the fencing token), or None if it exists."""
        return self._write(f"claims/{claim_name(key)}", content, 0)

    def read_claim(self, key: str) -> tuple[bytes, object] | None:
        return self._read(f"claims/{claim_name(key)}")

    def replace_claim(self, key: str, content: bytes, token: object | None) -> object | None:
        """Overwrite the claim; with a token, only if it is still that generation. Returns the
        new token, or None when the claim changed meanwhile."""
        from google.api_core import exceptions

        if token is not None:
            return self._write(f"claims/{claim_name(key)}", content, int(token))
        blob = self._bucket.blob(self._name(f"claims/{claim_name(key)}"))
        with contextlib.suppress(exceptions.PreconditionFailed):
            blob.upload_from_string(
                content, content_type="application/json", **limits("writing a claim")
            )
        return blob.generation

    def release(self, key: str, token: object | None = None) -> bool:
        """Delete the claim (only if it is still generation `token`, when given); False when
        it is someone else's now. The generation is read first as well as sent as the
        precondition: fake-gcs-server ignores preconditions on delete, Cloud Storage does not."""
        from google.api_core import exceptions

        name = self._name(f"claims/{claim_name(key)}")
        if token is not None:
            found = self._bucket.get_blob(name, **limits("reading a claim"))
            if found is None:
                return True
            if found.generation != int(token):
                return False
        expected = None if token is None else int(token)
        try:
            self._bucket.blob(name).delete(
                if_generation_match=expected, **limits("releasing a claim")
            )
        except exceptions.NotFound:
            return True
        except exceptions.PreconditionFailed:
            return False
        return True
