"""The three charts of the notebook, rendered to PNG bytes at 150 dpi.

Two costs dominate a cold run on a small table: importing matplotlib and drawing. Both are
moved off the critical path: `ChartRenderer` forks a process at the start of a run that imports
matplotlib while the parent clusters on the other core, and then draws from a small
`ChartData` the parent sends it. Where fork is unavailable, or the child fails, the charts are
drawn in-process: the same functions, the same bytes.

Figures use matplotlib's object API with the Agg canvas: no pyplot, no global figure state.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clustering.model import ClusteringResult

DPI = 150
# Above this many residential rows the scatter draws a fixed-seed sample: a PNG cannot show
# more points, and drawing 250k markers would dominate the run.
MAX_SCATTER_POINTS = 20_000
ELBOW = "elbow_silhouette.png"
PCA = "pca_clusters.png"
HEATMAP = "cluster_heatmap.png"


@dataclass(frozen=True)
class ChartData:
    """What the charts show, small enough to send to another process.

    points: the drawn rows on the first two principal components (at most MAX_SCATTER_POINTS).
    variance: the share of variance each component explains.
    top, sub: top and sub-cluster ids of the drawn rows; labels: top id -> Stable/Distressed.
    n_rows: all residential rows (to say when the scatter is a sample).
    zscores: the sub-cluster profile standardised per feature (features x sub-clusters).
    """

    ks: tuple[int, ...]
    inertias: tuple[float, ...]
    silhouettes: tuple[float, ...]
    best_k: int
    silhouette_sample_size: int | None
    points: np.ndarray
    variance: tuple[float, float]
    top: np.ndarray
    sub: np.ndarray
    labels: dict[int, str]
    n_rows: int
    zscores: pd.DataFrame


def chart_data(
    result: ClusteringResult, random_state: int, max_points: int = MAX_SCATTER_POINTS
) -> ChartData:
    """Project the residential rows with PCA and gather what the three charts draw."""
    from sklearn.decomposition import PCA

    scaled = result.scaled
    components = min(2, scaled.shape[1])
    pca = PCA(n_components=components, random_state=random_state)
    points = pca.fit_transform(scaled)
    variance = list(pca.explained_variance_ratio_)
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
    search = result.diagnostics
    return ChartData(
        ks=search.ks,
        inertias=search.inertias,
        silhouettes=search.silhouettes,
        best_k=search.best_k,
        silhouette_sample_size=result.silhouette_sample_size,
        points=points[shown],
        variance=(float(variance[0]), float(variance[1])),
        top=top[shown],
        sub=sub[shown],
        labels={g.top: g.label for g in result.top_groups},
        n_rows=len(points),
        zscores=profile_zscores(result.profile),
    )


def render(data: ChartData) -> dict[str, bytes]:
    """The three charts by artifact name."""
    return {ELBOW: elbow_silhouette(data), PCA: pca_clusters(data), HEATMAP: cluster_heatmap(data)}


def elbow_silhouette(data: ChartData) -> bytes:
    """Inertia and silhouette by K, with the best K marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 5))
    left, right = fig.subplots(1, 2)
    left.plot(data.ks, data.inertias, "bo-", linewidth=2, markersize=8)
    left.set_xlabel("K (number of clusters)", fontsize=12)
    left.set_ylabel("Inertia (within-cluster sum of squares)", fontsize=12)
    left.set_title("Elbow method", fontsize=14)
    right.plot(data.ks, data.silhouettes, "ro-", linewidth=2, markersize=8)
    right.axvline(data.best_k, color="green", linestyle="--", label=f"Best K = {data.best_k}")
    right.set_xlabel("K (number of clusters)", fontsize=12)
    right.set_ylabel("Silhouette score", fontsize=12)
    sampled = data.silhouette_sample_size
    suffix = f" (sample of {sampled:,} rows)" if sampled else ""
    right.set_title(f"Silhouette score by K{suffix}", fontsize=14)
    right.legend(loc="upper right")
    for ax in (left, right):
        ax.set_xticks(data.ks)
        ax.grid(True, alpha=0.3)
    return _png(fig)


def pca_clusters(data: ChartData) -> bytes:
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


