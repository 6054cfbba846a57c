"""How sure each cohort is: bootstrap stability in the manner of Hennig's clusterboot.

Each of `resamples` bootstrap resamples (rows drawn with replacement, fixed seed) is clustered
again by the same two-level method with the same Ks: k-means K=2 for the top split, then each
new top group with the sub K of the original top group it mostly holds. A cohort's score in
one resample is the Jaccard similarity between the cohort and its best-matching new cluster,
both restricted to the distinct rows the resample drew; its stability is the mean over the
resamples in which it has rows. 1 means it comes back whole every time; below about 0.6 it is
commonly read as not a real cluster (Hennig 2007), and the run warns.

The re-fits use fewer k-means initialisations (RESAMPLE_N_INIT) than the final fits: they
estimate how a cohort varies, and 50 of them must stay cheap. Above `sample_size` rows (the
silhouette threshold), the resamples are drawn from a fixed-seed sample of that many rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from clustering.analysis import fits

RESAMPLES = 50
RESAMPLE_N_INIT = 3
UNSTABLE = 0.6


@dataclass(frozen=True)
class Stability:
    """Mean Jaccard per cohort id (NaN for a cohort no resample drew), and how it was taken.

    sample_size: rows the resamples were drawn from, or None when all residential rows.
    """

    scores: dict[int, float]
    resamples: int
    sample_size: int | None
    seed: int


def submit_stability(
    pool: Executor,
    scaled: np.ndarray,
    top: np.ndarray,
    sub: np.ndarray,
    random_state: int,
    sample_size: int,
    resamples: int = RESAMPLES,
) -> Callable[[], Stability]:
    """The stability of each sub-cluster of a two-level clustering of `scaled`, started on
    `pool` (the fit workers above `fits.PARALLEL_ROWS` rows: a sample of a large table is still
    50 re-clusterings of 3,000 rows, twice as fast on two cores). The caller goes on, then
    calls the result, before it leaves the pool, for the Stability.

    top, sub: the top group and sub-cluster of each row of `scaled` (any ids).
    random_state: seeds the sample, the resamples and every re-fit.
    sample_size: above this many rows, work on a fixed-seed sample of this size.
    """
    rng = np.random.default_rng(random_state)
    n = len(scaled)
    sampled = n > sample_size
    if sampled:
        rows = np.sort(rng.choice(n, sample_size, replace=False))
        scaled, top, sub = scaled[rows], top[rows], sub[rows]
    sub_k = {int(t): len(np.unique(sub[top == t])) for t in np.unique(top)}
    cohorts, codes = np.unique(sub, return_inverse=True)
    draws = rng.integers(0, len(scaled), size=(resamples, len(scaled)))
    seeds = rng.integers(0, 2**31 - 1, size=resamples)
    # One task per core's share of the resamples: each sets the thread limit once.
    shares = np.array_split(np.arange(resamples), min(resamples, os.cpu_count() or 1) or 1)
    pending = [
        pool.submit(_resamples, scaled, top, codes, len(cohorts), sub_k, draws[s], seeds[s])
        for s in shares
        if len(s)
    ]

    def stability() -> Stability:
        per_resample = np.concatenate([p.result() for p in pending]) if pending else None
        with np.errstate(invalid="ignore"):
            means = (
                np.full(len(cohorts), np.nan)
                if per_resample is None
                else np.nanmean(per_resample, axis=0)
            )
        return Stability(
            scores={int(c): float(m) for c, m in zip(cohorts, means, strict=True)},
            resamples=resamples,
            sample_size=sample_size if sampled else None,
            seed=random_state,
        )

    return stability


def _resamples(scaled, top, codes, n_cohorts, sub_k, draws, seeds) -> np.ndarray:
    """Best Jaccards of several resamples (rows: resamples, columns: cohorts)."""
    with fits.one_thread():
        return np.array(
            [
                _best_jaccards(scaled, top, codes, n_cohorts, sub_k, draw, int(seed))
                for draw, seed in zip(draws, seeds, strict=True)
            ]
        ).reshape(len(draws), n_cohorts)


def _best_jaccards(scaled, top, codes, n_cohorts, sub_k, draw, seed) -> np.ndarray:
    """One resample: re-cluster the drawn rows, then each cohort's best Jaccard (NaN when the
    resample drew none of its rows)."""
    labels = _recluster(scaled[draw], top[draw], draw, sub_k, seed)
    # Each distinct row once: duplicates of a row sit at the same point, so share its label.
    rows, first = np.unique(draw, return_index=True)
    new = np.unique(labels[first], return_inverse=True)[1]
    old = codes[rows]
    overlap = np.zeros((n_cohorts, new.max() + 1))
    np.add.at(overlap, (old, new), 1)
    union = overlap.sum(axis=1, keepdims=True) + overlap.sum(axis=0, keepdims=True) - overlap
    with np.errstate(invalid="ignore", divide="ignore"):
        best = (overlap / union).max(axis=1)
    best[overlap.sum(axis=1) == 0] = np.nan
    return best


def _recluster(matrix, original_top, drawn, sub_k, seed) -> np.ndarray:
    """The two-level clustering of one resample: top K=2, then each new top group with the
    sub K of the original group most of its rows came from."""
    top = fits.kmeans_labels(matrix, 2, RESAMPLE_N_INIT, seed)
    labels = np.zeros(len(matrix), dtype=np.int64)
    for group in np.unique(top):
        mask = top == group
        origin = np.bincount(original_top[mask] - original_top.min()).argmax() + original_top.min()
        k = min(sub_k[int(origin)], len(np.unique(drawn[mask])))
        if k > 1:
            labels[mask] = fits.kmeans_labels(matrix[mask], k, RESAMPLE_N_INIT, seed)
        labels[mask] += group * 1000
    return labels
