"""Cohort names and index scores: from the profile, unique, stable, overridable."""

from __future__ import annotations

import math

from clustering.analysis.cohorts import (
    FEATURE_WORDS,
    GENERATED,
    INDEX,
    KEPT,
    OVERRIDE,
    SD,
    PreviousName,
    Profile,
    index_scores,
    measure,
    name_cohorts,
    words_for,
)
from clustering.settings import DEFAULT_CLUSTERING_FEATURES


def profile(sub: int, label: str = "Distressed", **z: float) -> Profile:
    return Profile(sub, label, dict(z))


def test_every_default_feature_has_words_and_others_read_as_their_name():
    assert set(FEATURE_WORDS) == set(DEFAULT_CLUSTERING_FEATURES)
    assert words_for("housing_vacancy_rate", "high") == "high vacancy"
    assert words_for("owner_occupancy_rate", "low") == "low owner occupancy"
    assert words_for("tree_canopy_pct", "high") == "higher tree canopy pct"
    assert words_for("tree__canopy", "low") == "lower tree canopy"
    # With a direction, a feature without words of its own reads better or worse.
    directions = {"median_income": "higher_is_better", "poverty_rate": "higher_is_worse"}
    assert words_for("median_income", "high", directions) == "better median income"
    assert words_for("median_income", "low", directions) == "worse median income"
    assert words_for("poverty_rate", "high", directions) == "worse poverty rate"
    assert words_for("poverty_rate", "low", directions) == "better poverty rate"
    assert words_for("tree_canopy_pct", "low", directions) == "lower tree canopy pct"
    # The notebook's words already say which way they go.
    assert words_for("crime_per_capita", "high", {"crime_per_capita": "higher_is_better"}) == (
        "high crime"
    )


def test_a_name_says_better_or_worse_by_direction():
    directions = {"median_income": "higher_is_better"}
    stable = profile(3, "Stable", median_income=1.4, tree_canopy_pct=-0.9)
    names = name_cohorts([stable], {}, {}, directions)
    assert names[3].name == "Stable: better median income, lower tree canopy pct"


def test_the_two_most_distinctive_features_name_the_cohort_with_their_direction():
    names = name_cohorts(
        [profile(10, housing_vacancy_rate=1.8, owner_occupancy_rate=-1.2, med_age=0.3)], {}, {}
    )
    naming = names[10]
    assert naming.name == "Distressed: high vacancy, low owner occupancy"
    assert naming.source == GENERATED
    assert naming.features == (("housing_vacancy_rate", "high"), ("owner_occupancy_rate", "low"))


def test_a_single_distinctive_feature_gives_one_word_and_none_the_closest():
    one = name_cohorts([profile(1, "Stable", crime_per_capita=-0.9, med_age=0.1)], {}, {})
    assert one[1].name == "Stable: low crime"
    flat = name_cohorts([profile(2, "Stable", crime_per_capita=0.05, med_age=-0.2)], {}, {})
    assert flat[2].name == "Stable: younger residents"


def test_names_that_would_clash_get_a_third_word_then_the_id():
    profiles = [
        profile(10, crime_per_capita=2.0, arrest_per_capita=1.5, med_age=0.9),
        profile(11, crime_per_capita=2.1, arrest_per_capita=1.4, med_age=-0.8),
        profile(12, crime_per_capita=1.0, arrest_per_capita=0.8),
        profile(13, crime_per_capita=1.1, arrest_per_capita=0.7),
    ]
    names = {sub: n.name for sub, n in name_cohorts(profiles, {}, {}).items()}
    assert names[10] == "Distressed: high crime, many arrests, older residents"
    assert names[11] == "Distressed: high crime, many arrests, younger residents"
    assert names[12] == "Distressed: high crime, many arrests (Cluster 12)"
    assert names[13] == "Distressed: high crime, many arrests (Cluster 13)"
    assert len(set(names.values())) == 4


def test_naming_is_deterministic_and_ties_follow_the_feature_order():
    profiles = [profile(0, "Stable", med_age=1.0, population=-1.0, crime_per_capita=1.0)]
    first = name_cohorts(profiles, {}, {})
    assert first == name_cohorts(profiles, {}, {})
    assert first[0].name == "Stable: older residents, small population"


def test_a_matched_cohort_keeps_its_name_while_its_features_still_hold():
    before = {
        12: PreviousName(
            "Distressed: high vacancy, low owner occupancy",
            "Distressed",
            GENERATED,
            (("housing_vacancy_rate", "high"), ("owner_occupancy_rate", "low")),
        )
    }
    # The profile moved: another feature now stands out more, but the named ones still hold.
    moved = profile(12, housing_vacancy_rate=0.4, owner_occupancy_rate=-0.3, crime_per_capita=2)
    kept = name_cohorts([moved], before, {})[12]
    assert (kept.name, kept.source) == ("Distressed: high vacancy, low owner occupancy", KEPT)
    assert kept.features == before[12].features
    # Fresh, the same profile would be named otherwise.
    assert name_cohorts([moved], {}, {})[12].name.startswith("Distressed: high crime")


