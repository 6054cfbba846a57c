"""The K searches of a large table on a key-hashed sample (clustering.analysis.search_sample)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from clustering.analysis import fits, search_sample
from clustering.analysis.model import cluster, search_k
from clustering.analysis.sample import make_sample
from clustering.settings import AnalysisSettings
from clustering.table import validate_features

SETTINGS = AnalysisSettings(k_max=5, sub_k_max=4)
REPO = Path(__file__).resolve().parent.parent


def _sampled(keys: list[str], size: int) -> set[str]:
    return {keys[i] for i in search_sample.hashed_order(keys)[:size]}


def test_the_sample_is_the_keys_with_the_smallest_md5_whatever_the_order():
    keys = [f"Area {i}" for i in range(500)]
    order = search_sample.hashed_order(keys)
    assert sorted(order) == list(range(500))
    # The warehouse engine's rule: the first 15 hex digits of MD5(CAST(key AS STRING)).
    digest = {k: int(hashlib.md5(k.encode()).hexdigest()[:15], 16) for k in keys}
    assert [keys[i] for i in order] == sorted(keys, key=digest.get)
    assert _sampled(list(reversed(keys)), 40) == _sampled(keys, 40)
    # More rows elsewhere in the table do not change which of these are searched: a new row
    # joins the sample only by its own small hash, pushing out the largest of these.
    more = _sampled([*keys, *(f"Other {i}" for i in range(500))], 40)
    kept = more & set(keys)
    assert 0 < len(kept) < 40 and kept == _sampled(keys, len(kept))


def test_tables_up_to_the_size_search_every_row():
    table = make_sample(600, random_state=3)
    result = cluster(validate_features(table, SETTINGS, "t").frame, SETTINGS)
    assert result.search_sample_size is None
    # The documented sizes (docs/analysis.md).
    assert search_sample.SEARCH_SAMPLE_ROWS == 20_000
    assert search_sample.DIAGNOSTIC_SAMPLE_ROWS == 5_000


def _lowered(patch) -> None:
    """The sizes lowered for a 3,000-row table: searches on 600 hashed rows, the K diagnostic
    on the first 200 of them."""
    patch.setattr(search_sample, "SEARCH_SAMPLE_ROWS", 600)
    patch.setattr(search_sample, "DIAGNOSTIC_SAMPLE_ROWS", 200)


@pytest.fixture(scope="module")
def sampled():
    """A 3,000-row table searched on a hashed sample (the sizes lowered for the test)."""
    with pytest.MonkeyPatch.context() as patch:
        _lowered(patch)
        frame = validate_features(make_sample(3_000, random_state=11), SETTINGS, "t").frame
        result = cluster(frame, SETTINGS)
    return frame, result


def test_above_the_size_the_searches_see_the_sample_and_the_final_fits_every_row(sampled):
    frame, result = sampled
    assert result.search_sample_size == 600 and result.diagnostic_sample_size == 200
    keys = frame.loc[result.residential, SETTINGS.key_column]
    # The K diagnostic is the search over the first 200 of the hashed order only.
    order = search_sample.hashed_order(keys)
    rows = np.sort(order[:200])  # in the table's order, as the search sees them
    alone = search_k(result.scaled[rows], list(result.diagnostics.ks), SETTINGS)
    assert alone.inertias == pytest.approx(result.diagnostics.inertias)
    assert alone.silhouettes == pytest.approx(result.diagnostics.silhouettes)
    # Each group's sub-K search saw the group's rows among the 600.
    searched = np.zeros(len(keys), dtype=bool)
    searched[order[:600]] = True
    top = result.table.loc[result.residential, "top_cluster"].astype(int).to_numpy()
    for group in result.top_groups:
        seen = result.scaled[searched & (top == group.top)]
        again = search_k(seen, list(group.search.ks), SETTINGS)
        assert again.silhouettes == pytest.approx(group.search.silhouettes)
    # Every residential row has a sub-cluster, and each centroid is the mean of all its rows
    # (a k-means fit over every row, to its tolerance), not of the sampled ones (which would
    # be a tenth of a standard deviation away).
    resident = result.table.loc[result.residential]
    assert (resident["sub_cluster"].astype(int) >= 0).all()
    subs = resident["sub_cluster"].astype(int).to_numpy()
    for sub, (_, centre) in result.centroids.sub.items():
        members = result.scaled[subs == sub]
        assert len(members) > 0
        np.testing.assert_allclose(members.mean(axis=0), centre, atol=0.02)


def test_a_sampled_search_is_repeatable(sampled):
    frame, result = sampled
    with pytest.MonkeyPatch.context() as patch:
        _lowered(patch)
        again = cluster(frame, SETTINGS)
    assert again.diagnostics == result.diagnostics
    assert again.table["sub_cluster"].tolist() == result.table["sub_cluster"].tolist()


def test_run_json_says_what_the_k_searches_saw(tmp_path, monkeypatch):
    import json

    from clustering.job import RunRequest, run_job
    from clustering.settings import JobSettings

    make_sample(800, random_state=4).to_csv(tmp_path / "f.csv", index=False)

    def manifest(out: str) -> dict:
        settings = JobSettings(
            features_source=str(tmp_path / "f.csv"),
            artifacts_dest=str(tmp_path / out),
            analysis=SETTINGS,
        )
        run_job(settings, RunRequest(trigger="test"))
        return json.loads((tmp_path / out / "latest" / "run.json").read_text(encoding="utf-8"))

    assert manifest("all")["k_search"] == {
        "method": "every row",
        "sample_size": None,
        "diagnostic_sample_size": None,
    }
    monkeypatch.setattr(search_sample, "SEARCH_SAMPLE_ROWS", 300)
    monkeypatch.setattr(search_sample, "DIAGNOSTIC_SAMPLE_ROWS", 100)
    assert manifest("sampled")["k_search"] == {
        "method": "sampled",
        "sample_size": 300,
        "diagnostic_sample_size": 100,
    }


def test_a_seeded_final_fit_keeps_the_refined_start_with_the_least_inertia_over_every_row():
    # Uniform points: many local minima, so the sample's best start is not the best overall.
    matrix = np.random.default_rng(5).uniform(size=(3_000, 4))
    seen = np.arange(0, 3_000, 10)
    labels, centres = fits.fit_seeded(matrix, seen, k=6, n_init=10, random_state=7)

    def inertia(labels, centres) -> float:
        return float(((matrix - centres[labels]) ** 2).sum())

    assert len(labels) == len(matrix) and set(labels) == set(range(6))
    # Converged over every row: each centre is the mean of its rows.
    for label, centre in enumerate(centres):
        np.testing.assert_allclose(matrix[labels == label].mean(axis=0), centre, atol=1e-6)
    # Continuing only the sample's best start ends at a worse fit over every row here.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fits, "REFINED_STARTS", 1)
        only_best = inertia(*fits.fit_seeded(matrix, seen, k=6, n_init=10, random_state=7))
    assert inertia(labels, centres) < only_best - 1.0
    again = fits.fit_seeded(matrix, seen, k=6, n_init=10, random_state=7)
    assert (again[0] == labels).all()


# What `python -m clustering run` wrote at 7b15709, the code before the large-table work
# (issue 22), hashed: the clusters and excluded CSVs and run.json, less what differs run to run
# (ids, times, output addresses, versions, the input's path) and k_search, which it added.
# The hashes were taken from that commit's runs (the 3,000 rows written by `python -m clustering
# sample --rows 3000 --random-state 5`).
BEFORE_LARGE_TABLES = {
    "real table": ("060f40e7a2ff1c2d", "174e4e261e4502fd", "fe7643e6574cc107"),
    "built-in sample": ("e49435daba6c847d", "b8997ea2b1c2b99b", "5a7eeacec0eefc8c"),
    "3,000 rows": ("5c48ce00b6cdf244", "e8a43f56f0574949", "424ccb4e5ca66e53"),
}
_VOLATILE = {"run_id", "started_at", "finished_at", "outputs", "timings_seconds", "versions"}


def _results(latest) -> tuple[str, str, str]:
    import csv
    import io
    import json

    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:16]

    text = (latest / "neighborhood_clusters.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    kept = [i for i, name in enumerate(rows[0]) if name not in ("run_id", "_clustered_at")]
    clusters = io.StringIO()
    csv.writer(clusters, lineterminator="\n").writerows([[r[i] for i in kept] for r in rows])
    manifest = json.loads((latest / "run.json").read_text(encoding="utf-8"))
    assert manifest.pop("k_search")["method"] == "every row"
    manifest = {k: v for k, v in manifest.items() if k not in _VOLATILE}
    # The input's path, wherever it shows (its own field, the warnings), as one word.
    text = json.dumps(manifest, sort_keys=True).replace(manifest["input"]["source"], "<features>")
    return (
        digest(clusters.getvalue().encode()),
        digest((latest / "excluded_neighborhood_analysis.csv").read_bytes()),
        digest(text.encode()),
    )


@pytest.mark.parametrize("name", sorted(BEFORE_LARGE_TABLES))
def test_results_at_3000_rows_or_fewer_are_what_they_were_before_the_large_table_work(
    name, tmp_path
):
    from clustering.adapters.local import replace_table
    from clustering.cli import main

    features = {
        "real table": [
            "--features",
            str(REPO / "data/baltimore/baltimore_neighborhood_features.csv"),
        ],
        "built-in sample": [],
        "3,000 rows": ["--features", str(tmp_path / "f.csv")],
    }[name]
    replace_table(str(tmp_path / "f.csv"), make_sample(3_000, random_state=5))
    assert main(["run", *features, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert _results(tmp_path / "out" / "latest") == BEFORE_LARGE_TABLES[name]
