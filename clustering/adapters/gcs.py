"""Cloud Storage: the artifact store (runs/<id>/, latest/, claims/) and gs:// feature files."""

from __future__ import annotations

import contextlib
from pathlib import PurePosixPath

import pandas as pd

from clustering.adapters.local import READERS, parse_table, table_bytes
from clustering.errors import InputError
from clustering.naming import claim_name, content_type


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


def read_bytes(uri: str) -> bytes:
    from google.api_core import exceptions

    bucket, name = split_uri(uri)
    try:
        return client().bucket(bucket).blob(name).download_as_bytes()
    except exceptions.NotFound:
        raise InputError(f"{uri}: no such object: check the URI") from None


def read_table(uri: str) -> pd.DataFrame:
    _, name = split_uri(uri)
    kind = READERS.get(PurePosixPath(name).suffix.lower())
    if kind is None:
        raise InputError(f"{uri}: unknown format: give a .csv or .parquet object")
    content = read_bytes(uri)
    if not content:
        raise InputError(f"{uri} is empty: give a file with a header row and rows")
    return parse_table(content, kind, uri)


def replace_table(uri: str, frame: pd.DataFrame) -> None:
    """Replace a .csv/.parquet object: one upload, which readers see whole or not at all."""
    bucket, name = split_uri(uri)
    content = table_bytes(frame, name)
    blob = client().bucket(bucket).blob(name)
    blob.upload_from_string(content, content_type=content_type(name))


class GcsStore:
    """The artifact layout in a bucket; every write is an object create or a server-side
    copy, and claims are created with if_generation_match=0 so only the first one wins."""

    def __init__(self, dest: str) -> None:
        self.bucket_name, self.prefix = split_uri(dest)
        self._bucket = client().bucket(self.bucket_name)

    def _name(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def describe(self, path: str = "") -> str:
        return f"gs://{self.bucket_name}/{self._name(path)}"

    def write_run(self, run_id: str, files: dict[str, bytes]) -> None:
        for name, content in files.items():
            blob = self._bucket.blob(self._name(f"runs/{run_id}/{name}"))
            blob.upload_from_string(content, content_type=content_type(name),
                                    if_generation_match=0)  # fmt: skip

    def promote(self, run_id: str, files: dict[str, bytes]) -> None:
        """Copy runs/<id>/ over latest/ (run.json last), then drop what the run did not
        write, so latest/ holds exactly one run's files."""
        for name in files:
            source = self._bucket.blob(self._name(f"runs/{run_id}/{name}"))
            self._bucket.copy_blob(source, self._bucket, self._name(f"latest/{name}"))
        latest = self._name("latest/")
        for blob in client().list_blobs(self.bucket_name, prefix=latest):
            if blob.name[len(latest) :] not in files:
                blob.delete()

    def read_latest(self, name: str) -> bytes | None:
        from google.api_core import exceptions

        try:
            return self._bucket.blob(self._name(f"latest/{name}")).download_as_bytes()
        except exceptions.NotFound:
            return None

    def _claim(self, key: str):
        return self._bucket.blob(self._name(f"claims/{claim_name(key)}"))

    def create_claim(self, key: str, content: bytes) -> bool:
        from google.api_core import exceptions

        try:
            self._claim(key).upload_from_string(content, content_type="application/json",
                                                if_generation_match=0)  # fmt: skip
        except exceptions.PreconditionFailed:
            return False
        return True

    def read_claim(self, key: str) -> tuple[bytes, object] | None:
        from google.api_core import exceptions

        blob = self._bucket.get_blob(self._name(f"claims/{claim_name(key)}"))
        if blob is None:
            return None
        try:
            return blob.download_as_bytes(if_generation_match=blob.generation), blob.generation
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            return None

    def replace_claim(self, key: str, content: bytes, token: object | None) -> bool:
        """Overwrite the claim; with a token, only if it is still that generation."""
        from google.api_core import exceptions

        try:
            self._claim(key).upload_from_string(content, content_type="application/json",
                                                if_generation_match=token)  # fmt: skip
        except exceptions.PreconditionFailed:
            return False
        return True

    def release(self, key: str) -> None:
        from google.api_core import exceptions

        with contextlib.suppress(exceptions.NotFound):
            self._claim(key).delete()
