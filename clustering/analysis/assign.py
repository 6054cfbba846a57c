"""The model document's rules, applied to any rows with numpy: which cohort each row gets.

This is the one place a row meets the fitted model. The memory engine's final assignments come
through it (clustering.analysis.document checks them against scikit-learn's labels), `python -m
clustering assign` applies it to any table, and the warehouse engine's SQL states the same
rules, so its rows can be checked against this code.

The rules (DESIGN.md, "The model document"):
- a row is residential when its population reaches `min_population` and its key is not in
  `excluded_keys`; otherwise it is Institutional/Industrial (a listed key, whatever its
  population) or Low Population (population below the bar, or blank);
- a residential row is put in the run's scaled space: a blank value (null or NaN alike) takes
  the feature's impute value, then the value is clipped to the winsor bounds, centred and
  divided by the scale (1 where a feature had no spread);
- its top group is the nearest top centroid (squared Euclidean distance), its sub-cluster the
  nearest sub-cluster centroid among those of that top group;
- fit_margin = (b - a) / max(a, b), with a the Euclidean distance to the row's own sub-cluster
  centroid and b the distance to the nearest other residential sub-cluster centroid (of either
  top group), which is the runner-up. 1 is a row sitting on its centroid, 0 a row halfway;
  below 0, another top group's sub-cluster is nearer than the row's own (the top split decides
  first, on the two top centroids, so this can happen);
- an excluded row of a type is put in that type's own space (impute, centre, scale: no
  clipping) and gets the nearest of the type's groups; a type too small to cluster gives every
  row its one label. Excluded rows have no fit_margin or runner-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from clustering.analysis.model import EXCLUDED
from clustering.analysis.prepare import EXCLUDED_TYPES, RESIDENTIAL, Space, types_of
from clustering.table import CLUSTER_COLUMNS

# The columns `assign` gives every row after its key, in the clusters table's order: all of
# its cluster columns but those of a run (stability is measured by refitting, which assign
# never does).
ASSIGNED_COLUMNS = tuple(
    c for c in CLUSTER_COLUMNS if c not in ("cohort_stability", "run_id", "_clustered_at")
)
# The ids excluded rows carry in top_cluster and sub_cluster.
NO_CLUSTER = -1
# A residential row is borderline below this fit_margin: its runner-up centroid is less than
# about 11% farther than its own (b < a / 0.9). On the Baltimore table 32 of the 247
# residential neighborhoods are (12 of them below 0).
BORDERLINE_MARGIN = 0.1


@dataclass(frozen=True)
class Cohort:
    """A residential sub-cluster: its stable id, top group, name and centroid in z."""

    id: int
    top: int
    name: str
    centroid: np.ndarray


@dataclass(frozen=True)
class ExcludedModel:
    """One excluded type: its own space and group centroids, or one label for every row."""

    space: Space | None
    groups: dict[str, np.ndarray]
    label: str | None = None


@dataclass(frozen=True)
class Model:
    """The model document in numbers (clustering.analysis.document reads and writes it).

    tops: stable top id -> centroid in z; top_labels: stable top id -> Stable/Distressed;
    cohorts: the sub-clusters, in id order; excluded: excluded_type -> its model.
    """

    key_column: str
    population_column: str | None  # None: no population column, no low-population rows
    min_population: float
    excluded_keys: tuple[str, ...]
    residential: Space
    tops: dict[int, np.ndarray]
    top_labels: dict[int, str]
    cohorts: tuple[Cohort, ...]
    excluded: dict[str, ExcludedModel]

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column a table must have to be assigned: key, population, features."""
        population = [self.population_column] if self.population_column is not None else []
        wanted = [self.key_column, *population, *self.residential.features]
        for kind in self.excluded.values():
            wanted += kind.space.features if kind.space else ()
        return tuple(dict.fromkeys(wanted))


