"""The three charts of the notebook, rendered to PNG bytes at 150 dpi.

On a small table, importing matplotlib and drawing cost more than the clustering itself, so
both leave the critical path: `ChartRenderer` forks a worker that imports matplotlib while the
parent reads and clusters, and that worker forks a second one (sharing the import), so the
charts are drawn two at a time; the elbow chart starts as soon as the K diagnostics are known.
Where fork is unavailable, or a worker fails, the charts are drawn in-process: the same
functions, the same bytes.

Figures use matplotlib's object API with the Agg canvas: no pyplot, no global figure state.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from clustering.analysis.model import TOP_K, ClusteringResult, KSearch
from clustering.naming import PNG_ELBOW, PNG_HEATMAP, PNG_MAP, PNG_PCA
from clustering.outputs.palette import (
    NO_ROW_EDGE,
    SCALE,
    Cell,
    CohortStyle,
    CohortView,
    cell,
    cohort_labels,
    group_color,
)
from clustering.settings import HIGHER_IS_BETTER

DPI = 150
# Above this many residential rows the scatter draws a fixed-seed sample: a PNG cannot show
# more points, and drawing 250k markers would dominate the run.
MAX_SCATTER_POINTS = 20_000


@dataclass(frozen=True)
class PcaData:
    """The drawn residential rows on their first two principal components.

    points: at most MAX_SCATTER_POINTS rows (a fixed-seed sample above that).
    variance: the share of variance each component explains.
    top, sub: top group labels and stable sub-cluster ids of the drawn rows.
    styles: the residential cohorts' names and colours (clustering.outputs.palette).
    n_rows: all residential rows (to say when the scatter is a sample).
    rows_called: what the rows are ("neighborhoods"), for the title.
    """

    points: np.ndarray
    variance: tuple[float, float]
    top: np.ndarray
    sub: np.ndarray
    styles: tuple[CohortStyle, ...]
    n_rows: int
    rows_called: str = "neighborhoods"


@dataclass(frozen=True)
class HeatmapData:
    """Each cohort's cell per feature (rows: features; columns: residential cohorts in the
    order of `styles`), each feature's direction (None: none known) and the stabilities;
    `labels` are the features' words for people, in the order of `features`."""

    features: tuple[str, ...]
    cells: tuple[tuple[Cell, ...], ...]
    directions: tuple[str | None, ...]
    styles: tuple[CohortStyle, ...]
    stability: dict[int, float]
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class MapData:
    """Each row's cohort label (by its key), the cohorts' styles and the title's run date."""

    labels: dict[str, str]
    styles: tuple[CohortStyle, ...]
    run_date: str
    rows_called: str = "neighborhoods"


def pca_data(
    result: ClusteringResult,
    view: CohortView,
    random_state: int,
    max_points: int = MAX_SCATTER_POINTS,
) -> PcaData:
    """Project the residential rows with PCA and pick the rows to draw."""
    from sklearn.decomposition import PCA as Projection

    scaled = result.scaled
    components = min(2, scaled.shape[1])
    projection = Projection(n_components=components, random_state=random_state)
    points = projection.fit_transform(scaled)
    variance = list(projection.explained_variance_ratio_)
    if components == 1:  # one feature: draw it on a line
        points = np.column_stack([points[:, 0], np.zeros(len(points))])
        variance.append(0.0)
    rows = view.table.loc[result.residential]
    top = rows["top_cluster_label"].to_numpy(dtype=object)
    sub = rows["sub_cluster"].to_numpy(dtype=np.int64)
    shown = np.arange(len(points))
    if len(points) > max_points:
        rng = np.random.default_rng(random_state)
        shown = np.sort(rng.choice(len(points), max_points, replace=False))
    return PcaData(
        points=points[shown],
        variance=(float(variance[0]), float(variance[1])),
        top=top[shown],
        sub=sub[shown],
        styles=_residential(view.styles),
        n_rows=len(points),
        rows_called=view.rows_called,
    )


def heatmap_data(view: CohortView) -> HeatmapData:
    """The heatmap's inputs: each feature of each cohort measured and read (palette.cell),
    cohorts in the palette's order, with stabilities."""
    styles = _residential(view.styles)
    table = view.table
    stability = {}
    if "cohort_stability" in table.columns:
        firsts = table.dropna(subset=["cohort_stability"]).drop_duplicates("sub_cluster")
        stability = dict(
            zip(firsts["sub_cluster"].astype(int), firsts["cohort_stability"], strict=True)
        )
    profiles = view.profiles
    features = profiles.features
    return HeatmapData(
        features=features,
        cells=tuple(
            tuple(cell(profiles, feature, style.sub_cluster) for style in styles)
            for feature in features
        ),
        directions=tuple(profiles.directions.get(f) for f in features),
        styles=styles,
        stability=stability,
        labels=tuple(profiles.label(f) for f in features),
    )


