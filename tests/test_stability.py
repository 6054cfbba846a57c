"""Bootstrap stability: in [0, 1], deterministic, high for real clusters, low for noise."""

from __future__ import annotations

import numpy as np
import pytest

from clustering.analysis import fits
from clustering.analysis.stability import RESAMPLES, submit_stability


def bootstrap_stability(scaled, top, sub, random_state, sample_size, resamples=RESAMPLES):
    """The stability as the job gets it: started on the fit pool, then waited for."""
    with fits.executor_for(len(scaled)) as pool:
        return submit_stability(pool, scaled, top, sub, random_state, sample_size, resamples)()


def two_level(seed: int = 0, per_blob: int = 60):
    """Top group 0: two well separated blobs (cohorts 0 and 1). Top group 1, far away: one
    blob whose rows are put in cohorts 10 and 11 at random, i.e. two cohorts of noise."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [0.0, 12.0, 0.0], [40.0, 6.0, 0.0]])
    blob = np.repeat(np.arange(3), per_blob)
    matrix = centres[blob] + rng.normal(0, 1, (len(blob), 3))
    top = np.where(blob == 2, 1, 0)
    sub = np.where(blob == 0, 0, np.where(blob == 1, 1, 10 + rng.integers(0, 2, len(blob))))
    return matrix, top, sub


@pytest.fixture(scope="module")
def scored():
    matrix, top, sub = two_level()
    return bootstrap_stability(matrix, top, sub, random_state=42, sample_size=3000)


def test_real_clusters_are_stable_and_noise_is_not(scored):
    assert set(scored.scores) == {0, 1, 10, 11}
    assert scored.scores[0] > 0.95 and scored.scores[1] > 0.95
    assert scored.scores[10] < 0.6 and scored.scores[11] < 0.6


def test_scores_are_jaccards_in_0_1_and_the_run_is_recorded(scored):
    assert all(0.0 <= s <= 1.0 for s in scored.scores.values())
    assert scored.resamples == RESAMPLES == 50
    assert scored.sample_size is None and scored.seed == 42


def test_the_same_seed_gives_the_same_scores_and_another_seed_others(scored):
    matrix, top, sub = two_level()
    assert bootstrap_stability(matrix, top, sub, 42, 3000) == scored
    other = bootstrap_stability(matrix, top, sub, 7, 3000)
    assert other.scores != scored.scores
    assert other.scores[10] < 0.6 < other.scores[0]


def test_above_the_sample_size_a_fixed_seed_sample_is_used():
    matrix, top, sub = two_level(per_blob=200)
    first = bootstrap_stability(matrix, top, sub, 42, sample_size=150, resamples=10)
    assert first.sample_size == 150
    assert first == bootstrap_stability(matrix, top, sub, 42, sample_size=150, resamples=10)
    assert first.scores[0] > 0.9 and first.scores[10] < 0.6


def test_ids_are_kept_whatever_they_are():
    matrix, top, sub = two_level()
    renumbered = np.select([sub == 0, sub == 1, sub == 10], [7, 3, 14], 15)
    scores = bootstrap_stability(matrix, top + 5, renumbered, 42, 3000, resamples=10).scores
    assert set(scores) == {3, 7, 14, 15}
    assert scores[7] > 0.95 and scores[14] < 0.6
