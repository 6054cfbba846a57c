import os
import signal

import numpy as np
import pytest
from matplotlib import colormaps

from clustering.analysis.model import cluster
from clustering.analysis.sample import make_sample
from clustering.outputs import charts
from clustering.outputs.geo import parse_boundaries
from clustering.outputs.palette import Cell, CohortView
from clustering.settings import AnalysisSettings
from clustering.table import validate_features
from tests.helpers import png_colors, png_size, profiles_of, real_table, with_cohorts
from tests.test_geo import REAL_BOUNDARIES


def view_of(result) -> CohortView:
    table = with_cohorts(result.table)
    return CohortView(table, profiles_of(table, list(result.features.used)))


@pytest.fixture(scope="module")
def result():
    settings = AnalysisSettings()
    return cluster(validate_features(make_sample(), settings, "sample").frame, settings)


@pytest.fixture(scope="module")
def view(result):
    return view_of(result)


@pytest.fixture(scope="module")
def expected(result, view):
    return charts.render(result, view, random_state=42)


def draw_in_workers(result, view, renderer):
    for name, (draw, args) in charts.chart_tasks(result, view, 42).items():
        renderer.submit(name, draw, *args)
    return renderer.collect()


def test_render_gives_the_three_pngs_at_150_dpi(result, view, expected):
    assert list(expected) == ["elbow_silhouette.png", "pca_clusters.png", "cluster_heatmap.png"]
    assert png_size(expected["elbow_silhouette.png"]) == (14 * 150, 5 * 150)
    assert png_size(expected["pca_clusters.png"]) == (16 * 150, 8 * 150)
    cohorts = result.table["sub_cluster"].ge(0).groupby(result.table["sub_cluster"]).any().sum()
    assert png_size(expected["cluster_heatmap.png"]) == (
        round(max(8, 1.75 * cohorts + 4.9) * 150),
        round((len(result.features.used) * 0.42 + 2.6) * 150),
    )


def test_charts_are_deterministic(result, view, expected):
    assert charts.render(result, view, 42) == expected


def test_the_chart_workers_draw_the_same_bytes_as_in_process(result, view, expected):
    with charts.ChartRenderer() as renderer:
        assert renderer._pid is not None  # fork exists on Linux: the workers really draw
        images = draw_in_workers(result, view, renderer)
    assert images == expected
    assert renderer._pid is None  # collected and reaped


def test_dead_chart_workers_fall_back_to_drawing_in_process(result, view, expected):
    with charts.ChartRenderer() as renderer:
        os.kill(renderer._pid, signal.SIGKILL)
        images = draw_in_workers(result, view, renderer)
    assert images == expected


def test_leaving_early_stops_the_chart_workers():
    with pytest.raises(RuntimeError), charts.ChartRenderer() as renderer:
        pid = renderer._pid
        raise RuntimeError("a failed run")
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_pca_data_carries_the_projection_and_the_cohort_styles(result, view):
    data = charts.pca_data(result, view, 42)
    assert data.points.shape == (data.n_rows, 2) and data.n_rows == result.residential.sum()
    assert 0 < data.variance[1] <= data.variance[0] < 1
    assert set(data.top) == {"Stable", "Distressed"}
    assert {s.sub_cluster for s in data.styles} == set(np.unique(data.sub))
    assert all(s.hatch is None for s in data.styles)  # excluded rows are not in the scatter


def test_the_heatmap_lists_cohorts_in_palette_order_with_sizes_and_stability(view):
    data = charts.heatmap_data(view)
    assert data.features == tuple(view.profiles.index.index)
    assert len(data.cells) == len(data.features)
    assert all(len(row) == len(data.styles) for row in data.cells)
    table = view.table
    for style in data.styles:
        members = table[table["sub_cluster"] == style.sub_cluster]
        assert style.rows == len(members)
        assert data.stability[style.sub_cluster] == members["cohort_stability"].iloc[0]
    # Each row says which way is better, or that none is known.
    directions = dict(zip(data.features, data.directions, strict=True))
    assert directions["crime_per_capita"] == "higher_is_worse"
    assert directions["owner_occupancy_rate"] == "higher_is_better"
    assert directions["med_age"] is None


def test_heatmap_colours_mean_better_or_worse_and_grey_without_a_direction():
    better, worse = Cell("150", 0.58, 0.58, "better", True), Cell("150", 0.58, -0.58, "worse", True)
    judged = colormaps["BrBG"]
    teal, brown = charts._cell_color(better, judged), charts._cell_color(worse, judged)
    assert teal[2] > teal[0] and brown[0] > brown[2]  # teal is blue-green, brown red-yellow
    high = charts._cell_color(Cell("+1.0 SD", 1.0, None, "higher", True), judged)
    low = charts._cell_color(Cell("-1.0 SD", -1.0, None, "lower", True), judged)
    assert high[0] == high[1] == high[2] and low[0] == low[1] == low[2]  # greys
    assert high[0] < low[0]  # darker is higher


