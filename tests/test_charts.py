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
def result():
    settings = AnalysisSettings()
    return cluster(validate_features(make_sample(), settings, "sample").frame, settings)


@pytest.fixture(scope="module")
def expected(result):
    return charts.render(result, random_state=42)


def draw_in_workers(result, renderer):
    for name, (draw, args) in charts.chart_tasks(result, 42).items():
        renderer.submit(name, draw, *args)
    return renderer.collect()


def test_render_gives_the_three_pngs_at_150_dpi(result, expected):
    assert list(expected) == ["elbow_silhouette.png", "pca_clusters.png", "cluster_heatmap.png"]
    assert png_size(expected["elbow_silhouette.png"]) == (14 * 150, 5 * 150)
    assert png_size(expected["pca_clusters.png"]) == (16 * 150, 7 * 150)
    width, height = png_size(expected["cluster_heatmap.png"])
    assert height == round((len(result.features.used) * 0.4 + 2) * 150)
    assert width >= 8 * 150


def test_charts_are_deterministic(result, expected):
    assert charts.render(result, 42) == expected


def test_the_chart_workers_draw_the_same_bytes_as_in_process(result, expected):
    with charts.ChartRenderer() as renderer:
        assert renderer._pid is not None  # fork exists on Linux: the workers really draw
        images = draw_in_workers(result, renderer)
    assert images == expected
    assert renderer._pid is None  # collected and reaped


def test_dead_chart_workers_fall_back_to_drawing_in_process(result, expected):
    with charts.ChartRenderer() as renderer:
        os.kill(renderer._pid, signal.SIGKILL)
        images = draw_in_workers(result, renderer)
    assert images == expected


def test_leaving_early_stops_the_chart_workers():
    with pytest.raises(RuntimeError), charts.ChartRenderer() as renderer:
        pid = renderer._pid
        raise RuntimeError("a failed run")
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_pca_data_carries_the_projection_and_labels(result):
    data = charts.pca_data(result, 42)
    assert data.points.shape == (data.n_rows, 2) and data.n_rows == result.residential.sum()
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
    sampled = charts.pca_data(big, 42, max_points=300)
    assert len(sampled.points) == 300 and sampled.n_rows == big.residential.sum()
    np.testing.assert_array_equal(sampled.points, charts.pca_data(big, 42, max_points=300).points)
    assert charts.pca_clusters(sampled) != charts.pca_clusters(charts.pca_data(big, 42))


def test_cluster_map_is_drawn_when_boundaries_are_given(result):
    ring = np.array([[0, 0], [1, 0], [1, 1], [0, 0]], dtype=float)
    names = result.table["neighborhood"].tolist()
    boundaries = {name: [ring + i] for i, name in enumerate(names[:-1])}
    boundaries["Not In The Table"] = [ring - 5]
    images = charts.render(result, 42, boundaries)
    assert list(images)[-1] == "cluster_map.png"
    assert png_size(images["cluster_map.png"]) == (14 * 150, 10 * 150)
    assert "cluster_map.png" not in charts.render(result, 42)


def test_the_elbow_chart_says_the_k_range_is_a_diagnostic(result, monkeypatch):
    # The PNG's text cannot be read back, so the figure is taken just before it is encoded.
    figures = []
    monkeypatch.setattr(charts, "_png", lambda fig, tight=True: figures.append(fig) or b"")
    charts.elbow_silhouette(result.diagnostics, None)
    (fig,) = figures
    silhouette = fig.axes[1]
    assert "a diagnostic: the top split is always K=2" in silhouette.get_title()
    (legend,) = [t.get_text() for t in silhouette.get_legend().get_texts()]
    assert legend == f"Best silhouette: K = {result.diagnostics.best_k} (diagnostic)"
