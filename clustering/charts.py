"""The three charts of the notebook, rendered to PNG bytes at 150 dpi.

Figures are built on matplotlib's object API with the Agg canvas: no pyplot, no global figure
state, and no GUI backend to import, which keeps a cold run close to the bare import cost.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from clustering.model import ClusteringResult

DPI = 150
# Above this many residential rows the scatter draws a fixed-seed sample: a PNG cannot show
# more points, and drawing 250k markers would dominate the run.
MAX_SCATTER_POINTS = 20_000


def elbow_silhouette(result: ClusteringResult) -> bytes:
    """Inertia and silhouette by K, with the best K marked."""
    from matplotlib.figure import Figure

    search = result.diagnostics
    fig = Figure(figsize=(14, 5))
    left, right = fig.subplots(1, 2)
    left.plot(search.ks, search.inertias, "bo-", linewidth=2, markersize=8)
    left.set_xlabel("K (number of clusters)", fontsize=12)
    left.set_ylabel("Inertia (within-cluster sum of squares)", fontsize=12)
    left.set_title("Elbow method", fontsize=14)
    right.plot(search.ks, search.silhouettes, "ro-", linewidth=2, markersize=8)
    right.axvline(search.best_k, color="green", linestyle="--", label=f"Best K = {search.best_k}")
    right.set_xlabel("K (number of clusters)", fontsize=12)
    right.set_ylabel("Silhouette score", fontsize=12)
    sampled = result.silhouette_sample_size
    suffix = f" (sample of {sampled:,} rows)" if sampled else ""
    right.set_title(f"Silhouette score by K{suffix}", fontsize=14)
    right.legend()
    for ax in (left, right):
        ax.set_xticks(search.ks)
        ax.grid(True, alpha=0.3)
    return _png(fig)


def pca_clusters(
    result: ClusteringResult, random_state: int, max_points: int = MAX_SCATTER_POINTS
) -> bytes:
    """The residential rows on their first two principal components, coloured by top group
    (left) and by sub-cluster (right); at most `max_points` of them are drawn."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from sklearn.decomposition import PCA

    scaled = result.scaled
    components = min(2, scaled.shape[1])
    pca = PCA(n_components=components, random_state=random_state)
    points = pca.fit_transform(scaled)
    ratios = list(pca.explained_variance_ratio_)
    if components == 1:  # one feature: draw it on a line
        points = np.column_stack([points[:, 0], np.zeros(len(points))])
        ratios.append(0.0)
    rows = result.table.loc[result.residential]
    top = rows["top_cluster"].to_numpy(dtype=np.int64)
    sub = rows["sub_cluster"].to_numpy(dtype=np.int64)
    shown = np.arange(len(points))
    if len(points) > max_points:
        rng = np.random.default_rng(random_state)
        shown = np.sort(rng.choice(len(points), max_points, replace=False))

    fig = Figure(figsize=(16, 7))
    left, right = fig.subplots(1, 2)
    size = 60 if len(shown) <= 2000 else 6
    labels = {g.top: g.label for g in result.top_groups}
    for group in sorted(labels):
        mask = top[shown] == group
        left.scatter(*points[shown][mask].T, s=size, alpha=0.8,
                     label=f"Cluster {group} ({labels[group]})")  # fmt: skip
    subs = np.unique(sub)
    # The top end of nipy_spectral is near white: stop short of it so every group shows.
    colors = colormaps["nipy_spectral"](np.linspace(0, 0.9, len(subs)))
    for color, group in zip(colors, subs, strict=True):
        mask = sub[shown] == group
        right.scatter(*points[shown][mask].T, color=color, s=size, alpha=0.8,
                      label=f"Sub-cluster {group} ({labels[group // 10]})")  # fmt: skip
    left.set_title("Top-level K=2 split", fontsize=13)
    right.set_title("Hierarchical sub-clusters", fontsize=13)
    for ax in (left, right):
        ax.set_xlabel(f"PC1 ({ratios[0] * 100:.1f}% of variance)")
        ax.set_ylabel(f"PC2 ({ratios[1] * 100:.1f}% of variance)")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
    note = f" ({len(shown):,} of {len(points):,} rows drawn)" if len(shown) < len(points) else ""
    fig.suptitle(f"Neighborhood clustering - hierarchical k-means{note}", fontsize=14)
    return _png(fig)


def cluster_heatmap(result: ClusteringResult) -> bytes:
    """Sub-cluster feature profiles as z-scores across sub-clusters (red high, green low)."""
    from matplotlib.figure import Figure

    scores = profile_zscores(result.profile)
    n_features, n_subs = scores.shape
    fig = Figure(figsize=(max(8, n_subs * 2), n_features * 0.4 + 2))
    ax = fig.subplots()
    limit = max(float(np.abs(scores.to_numpy()).max()), 1e-9)
    image = ax.imshow(scores.to_numpy(), cmap="RdYlGn_r", vmin=-limit, vmax=limit,
                      aspect="auto", interpolation="nearest")  # fmt: skip
    labels = {g.top: g.label for g in result.top_groups}
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


def render_all(result: ClusteringResult, random_state: int) -> dict[str, bytes]:
    """The three charts by artifact name."""
    return {
        "elbow_silhouette.png": elbow_silhouette(result),
        "pca_clusters.png": pca_clusters(result, random_state),
        "cluster_heatmap.png": cluster_heatmap(result),
    }
