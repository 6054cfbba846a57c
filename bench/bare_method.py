"""The method's unavoidable work and nothing else, written plainly: the `200k` case's baseline.

Usage: bare_method.py INPUT.csv OUTDIR

Prepare the residential rows (the notebook's filter, median impute, 1%/99% winsorize, scale),
split them in two (k-means, K=2, n_init=20), choose each group's K by silhouette over 2..5
(n_init=10, silhouettes on a 3,000-row sample) over every row of the group, and fit that K
(n_init=20). No charts, no report, no K diagnostic. It writes OUTDIR/partition.csv (key,
top_cluster, sub_cluster): the full search's answer, which bench.py compares with ours.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import mstats
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

# The product's defaults, from the file the code and Terraform read (the notebook's values).
DEFAULTS = json.loads(
    (Path(__file__).resolve().parents[1] / "clustering" / "defaults.json").read_text()
)
SEED = DEFAULTS["random_state"]
SILHOUETTE_ROWS = DEFAULTS["silhouette_sample_size"]


def best_k(matrix: np.ndarray) -> int:
    scores = {}
    for k in range(2, 6):
        if len(matrix) <= k:
            break
        labels = KMeans(n_clusters=k, random_state=SEED, n_init=10).fit_predict(matrix)
        size = SILHOUETTE_ROWS if len(matrix) > SILHOUETTE_ROWS else None
        scores[k] = silhouette_score(matrix, labels, sample_size=size, random_state=SEED)
    return max(scores, key=scores.get) if scores else 1


def main(input_csv: str, outdir: str) -> None:
    table = pd.read_csv(input_csv).sort_values("neighborhood").reset_index(drop=True)
    rows = table[
        (table["population"] >= DEFAULTS["min_population"])
        & ~table["neighborhood"].isin(DEFAULTS["exclude_neighborhoods"])
    ].reset_index(drop=True)
    raw = rows[[f for f in DEFAULTS["clustering_features"] if f in rows]].to_numpy(dtype=np.float64)
    filled = np.where(np.isnan(raw), np.nanmedian(raw, axis=0), raw)
    clipped = np.asarray(mstats.winsorize(filled, limits=[0.01, 0.01], axis=0))
    scaled = (clipped - clipped.mean(axis=0)) / np.where(
        clipped.std(axis=0) > 0, clipped.std(axis=0), 1
    )
    top = KMeans(n_clusters=2, random_state=SEED, n_init=20).fit_predict(scaled)
    sub = np.full(len(rows), -1)
    for group in (0, 1):
        mask = top == group
        k = best_k(scaled[mask])
        labels = (
            KMeans(n_clusters=k, random_state=SEED, n_init=20).fit_predict(scaled[mask])
            if k > 1
            else 0
        )
        sub[mask] = labels + group * 10
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    partition = pd.DataFrame(
        {"neighborhood": rows["neighborhood"], "top_cluster": top, "sub_cluster": sub}
    )
    partition.to_csv(out / "partition.csv", index=False)


if __name__ == "__main__":
    main(*sys.argv[1:3])
