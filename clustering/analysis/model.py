"""The clustering itself: K diagnostics, the Stable/Distressed split, sub-clusters, and the
separate analysis of excluded neighborhoods (notebook cells 4-6 and 9-10).

Every k-means fit is seeded with `settings.random_state` and sees rows in the order of the
sorted table, so the residential partitions equal the notebook's for the same input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clustering import InputError
from clustering.analysis import fits, search_sample
from clustering.analysis.prepare import (
    INSTITUTIONAL,
    LOW_POPULATION,
    RESIDENTIAL,
    FeatureSelection,
    Space,
    filled_blanks,
    prepare,
    row_types,
    select_features,
)
from clustering.settings import HIGHER_IS_WORSE, AnalysisSettings

Progress = Callable[[str], None]

STABLE = "Stable"
DISTRESSED = "Distressed"
EXCLUDED = "Excluded"
# Groups smaller than this are labelled instead of clustered (notebook cell 9).
MIN_EXCLUDED_GROUP = 4
# The notebook's top split: always two groups, whatever the K diagnostic finds best.
TOP_K = 2
# n_init of the notebook: 10 while searching K, 20 for the final residential fits.
SEARCH_N_INIT = 10
FINAL_N_INIT = 20


@dataclass(frozen=True)
class KSearch:
    """Scores of one K search, in K order; best_k is the first K with the top silhouette."""

    ks: tuple[int, ...]
    inertias: tuple[float, ...]
    silhouettes: tuple[float, ...]
    best_k: int
    best_score: float


# Receives the K diagnostics, the silhouette sample size (None when exact) and the rows the
# diagnostic saw (None when every residential row).
OnDiagnostics = Callable[[KSearch, int | None, int | None], None]


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
    """One excluded type (institutional/industrial or low population) and its grouping.

    space: the type's own impute and scaling (no winsorizing); centroids: group name ->
    centroid in that space. None and empty for a type labelled instead of clustered.
    """

    excluded_type: str
    size: int
    search: KSearch | None
    k: int | None
    note: str
    space: Space | None = None
    centroids: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Centroids:
    """The residential fits' centroids in the scaled space: top id -> centroid, sub id ->
    (its top id, centroid). Each row's label is its nearest centroid (k-means ends so)."""

    top: dict[int, np.ndarray]
    sub: dict[int, tuple[int, np.ndarray]]


@dataclass(frozen=True)
class ClusteringResult:
    """Everything a run produces before I/O.

    table: every input row (sorted by name), its columns, then the cluster columns.
    excluded: the excluded rows with their type and group (excluded_neighborhood_analysis).
    scaled: the residential matrix the residential fits saw, for the charts.
    winsorized: the same rows and features (`features.used`) before scaling: imputed and
        winsorized, in the features' own units. Its column means and standard deviations
        are the scaling, its column minima and maxima the winsorizing bounds, so a point in
        original units can be brought into this run's scaled space (clustering.analysis.identity).
    residential: boolean mask of `table` rows that were clustered as residential.
    profile: mean of each used feature per sub-cluster (rows: features, columns: sub-clusters).
    summary: the final cohort table (counts and key means per top label and cluster label).
    silhouette_sample_size: rows sampled per silhouette, or None when all were exact.
    space: how raw values become rows of `scaled` (impute, winsor bounds, centre, scale).
    centroids: the top split's and the sub-clusters' centroids, under the clustering's ids.
    search_sample_size: the residential rows the K searches saw (a key-hashed sample,
        clustering.analysis.search_sample), or None when they saw every row.
    diagnostic_sample_size: the residential rows the K diagnostic saw (the first of the
        same hashed order), or None when it saw every row.
    """

    table: pd.DataFrame
    excluded: pd.DataFrame
    features: FeatureSelection
    diagnostics: KSearch
    top_groups: tuple[TopGroup, ...]
    excluded_groups: tuple[ExcludedGroup, ...]
    scaled: np.ndarray
    winsorized: np.ndarray
    residential: np.ndarray
    profile: pd.DataFrame
    summary: pd.DataFrame
    silhouette_sample_size: int | None
    warnings: tuple[str, ...]
    space: Space
    centroids: Centroids
    search_sample_size: int | None = None
    diagnostic_sample_size: int | None = None


