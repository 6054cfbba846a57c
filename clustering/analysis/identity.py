"""Cohorts that keep their identity from run to run: stable ids, names, transitions.

k-means numbers its clusters arbitrarily, so two runs on nearly the same data may call the
same cohort 11 in one and 12 in the other. Each run therefore records its clusters' centroids
in run.json, and the next run matches its own clusters to them:

1. Both sets of centroids are put in the NEW run's scaled space. A centroid is recorded in
   original units as the mean of the values the clustering saw (median-imputed and winsorized,
   before scaling); scaling is linear, so this mean, scaled, is exactly the k-means centroid.
   An old centroid is clipped to the new run's winsorizing bounds and standardised with the
   new run's means and standard deviations: the same steps the new run applied to its own
   rows, so old and new centroids are compared on one scale, over the features both runs used.
2. Top groups are matched first, by optimal assignment (scipy's linear_sum_assignment) on the
   Euclidean distance between centroids; then the sub-clusters of each matched pair of top
   groups, the same way. A matched cluster keeps its previous id (and so its cluster_label).
3. A new cluster left without a partner (more clusters than before) takes the lowest id used
   neither by the previous run nor by this one; a previous cluster left without one has
   vanished and is reported. run.json records every pair, its distance and the rule applied.

The first run (no previous run, or a previous run without centroids, or no feature in common)
keeps the clustering's own numbering, so it equals the notebook's. Only numbering changes:
which neighborhoods are clustered together is never touched.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from clustering.analysis import cohorts as naming
from clustering.analysis.cohorts import Cohort, Naming, PreviousName, Profile
from clustering.analysis.model import Centroids, ClusteringResult
from clustering.analysis.stability import UNSTABLE, Stability
from clustering.analysis.transitions import Counts, transitions

TOP, SUB = "top", "sub"
ASSIGNED = "optimal assignment on centroid distance"
NEXT_ID = "no previous cluster left to match: next unused id"
FIRST_RUN = "first run: the clustering's own numbering"
NO_CENTROIDS = "the previous run recorded no centroids: the clustering's own numbering"
NO_SHARED = "no feature in common with the previous run: the clustering's own numbering"
RULE = (
    "scipy.optimize.linear_sum_assignment on the Euclidean distance between centroids in this "
    "run's scaled space (old centroids clipped to this run's winsorizing bounds and "
    "standardised with its scaling), top groups first, then sub-clusters within each matched "
    "pair of top groups; unmatched new clusters take the next unused id"
)


@dataclass(frozen=True)
class PreviousCluster:
    """A top group or sub-cluster of the previous run, as its run.json recorded it."""

    id: int
    top: int
    label: str
    name: str
    centroid: dict[str, float]
    name_source: str = naming.GENERATED
    name_features: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PreviousRun:
    """What this run needs of the last published one (its latest/).

    rows: transitions.previous_columns of its clusters CSV, for the transitions; None when
        unavailable.
    """

    run_id: str
    features: tuple[str, ...]
    tops: tuple[PreviousCluster, ...]
    cohorts: tuple[PreviousCluster, ...]
    rows: pd.DataFrame | None


def previous_run(manifest: dict, rows: pd.DataFrame | None) -> PreviousRun:
    """Parse the previous run.json (runs from before identity have no centroids: empty)."""
    tops = tuple(
        PreviousCluster(
            id=int(t["top_cluster"]),
            top=int(t["top_cluster"]),
            label=str(t["label"]),
            name=str(t["label"]),
            centroid=dict(t["centroid"]),
        )
        for t in manifest.get("top_centroids") or ()
    )
    cohorts = tuple(
        PreviousCluster(
            id=int(c["sub_cluster"]),
            top=int(c["top_cluster"]),
            label=str(c["top_label"]),
            name=str(c["name"]),
            centroid=dict(c["centroid"]),
            name_source=str(c.get("name_source", naming.GENERATED)),
            name_features=tuple((str(f), str(d)) for f, d in c.get("name_features") or ()),
        )
        for c in manifest.get("cohorts") or ()
    )
    return PreviousRun(
        run_id=str(manifest["run_id"]),
        features=tuple(manifest.get("features", {}).get("used", ())),
        tops=tops,
        cohorts=cohorts,
        rows=rows,
    )


@dataclass(frozen=True)
class Matching:
    """Clustering's own ids -> stable ids, and the record of how they were decided."""

    top_ids: dict[int, int]
    sub_ids: dict[int, int]
    record: dict


