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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from clustering.model import TOP_K, ClusteringResult, KSearch
from clustering.naming import PNG_ELBOW, PNG_HEATMAP, PNG_MAP, PNG_PCA

DPI = 150
# Above this many residential rows the scatter draws a fixed-seed sample: a PNG cannot show
# more points, and drawing 250k markers would dominate the run.
MAX_SCATTER_POINTS = 20_000


@dataclass(frozen=True)
class PcaData:
    """The drawn residential rows on their first two principal components.

    points: at most MAX_SCATTER_POINTS rows (a fixed-seed sample above that).
    variance: the share of variance each component explains.
    top, sub: top and sub-cluster ids of the drawn rows; labels: top id -> Stable/Distressed.
    n_rows: all residential rows (to say when the scatter is a sample).
    """

    points: np.ndarray
    variance: tuple[float, float]
    top: np.ndarray
    sub: np.ndarray
    labels: dict[int, str]
    n_rows: int


def top_labels(result: ClusteringResult) -> dict[int, str]:
    """Top cluster id -> Stable/Distressed."""
    return {g.top: g.label for g in result.top_groups}


def pca_data(
    result: ClusteringResult, random_state: int, max_points: int = MAX_SCATTER_POINTS
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
    rows = result.table.loc[result.residential]
    top = rows["top_cluster"].to_numpy(dtype=np.int64)
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
        labels=top_labels(result),
        n_rows=len(points),
    )


def elbow_task(search: KSearch, sample_size: int | None) -> dict[str, tuple]:
    """The elbow chart's task: it needs only the K diagnostics, so it can start early."""
    return {PNG_ELBOW: (elbow_silhouette, (search, sample_size))}


def result_tasks(
    result: ClusteringResult,
    random_state: int,
    boundaries: dict[str, list[np.ndarray]] | None = None,
) -> dict[str, tuple]:
    """Artifact name -> (draw function, arguments) for the charts that need the final
    clusters: PCA, heatmap, and the cluster map when boundaries are given."""
    tasks = {
        PNG_PCA: (pca_clusters, (pca_data(result, random_state),)),
        PNG_HEATMAP: (cluster_heatmap, (profile_zscores(result.profile), top_labels(result))),
    }
    if boundaries:
        table = result.table
        cohort = table["cluster_label"].where(
            ~result.residential, table["cluster_label"] + " (" + table["top_cluster_label"] + ")"
        )
        tasks[PNG_MAP] = (
            cluster_map,
            (boundaries, dict(zip(table["neighborhood"], cohort, strict=True))),
        )
    return tasks


def chart_tasks(
    result: ClusteringResult,
    random_state: int,
    boundaries: dict[str, list[np.ndarray]] | None = None,
) -> dict[str, tuple]:
    """Every chart's task, the elbow first."""
    return elbow_task(result.diagnostics, result.silhouette_sample_size) | result_tasks(
        result, random_state, boundaries
    )


def render(
    result: ClusteringResult,
    random_state: int,
    boundaries: dict[str, list[np.ndarray]] | None = None,
) -> dict[str, bytes]:
    """The charts by artifact name, drawn in this process."""
    tasks = chart_tasks(result, random_state, boundaries)
    return {name: draw(*args) for name, (draw, args) in tasks.items()}