def map_data(view: CohortView, run_date: str) -> MapData:
    labels = cohort_labels(view.table)
    return MapData(
        labels=dict(zip(view.table[view.key_column], labels, strict=True)),
        styles=view.styles,
        run_date=run_date,
        rows_called=view.rows_called,
    )


def elbow_task(
    search: KSearch, sample_size: int | None, seen: int | None = None
) -> dict[str, tuple]:
    """The elbow chart's task: it needs only the K diagnostics, so it can start early."""
    return {PNG_ELBOW: (elbow_silhouette, (search, sample_size, seen))}


def named_tasks(
    result: ClusteringResult,
    view: CohortView,
    random_state: int,
    boundaries: dict[str, list[np.ndarray]] | None = None,
    run_date: str = "",
) -> dict[str, tuple]:
    """The tasks of the charts that need the cohorts' ids and names but not their stability:
    PCA, and the cluster map when boundaries are given."""
    tasks = {PNG_PCA: (pca_clusters, (pca_data(result, view, random_state),))}
    if boundaries:
        tasks[PNG_MAP] = (cluster_map, (boundaries, map_data(view, run_date)))
    return tasks


def heatmap_task(view: CohortView) -> dict[str, tuple]:
    """The heatmap's task; it shows each cohort's stability, so it needs the final view."""
    return {PNG_HEATMAP: (cluster_heatmap, (heatmap_data(view),))}


def result_tasks(
    result: ClusteringResult,
    view: CohortView,
    random_state: int,
    boundaries: dict[str, list[np.ndarray]] | None = None,
    run_date: str = "",
) -> dict[str, tuple]:
    """Artifact name -> (draw function, arguments) for the charts that need the final
    clusters: PCA, heatmap, and the cluster map when boundaries are given."""
    named = named_tasks(result, view, random_state, boundaries, run_date)
    return {PNG_PCA: named.pop(PNG_PCA), **heatmap_task(view), **named}


def chart_tasks(
    result: ClusteringResult,
    view: CohortView,
    random_state: int,
    boundaries: dict[str, list[np.ndarray]] | None = None,
    run_date: str = "",
) -> dict[str, tuple]:
    """Every chart's task, the elbow first."""
    diagnosed = result.diagnostic_sample_size
    return elbow_task(result.diagnostics, result.silhouette_sample_size, diagnosed) | result_tasks(
        result, view, random_state, boundaries, run_date
    )


def render(
    result: ClusteringResult,
    view: CohortView,
    random_state: int,
    boundaries: dict[str, list[np.ndarray]] | None = None,
    run_date: str = "",
) -> dict[str, bytes]:
    """The charts by artifact name, drawn in this process."""
    tasks = chart_tasks(result, view, random_state, boundaries, run_date)
    return {name: draw(*args) for name, (draw, args) in tasks.items()}


def _residential(styles: tuple[CohortStyle, ...]) -> tuple[CohortStyle, ...]:
    return tuple(s for s in styles if s.sub_cluster is not None)


