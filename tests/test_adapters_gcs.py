"""The Cloud Storage adapter with the unmodified client against fake-gcs-server."""

import uuid

import pandas as pd
import pytest

from clustering import InputError, adapters
from clustering.adapters.gcs import GcsStore
from clustering.analysis.sample import make_sample
from tests.emulators import storage_client

pytestmark = pytest.mark.e2e


@pytest.fixture
def bucket(gcs_emulator, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    name = f"adapters-{uuid.uuid4().hex[:8]}"
    return storage_client(gcs_emulator).create_bucket(name)


def test_features_are_read_from_csv_and_parquet_objects(bucket):
    frame = make_sample(30)
    bucket.blob("in/features.csv").upload_from_string(frame.to_csv(index=False))
    bucket.blob("in/features.parquet").upload_from_string(frame.to_parquet(index=False))
    from_csv, where = adapters.read_features(f"gs://{bucket.name}/in/features.csv")
    from_parquet, _ = adapters.read_features(f"gs://{bucket.name}/in/features.parquet")
    assert where == f"gs://{bucket.name}/in/features.csv"
    pd.testing.assert_frame_equal(from_parquet, frame)
    assert from_csv["neighborhood"].tolist() == frame["neighborhood"].tolist()


@pytest.mark.parametrize("name", ["missing.csv", "features.xlsx"])
def test_a_missing_or_unknown_object_is_an_input_error(bucket, name):
    with pytest.raises(InputError, match=name):
        adapters.read_features(f"gs://{bucket.name}/{name}")


@pytest.mark.parametrize("name", ["out/clusters.csv", "out/clusters.parquet"])
def test_a_clusters_table_object_is_replaced_whole(bucket, name):
    uri = f"gs://{bucket.name}/{name}"
    adapters.write_clusters(uri, make_sample(25), schema=[])
    adapters.write_clusters(uri, make_sample(20), schema=[])
    back, _ = adapters.read_features(uri)
    assert len(back) == 20


def test_latest_is_one_pointer_switched_only_from_the_version_read(bucket):
    store = GcsStore(f"gs://{bucket.name}/artifacts")
    # A file no run of these wrote goes at the first switch.
    bucket.blob("artifacts/latest/old.png").upload_from_string(b"x")
    first = {"a.csv": b"1", "run.json": b'{"run_id": "r1"}'}
    store.write_run("r1", first)
    assert store.switch_latest("r1", first, store.read_pointer()[1])
    _, token = store.read_pointer()
    second = {"a.csv": b"2", "run.json": b'{"run_id": "r2"}'}
    store.write_run("r2", second)
    assert not store.switch_latest("r2", second, 0)  # a stale read: refused
    assert store.switch_latest("r2", second, token)
    latest = {b.name: b for b in bucket.list_blobs(prefix="artifacts/latest/")}
    # The pointer, then copies of exactly that run's files (the old copy is gone).
    assert sorted(latest) == ["artifacts/latest/a.csv", "artifacts/latest/run.json"]
    assert latest["artifacts/latest/run.json"].download_as_bytes() == b'{"run_id": "r2"}'
    assert latest["artifacts/latest/a.csv"].download_as_bytes() == b"2"
    assert latest["artifacts/latest/run.json"].content_type == "application/json"
    run = {b.name for b in bucket.list_blobs(prefix="artifacts/runs/r2/")}
    assert run == {"artifacts/runs/r2/a.csv", "artifacts/runs/r2/run.json"}
    assert store.describe("runs/r2/") == f"gs://{bucket.name}/artifacts/runs/r2/"


def test_a_run_folder_is_never_overwritten(bucket):
    store = GcsStore(f"gs://{bucket.name}")
    store.write_run("r1", {"a.csv": b"1"})
    store.write_run("r1", {"a.csv": b"1"})  # the same bytes: a retried write of our own
    with pytest.raises(RuntimeError, match="exists already with other content"):
        store.write_run("r1", {"a.csv": b"other"})
    assert bucket.blob("runs/r1/a.csv").download_as_bytes() == b"1"


def test_an_object_above_the_size_limit_is_refused_before_it_is_downloaded(bucket, monkeypatch):
    from clustering.adapters import gcs

    frame = make_sample(30)
    bucket.blob("in/features.csv").upload_from_string(frame.to_csv(index=False))
    size = bucket.get_blob("in/features.csv").size
    downloads = []
    monkeypatch.setattr(gcs, "MAX_FEATURES_BYTES", size - 1)
    # Counting downloads on the real client: the refusal must come from the size alone.
    original = gcs.client

    def counting_client():
        found = original()
        real_download = found._http.request

        def request(method, url, *args, **kwargs):
            if "alt=media" in url:
                downloads.append(url)
            return real_download(method, url, *args, **kwargs)

        found._http.request = request
        return found

    monkeypatch.setattr(gcs, "client", counting_client)
    with pytest.raises(InputError, match=rf"is {size:,} bytes, more than the {size - 1:,}"):
        adapters.read_features(f"gs://{bucket.name}/in/features.csv")
    assert downloads == []
    assert gcs.read_bytes(f"gs://{bucket.name}/in/features.csv", max_bytes=size)
    with pytest.raises(InputError, match=r"see docs/configuration\.md, Limits"):
        gcs.read_bytes(f"gs://{bucket.name}/in/features.csv", max_bytes=size - 1)


def test_a_run_file_is_read_from_its_folder(bucket):
    store = GcsStore(f"gs://{bucket.name}/artifacts")
    assert store.read_run_file("r1", "a.csv") is None
    store.write_run("r1", {"a.csv": b"1", "run.json": b'{"run_id": "r1"}'})
    assert store.read_run_file("r1", "a.csv") == b"1"
    assert store.read_run_file("r1", "missing.csv") is None