@dataclass(frozen=True)
class Identity:
    """A run's cohorts under their stable ids (the contract with the report and the job).

    result: the ClusteringResult renumbered (table, profile, summary, top groups); its table
        is `table`.
    table: every row with stable top_cluster/sub_cluster/cluster_label and the columns
        cohort_name and cohort_stability (null for excluded rows).
    cohorts: one per sub-cluster, by stable id.
    top_centroids: per top group: top_cluster, label, rows, centroid (original units).
    matching: run.json's "identity" record.
    transitions: the moves since the previous run (transitions.COLUMNS); None without one.
    counts: the transitions' counts; None without a previous run.
    stability: how cohort_stability was taken; None until computed.
    measures: per used feature, how it is described: "index" or "sd" (cohorts.measure).
    """

    result: ClusteringResult
    table: pd.DataFrame
    cohorts: tuple[Cohort, ...]
    top_centroids: tuple[dict, ...]
    matching: dict
    transitions: pd.DataFrame | None
    counts: Counts | None
    previous_run_id: str | None
    stability: Stability | None
    warnings: tuple[str, ...]
    measures: dict[str, str]


def identify(
    result: ClusteringResult,
    previous: PreviousRun | None,
    overrides: dict[int, str],
    run_id: str,
    key_column: str = "neighborhood",
    directions: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> Identity:
    """Stable ids, names and transitions of a run (stability comes after: `with_stability`).

    key_column: the column naming the rows (KEY_COLUMN), which the transitions match on.
    directions: feature -> higher_is_worse | higher_is_better, for the cohorts' names.
    labels: feature -> its FEATURE_LABELS words, for the cohorts' names.
    """
    matching = match(result, previous)
    renumbered = renumber(result, matching)
    matched = {p["current"] for p in matching.record["pairs"] if p["level"] == SUB}
    before = {
        c.id: PreviousName(c.name, c.label, c.name_source, c.name_features)
        for c in (previous.cohorts if previous else ())
        if c.id in matched
    }
    measures = _measures(renumbered)
    words = naming.Words(directions or {}, labels or {})
    cohorts, names = _cohorts(renumbered, before, overrides, words, measures)
    table = _with_names(renumbered.table, renumbered.residential, names)
    moves, counts = None, None
    if previous is not None and previous.rows is not None:
        moves, counts = transitions(previous.rows, table, previous.run_id, run_id, key_column)
    unknown = sorted(set(overrides) - {c.sub_cluster for c in cohorts})
    warnings = tuple(
        f"LABEL_OVERRIDES names cohort {sub}, which this run does not have: the name is unused"
        for sub in unknown
    )
    return Identity(
        result=replace(renumbered, table=table),
        table=table,
        cohorts=cohorts,
        top_centroids=_top_centroids(renumbered),
        matching=matching.record,
        transitions=moves,
        counts=counts,
        previous_run_id=previous.run_id if previous else None,
        stability=None,
        warnings=warnings,
        measures=measures,
    )


def _measures(result: ClusteringResult) -> dict[str, str]:
    """How each used feature is described: by an index, or in standard deviations when it
    takes a negative value anywhere in the table or its residential mean is not positive."""
    used = list(result.features.used)
    smallest = result.table[used].min()
    means = result.table.loc[result.residential, used].mean()
    return {f: naming.measure(float(smallest[f]), float(means[f])) for f in used}


def _cohorts(
    result: ClusteringResult, before, overrides, words, measures
) -> tuple[tuple[Cohort, ...], dict]:
    """The cohorts of a renumbered result (stability unknown yet) and their names."""
    residential = result.table.loc[result.residential]
    used = list(result.features.used)
    top, sub = (residential[c].to_numpy(dtype=np.int64) for c in ("top_cluster", "sub_cluster"))
    centroids = pd.DataFrame(result.winsorized, columns=used).groupby(sub).mean()
    z = pd.DataFrame(result.scaled, columns=used).groupby(sub).mean()
    raw = residential[used].reset_index(drop=True)
    means, overall = raw.groupby(sub).mean(), raw.mean()
    labels = {g.top: g.label for g in result.top_groups}
    top_of = dict(zip(sub, top, strict=True))
    profiles = [Profile(int(s), labels[top_of[s]], z.loc[s].to_dict()) for s in z.index]
    names = naming.name_cohorts(profiles, before, overrides, words.directions, words.labels)
    indexed = [f for f in used if measures[f] == naming.INDEX]
    sizes = pd.Series(sub).value_counts()
    cohorts = tuple(
        Cohort(
            top_cluster=int(top_of[p.sub_cluster]),
            top_label=p.top_label,
            sub_cluster=p.sub_cluster,
            name=names[p.sub_cluster].name,
            rows=int(sizes[p.sub_cluster]),
            stability=math.nan,
            index_scores=naming.index_scores(means.loc[p.sub_cluster], overall, indexed),
            centroid=_floats(centroids.loc[p.sub_cluster]),
            sd_scores={f: round(float(v), 3) for f, v in p.z.items()},
            name_source=names[p.sub_cluster].source,
            name_features=names[p.sub_cluster].features,
        )
        for p in profiles
    )
    return cohorts, names


def _top_centroids(result: ClusteringResult) -> tuple[dict, ...]:
    """Per top group: id, label, rows and centroid in original units."""
    top = result.table.loc[result.residential, "top_cluster"].to_numpy(dtype=np.int64)
    frame = pd.DataFrame(result.winsorized, columns=list(result.features.used))
    labels = {g.top: g.label for g in result.top_groups}
    return tuple(
        {
            "top_cluster": int(t),
            "label": labels[t],
            "rows": len(rows),
            "centroid": _floats(rows.mean()),
        }
        for t, rows in frame.groupby(top)
    )


def with_stability(identity: Identity, stability: Stability) -> Identity:
    """The identity with each cohort's bootstrap stability, and a warning per unstable one."""
    scores = {sub: _rounded(score) for sub, score in stability.scores.items()}
    cohorts = tuple(
        replace(c, stability=scores.get(c.sub_cluster, math.nan)) for c in identity.cohorts
    )
    table = identity.table.copy()
    table["cohort_stability"] = table["sub_cluster"].map(scores).astype("float64")
    warnings = tuple(
        f"cohort {c.sub_cluster} ({c.name}) has bootstrap stability {c.stability}, below "
        f"{UNSTABLE}: it may not be a real cluster; treat its borders with care"
        for c in cohorts
        if c.stability < UNSTABLE
    )
    return replace(
        identity,
        result=replace(identity.result, table=table),
        table=table,
        cohorts=cohorts,
        stability=stability,
        warnings=identity.warnings + warnings,
    )


def manifest_entries(identity: Identity) -> dict:
    """run.json's cohorts, top_centroids, identity, transitions and stability."""
    counts = identity.counts
    stability = identity.stability
    return {
        "cohorts": [_plain(asdict(c)) for c in identity.cohorts],
        "top_centroids": list(identity.top_centroids),
        "identity": identity.matching,
        "transitions": {
            "previous_run_id": identity.previous_run_id,
            "moved": counts.moved if counts else None,
            "between_top_groups": counts.between_top_groups if counts else None,
            "stable_to_distressed": counts.stable_to_distressed if counts else None,
            "distressed_to_stable": counts.distressed_to_stable if counts else None,
            "appeared": counts.appeared if counts else None,
            "disappeared": counts.disappeared if counts else None,
        },
        "stability": {
            "method": "bootstrap Jaccard (Hennig's clusterboot): mean best match per cohort",
            "resamples": stability.resamples if stability else None,
            "sample_size": stability.sample_size if stability else None,
            "seed": stability.seed if stability else None,
            "threshold": UNSTABLE,
        },
    }


# --- matching -------------------------------------------------------------------------------


def match(result: ClusteringResult, previous: PreviousRun | None) -> Matching:
    """Map the clustering's own top and sub ids to stable ids (see the module docstring)."""
    top, sub = _own_labels(result)
    shared = [f for f in result.features.used if previous and f in previous.features]
    if previous is None or not previous.cohorts or not previous.tops or not shared:
        rule = FIRST_RUN if previous is None else NO_SHARED if previous.cohorts else NO_CENTROIDS
        return Matching(
            top_ids={int(t): int(t) for t in np.unique(top)},
            sub_ids={int(s): int(s) for s in np.unique(sub)},
            record={
                "previous_run_id": previous.run_id if previous else None,
                "rule": rule,
                "features": shared,
                "pairs": [],
                "new": [],
                "vanished": [],
            },
        )
    space = ScaledSpace.of(result, shared)
    ledger = _Ledger()
    old_tops = {c.id: c for c in previous.tops}
    top_ids = ledger.assign(TOP, space, _centroids(result, top, shared), old_tops, set(old_tops))
    used = {c.id for c in previous.cohorts}
    sub_ids: dict[int, int] = {}
    for own_top, stable_top in top_ids.items():
        # A new top group has nothing of the past to match.
        olds = {c.id: c for c in previous.cohorts if c.top == stable_top and stable_top in old_tops}
        current = _centroids(result, sub, shared, top == own_top)
        sub_ids |= ledger.assign(SUB, space, current, olds, used, base=stable_top * 10)
    return Matching(
        top_ids=top_ids,
        sub_ids=sub_ids,
        record={"previous_run_id": previous.run_id, "rule": RULE, "features": shared}
        | asdict(ledger),
    )


@dataclass(frozen=True)
class ScaledSpace:
    """This run's winsorizing bounds and scaling, over the features both runs used."""

    features: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, result: ClusteringResult, features: list[str]) -> ScaledSpace:
        columns = [result.features.used.index(f) for f in features]
        values = result.winsorized[:, columns]
        scale = values.std(axis=0)
        # As StandardScaler does: a constant column is centred, not divided by zero.
        scale[scale == 0] = 1.0
        return cls(
            tuple(features), values.min(axis=0), values.max(axis=0), values.mean(axis=0), scale
        )

    def project(self, centroid: dict[str, float]) -> np.ndarray:
        point = np.array([centroid.get(f, np.nan) for f in self.features], dtype=np.float64)
        # A feature the old run recorded no value for sits at this run's mean.
        point = np.where(np.isnan(point), self.mean, point)
        return (np.clip(point, self.low, self.high) - self.mean) / self.scale