def elbow_silhouette(search: KSearch, sample_size: int | None, seen: int | None = None) -> bytes:
    """Inertia and silhouette by K, with the best K marked, labelled as the diagnostic it is:
    the top split is TOP_K whatever K scores best. `seen`: the rows of a large table's
    key-hashed sample the diagnostic was fitted on (None: every residential row)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 5))
    left, right = fig.subplots(1, 2)
    left.plot(search.ks, search.inertias, "bo-", linewidth=2, markersize=8)
    left.set_xlabel("K (number of clusters)", fontsize=12)
    left.set_ylabel("Inertia (within-cluster sum of squares)", fontsize=12)
    fitted = f"\n(fitted on a key-hashed sample of {seen:,} rows)" if seen else ""
    left.set_title(f"Elbow method{fitted}", fontsize=14)
    right.plot(search.ks, search.silhouettes, "ro-", linewidth=2, markersize=8)
    best = search.best_k
    right.axvline(
        best, color="green", linestyle="--", label=f"Best silhouette: K = {best} (diagnostic)"
    )
    right.set_xlabel("K (number of clusters)", fontsize=12)
    right.set_ylabel("Silhouette score", fontsize=12)
    suffix = f" (sample of {sample_size:,} rows)" if sample_size else ""
    note = f"(a diagnostic: the top split is always K={TOP_K})"
    right.set_title(f"Silhouette score by K{suffix}\n{note}", fontsize=13)
    right.legend(loc="upper right")
    for ax in (left, right):
        ax.set_xticks(search.ks)
        ax.grid(True, alpha=0.3)
    return _png(fig)


def pca_clusters(data: PcaData) -> bytes:
    """The residential rows on their first two principal components, coloured by top group
    (left) and by cohort (right), with the legends below the panels, clear of the points.
    Both legends count the points drawn: all rows, or the plotted sample, which they say."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 8))
    # Fixed margins: the legends sit under the panels, outside the data.
    fig.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.3, wspace=0.15)
    left, right = fig.subplots(1, 2)
    size = 60 if len(data.points) <= 2000 else 6
    groups, cohorts, counted = pca_legends(data)
    for group, label in groups.items():
        mask = data.top == group
        left.scatter(*data.points[mask].T, s=size, alpha=0.8, color=group_color(group), label=label)
    for style in data.styles:
        mask = data.sub == style.sub_cluster
        right.scatter(
            *data.points[mask].T,
            s=size,
            alpha=0.85,
            color=style.color,
            label=cohorts[style.sub_cluster],
        )
    left.set_title("Top-level split (K=2)", fontsize=13)
    right.set_title("Cohorts (stable id · name)", fontsize=13)
    drawn = len(data.points)
    legends = []
    for ax, columns in ((left, 2), (right, 1)):
        ax.set_xlabel(f"PC1 ({data.variance[0] * 100:.1f}% of variance)")
        ax.set_ylabel(f"PC2 ({data.variance[1] * 100:.1f}% of variance)")
        legend = ax.legend(
            fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12),
            ncols=columns,
            frameon=False,
            title=counted,
            title_fontsize=8,
        )
        legends.append(legend)
        ax.grid(True, alpha=0.3)
    note = f" ({drawn:,} of {data.n_rows:,} rows drawn)" if counted else ""
    fig.suptitle(
        f"Residential {data.rows_called} on their first two principal components{note}",
        fontsize=14,
    )
    _room_below(fig, legends, bottom=0.3 * 8, top=0.1 * 8)
    return _png(fig, tight=False)


