"""Paths and small builders shared by the tests."""

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
# The seven files of every run (DESIGN.md, "Artifacts"), written by name here rather than
# imported, so that a renamed or dropped artifact fails these tests.
ARTIFACTS = (
    "neighborhood_clusters.csv",
    "excluded_neighborhood_analysis.csv",
    "elbow_silhouette.png",
    "pca_clusters.png",
    "cluster_heatmap.png",
    "report.html",
    "run.json",
)
MANIFEST = "run.json"
# The real Baltimore table and its boundaries, public data shipped in the repo (data/baltimore/).
REAL_DATA = REPO / "data" / "baltimore"
REAL_FEATURES = REAL_DATA / "baltimore_neighborhood_features.csv"
REAL_BOUNDARIES = REAL_DATA / "baltimore_neighborhoods.geojson"


def real_table() -> pd.DataFrame:
    """The real Baltimore table (data/baltimore/, see its PROVENANCE.md)."""
    return pd.read_csv(REAL_FEATURES)


def png_size(content: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    assert content[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(content[16:20], "big"), int.from_bytes(content[20:24], "big")


def png_colors(content: bytes) -> set[str]:
    """Every colour of a PNG's pixels as "#rrggbb" (Pillow comes with matplotlib)."""
    from PIL import Image

    with Image.open(io.BytesIO(content)) as image:
        pixels = image.convert("RGB").getcolors(maxcolors=1 << 24)
    return {f"#{r:02x}{g:02x}{b:02x}" for _, (r, g, b) in pixels}


def blobs(n_rows: int, n_features: int, centers: int, seed: int) -> np.ndarray:
    """Well separated Gaussian blobs, for tests that need an obvious cluster structure."""
    rng = np.random.default_rng(seed)
    middles = rng.normal(0, 10, (centers, n_features))
    return middles[rng.integers(0, centers, n_rows)] + rng.normal(0, 1, (n_rows, n_features))


# Descriptive cohort names as the identity step writes them (contract: cohort_name per row).
COHORT_NAMES = {
    0: "Stable: high owner occupancy, older residents",
    1: "Stable: average on most measures",
    2: "Stable: young renters, low vacancy",
    3: "Stable: large households",
    4: "Stable: high assessed values",
    10: "Distressed: high vacancy, low owner occupancy",
    11: "Distressed: high arrests and crime",
    12: "Distressed: very high vacant notices",
    13: "Distressed: shrinking population",
    14: "Distressed: many blight requests",
}


def with_cohorts(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with the identity contract's cohort_name (descriptive for residential rows, the
    group for excluded ones) and cohort_stability (null for excluded rows)."""
    residential = table["top_cluster_label"] != "Excluded"
    names = table["sub_cluster"].map(COHORT_NAMES).where(residential, table["cluster_label"])
    stability = (0.55 + (table["sub_cluster"] % 10) * 0.1).where(residential)
    return table.assign(cohort_name=names, cohort_stability=stability)


# Cohorts of cohort_table(): (top group, centre of crime, vacancy, owner occupancy, age, size).
COHORT_CENTRES = (
    ("Stable", 0.02, 0.05, 0.80, 55.0, 900.0),
    ("Stable", 0.02, 0.05, 0.40, 30.0, 900.0),
    ("Stable", 0.02, 0.05, 0.60, 42.0, 6000.0),
    ("Distressed", 0.12, 0.35, 0.20, 30.0, 900.0),
    ("Distressed", 0.12, 0.35, 0.60, 55.0, 900.0),
    ("Distressed", 0.12, 0.35, 0.40, 42.0, 6000.0),
)


def cohort_table(per_cohort: int = 30, seed: int = 0) -> pd.DataFrame:
    """A features table with six obvious cohorts, three Stable and three Distressed, so that
    which neighborhood belongs where is never in doubt; row i is in cohort i // per_cohort."""
    rng = np.random.default_rng(seed)
    rows = []
    for index, (_, crime, vacancy, owners, age, size) in enumerate(COHORT_CENTRES):
        for i in range(per_cohort):
            rows.append(
                {
                    "neighborhood": f"Cohort {index} Street {i:03d}",
                    "population": int(size * rng.uniform(0.9, 1.1)),
                    "crime_per_capita": crime * rng.uniform(0.9, 1.1),
                    "arrest_per_capita": crime * 0.4 * rng.uniform(0.9, 1.1),
                    "housing_vacancy_rate": vacancy * rng.uniform(0.9, 1.1),
                    "owner_occupancy_rate": owners + rng.normal(0, 0.02),
                    "med_age": age + rng.normal(0, 1.5),
                }
            )
    return pd.DataFrame(rows)


def move_rows(table: pd.DataFrame, names: list[str], like: str) -> pd.DataFrame:
    """`table` with the features (not population) of `names` copied from neighborhood `like`."""
    moved = table.set_index("neighborhood")
    features = [c for c in moved.columns if c != "population"]
    moved.loc[names, features] = moved.loc[like, features].to_numpy()
    return moved.reset_index()


def profiles_of(table: pd.DataFrame, features: list[str], directions=None):
    """The cohorts' profiles (clustering.outputs.palette.Profiles) of a synthetic table: index
    scores by the identity step's own functions (clustering.analysis.cohorts), standard
    deviations from the raw residential values, and the default directions unless given."""
    from clustering.analysis.cohorts import INDEX, index_scores, measure
    from clustering.outputs.palette import Profiles
    from clustering.settings import AnalysisSettings

    rows = table.loc[table["top_cluster_label"] != "Excluded"]
    overall = rows[features].mean()
    means = rows.groupby("sub_cluster")[features].mean()
    measures = {f: measure(float(table[f].min()), float(overall[f])) for f in features}
    indexed = [f for f in features if measures[f] == INDEX]
    scores = {sub: index_scores(means.loc[sub], overall, indexed) for sub in means.index}
    index = pd.DataFrame(scores, columns=list(means.index)).reindex(features)
    spread = rows[features].std(ddof=0).replace(0, 1)
    sd = ((means - overall) / spread).T.reindex(features)
    known = AnalysisSettings().directions if directions is None else directions
    return Profiles(index, sd, measures, {f: d for f, d in known.items() if f in features})


def doc(name: str) -> str:
    """The text of a documentation page under docs/, e.g. "configuration.md"."""
    return (REPO / "docs" / name).read_text(encoding="utf-8")


# Another city's table (issue 15): its own key and population columns and features the seed
# notebook never had, among them a higher-is-better severity feature (median_income) and a
# signed one (crime_change_yoy, a year-on-year change).
CITY_KEY = "community_area"
CITY_POPULATION = "total_pop"
CITY_FEATURES = (
    "median_income",
    "poverty_rate",
    "unemployment_rate",
    "degree_share",
    "violent_crime_rate",
    "vacant_lot_share",
    "crime_change_yoy",
)
CITY_DIRECTIONS = {
    "median_income": "higher_is_better",
    "poverty_rate": "higher_is_worse",
    "unemployment_rate": "higher_is_worse",
    "degree_share": "higher_is_better",
    "violent_crime_rate": "higher_is_worse",
    "vacant_lot_share": "higher_is_worse",
    # crime_change_yoy has no direction on purpose: it is described as higher/lower.
}
CITY_SEVERITY = "median_income"
# The city's settings as the function's environment variables (and, lowered, the CLI's flags).
CITY_SETTINGS = {
    "KEY_COLUMN": CITY_KEY,
    "POPULATION_COLUMN": CITY_POPULATION,
    "CLUSTERING_FEATURES": json.dumps(list(CITY_FEATURES)),
    "SEVERITY_FEATURE": CITY_SEVERITY,
    "FEATURE_DIRECTIONS": json.dumps(CITY_DIRECTIONS),
    "EXCLUDE_NEIGHBORHOODS": json.dumps(["Area 77"]),
    "K_MAX": "4",
}
# Rows the city table gives a tiny or a blank population (analysed as Low Population).
CITY_TINY = ("Area 05", "Area 40")
CITY_BLANK_POPULATION = ("Area 63",)


def city_table(rows: int = 77, seed: int = 11) -> pd.DataFrame:
    """77 community areas on a distress gradient: income and degrees fall, poverty,
    unemployment, crime and vacant lots rise with it; crime_change_yoy is noise around zero
    (negative in about half the rows); a few blank cells, two tiny populations and a blank
    one; a text column the analysis ignores, kept in the outputs."""
    rng = np.random.default_rng(seed)
    distress = rng.normal(np.where(rng.random(rows) < 0.4, 1.1, -0.7), 0.6)

    def noise(scale: float) -> np.ndarray:
        return rng.normal(0.0, scale, rows)

    names = [f"Area {i:02d}" for i in range(1, rows + 1)]
    table = pd.DataFrame(
        {
            "side": rng.choice(["North", "South", "West"], rows),
            CITY_KEY: names,
            CITY_POPULATION: np.round(rng.lognormal(10.2, 0.5, rows)).astype("float64"),
            "median_income": np.round(np.exp(11.0 - 0.35 * distress + noise(0.1)), -2),
            "poverty_rate": np.clip(0.18 + 0.09 * distress + noise(0.03), 0.01, 0.9).round(4),
            "unemployment_rate": np.clip(0.08 + 0.04 * distress + noise(0.015), 0, 1).round(4),
            "degree_share": np.clip(0.35 - 0.12 * distress + noise(0.05), 0.01, 1).round(4),
            "violent_crime_rate": np.exp(-4.5 + 0.6 * distress + noise(0.2)).round(5),
            "vacant_lot_share": np.clip(0.05 + 0.04 * distress + noise(0.02), 0, 1).round(4),
            "crime_change_yoy": noise(0.15).round(4),
        }
    )
    table.loc[table[CITY_KEY].isin(CITY_TINY), CITY_POPULATION] = [12.0, 40.0]
    table.loc[table[CITY_KEY].isin(CITY_BLANK_POPULATION), CITY_POPULATION] = np.nan
    for column, row in (("poverty_rate", 3), ("degree_share", 17), ("crime_change_yoy", 30)):
        table.loc[row, column] = np.nan
    return table


def city_geojson(names) -> bytes:
    """Square boundaries named by a `community_area` property (not `neighborhood`)."""
    features = []
    for index, name in enumerate(names):
        x, y = index % 10, index // 10
        ring = [[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1], [x, y]]
        features.append(
            {
                "type": "Feature",
                "properties": {CITY_KEY: name},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def terraform_clusters_schema(
    features: list[dict], key_column: str, population_column: str, boundaries: bool
) -> list[dict]:
    """The clusters table as terraform/bigquery.tf creates it: the features table's columns,
    then the cluster columns of clusters_table.json it does not provide, the shape only with
    boundaries (the same rule, written again in Python)."""
    from clustering.table import table_schema

    own = [
        {k: v for k, v in f.items() if k in ("name", "type", "mode", "description")}
        for f in features
    ]
    skip = {key_column, population_column} | (set() if boundaries else {f"{key_column}_shape"})
    cluster = table_schema("clusters_table", key_column, population_column)
    return own + [dict(f) for f in cluster if f["name"] not in skip]


# What every warning about a blank filled with a median says (the built-in sample has a few
# blanks, so a run on it warns about each).
FILLED = ": filled with the "
