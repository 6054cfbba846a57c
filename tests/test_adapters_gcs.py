"""The Cloud Storage adapter with the unmodified client against fake-gcs-server."""

import uuid

import pandas as pd
import pytest

from clustering import adapters
from clustering.adapters.gcs import GcsStore
from clustering.errors import InputError
from clustering.sample import make_sample
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


def test_promote_replaces_latest_with_exactly_one_runs_files(bucket):
    store = GcsStore(f"gs://{bucket.name}/artifacts")
    store.write_run("r1", {"a.csv": b"1", "old.png": b"x", "run.json": b"{}"})
    store.promote("r1", {"a.csv": b"1", "old.png": b"x", "run.json": b"{}"})
    store.write_run("r2", {"a.csv": b"2", "run.json": b"{}"})
    store.promote("r2", {"a.csv": b"2", "run.json": b"{}"})
    latest = {b.name: b for b in bucket.list_blobs(prefix="artifacts/latest/")}
    assert sorted(latest) == ["artifacts/latest/a.csv", "artifacts/latest/run.json"]
    assert latest["artifacts/latest/a.csv"].download_as_bytes() == b"2"
    assert latest["artifacts/latest/a.csv"].content_type == "text/csv"
    assert latest["artifacts/latest/run.json"].content_type == "application/json"
    assert store.describe("runs/r2/") == f"gs://{bucket.name}/artifacts/runs/r2/"


def test_a_run_folder_is_never_overwritten(bucket):
    from google.api_core import exceptions

    store = GcsStore(f"gs://{bucket.name}")
    store.write_run("r1", {"a.csv": b"1"})
    with pytest.raises(exceptions.PreconditionFailed):
        store.write_run("r1", {"a.csv": b"other"})


def test_read_latest_is_none_before_the_first_promote_and_the_file_after(bucket):
    store = GcsStore(f"gs://{bucket.name}/artifacts")
    assert store.read_latest("run.json") is None
    store.write_run("r1", {"a.csv": b"1", "run.json": b'{"run_id": "r1"}'})
    assert store.read_latest("run.json") is None  # written, not yet published
    store.promote("r1", {"a.csv": b"1", "run.json": b'{"run_id": "r1"}'})
    assert store.read_latest("run.json") == b'{"run_id": "r1"}'
    assert store.read_latest("missing.csv") is None
