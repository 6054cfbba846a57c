import numpy as np
import pandas as pd
import pytest

from clustering import charts
from clustering.model import cluster
from clustering.sample import make_sample
from clustering.settings import AnalysisSettings
from clustering.table import validate_features
from tests.helpers import png_size


@pytest.fixture(scope="module")
def result():
    settings = AnalysisSettings()
    return cluster(validate_features(make_sample(), settings, "sample").frame, settings)


def test_render_all_gives_the_three_pngs_at_150_dpi(result):
    images = charts.render_all(result, random_state=42)
    assert set(images) == {"elbow_silhouette.png", "pca_clusters.png", "cluster_heatmap.png"}
    assert png_size(images["elbow_silhouette.png"]) == (14 * 150, 5 * 150)
    assert png_size(images["pca_clusters.png"]) == (16 * 150, 7 * 150)
    width, height = png_size(images["cluster_heatmap.png"])
    n_features = len(result.features.used)
    assert height == round((n_features * 0.4 + 2) * 150)
    assert width >= 8 * 150


def test_charts_are_deterministic(result):
    assert charts.render_all(result, 42) == charts.render_all(result, 42)


def test_profile_zscores_standardise_each_feature_across_sub_clusters():
    profile = pd.DataFrame({0: [1.0, 5.0], 1: [3.0, 5.0], 10: [5.0, 5.0]}, index=["a", "b"])
    scores = charts.profile_zscores(profile)
    np.testing.assert_allclose(scores.loc["a"].to_numpy(), [-1.0, 0.0, 1.0])
    assert (scores.loc["b"] == 0).all()  # no spread: 0, as the notebook's heatmap


def test_large_scatter_draws_a_sample_and_says_so():
    settings = AnalysisSettings(silhouette_sample_size=500)
    big = cluster(validate_features(make_sample(1500), settings, "s").frame, settings)
    sampled = charts.pca_clusters(big, 42, max_points=300)
    assert sampled != charts.pca_clusters(big, 42)
    assert png_size(sampled) == (16 * 150, 7 * 150)
