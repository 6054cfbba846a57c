"""Paths and small builders shared by the tests."""

from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
# The six files of every run (DESIGN.md, "Artifacts"), written by name here rather than imported,
# so that a renamed or dropped artifact fails these tests.
ARTIFACTS = (
    "neighborhood_clusters.csv",
    "excluded_neighborhood_analysis.csv",
    "elbow_silhouette.png",
    "pca_clusters.png",
    "cluster_heatmap.png",
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


def blobs(n_rows: int, n_features: int, centers: int, seed: int) -> np.ndarray:
    """Well separated Gaussian blobs, for tests that need an obvious cluster structure."""
    rng = np.random.default_rng(seed)
    middles = rng.normal(0, 10, (centers, n_features))
    return middles[rng.integers(0, centers, n_rows)] + rng.normal(0, 1, (n_rows, n_features))
