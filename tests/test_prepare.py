import numpy as np
import pandas as pd
import pytest
from scipy.stats import mstats
from sklearn.impute import SimpleImputer

from clustering.analysis.prepare import (
    INSTITUTIONAL,
    LOW_POPULATION,
    RESIDENTIAL,
    Space,
    filled_blanks,
    impute_median,
    prepare,
    row_types,
    select_features,
    types_of,
    winsorize,
)
from clustering.settings import AnalysisSettings


@pytest.mark.parametrize("n_rows", [5, 99, 100, 101, 199, 279, 1000, 4321])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_winsorize_equals_scipy_mstats_on_matrices_with_ties(n_rows, seed):
    rng = np.random.default_rng(seed)
    # Rounding to few distinct values puts many ties at the clipping ranks.
    matrix = np.column_stack(
        [
            rng.normal(size=n_rows),
            rng.lognormal(size=n_rows).round(1),
            rng.integers(0, 4, n_rows).astype(float),
            np.full(n_rows, 3.0),
        ]
    )
    expected = np.asarray(mstats.winsorize(matrix, limits=[0.01, 0.01], axis=0))
    np.testing.assert_array_equal(winsorize(matrix), expected)


def test_winsorize_clips_exactly_one_value_per_side_at_100_rows():
    column = np.arange(100, dtype=float)[::-1].copy()
    clipped = winsorize(column[:, None])[:, 0]
    assert clipped.min() == 1.0 and clipped.max() == 98.0
    assert (clipped == 1.0).sum() == 2 and (clipped == 98.0).sum() == 2


def test_winsorize_leaves_input_untouched():
    matrix = np.random.default_rng(3).normal(size=(300, 3))
    before = matrix.copy()
    winsorize(matrix)
    np.testing.assert_array_equal(matrix, before)


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
def test_impute_median_equals_simple_imputer_and_drops_empty_columns():
    rng = np.random.default_rng(4)
    matrix = rng.normal(size=(57, 5))
    matrix[rng.random(matrix.shape) < 0.2] = np.nan
    matrix[:, 3] = np.nan
    imputed, kept = impute_median(matrix)
    expected = SimpleImputer(strategy="median").fit_transform(matrix)
    np.testing.assert_array_equal(imputed, expected)
    assert kept.tolist() == [True, True, True, False, True]
    assert not np.isnan(imputed).any()


def test_impute_median_even_count_takes_the_midpoint():
    matrix = np.array([[1.0], [2.0], [10.0], [20.0], [np.nan]])
    imputed, _ = impute_median(matrix)
    assert imputed[4, 0] == 6.0


def test_prepare_scales_to_zero_mean_unit_variance_and_zeros_for_constants():
    matrix = np.column_stack([np.arange(10.0), np.full(10, 7.0)])
    prepared = prepare(matrix, ("a", "b"), clip=False)
    scaled = prepared.scaled
    np.testing.assert_allclose(scaled[:, 0].mean(), 0, atol=1e-12)
    np.testing.assert_allclose(scaled[:, 0].std(), 1)
    assert (scaled[:, 1] == 0).all()
    assert prepared.space.scale[1] == 1.0 and prepared.space.center[1] == 7.0
    assert prepared.space.clip is None


def test_the_prepared_space_gives_the_scaled_rows_again_bit_for_bit():
    rng = np.random.default_rng(4)
    matrix = rng.lognormal(size=(300, 3))
    matrix[rng.integers(0, 300, 20), rng.integers(0, 3, 20)] = np.nan
    matrix[:, 2] = np.nan  # blank throughout: not a feature of the space
    prepared = prepare(matrix, ("a", "b", "c"), clip=True)
    assert prepared.space.features == ("a", "b")
    np.testing.assert_array_equal(prepared.space.impute, np.nanmedian(matrix[:, :2], axis=0))
    low, high = prepared.space.clip
    np.testing.assert_array_equal(low, prepared.before_scaling.min(axis=0))
    np.testing.assert_array_equal(high, prepared.before_scaling.max(axis=0))
    # 300 rows: the 3 smallest and 3 largest values of each column are clipped.
    imputed, _ = impute_median(matrix)
    np.testing.assert_array_equal(low, np.sort(imputed[:, :2], axis=0)[3])
    frame = pd.DataFrame(matrix, columns=["a", "b", "c"])
    np.testing.assert_array_equal(prepared.space.z(frame), prepared.scaled)


def test_row_types_use_one_exclusion_list_that_wins_over_population():
    table = pd.DataFrame(
        {
            "neighborhood": ["Harbor Point", "Perkins", "Quiet Park", "Rowhouse Row", "Edge"],
            "population": [50, 900, 12, 2000, 100],
        }
    )
    types = row_types(table, AnalysisSettings())
    assert types.tolist() == [
        INSTITUTIONAL,
        INSTITUTIONAL,
        LOW_POPULATION,
        RESIDENTIAL,
        RESIDENTIAL,
    ]


