"""The built-in synthetic table: deterministic, shaped like the real one, with a real gradient."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clustering.analysis.sample import SAMPLE_ROWS, make_sample
from clustering.settings import DEFAULT_CLUSTERING_FEATURES, DEFAULT_EXCLUDE_NEIGHBORHOODS

# The notebook's lists, copied from the seed notebook (cells 2 and 3), not from the product.
NOTEBOOK_EXCLUDED = {
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
}


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return make_sample()


def test_same_arguments_give_the_same_table():
    pd.testing.assert_frame_equal(make_sample(), make_sample())
    pd.testing.assert_frame_equal(make_sample(60, random_state=7), make_sample(60, random_state=7))


def test_another_random_state_gives_another_table(sample):
    other = make_sample(random_state=1)
    assert list(other.columns) == list(sample.columns)
    assert not other.equals(sample)
    # Names are fixed by n_rows; the values are what the seed changes.
    assert (other["population"].to_numpy() != sample["population"].to_numpy()).mean() > 0.9


def test_default_shape_and_columns(sample):
    assert SAMPLE_ROWS == 279
    assert len(sample) == 279
    assert list(sample.columns) == ["neighborhood", *DEFAULT_CLUSTERING_FEATURES]
    assert len(DEFAULT_CLUSTERING_FEATURES) == 15
    assert sample["population"].dtype == np.int64
    features = sample.columns[2:]
    assert all(sample[c].dtype == np.float64 for c in features)


def test_names_are_unique_sorted_and_include_the_13_excluded_areas(sample):
    names = sample["neighborhood"]
    assert names.is_unique
    assert list(names) == sorted(names)
    assert set(DEFAULT_EXCLUDE_NEIGHBORHOODS) == NOTEBOOK_EXCLUDED
    assert set(names) >= NOTEBOOK_EXCLUDED


def test_about_19_low_population_rows_like_the_real_table(sample):
    low = sample["population"] < 100
    assert 12 <= low.sum() <= 28
    assert (sample["population"] >= 0).all()
    # Some of them are parks with no residents at all, or close to it.
    assert sample.loc[low, "population"].min() < 50


def test_a_few_blank_cells_but_never_a_blank_name_or_population(sample):
    assert sample["neighborhood"].notna().all()
    assert sample["population"].notna().all()
    blanks = sample.iloc[:, 2:].isna()
    # About 1% of the feature cells, spread over several columns: imputation has work to do.
    assert 10 <= blanks.to_numpy().sum() <= 120
    assert (blanks.sum() > 0).sum() >= 5
    # No column is blank throughout (that would be a warning on the default demo).
    assert not blanks.all().any()


def test_per_capita_rates_are_blank_where_nobody_lives():
    table = make_sample(2_000, random_state=3)
    empty = table["population"] == 0
    assert empty.any()
    per_capita = [c for c in table.columns if c.endswith("_per_capita")]
    assert table.loc[empty, per_capita].isna().all().all()


def test_names_stay_unique_at_250_000_rows():
    table = make_sample(250_000)
    assert len(table) == 250_000
    assert table["neighborhood"].is_unique
    assert set(table["neighborhood"]) >= NOTEBOOK_EXCLUDED
    assert table["population"].notna().all()


def test_the_table_has_a_stable_to_distressed_gradient(sample):
    def rank_corr(a: str, b: str) -> float:
        return sample[a].corr(sample[b], method="spearman")

    # Crime and values move against each other; vacancy with crime, owners with values.
    assert rank_corr("crime_per_capita", "median_assessed_value") < -0.5
    assert rank_corr("crime_per_capita", "housing_vacancy_rate") > 0.3
    assert rank_corr("vacant_notices_per_unit", "requests_311_blight") > 0.3
    assert rank_corr("owner_occupancy_rate", "median_assessed_value") > 0.3
    assert rank_corr("median_assessed_value", "avg_assessed_value") > 0.9


def test_institutional_areas_have_inflated_crime(sample):
    listed = sample["neighborhood"].isin(DEFAULT_EXCLUDE_NEIGHBORHOODS)
    crime = sample["crime_per_capita"]
    assert crime[listed].median() > 2 * crime[~listed].median()


def test_fewer_than_20_rows_is_refused():
    with pytest.raises(ValueError, match="at least 20"):
        make_sample(19)
    assert len(make_sample(20)) == 20
