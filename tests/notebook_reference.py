"""A compact re-statement of the seed notebook's residential algorithm (cells 2-6), written
from its description, to check that the package reproduces its partitions exactly.

It keeps the notebook's choices on purpose: the first exclusion list (13 names), scikit-learn's
SimpleImputer, scipy's mstats.winsorize, and sub-cluster K searched in range(2, 6).
"""

import numpy as np
import pandas as pd
from scipy.stats import mstats
from sklearn.cluster import KMeans
from sklearn.impute import SimpleImputer
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from clustering.settings import DEFAULT_CLUSTERING_FEATURES, DEFAULT_EXCLUDE_NEIGHBORHOODS


def notebook_partitions(table: pd.DataFrame) -> pd.DataFrame:
    """neighborhood, top_cluster, sub_cluster of the residential rows, as the notebook has them."""
    table = table.sort_values("neighborhood").reset_index(drop=True)
    keep = (table["population"] >= 100) & ~table["neighborhood"].isin(DEFAULT_EXCLUDE_NEIGHBORHOODS)
    rows = table[keep].reset_index(drop=True)
    features = [f for f in DEFAULT_CLUSTERING_FEATURES if f in rows.columns]
    matrix = SimpleImputer(strategy="median").fit_transform(rows[features])
    matrix = StandardScaler().fit_transform(mstats.winsorize(matrix, limits=[0.01, 0.01], axis=0))

    top = KMeans(n_clusters=2, random_state=42, n_init=20).fit_predict(matrix)
    sub = np.full(len(rows), -1)
    for group in sorted(np.unique(top)):
        mask = top == group
        part = matrix[mask]
        best_k, best_score = 2, -1.0
        for k in range(2, 6):
            if len(part) <= k:
                break
            labels = KMeans(n_clusters=k, random_state=42, n_init=10).fit_predict(part)
            score = silhouette_score(part, labels)
            if score > best_score:
                best_k, best_score = k, score
        labels = KMeans(n_clusters=best_k, random_state=42, n_init=20).fit_predict(part)
        sub[mask] = labels + group * 10
    return pd.DataFrame(
        {"neighborhood": rows["neighborhood"], "top_cluster": top, "sub_cluster": sub}
    )
