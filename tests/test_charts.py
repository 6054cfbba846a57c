import os
import signal

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
def data():
    settings = AnalysisSettings()
    result = cluster(validate_features(make_sample(), settings, "sample").frame, settings)
    return charts.chart_data(result, random_state=42)


def test_render_gives_the_three_pngs_at_150_dpi(data):
    images = charts.render(data)
    assert set(images) == {"elbow_silhouette.png", "pca_clusters.png", "cluster_heatmap.png"}
    assert png_size(images["elbow_silhouette.png"]) == (14 * 150, 5 * 150)
    assert png_size(images["pca_clusters.png"]) == (16 * 150, 7 * 150)
    width, height = png_size(images["cluster_heatmap.png"])
    assert height == round((len(data.zscores) * 0.4 + 2) * 150)
    assert width >= 8 * 150


def test_charts_are_deterministic(data):
    assert charts.render(data) == charts.render(data)


def test_the_chart_process_draws_the_same_bytes_as_in_process(data):
    with charts.ChartRenderer() as renderer:
        assert renderer._pid is not None  # fork exists on Linux: the child really draws
        renderer.submit(data)
        images = renderer.collect()
    assert images == charts.render(data)


def test_a_dead_chart_process_falls_back_to_drawing_in_process(data):
    with charts.ChartRenderer() as renderer:
        os.kill(renderer._pid, signal.SIGKILL)
        renderer.submit(data)
        images = renderer.collect()
    assert images == charts.render(data)


def test_leaving_without_submitting_stops_the_chart_process():
    with charts.ChartRenderer() as renderer:
        pid = renderer._pid
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_chart_data_carries_the_pca_projection_and_labels(data):
    assert data.points.shape == (data.n_rows, 2)
    assert 0 < data.variance[1] <= data.variance[0] < 1
    assert set(data.labels.values()) == {"Stable", "Distressed"}
    assert set(np.unique(data.sub) // 10) == set(data.labels)


def test_profile_zscores_standardise_each_feature_across_sub_clusters():
    profile = pd.DataFrame({0: [1.0, 5.0], 1: [3.0, 5.0], 10: [5.0, 5.0]}, index=["a", "b"])
    scores = charts.profile_zscores(profile)
    np.testing.assert_allclose(scores.loc["a"].to_numpy(), [-1.0, 0.0, 1.0])
    assert (scores.loc["b"] == 0).all()  # no spread: 0, as the notebook's heatmap


def test_large_scatter_draws_a_fixed_seed_sample_and_says_so():
    settings = AnalysisSettings(silhouette_sample_size=500)
    big = cluster(validate_features(make_sample(1500), settings, "s").frame, settings)
    sampled = charts.chart_data(big, 42, max_points=300)
    assert len(sampled.points) == 300 and sampled.n_rows == big.residential.sum()
    again = charts.chart_data(big, 42, max_points=300)
    np.testing.assert_array_equal(sampled.points, again.points)
    assert charts.pca_clusters(sampled) != charts.pca_clusters(charts.chart_data(big, 42))
