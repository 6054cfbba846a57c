"""The seed notebook's work, done the notebook's way, as one script: the benchmark's baseline.

Usage: baseline_notebook.py INPUT.csv OUTDIR

It stands for "running the notebook top to bottom" so that `bench.py` can time the product
against it. It therefore keeps the notebook's costs on purpose: every import at the top (the
whole chart stack included), pyplot figures that are never closed, seaborn for the heatmap,
exact silhouettes on every row, default PNG compression. The only departures are the ones a
script needs: the table comes from a local CSV instead of BigQuery, the outputs go to OUTDIR,
and `display()` becomes `print()`. It also keeps the notebook's two exclusion lists (so a
populated "Harbor Point" lands in neither output), since only the amount of work matters here.
"""

import sys
import warnings
from pathlib import Path

import matplotlib

# No display on a benchmark machine; the notebook's inline backend does not exist here.
matplotlib.use("Agg")

import matplotlib.cm as cm
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from scipy.stats import mstats
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

warnings.filterwarnings("ignore")

MIN_POPULATION = 100
K_MIN = 2
K_MAX = 10
RANDOM_STATE = 42

# The notebook's first list (cell 2), used to filter the residential rows.
EXCLUDE_NEIGHBORHOODS = [
    "Canton Industrial Area",
    "Fairfield Area",
    "Inner Harbor",
    "Pulaski Industrial Area",
    "Stadium/Entertainment Area",
    "Dunbar-Broadway",
    "Hopkins Bayview",
    "Johns Hopkins Homewood",
    "Morgan State University",
    "Penn-Fallsway",
    "Perkins",
    "University of Maryland",
    "Harbor Point",
]
# The notebook's second list (cell 9), used for the excluded analysis: it lacks Harbor Point.
EXCLUDED_ANALYSIS_NEIGHBORHOODS = [n for n in EXCLUDE_NEIGHBORHOODS if n != "Harbor Point"]

CLUSTERING_FEATURES = [
    "population",
    "med_age",
    "housing_vacancy_rate",
    "owner_occupancy_rate",
    "crime_per_capita",
    "arrest_per_capita",
    "crime_yoy_change",
    "vacant_notices_per_unit",
    "rehab_to_vacant_ratio",
    "permit_value_per_capita",
    "permit_recent_5yr",
    "requests_311_per_capita",
    "requests_311_blight",
    "median_assessed_value",
    "avg_assessed_value",
]
PROFILE_COLUMNS = [
    "crime_per_capita",
    "vacant_notices_per_unit",
    "median_assessed_value",
    "housing_vacancy_rate",
    "permit_value_per_capita",
]


def find_best_k(X, k_range=range(2, 6), random_state=RANDOM_STATE):
    """Silhouette-best K, as the notebook's helper: stops at the first K the rows cannot hold."""
    best_k, best_score = 2, -1
    scores = {}
    for k in k_range:
        if len(X) <= k:
            break
        labels = KMeans(n_clusters=k, random_state=random_state, n_init=10).fit_predict(X)
        score = silhouette_score(X, labels)
        scores[k] = round(score, 4)
        if score > best_score:
            best_k, best_score = k, score
    return best_k, best_score, scores


