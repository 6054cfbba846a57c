"""The clustering itself: K diagnostics, the Stable/Distressed split, sub-clusters, and the
separate analysis of excluded neighborhoods (notebook cells 4-6 and 9-10).

Every k-means fit is seeded with `settings.random_state` and sees rows in the order of the
sorted table, so the residential partitions equal the notebook's for the same input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clustering.errors import InputError
from clustering.prepare import (
    INSTITUTIONAL,
    LOW_POPULATION,
    RESIDENTIAL,
    FeatureSelection,
    impute_median,
    row_types,
    select_features,
    standard_scale,
    winsorize,
)
from clustering.settings import AnalysisSettings

Progress = Callable[[str], None]

STABLE = "Stable"
DISTRESSED = "Distressed"
EXCLUDED = "Excluded"
# Groups smaller than this are labelled instead of clustered (notebook cell 9).
MIN_EXCLUDED_GROUP = 4
# n_init of the notebook: 10 while searching K, 20 for the final residential fits.
SEARCH_N_INIT = 10
FINAL_N_INIT = 20
# Below this many residential rows k-means runs on one thread (see _threads_for).
SMALL_TABLE_ROWS = 5_000


@dataclass(frozen=True)
class KSearch:
    """Scores of one K search, in K order; best_k is the first K with the top silhouette."""

    ks: tuple[int, ...]
    inertias: tuple[float, ...]
    silhouettes: tuple[float, ...]
    best_k: int
    best_score: float


@dataclass(frozen=True)
class TopGroup:
    """One side of the top split and how it was sub-clustered."""

    top: int
    label: str
    size: int
    search: KSearch | None
    sub_k: int


@dataclass(frozen=True)
class ExcludedGroup:
    """One excluded type (institutional/industrial or low population) and its grouping."""

    excluded_type: str
    size: int
    search: KSearch | None
    k: int | None
    note: str


@dataclass(frozen=True)
class ClusteringResult:
    """Everything a run produces before I/O.

    table: every input row (sorted by name), its columns, then the cluster columns.
    excluded: the excluded rows with their type and group (excluded_neighborhood_analysis).
    scaled: the residential matrix the residential fits saw, for the charts.
    residential: boolean mask of `table` rows that were clustered as residential.
    profile: mean of each used feature per sub-cluster (rows: features, columns: sub-clusters).
    summary: the final cohort table (counts and key means per top label and cluster label).
    silhouette_sample_size: rows sampled per silhouette, or None when all were exact.
    """

    table: pd.DataFrame
    excluded: pd.DataFrame
    features: FeatureSelection
    diagnostics: KSearch
    top_groups: tuple[TopGroup, ...]
    excluded_groups: tuple[ExcludedGroup, ...]
    scaled: np.ndarray
    residential: np.ndarray
    profile: pd.DataFrame
    summary: pd.DataFrame
    silhouette_sample_size: int | None
    warnings: tuple[str, ...]


def cluster(
    table: pd.DataFrame, settings: AnalysisSettings, progress: Progress | None = None
) -> ClusteringResult:
    """Run the whole analysis on a validated features table sorted by neighborhood."""
    say = progress or (lambda _message: None)
    types = row_types(table, settings)
    residential = (types == RESIDENTIAL).to_numpy()
    n_res = int(residential.sum())
    minimum = max(3, settings.k_min + 1)
    if n_res < minimum:
        raise InputError(
            f"only {n_res} residential rows (population >= {settings.min_population}, not "
            f"excluded); at least {minimum} are needed: add rows or lower MIN_POPULATION"
        )
    features = select_features(table, types == RESIDENTIAL, settings)
    if not [f for f in features.used if f != "population"]:
        wanted = ", ".join(f for f in settings.clustering_features if f != "population")
        raise InputError(
            "every clustering feature is blank among the residential rows (population alone "
            f"cannot be clustered): fill in at least one of {wanted}"
        )
    if settings.severity_feature not in table.columns:
        raise InputError(
            f"SEVERITY_FEATURE {settings.severity_feature!r} is not a column of the features "
            "table: add the column or set SEVERITY_FEATURE to one that exists"
        )
    if table.loc[residential, settings.severity_feature].isna().all():
        raise InputError(
            f"SEVERITY_FEATURE {settings.severity_feature!r} is blank in every residential row, "
            "so Stable and Distressed cannot be told apart: fill it in or choose another column"
        )
    warnings = _feature_warnings(features, table)
    with _threads_for(n_res):
        return _cluster(table, settings, say, types, residential, features, warnings, n_res)


def _threads_for(n_rows: int):
    """One OpenMP thread for small tables: k-means on a few hundred rows spends more time
    waking threads than computing. Labels are identical for any thread count."""
    from contextlib import nullcontext

    if n_rows >= SMALL_TABLE_ROWS:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def _cluster(table, settings, say, types, residential, features, warnings, n_res):
    sampled = n_res > settings.silhouette_sample_size
    sample_size = settings.silhouette_sample_size if sampled else None
    say(f"preparing {n_res} residential rows x {len(features.used)} features")
    raw = table.loc[residential, list(features.used)].to_numpy(dtype=np.float64)
    imputed, _ = impute_median(raw)
    scaled = standard_scale(winsorize(imputed))

    ks = [k for k in range(settings.k_min, settings.k_max + 1) if k < n_res]
    if settings.k_max >= n_res:
        warnings.append(f"K_MAX={settings.k_max} capped at {ks[-1]}: only {n_res} residential rows")
    diagnostics = search_k(scaled, ks, settings, say=say, label="diagnostics")

    say("fitting the top split (K=2)")
    top_labels = _kmeans(scaled, 2, FINAL_N_INIT, settings.random_state)
    severity = table.loc[residential, settings.severity_feature].to_numpy(dtype=np.float64)
    overall = np.nanmean(severity)
    sub_labels = np.full(n_res, -1, dtype=np.int64)
    groups = []
    for top in np.unique(top_labels):
        mask = top_labels == top
        with np.errstate(all="ignore"):
            label = STABLE if np.nanmean(severity[mask]) < overall else DISTRESSED
        say(f"sub-clustering top group {top} ({label}, {int(mask.sum())} rows)")
        group, labels = _sub_cluster(scaled[mask], int(top), label, settings, say)
        sub_labels[mask] = labels + int(top) * 10
        groups.append(group)
    top_label_of = {g.top: g.label for g in groups}

    say("analysing excluded neighborhoods")
    excluded_mask = ~residential
    excluded = table.loc[excluded_mask].copy()
    excluded["excluded_type"] = types[excluded_mask].to_numpy()
    excluded["excluded_cluster"] = None
    excluded_groups = []
    for excluded_type in (INSTITUTIONAL, LOW_POPULATION):
        in_type = (excluded["excluded_type"] == excluded_type).to_numpy()
        if not in_type.any():
            continue
        group, names = _excluded_group(
            excluded.loc[in_type, list(features.used)], excluded_type, settings
        )
        excluded.loc[in_type, "excluded_cluster"] = names
        excluded_groups.append(group)

    out = table.copy()
    out["top_cluster"] = pd.array(np.full(len(out), -1), dtype="Int64")
    out.loc[residential, "top_cluster"] = top_labels
    out["top_cluster_label"] = EXCLUDED
    out.loc[residential, "top_cluster_label"] = [top_label_of[t] for t in top_labels]
    out["sub_cluster"] = pd.array(np.full(len(out), -1), dtype="Int64")
    out.loc[residential, "sub_cluster"] = sub_labels
    out["cluster_label"] = None
    out.loc[residential, "cluster_label"] = [f"Cluster {s}" for s in sub_labels]
    out.loc[excluded_mask, "cluster_label"] = excluded["excluded_cluster"].to_numpy()
    out["excluded_type"] = types.to_numpy()
    out["excluded_cluster"] = None
    out.loc[excluded_mask, "excluded_cluster"] = excluded["excluded_cluster"].to_numpy()

    resident_rows = out.loc[residential]
    return ClusteringResult(
        table=out.reset_index(drop=True),
        excluded=excluded.reset_index(drop=True),
        features=features,
        diagnostics=diagnostics,
        top_groups=tuple(groups),
        excluded_groups=tuple(excluded_groups),
        scaled=scaled,
        residential=residential,
        profile=resident_rows.groupby("sub_cluster")[list(features.used)].mean().T,
        summary=_summary(resident_rows, settings),
        silhouette_sample_size=sample_size,
        warnings=tuple(warnings),
    )


def search_k(
    matrix: np.ndarray,
    ks: list[int],
    settings: AnalysisSettings,
    say: Progress | None = None,
    label: str = "search",
) -> KSearch:
    """Fit k-means (n_init=10) for each K and score inertia and silhouette.

    Silhouettes are exact up to `settings.silhouette_sample_size` rows and computed on a
    fixed-seed sample of that size above it. A fit that finds fewer than two distinct clusters
    scores -1, so it is never chosen.
    """
    from sklearn.cluster import KMeans

    inertias, scores = [], []
    for k in ks:
        model = KMeans(n_clusters=k, random_state=settings.random_state, n_init=SEARCH_N_INIT)
        labels = model.fit_predict(matrix)
        inertias.append(float(model.inertia_))
        scores.append(silhouette(matrix, labels, settings))
        if say:
            say(f"{label}: K={k} inertia={model.inertia_:.1f} silhouette={scores[-1]:.4f}")
    best = int(np.argmax(scores)) if scores else 0
    return KSearch(
        ks=tuple(ks),
        inertias=tuple(inertias),
        silhouettes=tuple(scores),
        best_k=ks[best] if ks else 1,
        best_score=scores[best] if scores else -1.0,
    )


def silhouette(matrix: np.ndarray, labels: np.ndarray, settings: AnalysisSettings) -> float:
    """Mean silhouette, sampled with a fixed seed above `silhouette_sample_size` rows."""
    from sklearn.metrics import silhouette_score

    n_labels = len(np.unique(labels))
    if not 2 <= n_labels <= len(labels) - 1:
        return -1.0
    if len(labels) > settings.silhouette_sample_size:
        try:
            return float(
                silhouette_score(
                    matrix,
                    labels,
                    sample_size=settings.silhouette_sample_size,
                    random_state=settings.random_state,
                )
            )
        except ValueError:  # the sample happened to hold a single cluster
            return -1.0
    return float(silhouette_score(matrix, labels))


def _kmeans(matrix: np.ndarray, k: int, n_init: int, random_state: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, random_state=random_state, n_init=n_init).fit_predict(matrix)


def _sub_cluster(
    matrix: np.ndarray, top: int, label: str, settings: AnalysisSettings, say: Progress
) -> tuple[TopGroup, np.ndarray]:
    """Silhouette-chosen K in SUB_K_MIN..SUB_K_MAX (each below the group size), refit n_init=20.

    A group too small for any K keeps a single sub-cluster rather than failing.
    """
    n = len(matrix)
    ks = [k for k in range(settings.sub_k_min, settings.sub_k_max + 1) if k < n]
    if not ks:
        group = TopGroup(top=top, label=label, size=n, search=None, sub_k=1)
        return group, np.zeros(n, dtype=np.int64)
    search = search_k(matrix, ks, settings, say=say, label=f"top group {top}")
    labels = _kmeans(matrix, search.best_k, FINAL_N_INIT, settings.random_state)
    group = TopGroup(top=top, label=label, size=n, search=search, sub_k=search.best_k)
    return group, labels.astype(np.int64)


def _excluded_group(
    rows: pd.DataFrame, excluded_type: str, settings: AnalysisSettings
) -> tuple[ExcludedGroup, list[str]]:
    """Cluster one excluded type on its own: median impute, scale, silhouette-chosen K.

    The notebook searches K in range(2, min(5, n)), i.e. up to min(4, n-1); with the settings
    that is SUB_K_MIN up to min(SUB_K_MAX, n) - 1. The final fit uses n_init=10 as it does.
    """
    n = len(rows)
    if n < MIN_EXCLUDED_GROUP:
        note = f"{excluded_type} - Too few to cluster"
        return ExcludedGroup(excluded_type, n, None, None, note), [note] * n
    imputed, kept = impute_median(rows.to_numpy(dtype=np.float64))
    ks = list(range(settings.sub_k_min, min(settings.sub_k_max, n)))
    if not kept.any() or not ks:
        note = (
            f"{excluded_type} - No features to cluster"
            if not kept.any()
            else (f"{excluded_type} - Too few to cluster")
        )
        return ExcludedGroup(excluded_type, n, None, None, note), [note] * n
    matrix = standard_scale(imputed)
    search = search_k(matrix, ks, settings)
    labels = _kmeans(matrix, search.best_k, SEARCH_N_INIT, settings.random_state)
    names = [f"{excluded_type} - Group {label}" for label in labels]
    group = ExcludedGroup(excluded_type, n, search, search.best_k, f"{search.best_k} groups")
    return group, names


def _summary(resident_rows: pd.DataFrame, settings: AnalysisSettings) -> pd.DataFrame:
    """The notebook's closing table: neighborhoods and key means per cohort."""
    means = {
        "avg_crime_per_capita": settings.severity_feature,
        "avg_vacancy_rate": "housing_vacancy_rate",
        "avg_assessed_value": "median_assessed_value",
        "avg_permit_value": "permit_value_per_capita",
    }
    aggregations = {"neighborhoods": ("neighborhood", "count")}
    aggregations |= {name: (col, "mean") for name, col in means.items() if col in resident_rows}
    grouped = resident_rows.groupby(["top_cluster_label", "cluster_label"])
    return grouped.agg(**aggregations).round(3).reset_index()


def _feature_warnings(features: FeatureSelection, table: pd.DataFrame) -> list[str]:
    """Warnings on skipped features; columns blank in every row are already reported by
    the table's validation, so only those blank in the residential rows alone are added."""
    warnings = []
    if features.missing:
        warnings.append(f"features not in the table, skipped: {', '.join(features.missing)}")
    residential_only = [f for f in features.all_blank if table[f].notna().any()]
    if residential_only:
        warnings.append(
            f"features blank in every residential row, skipped: {', '.join(residential_only)}"
        )
    return warnings