def _room_below(fig, artists: list, bottom: float, top: float) -> None:
    """Grow the figure downwards until `artists` (legends under the panels, whose long cohort
    names may take many lines) end above its bottom edge; the panels keep their size.
    `bottom` and `top` are the current margins in inches."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    lowest = min(a.get_window_extent(renderer).y0 for a in artists) / fig.dpi
    margin = 0.1  # inches kept under the lowest line
    if lowest >= margin:
        return
    width, height = fig.get_size_inches()
    extra = margin - lowest
    height += extra
    fig.set_size_inches(width, height)
    fig.subplots_adjust(bottom=(bottom + extra) / height, top=1 - top / height)


def pca_legends(data: PcaData) -> tuple[dict[str, str], dict[int, str], str | None]:
    """The scatter's legend entries, by top group and by cohort id, and the legends' title.
    Both legends count the points drawn; when those are a sample, the title says so."""
    groups = {
        group: f"{group} ({int((data.top == group).sum()):,})"
        for group in dict.fromkeys(s.group for s in data.styles)
    }
    cohorts = {
        s.sub_cluster: _wrap(f"{s.label} (n = {int((data.sub == s.sub_cluster).sum()):,})", 60)
        for s in data.styles
    }
    drawn = len(data.points)
    title = None
    if drawn < data.n_rows:
        title = f"counts of the {drawn:,} plotted rows, a sample of {data.n_rows:,}"
    return groups, cohorts, title


def cluster_heatmap(data: HeatmapData) -> bytes:
    """Each cohort against the residential mean: index scores (100 = the mean) for features
    that are never negative, standard deviations for the others. Colour says better (teal) or
    worse (brown) where the feature has a direction, and only higher (darker grey) or lower
    where it has none."""
    from matplotlib import cm, colormaps, colors
    from matplotlib.figure import Figure

    n_features, n_cohorts = len(data.features), len(data.styles)
    width, height = max(8, 1.75 * n_cohorts + 4.9), n_features * 0.42 + 2.6
    fig = Figure(figsize=(width, height))
    # Margins in inches (feature names left, four-line cohort labels below, the colour bar
    # right): a tight layout would cost one more full draw of every label.
    fig.subplots_adjust(
        left=3.3 / width, right=1 - 1.6 / width, top=1 - 0.5 / height, bottom=1.35 / height
    )
    ax = fig.subplots()
    judged = colormaps["BrBG"]
    rgb = np.array(
        [[_cell_color(c, judged) for c in row] for row in data.cells], dtype=np.float64
    ).reshape(n_features, n_cohorts, 3)
    ax.imshow(rgb, aspect="auto", interpolation="nearest")
    _write_cells(ax, data.cells, rgb)
    ticks = []
    for style in data.styles:
        stability = data.stability.get(style.sub_cluster)
        sure = f", stability {stability:.2f}" if stability is not None else ""
        ticks.append(f"{_wrap(style.label, 22)}\nn = {style.rows:,}{sure}")
    ax.set_xticks(range(n_cohorts), ticks, fontsize=8)
    for label, style in zip(ax.get_xticklabels(), data.styles, strict=True):
        label.set_bbox({"facecolor": style.color, "alpha": 0.35, "edgecolor": style.color})
    names = data.labels or data.features
    ax.set_yticks(
        range(n_features),
        [f"{_wrap(f, 40)} ({_way(d)})" for f, d in zip(names, data.directions, strict=True)],
    )
    ax.set_xticks(np.arange(n_cohorts + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_features + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="minor", length=0)
    ax.set_title("Cohort profiles against the residential mean", fontsize=14)
    scale = cm.ScalarMappable(norm=colors.Normalize(-SCALE, SCALE), cmap=judged)
    bar = fig.colorbar(scale, ax=ax, ticks=[-2, -1, 0, 1, 2], fraction=0.04, pad=0.02)
    bar.ax.set_yticklabels(["much worse", "worse", "the mean", "better", "much better"])
    bar.set_label("2 steps: an index of 400 or 25, or 2 SD")
    bar.ax.minorticks_off()
    fig.text(
        0.01,
        0.01,
        "Index (100 = the residential mean) for features never below 0; SD from the mean "
        "for the others. Grey: no direction known (FEATURE_DIRECTIONS), darker = higher.",
        fontsize=8,
    )
    _fit_margins(fig, ax, right=1.6, top=0.5)
    return _png(fig, tight=False)


def _fit_margins(fig, ax, right: float, top: float) -> None:
    """Widen the figure until the tick labels fit left of and below the axes: the labels are
    measured as they will be drawn (one layout pass, far cheaper than a tight layout's full
    draw), so a long feature label or cohort name is never cut at the figure's edge. `right`
    and `top` are the margins in inches kept for the colour bar and the title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    inch = fig.dpi
    pad = 0.25  # tick marks and the gap between them and their labels
    left = max(t.get_window_extent(renderer).width for t in ax.get_yticklabels()) / inch + pad
    below = max(t.get_window_extent(renderer).height for t in ax.get_xticklabels()) / inch
    bottom = below + pad + 0.3  # and the footnote's line
    width, height = fig.get_size_inches()
    body_width, body_height = width - 3.3 - right, height - 1.35 - top
    width, height = max(width, left + body_width + right), max(height, bottom + body_height + top)
    fig.set_size_inches(width, height)
    fig.subplots_adjust(
        left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height
    )


def _write_cells(ax, cells: tuple[tuple[Cell, ...], ...], rgb: np.ndarray) -> None:
    """Each cell's text, white on the dark colours."""
    for (row, column), _ in np.ndenumerate(rgb[:, :, 0]):
        shade = float(np.dot(rgb[row, column], (0.299, 0.587, 0.114)))
        colour = "white" if shade < 0.45 else "black"
        text = cells[row][column].text
        ax.text(column, row, text, ha="center", va="center", fontsize=8, color=colour)


def _cell_color(item: Cell, judged) -> tuple[float, float, float]:
    """Teal-to-brown by goodness, light-to-dark grey by position without a direction."""
    if item.position != item.position:  # NaN: no value
        return (0.93, 0.93, 0.93)
    if item.goodness is None:
        level = 0.85 - 0.55 * (item.position + SCALE) / (2 * SCALE)
        return (level, level, level)
    return tuple(judged((item.goodness + SCALE) / (2 * SCALE))[:3])


def _way(direction: str | None) -> str:
    if direction is None:
        return "no direction"
    return "higher is better" if direction == HIGHER_IS_BETTER else "higher is worse"


