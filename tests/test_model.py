import numpy as np
import pandas as pd
import pytest

from clustering import InputError
from clustering.analysis.model import cluster, search_k, top_labels_by_severity
from clustering.analysis.prepare import INSTITUTIONAL, LOW_POPULATION
from clustering.analysis.sample import make_sample
from clustering.settings import AnalysisSettings
from clustering.table import validate_features
from tests.helpers import blobs, real_table
from tests.notebook_reference import notebook_partitions

SETTINGS = AnalysisSettings()


def run(table: pd.DataFrame, settings: AnalysisSettings = SETTINGS):
    return cluster(validate_features(table, settings, "test").frame, settings)


@pytest.fixture(scope="module")
def real_result():
    return run(real_table())


def test_residential_partitions_equal_the_notebooks_on_the_real_table(real_result):
    expected = notebook_partitions(real_table())
    ours = real_result.table.loc[
        real_result.residential, ["neighborhood", "top_cluster", "sub_cluster"]
    ]
    assert len(expected) == len(ours) == 247
    assert ours["neighborhood"].tolist() == expected["neighborhood"].tolist()
    assert ours["top_cluster"].astype(int).tolist() == expected["top_cluster"].tolist()
    assert ours["sub_cluster"].astype(int).tolist() == expected["sub_cluster"].tolist()


def test_residential_partitions_equal_the_notebooks_on_the_sample():
    table = make_sample(400, random_state=7)
    result = run(table)
    expected = notebook_partitions(table)
    ours = result.table.loc[result.residential]
    assert ours["sub_cluster"].astype(int).tolist() == expected["sub_cluster"].tolist()


def test_every_input_row_reaches_the_output_harbor_point_included(real_result):
    table = real_result.table
    assert len(table) == 279 and table["neighborhood"].is_unique
    assert table["neighborhood"].tolist() == sorted(real_table()["neighborhood"])
    harbor = table.set_index("neighborhood").loc["Harbor Point"]
    assert harbor["excluded_type"] == INSTITUTIONAL
    assert harbor["top_cluster"] == -1 and harbor["top_cluster_label"] == "Excluded"
    assert harbor["cluster_label"].startswith(INSTITUTIONAL)
    assert table["cluster_label"].notna().all()


def test_top_split_is_named_by_mean_severity(real_result):
    rows = real_result.table.loc[real_result.residential]
    means = rows.groupby("top_cluster_label")["crime_per_capita"].mean()
    overall = rows["crime_per_capita"].mean()
    assert set(means.index) == {"Stable", "Distressed"}
    assert means["Stable"] < overall <= means["Distressed"]


