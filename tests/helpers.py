"""Paths and small builders shared by the tests."""

import io
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
REAL_FEATURES = (
    REPO.parent / "shared" / "data" / "baltimore" / "baltimore_neighborhood_features.csv"
)


def real_table() -> pd.DataFrame:
    """The real Baltimore table from ../shared (read-only, never copied into the repo)."""
    assert REAL_FEATURES.exists(), (
        f"{REAL_FEATURES} is missing: tests need ../shared beside the repo"
    )
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


def index_table(table: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Index scores, features x residential sub_cluster, computed by the identity step's own
    function (clustering.analysis.cohorts.index_scores), for views built from a synthetic table."""
    from clustering.analysis.cohorts import index_scores

    rows = table.loc[table["top_cluster_label"] != "Excluded"]
    overall = rows[features].mean()
    means = rows.groupby("sub_cluster")[features].mean()
    scores = {sub: index_scores(means.loc[sub], overall) for sub in means.index}
    return pd.DataFrame(scores, columns=list(means.index)).reindex(features)


def doc(name: str) -> str:
    """The text of a documentation page under docs/, e.g. "configuration.md"."""
    return (REPO / "docs" / name).read_text(encoding="utf-8")