def cluster_map(boundaries: dict[str, list[np.ndarray]], data: MapData) -> bytes:
    """Neighborhoods filled by cohort (shades of one hue per top group, excluded groups grey
    and hatched), boundaries without a row of the table as outlines."""
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    fig = Figure(figsize=(14, 10))
    # Fixed margins: the equal-aspect map and the legend beside it defeat tight_layout.
    fig.subplots_adjust(left=0.06, right=0.6, top=0.93, bottom=0.06)
    ax = fig.subplots()
    legend = []
    for style, names, rings in map_layers(boundaries, data):
        if style is None:
            ax.add_collection(
                PolyCollection(rings, facecolor="none", edgecolor=NO_ROW_EDGE, linewidths=0.6)
            )
            outline = f"No row in the table ({len(names):,}, outlined)"
            legend.append(Patch(facecolor="none", edgecolor=NO_ROW_EDGE, label=outline))
            continue
        look = {"facecolor": style.color, "edgecolor": "white", "linewidths": 0.4}
        if style.hatch:
            look |= {"hatch": style.hatch, "edgecolor": "#4d4d4d", "linewidths": 0.3}
        ax.add_collection(PolyCollection(rings, **look))
        legend.append(
            Patch(
                facecolor=style.color,
                hatch=style.hatch,
                edgecolor=look["edgecolor"],
                label=_wrap(f"{style.label} ({style.rows:,})", 55),
            )
        )
    ax.autoscale_view()
    (west, east), (south, north) = ax.get_xlim(), ax.get_ylim()
    if -180 <= west <= east <= 180 and -85 <= south <= north <= 85:
        # Degrees of longitude shrink with latitude: keep the city's true proportions.
        ax.set_aspect(1 / np.cos(np.radians((south + north) / 2)))
        ax.set_xlabel("Longitude")
        ax.set_ylabel("Latitude")
    else:  # projected coordinates (metres or feet): equal units on both axes
        ax.set_aspect("equal")
    when = f" - run of {data.run_date}" if data.run_date else ""
    ax.set_title(f"Cohorts of {data.rows_called}{when}", fontsize=14)
    ax.legend(
        handles=legend,
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        title=f"Cohort ({data.rows_called})",
        title_fontsize=9,
    )
    return _png(fig, tight=False)


def map_layers(
    boundaries: dict[str, list[np.ndarray]], data: MapData
) -> list[tuple[CohortStyle | None, list[str], list[np.ndarray]]]:
    """What the map draws, in drawing order: (style, neighborhood names, rings) per cohort
    that has a boundary, then (None, ...) for the boundaries without a row of the table."""
    known = {style.label for style in data.styles}
    names: dict[str | None, list[str]] = {}
    for name in boundaries:
        label = data.labels.get(name)
        names.setdefault(label if label in known else None, []).append(name)
    layers = []
    for style in (*data.styles, None):
        members = names.get(None if style is None else style.label)
        if members:
            layers.append((style, members, [r for name in members for r in boundaries[name]]))
    return layers


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def _png(fig, tight: bool = True) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    if tight:
        # Apply a tight layout once, without installing a layout engine: with an engine set,
        # savefig draws the whole figure twice.
        from matplotlib.layout_engine import TightLayoutEngine

        TightLayoutEngine().execute(fig)
    buffer = io.BytesIO()
    # Fast zlib level: the charts are small, and level 6 costs more than drawing them.
    fig.savefig(
        buffer, format="png", dpi=DPI, metadata={"Software": None}, pil_kwargs={"compress_level": 1}
    )
    return buffer.getvalue()