def elbow_silhouette(search: KSearch, sample_size: int | None) -> bytes:
    """Inertia and silhouette by K, with the best K marked, labelled as the diagnostic it is:
    the top split is TOP_K whatever K scores best."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 5))
    left, right = fig.subplots(1, 2)
    left.plot(search.ks, search.inertias, "bo-", linewidth=2, markersize=8)
    left.set_xlabel("K (number of clusters)", fontsize=12)
    left.set_ylabel("Inertia (within-cluster sum of squares)", fontsize=12)
    left.set_title("Elbow method", fontsize=14)
    right.plot(search.ks, search.silhouettes, "ro-", linewidth=2, markersize=8)
    best = search.best_k
    right.axvline(best, color="green", linestyle="--",
                  label=f"Best silhouette: K = {best} (diagnostic)")  # fmt: skip
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
    (left) and by sub-cluster (right)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 7))
    left, right = fig.subplots(1, 2)
    size = 60 if len(data.points) <= 2000 else 6
    for group in sorted(data.labels):
        mask = data.top == group
        left.scatter(*data.points[mask].T, s=size, alpha=0.8,
                     label=f"Cluster {group} ({data.labels[group]})")  # fmt: skip
    subs = np.unique(data.sub)
    # The top end of nipy_spectral is near white: stop short of it so every group shows.
    colors = colormaps["nipy_spectral"](np.linspace(0, 0.9, len(subs)))
    for color, group in zip(colors, subs, strict=True):
        mask = data.sub == group
        right.scatter(*data.points[mask].T, color=color, s=size, alpha=0.8,
                      label=f"Sub-cluster {group} ({data.labels[group // 10]})")  # fmt: skip
    left.set_title("Top-level K=2 split", fontsize=13)
    right.set_title("Hierarchical sub-clusters", fontsize=13)
    for ax in (left, right):
        ax.set_xlabel(f"PC1 ({data.variance[0] * 100:.1f}% of variance)")
        ax.set_ylabel(f"PC2 ({data.variance[1] * 100:.1f}% of variance)")
        # A fixed corner: "best" scans every point, which is slow for large scatters.
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(True, alpha=0.3)
    drawn = len(data.points)
    note = f" ({drawn:,} of {data.n_rows:,} rows drawn)" if drawn < data.n_rows else ""
    fig.suptitle(f"Neighborhood clustering - hierarchical k-means{note}", fontsize=14)
    return _png(fig)


def cluster_heatmap(scores: pd.DataFrame, labels: dict[int, str]) -> bytes:
    """Sub-cluster feature profiles as z-scores across sub-clusters (red high, green low)."""
    from matplotlib.figure import Figure

    n_features, n_subs = scores.shape
    fig = Figure(figsize=(max(8, n_subs * 2), n_features * 0.4 + 2))
    ax = fig.subplots()
    limit = max(float(np.abs(scores.to_numpy()).max()), 1e-9)
    image = ax.imshow(scores.to_numpy(), cmap="RdYlGn_r", vmin=-limit, vmax=limit,
                      aspect="auto", interpolation="nearest")  # fmt: skip
    ax.set_xticks(range(n_subs), [f"{s}\n{labels[s // 10]}" for s in scores.columns])
    ax.set_yticks(range(n_features), list(scores.index))
    ax.set_xticks(np.arange(n_subs + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_features + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("Sub-cluster")
    ax.set_title("Sub-cluster feature profiles", fontsize=14)
    fig.colorbar(image, ax=ax, label="Z-score (red = high, green = low)")
    return _png(fig)


def cluster_map(boundaries: dict[str, list[np.ndarray]], labels: dict[str, str]) -> bytes:
    """Neighborhoods coloured by cohort: residential sub-clusters in colour, excluded groups
    in greys, boundaries without a row of the table hatched."""
    from matplotlib import colormaps
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    residential = sorted({v for v in labels.values() if v.startswith("Cluster ")},
                         key=lambda v: int(v.split()[1]))  # fmt: skip
    # Residential labels read "Cluster 11 (Distressed)"; excluded ones name their group.
    excluded = sorted({v for v in labels.values() if not v.startswith("Cluster ")})
    palette = dict(zip(residential, colormaps["tab10"](np.arange(len(residential)) % 10),
                       strict=True))  # fmt: skip
    greys = colormaps["Greys"](np.linspace(0.25, 0.6, max(len(excluded), 1)))
    palette |= dict(zip(excluded, greys, strict=False))
    fig = Figure(figsize=(14, 10))
    # Fixed margins: the equal-aspect map and the legend beside it defeat tight_layout.
    fig.subplots_adjust(left=0.07, right=0.66, top=0.94, bottom=0.07)
    ax = fig.subplots()
    legend = []
    for label in [*residential, *excluded, None]:
        rings = [ring for name, shapes in boundaries.items() if labels.get(name) == label
                 for ring in shapes]  # fmt: skip
        if not rings:
            continue
        if label is None:
            style = {"facecolor": "white", "hatch": "///", "edgecolor": "0.6"}
            legend.append(Patch(label="No row in the table", **style))
        else:
            style = {"facecolor": palette[label], "edgecolor": "white"}
            legend.append(Patch(label=label, **style))
        ax.add_collection(PolyCollection(rings, linewidths=0.4, **style))
    ax.autoscale_view()
    (west, east), (south, north) = ax.get_xlim(), ax.get_ylim()
    if -180 <= west <= east <= 180 and -85 <= south <= north <= 85:
        # Degrees of longitude shrink with latitude: keep the city's true proportions.
        ax.set_aspect(1 / np.cos(np.radians((south + north) / 2)))
        ax.set_xlabel("Longitude")
        ax.set_ylabel("Latitude")
    else:  # projected coordinates (metres or feet): equal units on both axes
        ax.set_aspect("equal")
    ax.set_title("Neighborhood cohorts", fontsize=14)
    ax.legend(handles=legend, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _png(fig, tight=False)


def profile_zscores(profile: pd.DataFrame) -> pd.DataFrame:
    """Standardise each feature's sub-cluster means across sub-clusters (the notebook's
    heatmap): a feature with one sub-cluster or no spread scores 0."""
    spread = profile.std(axis=1)
    centred = profile.sub(profile.mean(axis=1), axis=0)
    return centred.div(spread.where(spread > 0), axis=0).fillna(0.0)


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
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None},
                pil_kwargs={"compress_level": 1})  # fmt: skip
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

    def collect(self) -> dict[str, bytes]:
        """Every submitted chart by name, in submission order."""
        self._close_tasks()  # no more tasks: each worker finishes its queue and leaves
        for reader in self._readers:
            reader.join()
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
    """Import matplotlib once, fork the other workers from here so they share the import,
    then serve the first channel. Leaves with os._exit, never returning to the caller."""
    status = 1
    try:
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