def assign(frame: pd.DataFrame, model: Model) -> pd.DataFrame:
    """The key column and ASSIGNED_COLUMNS of every row of `frame`, in its order.

    `frame` holds `model.columns`, features numeric (blanks as NaN or null)."""
    keys = frame[model.key_column]
    population = None if model.population_column is None else frame[model.population_column]
    types = types_of(keys, population, model.excluded_keys, model.min_population)
    out = pd.DataFrame({model.key_column: keys.to_numpy(dtype=object)})
    out["top_cluster"] = pd.array(np.full(len(frame), NO_CLUSTER), dtype="Int64")
    out["top_cluster_label"] = EXCLUDED
    out["sub_cluster"] = pd.array(np.full(len(frame), NO_CLUSTER), dtype="Int64")
    for column in ("cluster_label", "excluded_cluster", "cohort_name", "runner_up_name"):
        out[column] = pd.Series([None] * len(frame), dtype=object)
    out["excluded_type"] = types
    out["fit_margin"] = np.nan
    out["runner_up_cluster"] = pd.array([pd.NA] * len(frame), dtype="Int64")
    residential = types == RESIDENTIAL
    if residential.any():
        _residential(out, residential, model.residential.z(frame[residential]), model)
    for excluded_type in EXCLUDED_TYPES:
        rows = types == excluded_type
        if rows.any():
            names = _excluded(frame[rows], model.excluded.get(excluded_type))
            for column in ("cluster_label", "excluded_cluster", "cohort_name"):
                out.loc[rows, column] = names
    return out[[model.key_column, *ASSIGNED_COLUMNS]]


def _residential(out: pd.DataFrame, rows: np.ndarray, z: np.ndarray, model: Model) -> None:
    """Top group, sub-cluster, margin and runner-up of the residential rows (in place)."""
    top_ids = np.array(sorted(model.tops), dtype=np.int64)
    top = top_ids[nearest(squared_distances(z, [model.tops[t] for t in top_ids]))]
    cohorts = model.cohorts
    ids = np.array([c.id for c in cohorts], dtype=np.int64)
    distances = squared_distances(z, [c.centroid for c in cohorts])
    # Sub-clusters of another top group are out of reach for the row's own sub-cluster.
    other_top = np.array([c.top for c in cohorts])[None, :] != top[:, None]
    own = nearest(np.where(other_top, np.inf, distances))
    a = np.sqrt(distances[np.arange(len(z)), own])
    rivals = distances.copy()
    rivals[np.arange(len(z)), own] = np.inf
    runner_up = nearest(rivals)
    b = np.sqrt(rivals[np.arange(len(z)), runner_up])
    names = np.array([c.name for c in cohorts], dtype=object)
    sub = ids[own]
    out.loc[rows, "top_cluster"] = top
    out.loc[rows, "top_cluster_label"] = [model.top_labels[t] for t in top]
    out.loc[rows, "sub_cluster"] = sub
    out.loc[rows, "cluster_label"] = [f"Cluster {s}" for s in sub]
    out.loc[rows, "cohort_name"] = names[own]
    out.loc[rows, "fit_margin"] = margin(a, b)
    if len(cohorts) > 1:  # a runner-up exists
        out.loc[rows, "runner_up_cluster"] = ids[runner_up]
        out.loc[rows, "runner_up_name"] = names[runner_up]


def _excluded(frame: pd.DataFrame, kind: ExcludedModel | None) -> np.ndarray:
    """Each row's group name within its excluded type (None where the model has no such
    type: the fitted run had no row of it and a document always lists both, so only a
    hand-edited document gets here)."""
    if kind is None:
        return np.full(len(frame), None, dtype=object)
    if kind.label is not None:
        return np.full(len(frame), kind.label, dtype=object)
    names = np.array(list(kind.groups), dtype=object)
    z = kind.space.z(frame)
    return names[nearest(squared_distances(z, list(kind.groups.values())))]


def squared_distances(z: np.ndarray, centroids) -> np.ndarray:
    """Rows x centroids matrix of squared Euclidean distances, one centroid at a time (memory
    stays rows x features, and the sums are the plain ones a query computes too)."""
    columns = [((z - np.asarray(c)) ** 2).sum(axis=1) for c in centroids]
    return np.column_stack(columns) if columns else np.empty((len(z), 0))


def nearest(distances: np.ndarray) -> np.ndarray:
    """Index of each row's nearest centroid; a tie goes to the first in id order."""
    return np.argmin(distances, axis=1)


def margin(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(b - a) / max(a, b); 0 where both are 0 (a row on two coinciding centroids)."""
    largest = np.maximum(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(largest > 0, (b - a) / largest, 0.0)