def test_large_scatter_draws_a_fixed_seed_sample_and_says_so():
    settings = AnalysisSettings(silhouette_sample_size=500)
    big = cluster(validate_features(make_sample(1500), settings, "s").frame, settings)
    view = view_of(big)
    sampled = charts.pca_data(big, view, 42, max_points=300)
    assert len(sampled.points) == 300 and sampled.n_rows == big.residential.sum()
    again = charts.pca_data(big, view, 42, max_points=300)
    np.testing.assert_array_equal(sampled.points, again.points)
    assert charts.pca_clusters(sampled) != charts.pca_clusters(charts.pca_data(big, view, 42))
    # Both legends count the plotted sample, and say so; in full, they count every row.
    groups, cohorts, title = charts.pca_legends(sampled)
    assert title == f"counts of the 300 plotted rows, a sample of {sampled.n_rows:,}"
    counts = [int(label.rsplit("(", 1)[1].rstrip(")")) for label in groups.values()]
    assert sum(counts) == 300
    in_cohorts = [
        int(label.replace("\n", " ").rsplit("n = ", 1)[1].rstrip(")")) for label in cohorts.values()
    ]
    assert sum(in_cohorts) == 300
    full = charts.pca_legends(charts.pca_data(big, view, 42))
    assert full[2] is None
    assert sum(int(v.rsplit("(", 1)[1].rstrip(")").replace(",", "")) for v in full[0].values()) == (
        big.residential.sum()
    )


def test_cluster_map_is_drawn_when_boundaries_are_given(result, view):
    ring = np.array([[0, 0], [1, 0], [1, 1], [0, 0]], dtype=float)
    names = result.table["neighborhood"].tolist()
    boundaries = {name: [ring + i] for i, name in enumerate(names[:-1])}
    boundaries["Not In The Table"] = [ring - 5]
    images = charts.render(result, view, 42, boundaries, "2026-11-29 12:00 UTC")
    assert list(images)[-1] == "cluster_map.png"
    assert png_size(images["cluster_map.png"]) == (14 * 150, 10 * 150)
    assert "cluster_map.png" not in charts.render(result, view, 42)
    dated = charts.render(result, view, 42, boundaries, "2026-11-30 12:00 UTC")
    assert dated["cluster_map.png"] != images["cluster_map.png"]  # the date is in the title


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
    assert fig.axes[0].get_title() == "Elbow method"  # every row: nothing to say


def test_the_elbow_chart_of_a_sampled_table_says_which_rows_it_was_fitted_on(result, monkeypatch):
    figures = []
    monkeypatch.setattr(charts, "_png", lambda fig, tight=True: figures.append(fig) or b"")
    charts.elbow_silhouette(result.diagnostics, 3_000, 5_000)
    (fig,) = figures
    assert fig.axes[0].get_title() == (
        "Elbow method\n(fitted on a key-hashed sample of 5,000 rows)"
    )
    assert "(sample of 3,000 rows)" in fig.axes[1].get_title()


@pytest.fixture(scope="module")
def real():
    settings = AnalysisSettings()
    result = cluster(validate_features(real_table(), settings, "real").frame, settings)
    return result, view_of(result), parse_boundaries(REAL_BOUNDARIES.read_bytes(), "real")


def test_the_map_covers_every_neighborhood_with_a_boundary(real):
    _, view, boundaries = real
    data = charts.map_data(view, "2026-11-29 12:00 UTC")
    layers = charts.map_layers(boundaries, data)
    drawn = [name for _, names, _ in layers for name in names]
    assert sorted(drawn) == sorted(boundaries)  # each boundary drawn exactly once
    assert all(style is not None for style, _, _ in layers)  # the real table has every one
    for style, names, rings in layers:
        assert set(data.labels[name] for name in names) == {style.label}
        assert len(rings) == sum(len(boundaries[name]) for name in names)
    hatched = {style.label for style, _, _ in layers if style.hatch}
    assert hatched == set(view.table.loc[view.table["sub_cluster"] < 0, "cohort_name"])


def test_boundaries_without_a_row_are_drawn_as_outlines(real):
    _, view, boundaries = real
    extra = {**boundaries, "Nowhere": [np.array([[0, 0], [1, 0], [1, 1]], dtype=float)]}
    layers = charts.map_layers(extra, charts.map_data(view, ""))
    assert layers[-1][0] is None and layers[-1][1] == ["Nowhere"]


def test_the_real_map_paints_every_cohort_in_its_palette_colour(real):
    _, view, boundaries = real
    image = charts.cluster_map(boundaries, charts.map_data(view, "2026-11-29 12:00 UTC"))
    assert png_size(image) == (14 * 150, 10 * 150)
    colors = png_colors(image)
    assert {style.color for style in view.styles} <= colors