class ChartRenderer:
    """Draws charts in forked worker processes while the parent goes on.

    Use as a context manager around the run: `submit(name, draw, *args)` as each chart's data
    is known, then `collect()` the PNGs by name. Tasks go to the worker with the fewest; a
    thread per worker drains its results as they come, so a worker never blocks on a full
    pipe. The workers only import matplotlib and draw: they never touch the parent's OpenMP
    or BLAS state.
    """

    def __init__(self, workers: int = 2) -> None:
        self._workers = workers
        self._pid: int | None = None
        self._tasks: list[int] = []  # per worker: the parent's end of its task pipe
        self._queued: list[int] = []  # per worker: tasks sent
        self._readers: list[threading.Thread] = []
        self._received: dict[str, bytes] = {}
        self._submitted: dict[str, tuple[Callable[..., bytes], tuple[Any, ...]]] = {}

    def __enter__(self) -> ChartRenderer:
        if not hasattr(os, "fork"):
            return self
        pipes = [(os.pipe(), os.pipe()) for _ in range(self._workers)]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the first worker, which leaves with os._exit
            for (_, task_write), (result_read, _) in pipes:
                os.close(task_write)
                os.close(result_read)
            _first_worker(
                [(task_read, result_write) for (task_read, _), (_, result_write) in pipes]
            )
        self._pid = pid
        for (task_read, task_write), (result_read, result_write) in pipes:
            os.close(task_read)
            os.close(result_write)
            self._tasks.append(task_write)
            self._queued.append(0)
            reader = threading.Thread(target=self._drain, args=(result_read,), daemon=True)
            reader.start()
            self._readers.append(reader)
        return self

    def submit(self, name: str, draw: Callable[..., bytes], *args: Any) -> None:
        """Start drawing `name` with `draw(*args)`; drawn in-process by collect() if no worker
        takes it."""
        self._submitted[name] = (draw, args)
        if not self._tasks:
            return
        worker = min(range(len(self._tasks)), key=lambda i: self._queued[i])
        try:
            with os.fdopen(self._tasks[worker], "wb", closefd=False) as pipe:
                pickle.dump((name, draw, args), pipe, protocol=pickle.HIGHEST_PROTOCOL)
            self._queued[worker] += 1
        except OSError:  # the worker is gone: collect() draws this chart in-process
            pass

    def collect(self, timeout: float | None = None) -> dict[str, bytes]:
        """Every submitted chart by name, in submission order. With a `timeout` (the run's
        time left), workers still drawing after it raise TimeoutError (the run is retried;
        leaving the block kills them)."""
        self._close_tasks()  # no more tasks: each worker finishes its queue and leaves
        deadline = None if timeout is None else time.monotonic() + timeout
        for reader in self._readers:
            reader.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
            if reader.is_alive():
                raise TimeoutError(
                    f"the chart workers were still drawing after {timeout:.0f} s, the time the "
                    "run had left"
                )
        self._reap(kill=False)
        images = dict(self._received)
        for name, (draw, args) in self._submitted.items():
            if name not in images:
                images[name] = draw(*args)
        return {name: images[name] for name in self._submitted}

    def __exit__(self, *exc_info) -> None:
        self._close_tasks()
        self._reap(kill=True)

    def _drain(self, result_read: int) -> None:
        with os.fdopen(result_read, "rb") as results:
            while True:
                try:
                    name, content = pickle.load(results)
                except (EOFError, OSError, pickle.UnpicklingError):
                    return
                self._received[name] = content

    def _close_tasks(self) -> None:
        for fd in self._tasks:
            os.close(fd)
        self._tasks = []

    def _reap(self, kill: bool) -> None:
        if self._pid is not None:
            if kill:  # left early (an error): the workers' work is no longer wanted
                os.kill(self._pid, signal.SIGKILL)
            os.waitpid(self._pid, 0)
            self._pid = None


def _first_worker(channels: list[tuple[int, int]]) -> None:  # pragma: no cover - in a worker
    """Import matplotlib (and Jinja2, for the report) once, fork the other workers from here
    so they share the imports, then serve the first channel. Leaves with os._exit, never
    returning to the caller."""
    status = 1
    try:
        import jinja2  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401

        children = []
        for index, (task_read, result_write) in enumerate(channels[1:], start=1):
            pid = os.fork()
            if pid == 0:
                # Channels before this one were closed here as their workers were forked.
                for other, (read_fd, write_fd) in enumerate(channels):
                    if other == 0 or other > index:
                        os.close(read_fd)
                        os.close(write_fd)
                _serve(task_read, result_write)
            os.close(task_read)
            os.close(result_write)
            children.append(pid)
        _serve_loop(*channels[0])
        for pid in children:
            os.waitpid(pid, 0)
        status = 0
    finally:
        os._exit(status)


def _serve(task_read: int, result_write: int) -> None:  # pragma: no cover - in a worker
    status = 1
    try:
        _serve_loop(task_read, result_write)
        status = 0
    finally:
        os._exit(status)


def _serve_loop(task_read: int, result_write: int) -> None:  # pragma: no cover - in a worker
    """Draw each task until the parent closes the task pipe."""
    with os.fdopen(task_read, "rb") as tasks, os.fdopen(result_write, "wb") as results:
        while True:
            try:
                name, draw, args = pickle.load(tasks)
            except EOFError:
                return
            pickle.dump((name, draw(*args)), results, protocol=pickle.HIGHEST_PROTOCOL)
            results.flush()
