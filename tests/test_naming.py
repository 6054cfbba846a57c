"""What rows and columns are called for people (issue 21): readable column names, the row noun
KEY_COLUMN implies, and its plural."""

from __future__ import annotations

import pytest

from clustering.naming import plural, readable, row_noun, rows_called
from clustering.settings import DEFAULT_CLUSTERING_FEATURES


@pytest.mark.parametrize(
    ("column", "words"),
    [
        ("PCT_HOUSEHOLDS_IN_POVERTY", "pct households in poverty"),
        ("PERCENT_AGED_UNDER_18_OR_OVER_64", "percent aged under 18 or over 64"),
        ("housing__vacancy_rate ", "housing vacancy rate"),
        ("Median Income", "median income"),
    ],
)
def test_a_column_name_is_made_readable(column, words):
    assert readable(column) == words


def test_lower_snake_names_read_as_they_always_did():
    # The notebook's columns were shown with spaces for _ before labels existed: a cohort name
    # built from them must not change (cohort identity keeps names across runs).
    for column in DEFAULT_CLUSTERING_FEATURES:
        assert readable(column) == column.replace("_", " ")


@pytest.mark.parametrize(
    ("key", "noun"),
    [
        ("neighborhood", "neighborhood"),
        ("COMMUNITY_AREA_NAME", "community area"),
        ("community_area", "community area"),
        ("TRACT_ID", "tract"),
        ("ward_number", "ward"),
        ("county_code", "county"),
        ("zip_name_code", "zip"),
        ("name", "name"),  # nothing would be left: the word stays
        ("id", "id"),
        ("GEOID", "geoid"),
    ],
)
def test_the_row_noun_is_the_key_column_without_a_trailing_name_number_id_or_code(key, noun):
    assert row_noun(key) == noun


@pytest.mark.parametrize(
    ("noun", "many"),
    [
        ("neighborhood", "neighborhoods"),
        ("community area", "community areas"),
        ("county", "counties"),
        ("survey", "surveys"),  # a vowel before the y
        ("parish", "parishes"),
        ("census block group", "census block groups"),
        ("bus", "buses"),
        ("box", "boxes"),
        ("ZIP code", "ZIP codes"),
    ],
)
def test_the_plural_follows_the_rule(noun, many):
    assert plural(noun) == many


def test_the_rows_are_called_by_row_noun_else_by_the_key_column():
    assert rows_called("COMMUNITY_AREA_NAME") == "community areas"
    assert rows_called("COMMUNITY_AREA_NAME", "area") == "areas"
    assert rows_called("neighborhood", None) == "neighborhoods"