def cluster_heatmap(data: ChartData) -> bytes:
    """Sub-cluster feature profiles as z-scores across sub-clusters (red high, green low)."""
    from matplotlib.figure import Figure

    scores = data.zscores
    n_features, n_subs = scores.shape
    fig = Figure(figsize=(max(8, n_subs * 2), n_features * 0.4 + 2))
    ax = fig.subplots()
    limit = max(float(np.abs(scores.to_numpy()).max()), 1e-9)
    image = ax.imshow(scores.to_numpy(), cmap="RdYlGn_r", vmin=-limit, vmax=limit,
                      aspect="auto", interpolation="nearest")  # fmt: skip
    ax.set_xticks(range(n_subs), [f"{s}\n{data.labels[s // 10]}" for s in scores.columns])
    ax.set_yticks(range(n_features), list(scores.index))
    ax.set_xticks(np.arange(n_subs + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_features + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("Sub-cluster")
    ax.set_title("Sub-cluster feature profiles", fontsize=14)
    fig.colorbar(image, ax=ax, label="Z-score (red = high, green = low)")
    return _png(fig)


def profile_zscores(profile: pd.DataFrame) -> pd.DataFrame:
    """Standardise each feature's sub-cluster means across sub-clusters (the notebook's
    heatmap): a feature with one sub-cluster or no spread scores 0."""
    spread = profile.std(axis=1)
    centred = profile.sub(profile.mean(axis=1), axis=0)
    return centred.div(spread.where(spread > 0), axis=0).fillna(0.0)


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.tight_layout()
    buffer = io.BytesIO()
    # Fast zlib level: the charts are small, and level 6 costs more than drawing them.
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None},
                pil_kwargs={"compress_level": 1})  # fmt: skip
    return buffer.getvalue()


class ChartRenderer:
    """Draws the charts in a process forked before the clustering starts.

    Use as a context manager around the run: `submit(data)`, do other work, then `collect()`
    the PNGs. The child only imports matplotlib and draws, so it never touches the parent's
    OpenMP or BLAS state.
    """

    def __init__(self) -> None:
        self._pid: int | None = None
        self._to_child: int | None = None
        self._from_child: int | None = None
        self._data: ChartData | None = None

    def __enter__(self) -> ChartRenderer:
        if not hasattr(os, "fork"):
            return self
        down_read, down_write = os.pipe()
        up_read, up_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which leaves with os._exit
            os.close(down_write)
            os.close(up_read)
            _child(down_read, up_write)
        os.close(down_read)
        os.close(up_write)
        self._pid, self._to_child, self._from_child = pid, down_write, up_read
        return self

    def submit(self, data: ChartData) -> None:
        """Hand the data to the chart process (or keep it, to draw in-process later)."""
        self._data = data
        if self._pid is None:
            return
        try:
            with os.fdopen(self._to_child, "wb") as pipe:
                self._to_child = None
                pickle.dump(data, pipe, protocol=pickle.HIGHEST_PROTOCOL)
        except OSError:  # the child is gone: collect() draws in-process
            self._reap()

    def collect(self) -> dict[str, bytes]:
        """The PNGs by artifact name; drawn here if the chart process could not."""
        images = None
        if self._pid is not None:
            try:
                with os.fdopen(self._from_child, "rb") as pipe:
                    self._from_child = None
                    images = pickle.load(pipe)
            except (OSError, EOFError, pickle.UnpicklingError):
                images = None
            self._reap()
        return images if isinstance(images, dict) else render(self._data)

    def __exit__(self, *exc_info) -> None:
        for fd in (self._to_child, self._from_child):
            if fd is not None:
                os.close(fd)
        self._to_child = self._from_child = None
        if self._pid is not None:  # left before collecting (an error): don't wait for it
            os.kill(self._pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self._pid is not None:
            os.waitpid(self._pid, 0)
            self._pid = None


def _child(read_fd: int, write_fd: int) -> None:  # pragma: no cover - runs in the child
    status = 1
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401 - warm up
        from matplotlib.figure import Figure  # noqa: F401

        with os.fdopen(read_fd, "rb") as pipe:
            data = pickle.load(pipe)
        images = render(data)
        with os.fdopen(write_fd, "wb") as pipe:
            pickle.dump(images, pipe, protocol=pickle.HIGHEST_PROTOCOL)
        status = 0
    except BaseException:  # the parent draws the charts itself when the child has nothing
        pass
    finally:
        os._exit(status)