def test_exclude_also_extends_the_list_that_exclude_neighborhoods_replaces():
    table = pd.DataFrame(
        {"neighborhood": ["Harbor Point", "Rowhouse Row", "Edge"], "population": [900] * 3}
    )
    extended = row_types(table, AnalysisSettings(exclude_also=("Edge",)))
    assert extended.tolist() == [INSTITUTIONAL, RESIDENTIAL, INSTITUTIONAL]
    replaced = row_types(table, AnalysisSettings(exclude_neighborhoods=("Edge",)))
    assert replaced.tolist() == [RESIDENTIAL, RESIDENTIAL, INSTITUTIONAL]
    both = AnalysisSettings(exclude_neighborhoods=("Edge",), exclude_also=("Edge", "Perkins"))
    assert both.excluded_names == ("Edge", "Perkins")


def test_select_features_reports_missing_and_all_blank():
    table = pd.DataFrame(
        {
            "neighborhood": ["a", "b", "c"],
            "population": [500, 600, 700],
            "med_age": [30.0, np.nan, 40.0],
            "crime_per_capita": [np.nan, np.nan, np.nan],
        }
    )
    settings = AnalysisSettings(
        clustering_features=("population", "med_age", "crime_per_capita", "avg_assessed_value")
    )
    selection = select_features(table, pd.Series([True] * 3), settings)
    assert selection.used == ("population", "med_age")
    assert selection.missing == ("avg_assessed_value",)
    assert selection.all_blank == ("crime_per_capita",)


# --- Rules pinned by mutation testing (tools/mutation.py) ------------------------------------


def test_a_feature_with_exactly_one_residential_value_is_used():
    table = pd.DataFrame(
        {
            "neighborhood": ["a", "b", "c", "d"],
            "population": [500, 600, 700, 800],
            # The one value among residential rows is in row b; row d is not residential.
            "med_age": [np.nan, 35.0, np.nan, 50.0],
        }
    )
    settings = AnalysisSettings(clustering_features=("population", "med_age"))
    residential = pd.Series([True, True, True, False])
    selection = select_features(table, residential, settings)
    assert selection.used == ("population", "med_age")
    assert selection.all_blank == ()
    blank_there = select_features(table, pd.Series([True, False, True, False]), settings)
    assert blank_there.all_blank == ("med_age",)


@pytest.mark.parametrize("n_rows", [10, 20, 57])
@pytest.mark.parametrize("limits", [(0.0, 0.1), (0.1, 0.0), (0.1, 0.2), (0.0, 0.0)])
def test_winsorize_with_uneven_limits_equals_scipy_mstats(n_rows, limits):
    # Clipping one tail only, or each by its own share, must clip each side by its own limit.
    matrix = np.random.default_rng(n_rows).normal(size=(n_rows, 3))
    expected = np.asarray(mstats.winsorize(matrix, limits=list(limits), axis=0))
    np.testing.assert_array_equal(winsorize(matrix, limits), expected)


def test_winsorize_of_a_table_without_rows_is_empty():
    empty = np.empty((0, 3))
    clipped = winsorize(empty)
    assert clipped.shape == (0, 3)
    assert clipped is not empty


def test_without_a_population_every_row_not_listed_is_residential():
    keys = pd.Series(["A", "B", "C"])
    types = types_of(keys, None, ("B",), 100)
    assert list(types) == [RESIDENTIAL, INSTITUTIONAL, RESIDENTIAL]
    table = pd.DataFrame({"AREA": ["A", "B", "C"], "X": [1.0, 2.0, 3.0]})
    settings = AnalysisSettings(
        key_column="AREA", population_column="none", exclude_neighborhoods=("C",)
    )
    assert list(row_types(table, settings)) == [RESIDENTIAL, RESIDENTIAL, INSTITUTIONAL]


def test_every_blank_filled_is_a_warning_with_the_feature_count_value_and_keys():
    keys = [f"Area {i}" for i in range(8)]
    rows = pd.DataFrame(
        {
            "AREA": keys,
            "HARDSHIP": [59.0, 1, 2, 3, 4, 5, 6, np.nan],
            "INCOME": [np.nan] * 7 + [1.0],
            "FULL": np.arange(8.0),
        }
    )
    space = Space(
        ("HARDSHIP", "INCOME", "FULL"),
        impute=np.array([59.0, 21323.5, 4.0]),
        center=np.zeros(3),
        scale=np.ones(3),
    )
    assert filled_blanks(rows, space, "AREA") == [
        "HARDSHIP blank in 1 row (Area 7): filled with the median 59",
        "INCOME blank in 7 rows (Area 0, Area 1, Area 2, Area 3, Area 4, ...): filled with "
        "the median 21323.5",
    ]
    assert filled_blanks(rows.iloc[7:], space, "AREA", "Institutional/Industrial") == [
        "HARDSHIP blank in 1 row (Area 7): filled with the Institutional/Industrial rows' median 59"
    ]


def test_a_blank_fill_warning_shows_five_keys_without_an_ellipsis_when_there_are_five():
    rows = pd.DataFrame({"AREA": [f"A{i}" for i in range(6)], "X": [np.nan] * 5 + [1.0]})
    space = Space(("X",), impute=np.array([1.0]), center=np.zeros(1), scale=np.ones(1))
    assert filled_blanks(rows, space, "AREA") == [
        "X blank in 5 rows (A0, A1, A2, A3, A4): filled with the median 1"
    ]