def test_sub_cluster_ids_are_top_times_ten_plus_sub(real_result):
    rows = real_result.table.loc[real_result.residential]
    assert ((rows["sub_cluster"] // 10) == rows["top_cluster"]).all()
    for group in real_result.top_groups:
        subs = rows.loc[rows["top_cluster"] == group.top, "sub_cluster"]
        assert subs.nunique() == group.sub_k
        assert group.search.ks == (2, 3, 4, 5)
        assert group.sub_k == group.search.ks[int(np.argmax(group.search.silhouettes))]


def test_excluded_analysis_groups_each_type_separately(real_result):
    excluded = real_result.excluded
    assert len(excluded) == 279 - 247
    counts = excluded["excluded_type"].value_counts()
    assert counts[INSTITUTIONAL] == 13 and counts[LOW_POPULATION] == 19
    for group in real_result.excluded_groups:
        names = excluded.loc[excluded["excluded_type"] == group.excluded_type, "excluded_cluster"]
        assert names.str.startswith(f"{group.excluded_type} - Group ").all()
        assert names.nunique() == group.k
        assert max(group.search.ks) <= 4  # the notebook searches range(2, min(5, n))


def test_missing_features_are_reported_not_fatal(real_result):
    assert real_result.features.missing == (
        "rehab_to_vacant_ratio",
        "permit_value_per_capita",
        "permit_recent_5yr",
        "requests_311_per_capita",
        "requests_311_blight",
        "median_assessed_value",
        "avg_assessed_value",
    )
    # Reported when the table is read, before clustering starts, and not again after it.
    warnings = validate_features(real_table(), SETTINGS, "real").warnings
    assert any("skipped: rehab_to_vacant_ratio, permit_value_per_capita" in w for w in warnings)
    assert not any("rehab_to_vacant_ratio" in w for w in real_result.warnings)


def test_same_input_and_settings_give_identical_results():
    table = make_sample(300, random_state=3)
    first, second = run(table), run(table.sample(frac=1, random_state=1))
    pd.testing.assert_frame_equal(first.table, second.table)
    pd.testing.assert_frame_equal(first.excluded, second.excluded)
    assert first.diagnostics == second.diagnostics


def test_random_state_is_threaded_through():
    table = make_sample(300, random_state=3)
    other = AnalysisSettings(random_state=7)
    assert run(table, other).diagnostics != run(table).diagnostics


def test_small_excluded_groups_are_labelled_too_few():
    table = make_sample(60, random_state=2)
    table = table[
        ~table["neighborhood"].isin(["Perkins", "Inner Harbor"]) | (table["population"] >= 100)
    ]
    settings = AnalysisSettings(exclude_neighborhoods=("Perkins", "Inner Harbor", "Harbor Point"))
    result = run(table, settings)
    institutional = result.excluded[result.excluded["excluded_type"] == INSTITUTIONAL]
    assert len(institutional) == 3
    assert (institutional["excluded_cluster"] == f"{INSTITUTIONAL} - Too few to cluster").all()


def test_k_range_is_capped_below_the_number_of_rows():
    table = pd.DataFrame(
        {
            "neighborhood": [f"n{i}" for i in range(6)],
            "population": [500] * 6,
            "crime_per_capita": [0.1, 0.2, 0.3, 0.9, 1.0, 1.1],
            "med_age": [30, 31, 35, 50, 52, 55],
        }
    )
    result = run(table)
    assert result.diagnostics.ks == (2, 3, 4, 5)
    assert any("K_MAX=10 capped at 5" in w for w in result.warnings)
    for group in result.top_groups:
        assert group.sub_k == 1 or max(group.search.ks) < group.size


def test_too_few_residential_rows_is_an_input_error():
    table = pd.DataFrame(
        {
            "neighborhood": ["a", "b", "c"],
            "population": [500, 500, 5],
            "crime_per_capita": [0.1, 0.2, 0.3],
        }
    )
    with pytest.raises(InputError, match="only 2 residential rows"):
        run(table)


def test_every_feature_blank_is_an_input_error():
    table = make_sample(40)
    features = [c for c in table.columns if c not in ("neighborhood", "population")]
    table[features] = np.nan
    settings = AnalysisSettings(clustering_features=tuple(features))
    with pytest.raises(InputError, match="every clustering feature is blank"):
        run(table, settings)


def test_silhouettes_are_sampled_above_the_threshold_and_exact_below():
    matrix = blobs(600, 4, 3, seed=5)
    sampled = AnalysisSettings(silhouette_sample_size=200)
    exact = AnalysisSettings(silhouette_sample_size=1000)
    first = search_k(matrix, [2, 3, 4], sampled)
    assert first == search_k(matrix, [2, 3, 4], sampled)
    assert first.best_k == search_k(matrix, [2, 3, 4], exact).best_k == 3
    assert first.silhouettes != search_k(matrix, [2, 3, 4], exact).silhouettes


def test_large_tables_record_the_silhouette_sample_size():
    table = make_sample(700, random_state=1)
    result = run(table, AnalysisSettings(silhouette_sample_size=300))
    assert result.silhouette_sample_size == 300
    assert run(table).silhouette_sample_size is None


def test_a_blank_population_is_analysed_with_the_low_population_rows():
    table = make_sample(60, random_state=4).astype({"population": "float64"})
    name = table.loc[table["population"] >= 100, "neighborhood"].iloc[5]
    table.loc[table["neighborhood"] == name, "population"] = np.nan
    result = run(table)
    row = result.table.set_index("neighborhood").loc[name]
    assert row["excluded_type"] == LOW_POPULATION and row["top_cluster"] == -1
    assert len(result.table) == 60


# --- the direction rule: the group worse on SEVERITY_FEATURE is Distressed -------------------


def test_the_group_worse_by_the_severity_direction_is_distressed():
    assert top_labels_by_severity({0: 0.1, 1: 0.3}, "higher_is_worse") == {
        0: "Stable",
        1: "Distressed",
    }
    assert top_labels_by_severity({0: 0.1, 1: 0.3}, "higher_is_better") == {
        0: "Distressed",
        1: "Stable",
    }
    # A group without any severity value is not known to be better; a tie: the higher id.
    assert top_labels_by_severity({0: np.nan, 1: 0.3}, "higher_is_better")[0] == "Distressed"
    assert top_labels_by_severity({0: 0.2, 1: 0.2}, "higher_is_worse")[1] == "Distressed"


def test_a_higher_is_better_severity_feature_does_not_invert_stable_and_distressed():
    # Income falls as crime rises: naming the split by income (higher is better) must give the
    # same Stable and Distressed as naming it by crime (higher is worse), not the reverse.
    table = make_sample(200, random_state=3)
    table["median_income"] = (40_000 / table["crime_per_capita"].fillna(0.05)).round()
    features = ("med_age", "crime_per_capita", "housing_vacancy_rate", "owner_occupancy_rate")

    def by_income(direction: str):
        directions = (("median_income", direction),)
        settings = AnalysisSettings(
            clustering_features=features,
            severity_feature="median_income",
            feature_directions=directions,
        )
        return run(table, settings)

    by_crime = run(table, AnalysisSettings(clustering_features=features))
    better = by_income("higher_is_better")
    pd.testing.assert_series_equal(
        better.table["top_cluster_label"], by_crime.table["top_cluster_label"]
    )
    rows = better.table.loc[better.residential]
    means = rows.groupby("top_cluster_label")["median_income"].mean()
    assert means["Stable"] > means["Distressed"]
    # Said the other way round, the same split takes the other names.
    inverted = by_income("higher_is_worse")
    flipped = inverted.table.loc[inverted.residential, "top_cluster_label"]
    assert (flipped != rows["top_cluster_label"]).all()
