"""The built-in demo table: a synthetic, deterministic neighborhood features table.

The real Baltimore table is not ours to ship, so `make run` and the benchmark use this
generator instead. One latent "distress" score drives every feature with the signs a city
analyst expects (vacancy, crime and 311 blight up; owner occupancy, permits and assessed values
down), so the clustering finds a real stable/distressed gradient. Like the real table, it has
blanks, about 7% of rows under 100 residents (parks and open space) and the notebook's 13
excluded institutional and industrial areas.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clustering.settings import DEFAULT_EXCLUDE_NEIGHBORHOODS

SAMPLE_ROWS = 279
_FIRST = (
    "Ash",
    "Bell",
    "Cedar",
    "Dover",
    "Elm",
    "Fox",
    "Glen",
    "Harbor",
    "Iron",
    "Juniper",
    "King",
    "Laurel",
    "Mill",
    "North",
    "Oak",
    "Pine",
    "Queen",
    "River",
    "Stone",
    "Tide",
    "Union",
    "Vale",
    "West",
    "York",
    "Birch",
    "Clover",
    "Druid",
    "Forest",
    "Grove",
    "Hollins",
)
_SECOND = (
    "Park",
    "Hill",
    "Heights",
    "Village",
    "Square",
    "Manor",
    "Gardens",
    "Terrace",
    "Crossing",
    "Point",
)
# Share of rows that are parks or open space (under 100 residents), as in the real table.
_LOW_POPULATION_SHARE = 19 / 279
# Share of cells left blank in each feature column other than population.
_BLANK_SHARE = 0.01


def make_sample(n_rows: int = SAMPLE_ROWS, random_state: int = 0) -> pd.DataFrame:
    """A features table with `neighborhood`, `population` and the 15 default features.

    The same arguments always give the same table. `n_rows` must be at least 20.
    """
    if n_rows < 20:
        raise ValueError(f"n_rows is {n_rows}: the sample needs at least 20 rows")
    rng = np.random.default_rng(random_state)
    names = _names(n_rows)
    # Two overlapping populations of neighborhoods: the gradient the top split should find.
    distressed = rng.random(n_rows) < 0.35
    distress = rng.normal(np.where(distressed, 1.2, -0.6), 0.7)

    population = np.round(rng.lognormal(7.6, 0.7, n_rows)).astype(np.int64)
    low = rng.random(n_rows) < _LOW_POPULATION_SHARE
    population[low] = rng.integers(0, 100, low.sum())
    institutional = np.isin(names, DEFAULT_EXCLUDE_NEIGHBORHOODS)
    population[institutional] = rng.integers(50, 3000, institutional.sum())

    def noise(scale: float) -> np.ndarray:
        return rng.normal(0.0, scale, n_rows)

    crime = np.exp(-3.0 + 0.55 * distress + noise(0.3))
    crime[institutional] *= 4  # a tiny residential base inflates per-capita crime
    median_value = np.exp(12.0 - 0.6 * distress + noise(0.25))
    table = pd.DataFrame(
        {
            "neighborhood": names,
            "population": population,
            "med_age": np.clip(38 - 2.5 * distress + noise(4), 18, 75).round(1),
            "housing_vacancy_rate": _logistic(-2.0 + 0.9 * distress + noise(0.4)).round(4),
            "owner_occupancy_rate": _logistic(0.3 - 0.8 * distress + noise(0.5)).round(4),
            "crime_per_capita": crime.round(4),
            "arrest_per_capita": (crime * 0.35 * np.exp(noise(0.3))).round(4),
            "crime_yoy_change": noise(0.2).round(4),
            "vacant_notices_per_unit": np.exp(-4.0 + 1.2 * distress + noise(0.5)).round(4),
            "rehab_to_vacant_ratio": np.exp(-0.5 - 0.7 * distress + noise(0.5)).round(3),
            "permit_value_per_capita": np.exp(7.0 - 0.8 * distress + noise(0.6)).round(2),
            "permit_recent_5yr": rng.poisson(np.exp(3.5 - 0.5 * distress)).astype(np.float64),
            "requests_311_per_capita": np.exp(-1.0 + 0.4 * distress + noise(0.3)).round(4),
            "requests_311_blight": np.exp(-2.5 + 0.8 * distress + noise(0.4)).round(4),
            "median_assessed_value": median_value.round(-2),
            "avg_assessed_value": (median_value * rng.uniform(1.05, 1.4, n_rows)).round(-2),
        }
    )
    features = table.columns[2:]
    # Per-capita rates mean nothing without residents, as in the real table.
    per_capita = [c for c in features if c.endswith("_per_capita")]
    table.loc[table["population"] == 0, per_capita] = np.nan
    blanks = rng.random((n_rows, len(features))) < _BLANK_SHARE
    values = table[features].to_numpy(dtype=np.float64, copy=True)
    values[blanks] = np.nan
    table[features] = values
    return table


def _names(n_rows: int) -> np.ndarray:
    pool = [f"{first} {second}" for first in _FIRST for second in _SECOND]
    pool = [name for name in pool if name not in DEFAULT_EXCLUDE_NEIGHBORHOODS]
    names = list(DEFAULT_EXCLUDE_NEIGHBORHOODS)
    index = 0
    while len(names) < n_rows:
        base = pool[index % len(pool)]
        round_ = index // len(pool)
        names.append(base if round_ == 0 else f"{base} {round_ + 1}")
        index += 1
    return np.array(sorted(names[:n_rows]), dtype=object)


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