def main(input_csv: str, outdir: str) -> None:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)

    # Cell 2: the query's ORDER BY, then the residential filter.
    df = pd.read_csv(input_csv).sort_values("neighborhood").reset_index(drop=True)
    print(f"Loaded {len(df)} neighborhoods x {len(df.columns)} features")
    df_full = df.copy()
    df = df[
        (df["population"] >= MIN_POPULATION) & (~df["neighborhood"].isin(EXCLUDE_NEIGHBORHOODS))
    ].reset_index(drop=True)
    print(f"{len(df)} neighborhoods after filtering")
    print(
        "Low population excluded:",
        df_full.loc[df_full["population"] < MIN_POPULATION, "neighborhood"].tolist(),
    )

    # Cell 3: select, impute, winsorize, scale.
    available = [f for f in CLUSTERING_FEATURES if f in df.columns]
    missing = [f for f in CLUSTERING_FEATURES if f not in df.columns]
    if missing:
        print(f"Missing features (skipped): {missing}")
    X_raw = df[available].copy()
    X_imputed = SimpleImputer(strategy="median").fit_transform(X_raw)
    null_counts = X_raw.isnull().sum()
    if null_counts.sum() > 0:
        print(null_counts[null_counts > 0])
    X_winsorized = mstats.winsorize(X_imputed, limits=[0.01, 0.01], axis=0)
    X_scaled = StandardScaler().fit_transform(X_winsorized)
    print(f"Features winsorized and scaled. Shape: {X_scaled.shape}")

    # Cell 4: elbow and exact silhouettes for every K.
    k_range = range(K_MIN, K_MAX + 1)
    inertias, silhouettes = [], []
    for k in k_range:
        km = KMeans(n_clusters=k, random_state=RANDOM_STATE, n_init=10)
        labels = km.fit_predict(X_scaled)
        inertias.append(km.inertia_)
        silhouettes.append(silhouette_score(X_scaled, labels))
        print(f"{k:>4}  {km.inertia_:>12.1f}  {silhouettes[-1]:>12.4f}")

    _, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5))
    ax1.plot(list(k_range), inertias, "bo-", linewidth=2, markersize=8)
    ax1.set_xlabel("K (Number of Clusters)", fontsize=12)
    ax1.set_ylabel("Inertia (Within-cluster Sum of Squares)", fontsize=12)
    ax1.set_title("Elbow Method", fontsize=14)
    ax1.grid(True, alpha=0.3)
    ax2.plot(list(k_range), silhouettes, "ro-", linewidth=2, markersize=8)
    ax2.set_xlabel("K (Number of Clusters)", fontsize=12)
    ax2.set_ylabel("Silhouette Score", fontsize=12)
    ax2.set_title("Silhouette Score by K", fontsize=14)
    ax2.grid(True, alpha=0.3)
    best_k = list(k_range)[silhouettes.index(max(silhouettes))]
    ax2.axvline(x=best_k, color="green", linestyle="--", label=f"Best K = {best_k}")
    ax2.legend()
    plt.tight_layout()
    plt.savefig(out / "elbow_silhouette.png", dpi=150, bbox_inches="tight")
    plt.show()

    # Cell 5: the top split.
    df["top_cluster"] = KMeans(n_clusters=2, random_state=RANDOM_STATE, n_init=20).fit_predict(
        X_scaled
    )
    print(df["top_cluster"].value_counts().sort_index())
    print(df.groupby("top_cluster")[[c for c in PROFILE_COLUMNS if c in df]].mean().round(2))

    # Cell 6: sub-clusters inside each top group.
    df["sub_cluster"] = -1
    sub_results = {}
    avg_crime = df["crime_per_capita"].mean()
    for top in sorted(df["top_cluster"].unique()):
        mask = df["top_cluster"] == top
        X_sub = X_scaled[mask.values]
        label = "Stable" if df.loc[mask, "crime_per_capita"].mean() < avg_crime else "Distressed"
        best, best_score, scores = find_best_k(X_sub)
        print(f"Top cluster {top} ({label}): {scores}, best K {best} ({best_score:.4f})")
        sub_labels = KMeans(n_clusters=best, random_state=RANDOM_STATE, n_init=20).fit_predict(
            X_sub
        )
        df.loc[mask, "sub_cluster"] = sub_labels + top * 10
        sub_results[top] = {"label": label, "best_k": best, "best_score": best_score}
    print(df["sub_cluster"].value_counts().sort_index())

    # Cell 7: PCA scatter of every residential row.
    pca = PCA(n_components=2, random_state=RANDOM_STATE)
    X_pca = pca.fit_transform(X_scaled)
    pca_df = pd.DataFrame(X_pca, columns=["PC1", "PC2"])
    pca_df["top_cluster"] = df["top_cluster"].values
    pca_df["sub_cluster"] = df["sub_cluster"].values
    pca_df["neighborhood"] = df["neighborhood"].values
    unique_subs = sorted(pca_df["sub_cluster"].unique())
    colors = cm.nipy_spectral(np.linspace(0, 1, len(unique_subs)))
    ratio = pca.explained_variance_ratio_
    _, (ax1, ax2) = plt.subplots(1, 2, figsize=(16, 7))
    for top in sorted(pca_df["top_cluster"].unique()):
        mask = pca_df["top_cluster"] == top
        ax1.scatter(
            pca_df.loc[mask, "PC1"],
            pca_df.loc[mask, "PC2"],
            label=f"Cluster {top} ({sub_results[top]['label']})",
            s=60,
            alpha=0.8,
        )
    ax1.set_title("Top-Level K=2 Split", fontsize=13)
    ax1.set_xlabel(f"PC1 ({ratio[0] * 100:.1f}%)")
    ax1.set_ylabel(f"PC2 ({ratio[1] * 100:.1f}%)")
    ax1.legend()
    ax1.grid(True, alpha=0.3)
    for i, sub in enumerate(unique_subs):
        mask = pca_df["sub_cluster"] == sub
        ax2.scatter(
            pca_df.loc[mask, "PC1"],
            pca_df.loc[mask, "PC2"],
            c=[colors[i]],
            label=f"Sub-cluster {sub}",
            s=60,
            alpha=0.8,
        )
    ax2.set_title("Hierarchical Sub-Clusters", fontsize=13)
    ax2.set_xlabel(f"PC1 ({ratio[0] * 100:.1f}%)")
    ax2.set_ylabel(f"PC2 ({ratio[1] * 100:.1f}%)")
    ax2.legend(fontsize=8)
    ax2.grid(True, alpha=0.3)
    plt.suptitle("Baltimore Neighborhood Clustering - Hierarchical K-Means", fontsize=14)
    plt.tight_layout()
    plt.savefig(out / "pca_clusters.png", dpi=150, bbox_inches="tight")
    plt.show()

    # Cell 8: profiles and the seaborn heatmap.
    profile = df.groupby("sub_cluster")[available].mean().round(3).T
    print(profile)
    profile_norm = profile.apply(
        lambda x: (x - x.mean()) / x.std() if x.std() > 0 else x * 0, axis=1
    ).fillna(0)
    n_subs = len(df["sub_cluster"].unique())
    _, ax = plt.subplots(figsize=(max(8, n_subs * 2), len(available) * 0.4 + 2))
    sns.heatmap(
        profile_norm,
        annot=False,
        cmap="RdYlGn_r",
        center=0,
        linewidths=0.5,
        ax=ax,
        cbar_kws={"label": "Z-score (red=high, green=low)"},
    )
    ax.set_title("Sub-Cluster Feature Profiles", fontsize=14)
    plt.tight_layout()
    plt.savefig(out / "cluster_heatmap.png", dpi=150, bbox_inches="tight")
    plt.show()
    for sub in sorted(df["sub_cluster"].unique()):
        hoods = df[df["sub_cluster"] == sub]["neighborhood"].sort_values().tolist()
        print(f"Sub-cluster {sub} ({sub_results[sub // 10]['label']}) - {len(hoods)}:")
        print(", ".join(hoods))

    # Cell 9: the excluded neighborhoods, clustered per type.
    df_excluded = (
        df_full[
            (df_full["population"] < MIN_POPULATION)
            | (df_full["neighborhood"].isin(EXCLUDED_ANALYSIS_NEIGHBORHOODS))
        ]
        .copy()
        .reset_index(drop=True)
    )
    df_excluded["excluded_type"] = df_excluded["neighborhood"].apply(
        lambda n: (
            "Institutional/Industrial"
            if n in EXCLUDED_ANALYSIS_NEIGHBORHOODS
            else "Low Population (Park/Open Space)"
        )
    )
    print(df_excluded.groupby("excluded_type")["neighborhood"].count())
    df_excluded["excluded_cluster"] = "Unclustered"
    for exc_type in df_excluded["excluded_type"].unique():
        mask = df_excluded["excluded_type"] == exc_type
        subset = df_excluded[mask].copy()
        avail = [f for f in available if f in subset.columns]
        X_exc = SimpleImputer(strategy="median").fit_transform(subset[avail])
        X_exc = StandardScaler().fit_transform(X_exc)
        if len(subset) < 4:
            df_excluded.loc[mask, "excluded_cluster"] = exc_type + " - Too few to cluster"
            continue
        best, best_score, _ = find_best_k(X_exc, k_range=range(2, min(5, len(subset))))
        print(f"{exc_type} ({len(subset)}): best K {best} ({best_score:.4f})")
        labels = KMeans(n_clusters=best, random_state=RANDOM_STATE, n_init=10).fit_predict(X_exc)
        df_excluded.loc[mask, "excluded_cluster"] = [f"{exc_type} - Group {g}" for g in labels]
    shown = [
        "neighborhood",
        "excluded_type",
        "excluded_cluster",
        "crime_per_capita",
        "median_assessed_value",
    ]
    print(df_excluded[[c for c in shown if c in df_excluded]].sort_values("excluded_cluster"))

    # Cell 10: placeholder labels.
    labels_by_sub = {s: f"Cluster {s}" for s in sorted(df["sub_cluster"].unique())}
    df["cluster_label"] = df["sub_cluster"].map(labels_by_sub)
    df["top_cluster_label"] = df["top_cluster"].map({t: r["label"] for t, r in sub_results.items()})

    # Cell 11: the combined table, merged back onto every input row, and both CSVs.
    residential_out = df[
        ["neighborhood", "top_cluster", "top_cluster_label", "sub_cluster", "cluster_label"]
    ].copy()
    residential_out["excluded_type"] = "Residential"
    residential_out["excluded_cluster"] = None
    excluded_out = df_excluded[["neighborhood", "excluded_type", "excluded_cluster"]].copy()
    excluded_out["top_cluster"] = -1
    excluded_out["top_cluster_label"] = "Excluded"
    excluded_out["sub_cluster"] = -1
    excluded_out["cluster_label"] = excluded_out["excluded_cluster"]
    combined = pd.concat([residential_out, excluded_out], ignore_index=True)
    output_df = df_full.merge(combined, on="neighborhood", how="left")
    output_df["_clustered_at"] = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M:%S UTC")
    output_df.to_csv(out / "neighborhood_clusters.csv", index=False)
    df_excluded.to_csv(out / "excluded_neighborhood_analysis.csv", index=False)

    # Cell 12: the closing summary.
    summary_means = {
        "avg_crime_per_capita": "crime_per_capita",
        "avg_vacancy_rate": "housing_vacancy_rate",
        "avg_assessed_value": "median_assessed_value",
        "avg_permit_value": "permit_value_per_capita",
    }
    aggregations = {"neighborhoods": ("neighborhood", "count")}
    aggregations |= {k: (c, "mean") for k, c in summary_means.items() if c in df}
    summary = df.groupby(["top_cluster_label", "cluster_label"]).agg(**aggregations)
    print(summary.round(3).reset_index())
    print(f"Residential {len(df)}, excluded {len(df_excluded)}, output {len(output_df)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: baseline_notebook.py INPUT.csv OUTDIR")
    main(sys.argv[1], sys.argv[2])