@dataclass
class _Ledger:
    """What the matching decided, as run.json records it."""

    pairs: list[dict] = field(default_factory=list)
    new: list[dict] = field(default_factory=list)
    vanished: list[dict] = field(default_factory=list)

    def assign(self, level, space, current, olds, used, base=0) -> dict[int, int]:
        """Pair `current` (own id -> centroid) with `olds` (id -> PreviousCluster) optimally
        and return own id -> stable id; a new cluster takes the lowest id from `base` on that
        is not in `used` (which the ids handed out join)."""
        from scipy.optimize import linear_sum_assignment

        own, old = sorted(current), sorted(olds)
        new_points = np.array([space.project(current[c]) for c in own])
        old_points = np.array([space.project(olds[o].centroid) for o in old])
        old_points = old_points.reshape(len(old), len(space.features))
        cost = np.linalg.norm(new_points[:, None, :] - old_points[None, :, :], axis=2)
        rows, cols = linear_sum_assignment(cost) if len(old) else ((), ())
        ids = {}
        for r, c in zip(rows, cols, strict=True):
            ids[own[r]] = old[c]
            distance = round(float(cost[r, c]), 6)
            self.pairs.append(
                {
                    "level": level,
                    "previous": old[c],
                    "current": old[c],
                    "own": own[r],
                    "name": olds[old[c]].name,
                    "distance": distance,
                    "rule": ASSIGNED,
                }
            )
        for index, own_id in enumerate(own):
            if own_id in ids:
                continue
            ids[own_id] = next(i for i in range(base, base + 10**6) if i not in used)
            used.add(ids[own_id])
            nearest = round(float(cost[index].min()), 6) if len(old) else None
            self.new.append(
                {
                    "level": level,
                    "current": ids[own_id],
                    "own": own_id,
                    "nearest_distance": nearest,
                    "rule": NEXT_ID,
                }
            )
        self.vanished += [
            {"level": level, "previous": o, "name": olds[o].name}
            for o in old
            if o not in ids.values()
        ]
        return ids