def test_a_name_whose_features_no_longer_hold_is_renamed():
    before = {
        12: PreviousName(
            "Distressed: high vacancy", "Distressed", GENERATED, (("housing_vacancy_rate", "high"),)
        )
    }
    faded = profile(12, housing_vacancy_rate=0.2, crime_per_capita=1.5)
    assert name_cohorts([faded], before, {})[12].name == "Distressed: high crime"
    flipped = profile(12, "Stable", housing_vacancy_rate=1.5)
    assert name_cohorts([flipped], before, {})[12].name == "Stable: high vacancy"


def test_a_kept_name_that_an_override_now_takes_is_not_kept():
    before = {12: PreviousName("Core", "Distressed", GENERATED, (("crime_per_capita", "high"),))}
    names = name_cohorts(
        [profile(12, crime_per_capita=1.0), profile(11, crime_per_capita=1.0)], before, {11: "Core"}
    )
    assert names[11] == names[11].__class__("Core", OVERRIDE, ())
    assert names[12].name == "Distressed: high crime"


def test_overrides_win_and_generated_names_avoid_them():
    profiles = [profile(10, crime_per_capita=2.0), profile(11, crime_per_capita=2.0, med_age=-1)]
    names = name_cohorts(profiles, {}, {10: "Distressed: high crime, younger residents"})
    assert names[10].source == OVERRIDE
    assert names[10].name == "Distressed: high crime, younger residents"
    assert names[11].name == "Distressed: high crime, younger residents (Cluster 11)"


def test_a_previous_override_is_not_kept_once_the_override_is_gone():
    before = {10: PreviousName("Rowhouse core", "Distressed", OVERRIDE, ())}
    names = name_cohorts([profile(10, crime_per_capita=2.0)], before, {})
    assert names[10].name == "Distressed: high crime"


def test_index_scores_are_cohort_over_residential_mean_times_100():
    scores = index_scores(
        {"crime_per_capita": 0.15, "med_age": 30.0, "crime_yoy_change": 0.2, "x": math.nan},
        {"crime_per_capita": 0.10, "med_age": 40.0, "crime_yoy_change": 0.01, "x": 1.0},
        ["crime_per_capita", "med_age", "x"],
    )
    # Only the features measured by an index; a cohort without a value of one has none.
    assert scores == {"crime_per_capita": 150.0, "med_age": 75.0}


def test_a_feature_that_goes_negative_or_has_no_positive_mean_is_measured_in_sd():
    assert measure(0.0, 0.1) == INDEX
    # A year-on-year change: barely positive on average, but its ratios would be -2557 or 2067.
    assert measure(-0.4, 0.0001) == SD
    assert measure(0.0, 0.0) == SD  # all zero: a ratio to nothing
    assert measure(-1.0, -0.2) == SD


def test_names_use_readable_words_for_upper_case_columns_and_feature_labels():
    directions = {"PER_CAPITA_INCOME": "higher_is_better"}
    assert words_for("PER_CAPITA_INCOME", "high", directions) == "better per capita income"
    assert words_for("PCT_AGED_UNDER_18_OR_OVER_64", "low") == "lower pct aged under 18 or over 64"
    labels = {"PCT_AGED_UNDER_18_OR_OVER_64": "dependants", "PER_CAPITA_INCOME": "income"}
    assert words_for("PER_CAPITA_INCOME", "low", directions, labels) == "worse income"
    assert words_for("PCT_AGED_UNDER_18_OR_OVER_64", "high", None, labels) == "higher dependants"
    # A label given for one of the notebook's features wins over its own words.
    assert words_for("crime_per_capita", "high", {}, {"crime_per_capita": "crimes"}) == (
        "higher crimes"
    )
    assert words_for("crime_per_capita", "high", {}, {"med_age": "age"}) == "high crime"
    stable = profile(3, "Stable", PER_CAPITA_INCOME=1.4, PCT_AGED_UNDER_18_OR_OVER_64=-0.9)
    names = name_cohorts([stable], {}, {}, directions, labels)
    assert names[3].name == "Stable: better income, lower dependants"
    # What the name states stays the columns (cohort identity compares those).
    assert names[3].features == (
        ("PER_CAPITA_INCOME", "high"),
        ("PCT_AGED_UNDER_18_OR_OVER_64", "low"),
    )