# --- Words for people, never cut (issue 21) ---------------------------------------------------

# Another city's shape: upper-case names, long ones, a key column that ends in NAME.
LONG_PREFIX = "PERCENT_OF_HOUSEHOLDS_IN_A_VERY_LONG_DESCRIPTION_OF_"
LONG_LABEL = "share of households living in housing that is crowded, in a very long label"


@pytest.fixture(scope="module")
def long_named():
    from clustering.analysis.identity import identify
    from clustering.settings import DEFAULT_CLUSTERING_FEATURES, DEFAULT_FEATURE_DIRECTIONS
    from clustering.stages.drawing import cohort_view

    renamed = {f: LONG_PREFIX + f.upper() for f in DEFAULT_CLUSTERING_FEATURES}
    renamed |= {"neighborhood": "COMMUNITY_AREA_NAME", "population": "TOTAL_POPULATION"}
    table = make_sample().rename(columns=renamed)
    features = tuple(renamed[f] for f in DEFAULT_CLUSTERING_FEATURES if f != "population")
    settings = AnalysisSettings(
        key_column="COMMUNITY_AREA_NAME",
        population_column="TOTAL_POPULATION",
        clustering_features=features,
        severity_feature=renamed["crime_per_capita"],
        feature_directions=tuple((renamed[f], d) for f, d in DEFAULT_FEATURE_DIRECTIONS),
        feature_labels=((renamed["med_age"], LONG_LABEL),),
    )
    result = cluster(validate_features(table, settings, "long").frame, settings)
    named = identify(
        result, None, {}, "run-1", settings.key_column, settings.directions, settings.labels
    )
    ring = np.array([[0, 0], [1, 0], [1, 1], [0, 0]], dtype=float)
    names = result.table["COMMUNITY_AREA_NAME"].tolist()
    boundaries = {name: [ring + np.array([i % 20, i // 20])] for i, name in enumerate(names)}
    return result, cohort_view(named, settings), boundaries


def drawn_figures(monkeypatch) -> list:
    """The figures the charts draw, kept as they were encoded (the real _png runs)."""
    figures, encode = [], charts._png

    def keep(fig, tight=True):
        png = encode(fig, tight)
        figures.append(fig)
        return png

    monkeypatch.setattr(charts, "_png", keep)
    return figures


def drawn_tick_labels(axis) -> list:
    """The labels of the major ticks inside the axis's view (those matplotlib draws)."""
    low, high = sorted(axis.get_view_interval())
    slack = (high - low) * 1e-9
    ticks = [t for t in axis.get_major_ticks() if low - slack <= t.get_loc() <= high + slack]
    return [label for t in ticks for label in (t.label1, t.label2)]


def outside(fig) -> list[str]:
    """The tick labels, titles and legend texts of `fig` not wholly inside it, as drawn at
    the figure's own dpi (a legend's texts keep the positions of the last draw)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    texts = [fig.texts]
    for ax in fig.axes:
        texts += [drawn_tick_labels(ax.xaxis), drawn_tick_labels(ax.yaxis), [ax.title]]
        legend = ax.get_legend()
        if legend is not None:
            texts.append([*legend.get_texts(), legend.get_title()])
    cut = []
    for text in (t for group in texts for t in group):
        if not text.get_visible() or not text.get_text():
            continue
        box = text.get_window_extent(renderer)
        if box.x0 < -0.5 or box.y0 < -0.5 or box.x1 > width + 0.5 or box.y1 > height + 0.5:
            cut.append(f"{text.get_text()!r} at {box.bounds} in {width}x{height}")
    return cut


def test_no_label_of_any_chart_is_cut_at_the_figures_edge(long_named, monkeypatch):
    result, view, boundaries = long_named
    figures = drawn_figures(monkeypatch)
    images = charts.render(result, view, 42, boundaries, "2026-12-07 06:00 UTC")
    assert len(figures) == len(images) == 4
    for name, fig in zip(images, figures, strict=True):
        assert not outside(fig), (name, outside(fig))


def test_the_charts_read_in_peoples_words(long_named, monkeypatch):
    result, view, boundaries = long_named
    figures = drawn_figures(monkeypatch)
    charts.render(result, view, 42, boundaries, "")
    _, pca, heatmap, map_ = figures
    rows = [t.get_text().replace("\n", " ") for t in heatmap.axes[0].get_yticklabels()]
    assert rows[1].startswith("percent of households in a very long description of")
    assert all("_" not in row and row == row.lower() for row in rows)
    assert rows[0] == f"{LONG_LABEL} (no direction)"
    assert "community areas" in pca.texts[0].get_text() or any(
        "community areas" in ax.get_title() for ax in pca.axes
    ), [ax.get_title() for ax in pca.axes]
    assert map_.axes[0].get_title() == "Cohorts of community areas"
    names = " ".join(view.table["cohort_name"].unique())
    assert "_" not in names and "PERCENT" not in names