def cluster(
    table: pd.DataFrame,
    settings: AnalysisSettings,
    progress: Progress | None = None,
    on_diagnostics: OnDiagnostics | None = None,
) -> ClusteringResult:
    """Run the whole analysis on a validated features table sorted by its key column.

    progress: receives one line per stage and per K fitted.
    on_diagnostics: receives the K diagnostics, the silhouette sample size (None when
        exact) and the rows the diagnostic saw (None: all) as soon as they are known,
        before the rest finishes (to start the elbow chart).
    """
    say = progress or (lambda _message: None)
    types = row_types(table, settings)
    residential = (types == RESIDENTIAL).to_numpy()
    n_res = int(residential.sum())
    minimum = max(3, settings.k_min + 1)
    population = settings.population_column
    if n_res < minimum:
        rule = (
            "not excluded"
            if population is None
            else (f"{population} >= {settings.min_population}, not excluded")
        )
        fix = "add rows" if population is None else "add rows or lower MIN_POPULATION"
        raise InputError(
            f"only {n_res} residential rows ({rule}); at least {minimum} are needed: {fix}"
        )
    features = select_features(table, types == RESIDENTIAL, settings)
    if not [f for f in features.used if f != population]:
        wanted = ", ".join(
            f for f in settings.clustering_features if f != population and f in table.columns
        )
        alone = "" if population is None else f" ({population} alone cannot be clustered)"
        raise InputError(
            f"every clustering feature is blank among the residential rows{alone}: fill in "
            f"at least one of {wanted}"
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
    with fits.executor_for(n_res) as pool:
        plan = _plan(table, types, residential, features, settings, pool, say)
        return _cluster(plan, on_diagnostics)


@dataclass(frozen=True)
class _FitPlan:
    """One run's inputs, prepared once and read by every step of `_cluster`.

    types: each table row's type (residential or an excluded type); residential its mask.
    space: how raw values become rows of `scaled` (kept for the model document).
    scaled, winsorized: the residential matrix the fits see, and the same before scaling.
    ks: the Ks of the K diagnostics, capped below the number of residential rows.
    sample_size: rows sampled per silhouette, or None when every silhouette is exact.
    searched: which residential rows the K searches see (the key-hashed sample of a large
        table), or None for every row.
    diagnosed: which residential rows the K diagnostic sees (the first DIAGNOSTIC_SAMPLE_ROWS
        of the sample), or None for every row.
    warnings: the feature warnings, then the K_MAX cap when there is one.
    """

    table: pd.DataFrame
    types: pd.Series
    residential: np.ndarray
    features: FeatureSelection
    settings: AnalysisSettings
    pool: Executor
    say: Progress
    space: Space
    scaled: np.ndarray
    winsorized: np.ndarray
    ks: tuple[int, ...]
    sample_size: int | None
    searched: np.ndarray | None
    diagnosed: np.ndarray | None
    warnings: tuple[str, ...]

    @property
    def seed(self) -> int:
        return self.settings.random_state


def _plan(table, types, residential, features, settings, pool, say) -> _FitPlan:
    """Impute, winsorize and scale the residential rows, and choose the Ks to search."""
    warnings = _feature_warnings(features, table)
    n_res = int(residential.sum())
    sample_size = (
        settings.silhouette_sample_size if n_res > settings.silhouette_sample_size else None
    )
    say(f"preparing {n_res} residential rows x {len(features.used)} features")
    raw = table.loc[residential, list(features.used)].to_numpy(dtype=np.float64)
    prepared = prepare(raw, tuple(features.used), clip=True)
    ks = [k for k in range(settings.k_min, settings.k_max + 1) if k < n_res]
    searched = diagnosed = None
    if n_res > search_sample.SEARCH_SAMPLE_ROWS:
        order = search_sample.hashed_order(table.loc[residential, settings.key_column])
        searched, diagnosed = np.zeros((2, n_res), dtype=bool)
        searched[order[: search_sample.SEARCH_SAMPLE_ROWS]] = True
        diagnosed[order[: search_sample.DIAGNOSTIC_SAMPLE_ROWS]] = True
        say(f"searching K on a key-hashed sample of {int(searched.sum())} rows")
    if settings.k_max >= n_res:
        warnings.append(f"K_MAX={settings.k_max} capped at {ks[-1]}: only {n_res} residential rows")
    return _FitPlan(
        table=table,
        types=types,
        residential=residential,
        features=features,
        settings=settings,
        pool=pool,
        say=say,
        space=prepared.space,
        scaled=prepared.scaled,
        winsorized=prepared.before_scaling,
        ks=tuple(ks),
        sample_size=sample_size,
        searched=searched,
        diagnosed=diagnosed,
        warnings=tuple(warnings),
    )


def _cluster(plan: _FitPlan, on_diagnostics: OnDiagnostics | None) -> ClusteringResult:
    # Everything independent is submitted up front so a pool keeps every core busy; the top
    # split first, since the sub-clusters wait for it and the K diagnostic is for people.
    top_pending = _submit_final_fit(plan, None, TOP_K)
    diagnosed = plan.scaled if plan.diagnosed is None else plan.scaled[plan.diagnosed]
    diagnostics_pending = _submit_search(plan.pool, diagnosed, plan.ks, plan.settings)
    diagnostics = None
    if all(f.done() for f in diagnostics_pending):  # fitted in-process: report them now
        diagnostics = _diagnostics(plan, diagnostics_pending, on_diagnostics)
    excluded, excluded_pending = _submit_excluded_types(plan)

    plan.say(f"fitting the top split (K={TOP_K})")
    top_labels, top_centroids = top_pending.result()
    tops = _submit_top_groups(plan, top_labels)
    if diagnostics is None:
        diagnostics = _diagnostics(plan, diagnostics_pending, on_diagnostics)
    # Each excluded type's final fit joins the pool once its K is known.
    excluded_finals = [(in_type, start()) for in_type, start in excluded_pending]
    groups, sub_labels, sub_centroids = _sub_cluster(plan, tops)

    plan.say("analysing excluded rows")
    key = plan.settings.key_column
    warnings = [*plan.warnings]
    warnings += filled_blanks(plan.table.loc[plan.residential], plan.space, key)
    excluded_groups = []
    for in_type, finish in excluded_finals:
        group, names = finish()
        excluded.loc[in_type, "excluded_cluster"] = names
        excluded_groups.append(group)
        if group.space is not None:
            rows = excluded.loc[in_type]
            warnings += filled_blanks(rows, group.space, key, group.excluded_type)

    out = _labelled_table(plan, top_labels, sub_labels, groups, excluded)
    resident_rows = out.loc[plan.residential]
    return ClusteringResult(
        table=out.reset_index(drop=True),
        excluded=excluded.reset_index(drop=True),
        features=plan.features,
        diagnostics=diagnostics,
        top_groups=tuple(groups),
        excluded_groups=tuple(excluded_groups),
        scaled=plan.scaled,
        winsorized=plan.winsorized,
        residential=plan.residential,
        profile=resident_rows.groupby("sub_cluster")[list(plan.features.used)].mean().T,
        summary=_summary(resident_rows, plan.settings),
        silhouette_sample_size=plan.sample_size,
        warnings=tuple(warnings),
        space=plan.space,
        centroids=Centroids(top=dict(enumerate(top_centroids)), sub=sub_centroids),
        search_sample_size=_count(plan.searched),
        diagnostic_sample_size=_count(plan.diagnosed),
    )


def _diagnostics(
    plan: _FitPlan, pending: list[Future], on_diagnostics: OnDiagnostics | None
) -> KSearch:
    diagnostics = _collect(pending, plan.say, "K diagnostic")
    if on_diagnostics:
        on_diagnostics(diagnostics, plan.sample_size, _count(plan.diagnosed))
    return diagnostics


def _count(mask: np.ndarray | None) -> int | None:
    return None if mask is None else int(mask.sum())


def _submit_excluded_types(
    plan: _FitPlan,
) -> tuple[pd.DataFrame, list[tuple[np.ndarray, Callable[[], Callable[[], ExcludedFit]]]]]:
    """The excluded rows with their type, and each type's clustering, started: (mask of the
    type's rows among the excluded ones, `start` of _submit_excluded) per type."""
    excluded_mask = ~plan.residential
    excluded = plan.table.loc[excluded_mask].copy()
    excluded["excluded_type"] = plan.types[excluded_mask].to_numpy()
    excluded["excluded_cluster"] = None
    pending = []
    for excluded_type in (INSTITUTIONAL, LOW_POPULATION):
        in_type = (excluded["excluded_type"] == excluded_type).to_numpy()
        if in_type.any():
            rows = excluded.loc[in_type, list(plan.features.used)]
            pending.append(
                (in_type, _submit_excluded(plan.pool, rows, excluded_type, plan.settings))
            )
    return excluded, pending


def _submit_top_groups(plan: _FitPlan, top_labels: np.ndarray) -> list[tuple]:
    """Name each side of the top split by its severity and start its sub-cluster K search:
    (top, label, mask, pending search) per side."""
    settings = plan.settings
    severity = plan.table.loc[plan.residential, settings.severity_feature].to_numpy(
        dtype=np.float64
    )
    with np.errstate(all="ignore"):
        means = {
            int(t): float(np.nanmean(severity[top_labels == t])) for t in np.unique(top_labels)
        }
    labels = top_labels_by_severity(means, settings.directions[settings.severity_feature])
    tops = []
    for top in np.unique(top_labels):
        mask = top_labels == top
        label = labels[int(top)]
        # A large table's group is searched on its rows in the sample; its final fit (in
        # _sub_cluster) sees every row of it.
        seen = mask if plan.searched is None else mask & plan.searched
        n = int(seen.sum())
        sub_ks = [k for k in range(plan.settings.sub_k_min, plan.settings.sub_k_max + 1) if k < n]
        pending = _submit_search(plan.pool, plan.scaled[seen], sub_ks, plan.settings)
        tops.append((int(top), label, mask, pending))
    return tops


def top_labels_by_severity(means: dict[int, float], direction: str) -> dict[int, str]:
    """Stable or Distressed for each top group from its mean of SEVERITY_FEATURE: the group
    worse on it by its direction (the higher mean when higher is worse, the lower when higher
    is better) is Distressed, the other Stable. A group without any value of it counts as the
    worse, as in the notebook (whose comparison with a blank mean fails); a tie goes to the
    higher id. For crime_per_capita this is the notebook's rule: the group above the
    residential mean is Distressed."""
    sign = 1.0 if direction == HIGHER_IS_WORSE else -1.0

    def badness(top: int) -> tuple[bool, float, int]:
        mean = means[top]
        return (mean != mean, 0.0 if mean != mean else sign * mean, top)

    worst = max(means, key=badness)
    return {top: DISTRESSED if top == worst else STABLE for top in means}


def _sub_cluster(plan: _FitPlan, tops: list[tuple]) -> tuple[list[TopGroup], np.ndarray, dict]:
    """Each top group at its best sub-K, every residential row's sub-cluster id, and each
    sub-cluster's (top id, centroid)."""
    sub_labels = np.full(int(plan.residential.sum()), -1, dtype=np.int64)
    groups, refits = [], []
    for top, label, mask, pending in tops:
        plan.say(f"sub-clustering top group {top} ({label}, {int(mask.sum())} rows)")
        search = _collect(pending, plan.say, f"top group {top}")
        if search is None:  # too small for any K: one sub-cluster
            groups.append(
                TopGroup(top=top, label=label, size=int(mask.sum()), search=None, sub_k=1)
            )
            refits.append((mask, top, None))
            continue
        groups.append(
            TopGroup(top=top, label=label, size=int(mask.sum()), search=search, sub_k=search.best_k)
        )
        refit = _submit_final_fit(plan, mask, search.best_k)
        refits.append((mask, top, refit))
    centroids = {}
    for mask, top, refit in refits:
        if refit is None:  # one sub-cluster: its centroid is the group's mean
            labels, centers = 0, plan.scaled[mask].mean(axis=0, keepdims=True)
        else:
            labels, centers = refit.result()
        sub_labels[mask] = labels + top * 10
        centroids |= {top * 10 + i: (top, c) for i, c in enumerate(centers)}
    return groups, sub_labels, centroids


def _submit_final_fit(plan: _FitPlan, rows: np.ndarray | None, k: int) -> Future:
    """The fit of the chosen K over every row of `rows` (a residential mask; None: every
    residential row): the best of FINAL_N_INIT starts, taken on the K search's sample when
    the table has one."""
    matrix = plan.scaled if rows is None else plan.scaled[rows]
    if plan.searched is None:
        return plan.pool.submit(fits.fit_centroids, matrix, k, FINAL_N_INIT, plan.seed)
    seen = plan.searched if rows is None else plan.searched[rows]
    return plan.pool.submit(fits.fit_seeded, matrix, seen, k, FINAL_N_INIT, plan.seed)


def _labelled_table(
    plan: _FitPlan,
    top_labels: np.ndarray,
    sub_labels: np.ndarray,
    groups: list[TopGroup],
    excluded: pd.DataFrame,
) -> pd.DataFrame:
    """The input table with the cluster columns of every row, residential or excluded."""
    residential, excluded_mask = plan.residential, ~plan.residential
    top_label_of = {g.top: g.label for g in groups}
    out = plan.table.copy()
    out["top_cluster"] = pd.array(np.full(len(out), -1), dtype="Int64")
    out.loc[residential, "top_cluster"] = top_labels
    out["top_cluster_label"] = EXCLUDED
    out.loc[residential, "top_cluster_label"] = [top_label_of[t] for t in top_labels]
    out["sub_cluster"] = pd.array(np.full(len(out), -1), dtype="Int64")
    out.loc[residential, "sub_cluster"] = sub_labels
    out["cluster_label"] = None
    out.loc[residential, "cluster_label"] = [f"Cluster {s}" for s in sub_labels]
    out.loc[excluded_mask, "cluster_label"] = excluded["excluded_cluster"].to_numpy()
    out["excluded_type"] = plan.types.to_numpy()
    out["excluded_cluster"] = None
    out.loc[excluded_mask, "excluded_cluster"] = excluded["excluded_cluster"].to_numpy()
    return out


def search_k(
    matrix: np.ndarray,
    ks: list[int],
    settings: AnalysisSettings,
    say: Progress | None = None,
    label: str = "search",
    pool: Executor | None = None,
) -> KSearch | None:
    """Fit k-means (n_init=10) for each K and score inertia and silhouette; None without Ks.

    Silhouettes are exact up to `settings.silhouette_sample_size` rows and computed on a
    fixed-seed sample of that size above it.
    """
    pending = _submit_search(pool or fits.InProcess(), matrix, ks, settings)
    return _collect(pending, say, label)


def _submit_search(pool: Executor, matrix: np.ndarray, ks: Sequence[int], settings) -> list[Future]:
    size, seed = settings.silhouette_sample_size, settings.random_state
    return [pool.submit(fits.fit_and_score, matrix, k, SEARCH_N_INIT, seed, size) for k in ks]


def _collect(pending: list[Future], say: Progress | None, label: str) -> KSearch | None:
    if not pending:
        return None
    scores = []
    for future in pending:
        score = future.result()
        scores.append(score)
        if say:
            fit = f"inertia={score.inertia:.1f} silhouette={score.silhouette:.4f}"
            say(f"{label}: K={score.k} {fit}")
    silhouettes = [s.silhouette for s in scores]
    best = int(np.argmax(silhouettes))
    return KSearch(
        ks=tuple(s.k for s in scores),
        inertias=tuple(s.inertia for s in scores),
        silhouettes=tuple(silhouettes),
        best_k=scores[best].k,
        best_score=silhouettes[best],
    )


# An excluded type's group and each of its rows' group name.
ExcludedFit = tuple[ExcludedGroup, list[str]]


def _submit_excluded(pool: Executor, rows: pd.DataFrame, excluded_type: str, settings):
    """Start clustering one excluded type on its own. Returns `start`: it waits for the K
    search and submits the final fit, and returns `finish`, which gives (ExcludedGroup,
    names).

    Median impute and scale (no winsorizing, as in the notebook), then K by silhouette in
    range(SUB_K_MIN, min(SUB_K_MAX, n)) -- the notebook's range(2, min(5, n)), i.e. up to
    min(4, n-1) -- and a final fit with n_init=10, as it does. Groups under 4 rows are
    labelled instead.
    """
    n = len(rows)
    ks = list(range(settings.sub_k_min, min(settings.sub_k_max, n)))
    values = rows.to_numpy(dtype=np.float64)
    kept = ~np.isnan(values).all(axis=0)
    if n < MIN_EXCLUDED_GROUP or not kept.any() or not ks:
        reason = (
            "No features to cluster"
            if n >= MIN_EXCLUDED_GROUP and not kept.any()
            else ("Too few to cluster")
        )
        note = f"{excluded_type} - {reason}"
        group = ExcludedGroup(excluded_type, n, None, None, note)
        return lambda: lambda: (group, [note] * n)
    prepared = prepare(values, tuple(rows.columns), clip=False)
    matrix = prepared.scaled
    pending = _submit_search(pool, matrix, ks, settings)

    def start() -> Callable[[], ExcludedFit]:
        search = _collect(pending, None, excluded_type)
        final = pool.submit(
            fits.fit_centroids, matrix, search.best_k, SEARCH_N_INIT, settings.random_state
        )
        return lambda: finish(search, *final.result())

    def finish(search, labels, centers) -> ExcludedFit:
        names = [f"{excluded_type} - Group {label}" for label in labels]
        note = f"clustered on its own into {search.best_k} groups (K by silhouette)"
        centroids = {f"{excluded_type} - Group {i}": c for i, c in enumerate(centers)}
        group = ExcludedGroup(
            excluded_type, n, search, search.best_k, note, prepared.space, centroids
        )
        return group, names

    return start


def _summary(resident_rows: pd.DataFrame, settings: AnalysisSettings) -> pd.DataFrame:
    """The notebook's closing table: neighborhoods and key means per cohort."""
    # The notebook's columns, under the severity feature's own name (avg_crime_per_capita
    # for the notebook's): a mean of another feature must not read as crime.
    means = {
        f"avg_{settings.severity_feature}": settings.severity_feature,
        "avg_vacancy_rate": "housing_vacancy_rate",
        "avg_assessed_value": "median_assessed_value",
        "avg_permit_value": "permit_value_per_capita",
    }
    counted = settings.rows_called.replace(" ", "_")
    aggregations = {counted: (settings.key_column, "count")}
    aggregations |= {name: (col, "mean") for name, col in means.items() if col in resident_rows}
    grouped = resident_rows.groupby(["top_cluster_label", "cluster_label"])
    return grouped.agg(**aggregations).round(3).reset_index()


def _feature_warnings(features: FeatureSelection, table: pd.DataFrame) -> list[str]:
    """Warnings on skipped features; absent columns and columns blank in every row are
    already reported by the table's validation, so only those blank in the residential rows
    alone are added."""
    warnings = []
    residential_only = [f for f in features.all_blank if table[f].notna().any()]
    if residential_only:
        warnings.append(
            f"features blank in every residential row, skipped: {', '.join(residential_only)}"
        )
    return warnings
