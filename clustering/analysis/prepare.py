"""Rows and matrix preparation: which rows are residential, which features, and the matrix.

Steps follow the notebook's cells 2-3 with its bugs fixed: rows are split with ONE exclusion
list, absent or all-blank features are reported instead of vanishing, and the winsorizing is an
exact, vectorised equivalent of `scipy.stats.mstats.winsorize(limits=[0.01, 0.01], axis=0)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from clustering.settings import AnalysisSettings

RESIDENTIAL = "Residential"
INSTITUTIONAL = "Institutional/Industrial"
LOW_POPULATION = "Low Population (Park/Open Space)"
EXCLUDED_TYPES = (INSTITUTIONAL, LOW_POPULATION)
# The winsorizing of the notebook: this share of each column's values clipped on each side.
WINSOR_LIMITS = (0.01, 0.01)


@dataclass(frozen=True)
class FeatureSelection:
    """The configured features split by what the table holds.

    used: present with at least one value among the residential rows, in configured order.
    missing: configured but not columns of the table.
    all_blank: columns present but blank in every residential row (skipped, like the
        notebook's imputer silently did).
    """

    used: tuple[str, ...]
    missing: tuple[str, ...]
    all_blank: tuple[str, ...]


def row_types(table: pd.DataFrame, settings: AnalysisSettings) -> pd.Series:
    """Each row's `excluded_type`: Residential, Institutional/Industrial or Low Population.

    The exclusion list wins over population, as in the notebook's excluded analysis; a blank
    population counts as low. Without a population column no row is low population.
    """
    column = settings.population_column
    types = types_of(
        table[settings.key_column],
        None if column is None else table[column],
        settings.excluded_names,
        settings.min_population,
    )
    return pd.Series(types, index=table.index, name="excluded_type")


def types_of(keys: pd.Series, population: pd.Series | None, excluded, min_population) -> np.ndarray:
    """The rule behind `row_types`, which the model document states too (its excluded_keys
    and min_population): a listed key is institutional/industrial, whatever its population;
    without a population (None) every other row is residential."""
    listed = keys.isin(excluded).to_numpy()
    if population is None:
        low = np.zeros(len(keys), dtype=bool)
    else:
        # A blank population is not known to reach the threshold: low population.
        low = ~(population.astype("float64") >= min_population).to_numpy()
    return np.where(listed, INSTITUTIONAL, np.where(low, LOW_POPULATION, RESIDENTIAL))


def select_features(
    table: pd.DataFrame, residential: pd.Series, settings: AnalysisSettings
) -> FeatureSelection:
    """Split the configured features into used, missing and all-blank ones."""
    present = [f for f in settings.clustering_features if f in table.columns]
    missing = tuple(f for f in settings.clustering_features if f not in table.columns)
    counts = table.loc[residential, present].notna().sum()
    all_blank = tuple(f for f in present if counts[f] == 0)
    used = tuple(f for f in present if counts[f] > 0)
    return FeatureSelection(used=used, missing=missing, all_blank=all_blank)


@dataclass(frozen=True)
class Space:
    """How raw values become a point of a fitted space: z = (clip(impute(x)) - center) / scale.

    impute: each feature's median, for a blank (NaN); clip: (low, high), the winsor bounds,
    or None where the fit does not winsorize (the excluded types); center, scale: the
    StandardScaler's mean_ and scale_ (1 where a feature has no spread).
    """

    features: tuple[str, ...]
    impute: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    clip: tuple[np.ndarray, np.ndarray] | None = None

    def z(self, frame: pd.DataFrame) -> np.ndarray:
        """The rows of `frame` (which holds every feature, numeric) in this space."""
        values = frame[list(self.features)].astype("float64").to_numpy(copy=True)
        blank = np.isnan(values)
        values[blank] = np.broadcast_to(self.impute, values.shape)[blank]
        if self.clip is not None:
            values = np.clip(values, self.clip[0], self.clip[1])
        return (values - self.center) / self.scale


# Keys named per blank-fill warning, at most.
KEYS_SHOWN = 5


def filled_blanks(rows: pd.DataFrame, space: Space, key_column: str, whose: str = "") -> list[str]:
    """One warning per feature of `space` that is blank in some of `rows`, which the fit fills
    with its median: the feature, how many rows, the value used and up to KEYS_SHOWN keys,
    e.g. "HARDSHIP blank in 1 row (CITYWIDE): filled with the median 59". `whose` names the
    rows the median is of when they are not the residential ones."""
    warnings = []
    for feature, value in zip(space.features, space.impute, strict=True):
        blank = rows[feature].isna().to_numpy()
        count = int(blank.sum())
        if not count:
            continue
        keys = [str(k) for k in rows[key_column].to_numpy()[blank][:KEYS_SHOWN]]
        shown = ", ".join(keys) + (", ..." if count > KEYS_SHOWN else "")
        median = f"the {whose} rows' median" if whose else "the median"
        warnings.append(
            f"{feature} blank in {count} row{'' if count == 1 else 's'} ({shown}): filled "
            f"with {median} {float(value):.6g}"
        )
    return warnings


@dataclass(frozen=True)
class Prepared:
    """A fitted space and the rows it was fitted on: `before_scaling` (imputed, and clipped
    when the space clips) and `scaled`, the matrix the k-means fits see."""

    space: Space
    before_scaling: np.ndarray
    scaled: np.ndarray


def prepare(values: np.ndarray, features: tuple[str, ...], clip: bool) -> Prepared:
    """Median-impute, winsorize (when `clip`) and scale `values`, keeping every constant.

    Columns with no value at all are dropped (they are not among the space's features). The
    scaling is scikit-learn's StandardScaler itself (not a re-implementation), so constant
    columns and rounding behave exactly as in the notebook; `space.z` of the same rows gives
    `scaled` again, bit for bit.
    """
    from sklearn.preprocessing import StandardScaler

    imputed, kept = impute_median(values)
    medians = np.nanmedian(values[:, kept].astype(np.float64), axis=0)
    bounds = winsor_bounds(imputed) if clip else None
    before = winsorize(imputed) if clip else imputed
    scaler = StandardScaler().fit(before)
    space = Space(
        features=tuple(f for f, k in zip(features, kept, strict=True) if k),
        impute=medians,
        center=scaler.mean_,
        scale=scaler.scale_,
        clip=bounds,
    )
    return Prepared(space, before, scaler.transform(before))


def winsor_bounds(matrix: np.ndarray, limits=WINSOR_LIMITS) -> tuple[np.ndarray, np.ndarray]:
    """Each column's (low, high) clipping values in `winsorize`: the int(low*n)-th smallest and
    the int(up*n)-th largest value (the minimum and maximum when nothing is clipped)."""
    n = matrix.shape[0]
    low_index, high_index = int(limits[0] * n), n - int(n * limits[1]) - 1
    ordered = np.partition(matrix, (low_index, high_index), axis=0)
    return ordered[low_index], ordered[high_index]


def impute_median(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace NaN by its column's median; columns with no value at all are dropped.

    Returns the imputed matrix and the boolean mask of the columns kept, like scikit-learn's
    `SimpleImputer(strategy="median")` with its default `keep_empty_features=False`.
    """
    kept = ~np.isnan(values).all(axis=0)
    matrix = values[:, kept].astype(np.float64, copy=True)
    blanks = np.isnan(matrix)
    if blanks.any():
        medians = np.nanmedian(matrix, axis=0)
        rows, cols = np.nonzero(blanks)
        matrix[rows, cols] = medians[cols]
    return matrix, kept


def winsorize(matrix: np.ndarray, limits: tuple[float, float] = WINSOR_LIMITS) -> np.ndarray:
    """Clip each column like `scipy.stats.mstats.winsorize(matrix, limits, axis=0)`.

    scipy sets the int(low*n) smallest values of a column to the next smallest one and the
    int(up*n) largest to the next largest. Clipping at those two order statistics gives the
    same values, in O(n) per column with `np.partition` instead of a full argsort.
    """
    n = matrix.shape[0]
    if n == 0 or (int(limits[0] * n) == 0 and int(n * limits[1]) == 0):
        return matrix.copy()
    return np.clip(matrix, *winsor_bounds(matrix, limits))
