"""`make bench`'s warehouse cases, on the local emulators (tests/emulators.py): local-bigquery
runs the SQL, fake-gcs-server receives the artifacts and the EXPORT DATA shards.

  wh1m, wh3m  1,000,000 and 3,000,000 synthetic rows in BigQuery, ENGINE=auto (the warehouse
              engine, above MEMORY_MAX_ROWS): one untimed run publishes a first state, then
              the timed run (with transitions to derive). Peak RSS of our process (the
              function's work; the emulators are separate processes) and seconds per stage.
  engines     one 250,000-row table clustered by --engine memory and by --engine warehouse
              --sample-rows 100000: the adjusted Rand index of the two top splits and the ratio
              of their within-cohort sums of squares, both in the memory run's scaled space
              (its model document's z), over the same residential rows.

Every row must be scored: the clusters table holds the table's row count under the timed
run's id, or the sample is marked failed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROJECT = "test-project"
DATASET = f"{PROJECT}.bench"
WAREHOUSE_ROWS = {"wh1m": 1_000_000, "wh3m": 3_000_000}
ENGINES_ROWS = 250_000
ENGINES_SAMPLE = 100_000


@dataclass(frozen=True)
class Emulated:
    """The running emulators, clients for them, and the artifacts bucket."""

    bq: object
    gcs: object
    bucket: str


def missing_tools() -> str | None:
    """Why the emulators cannot start (their tool environments are not built), or None."""
    from tests import emulators

    return emulators.missing_tool("bigquery") or emulators.missing_tool("gcs")


@contextlib.contextmanager
def emulated(scratch: Path) -> Iterator[Emulated]:
    """Both emulators for the whole benchmark; children find them through the environment
    (set here, restored after), as the adapters read it."""
    from tests import emulators

    with contextlib.ExitStack() as stack:
        gcs = stack.enter_context(emulators.gcs_server(scratch / "gcs"))
        bigquery = stack.enter_context(
            emulators.bigquery_server(scratch / "bigquery", storage_endpoint=gcs.endpoint)
        )
        saved = {k: os.environ.get(k) for k in ("BIGQUERY_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")}
        os.environ["BIGQUERY_EMULATOR_HOST"] = bigquery.endpoint
        os.environ["STORAGE_EMULATOR_HOST"] = gcs.endpoint
        bq, storage = emulators.bigquery_client(bigquery), emulators.storage_client(gcs)
        bq.create_dataset(DATASET, exists_ok=True)
        bucket = storage.create_bucket(f"bench-{uuid.uuid4().hex[:8]}").name
        try:
            yield Emulated(bq, storage, bucket)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def load(table: str, rows: int, seed: int) -> None:
    """The project's synthetic table of `rows` rows, loaded into BigQuery (untimed), by a
    process of its own: Linux hands a child the high-water RSS of the process it was forked
    from, so a benchmark that held the 3M-row DataFrame itself would charge it to every run
    it then starts."""
    command = [sys.executable, __file__, "load", table, str(rows), str(seed)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)


def _load_here(table: str, rows: int, seed: int) -> None:
    from google.cloud import bigquery

    from clustering.analysis.sample import make_sample
    from tests import emulators

    endpoint = os.environ["BIGQUERY_EMULATOR_HOST"]
    client = emulators.bigquery_client(
        emulators.BigQueryEmulator(endpoint, PROJECT, "", Path(), Path())
    )
    frame = make_sample(rows, random_state=seed)
    config = bigquery.LoadJobConfig(write_disposition="WRITE_TRUNCATE")
    client.load_table_from_dataframe(frame, f"{DATASET}.{table}", job_config=config).result()


def run_argv(python: str, table: str, clusters: str, out: str, *extra: str) -> list[str]:
    # The bench loads the table itself seconds before the run: no refresh is still loading,
    # so the settling check (which would refuse a table modified within a minute) is off.
    return [
        python,
        *("-m", "clustering", "run", "--features", f"bq://{DATASET}.{table}"),
        *("--clusters-table", f"bq://{DATASET}.{clusters}", "--out", out, "--quiet"),
        *("--settle-seconds", "0", *extra),
    ]


def manifest_at(em: Emulated, prefix: str) -> dict | None:
    """latest/run.json of an artifacts prefix in the bucket, None when absent."""
    blob = em.gcs.bucket(em.bucket).get_blob(f"{prefix}/latest/run.json")
    return json.loads(blob.download_as_bytes()) if blob else None


def scored_rows(em: Emulated, clusters: str, run_id: str) -> tuple[int, int]:
    """(rows of the clusters table, rows of it under `run_id`)."""
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter("run", "STRING", run_id)]
    )
    sql = f"SELECT COUNT(*) AS n, COUNTIF(run_id = @run) AS mine FROM `{DATASET}.{clusters}`"
    row = next(iter(em.bq.query(sql, job_config=config).result()))
    return int(row["n"]), int(row["mine"])


def exported(em: Emulated, uri_pattern: str):
    """The rows of an EXPORT DATA (every shard of gs://bucket/.../name-*.csv)."""
    import pandas as pd

    bucket, _, path = uri_pattern.removeprefix("gs://").partition("/")
    stem = path.removesuffix("*.csv")
    frames = [
        pd.read_csv(io.BytesIO(b.download_as_bytes()), keep_default_na=False, na_values=[""])
        for b in em.gcs.list_blobs(bucket, prefix=stem)
    ]
    return pd.concat(frames, ignore_index=True)


def within_cohorts(z, labels) -> float:
    """Sum of squared distances of the rows of `z` to the mean of their cohort in `labels`."""
    import numpy as np

    z, labels = np.asarray(z), np.asarray(labels)
    return float(
        sum(((z[labels == k] - z[labels == k].mean(axis=0)) ** 2).sum() for k in set(labels))
    )


def compare_engines(memory_dir: Path, warehouse: dict, em: Emulated, seed: int) -> dict:
    """ARI of the top splits and the warehouse/memory ratio of within-cohort sums of squares,
    in the memory run's scaled space, over the rows both call residential."""
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    from clustering.analysis.document import read_model
    from clustering.analysis.sample import make_sample

    manifest = json.loads((memory_dir / "latest" / "run.json").read_text())
    model = read_model(manifest, "memory run.json")
    wanted = ["neighborhood", "top_cluster", "sub_cluster", "excluded_type"]
    mine = pd.read_csv(memory_dir / "latest" / "neighborhood_clusters.csv", usecols=wanted)
    theirs = exported(em, warehouse["outputs"]["exported"]["neighborhood_clusters.csv"])[wanted]
    both = mine.merge(theirs, on="neighborhood", suffixes=("_memory", "_warehouse"))
    resident = both[
        (both["excluded_type_memory"] == "Residential")
        & (both["excluded_type_warehouse"] == "Residential")
    ]
    features = make_sample(ENGINES_ROWS, random_state=seed).set_index("neighborhood")
    z = model.residential.z(features.loc[resident["neighborhood"]])

    memory_ss = within_cohorts(z, resident["sub_cluster_memory"])
    return {
        "rows_compared": len(resident),
        "ari_top_split": round(
            adjusted_rand_score(resident["top_cluster_memory"], resident["top_cluster_warehouse"]),
            6,
        ),
        "within_ss_ratio": round(
            within_cohorts(z, resident["sub_cluster_warehouse"]) / memory_ss, 6
        ),
    }


if __name__ == "__main__":
    # `python bench/warehouse_case.py load TABLE ROWS SEED`: the untimed load, in its own process.
    _, _, name, count, seed_text = sys.argv
    _load_here(name, int(count), int(seed_text))
