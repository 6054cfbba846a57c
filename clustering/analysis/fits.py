"""k-means fits as independent tasks, run in-process or on the machine's cores.

Each K of a search is its own seeded fit, so the searches, the top split and the excluded
groups can run side by side without changing a single label: results depend on the inputs and
`random_state`, never on scheduling.

Every fit runs with one OpenMP and one BLAS thread. Measured here, scikit-learn's k-means on
20,000 rows was twice as fast on one thread as on two; the cores are used instead by running
whole fits in parallel in forked worker processes (large tables only: forking costs more than
a small table's fits). Workers are forked while the parent has never started an OpenMP
thread, which keeps the fork safe.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

# From this many rows on, fits run in worker processes.
PARALLEL_ROWS = 5_000


@dataclass(frozen=True)
class Score:
    """Inertia and mean silhouette of one k-means fit."""

    k: int
    inertia: float
    silhouette: float


def fit_centroids(
    matrix: np.ndarray, k: int, n_init: int, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Labels of the best of `n_init` seeded k-means++ / Lloyd fits, and its centroids
    (k x features): each label is its row's nearest centroid, which the model document
    records."""
    from sklearn.cluster import KMeans

    with one_thread():
        model = KMeans(n_clusters=k, random_state=random_state, n_init=n_init).fit(matrix)
        return model.labels_.astype(np.int64), model.cluster_centers_


# How many of the sample's best starts a large table's final fit refines over every row.
REFINED_STARTS = 3


def fit_seeded(
    matrix: np.ndarray, seen: np.ndarray, k: int, n_init: int, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """`fit_centroids` for a large table: `n_init` seeded fits on the rows `seen` (the K
    search's sample); the REFINED_STARTS best of them each run on to convergence over every
    row, and the one with the least inertia over every row is kept. Every row is assigned by
    a fit over every row; only the starts come from the sample."""
    from sklearn.cluster import KMeans

    rng = np.random.RandomState(random_state)
    seeds = rng.randint(np.iinfo(np.int32).max, size=n_init)
    with one_thread():
        starts = []
        for seed in seeds:
            model = KMeans(n_clusters=k, n_init=1, random_state=int(seed)).fit(matrix[seen])
            starts.append((model.inertia_, model.cluster_centers_))
        starts.sort(key=lambda start: start[0])
        best = None
        for _, centres in starts[:REFINED_STARTS]:
            model = KMeans(n_clusters=k, init=centres, n_init=1).fit(matrix)
            if best is None or model.inertia_ < best.inertia_:
                best = model
        return best.labels_.astype(np.int64), best.cluster_centers_


def kmeans_labels(matrix: np.ndarray, k: int, n_init: int, random_state: int) -> np.ndarray:
    """Labels of a fit without setting the thread limit, for a caller that holds `one_thread()`
    around many small fits: setting the limit costs milliseconds, as much as a small fit."""
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, random_state=random_state, n_init=n_init)
    return model.fit_predict(matrix).astype(np.int64)


def fit_and_score(
    matrix: np.ndarray, k: int, n_init: int, random_state: int, sample_size: int | None
) -> Score:
    """Fit k-means and score it; the silhouette is exact up to `sample_size` rows and taken on
    a fixed-seed sample of that size above it. A fit with fewer than two distinct clusters
    scores -1, so it is never chosen."""
    from sklearn.cluster import KMeans

    with one_thread():
        model = KMeans(n_clusters=k, random_state=random_state, n_init=n_init)
        labels = model.fit_predict(matrix)
        return Score(
            k, float(model.inertia_), silhouette(matrix, labels, random_state, sample_size)
        )


def silhouette(
    matrix: np.ndarray, labels: np.ndarray, random_state: int, sample_size: int | None
) -> float:
    from sklearn.metrics import silhouette_score

    n_labels = len(np.unique(labels))
    if not 2 <= n_labels <= len(labels) - 1:
        return -1.0
    if sample_size is None or len(labels) <= sample_size:
        return float(silhouette_score(matrix, labels))
    try:
        return float(
            silhouette_score(matrix, labels, sample_size=sample_size, random_state=random_state)
        )
    except ValueError:  # the sample happened to hold a single cluster
        return -1.0


class InProcess(Executor):
    """Runs each task at submit time: the executor for small tables."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:
            future.set_exception(error)
        return future


def executor_for(n_rows: int) -> Executor:
    """In-process below PARALLEL_ROWS or on one core; otherwise a pool of forked workers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if n_rows < PARALLEL_ROWS or (cores or 1) < 2 or not hasattr(os, "fork"):
        return InProcess()
    # Imported before the fork, so that no worker imports them again for its first fit.
    import sklearn.cluster
    import sklearn.metrics  # noqa: F401

    return ProcessPoolExecutor(max_workers=cores, mp_context=multiprocessing.get_context("fork"))


def one_thread():
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)