def _own_labels(result: ClusteringResult) -> tuple[np.ndarray, np.ndarray]:
    rows = result.table.loc[result.residential]
    return (
        rows["top_cluster"].to_numpy(dtype=np.int64),
        rows["sub_cluster"].to_numpy(dtype=np.int64),
    )


def _centroids(result, labels, features, mask=None) -> dict[int, dict[str, float]]:
    """Own id -> centroid in original units (winsorized means) over `features`."""
    frame = pd.DataFrame(result.winsorized, columns=list(result.features.used))[features]
    if mask is not None:
        frame, labels = frame[mask], labels[mask]
    return {int(k): rows.mean().to_dict() for k, rows in frame.groupby(labels)}


# --- renumbering and naming -----------------------------------------------------------------


def renumber(result: ClusteringResult, matching: Matching) -> ClusteringResult:
    """The result under stable ids: table, centroids, profile, summary and top groups."""
    table = result.table.copy()
    residential = result.residential
    for column, ids in (("top_cluster", matching.top_ids), ("sub_cluster", matching.sub_ids)):
        values = table.loc[residential, column].astype("int64").map(ids)
        table.loc[residential, column] = values.to_numpy()
    subs = table.loc[residential, "sub_cluster"].astype("int64")
    table.loc[residential, "cluster_label"] = ("Cluster " + subs.astype(str)).to_numpy()
    labels = {f"Cluster {own}": f"Cluster {stable}" for own, stable in matching.sub_ids.items()}
    summary = result.summary.assign(cluster_label=result.summary["cluster_label"].map(labels))
    top_ids, sub_ids = matching.top_ids, matching.sub_ids
    centroids = Centroids(
        top={top_ids[t]: c for t, c in result.centroids.top.items()},
        sub={sub_ids[s]: (top_ids[t], c) for s, (t, c) in result.centroids.sub.items()},
    )
    return replace(
        result,
        table=table,
        centroids=centroids,
        profile=result.profile.rename(columns=matching.sub_ids).sort_index(axis=1),
        summary=summary.sort_values(["top_cluster_label", "cluster_label"]).reset_index(drop=True),
        top_groups=tuple(
            sorted(
                (replace(g, top=matching.top_ids[g.top]) for g in result.top_groups),
                key=lambda g: g.top,
            )
        ),
    )


def _with_names(table: pd.DataFrame, residential: np.ndarray, names: dict[int, Naming]):
    """cohort_name (excluded rows: their group) and cohort_stability (unknown yet)."""
    out = table.copy()
    named = out["sub_cluster"].map({sub: n.name for sub, n in names.items()})
    out["cohort_name"] = np.where(residential, named, out["excluded_cluster"]).astype(object)
    out["cohort_stability"] = np.nan
    return out


def _floats(values: pd.Series) -> dict[str, float]:
    return {str(k): float(v) for k, v in values.items()}


def _rounded(value: float) -> float:
    return round(float(value), 4) if value == value else math.nan


def _plain(value):
    """JSON-safe: NaN becomes null and tuples lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
