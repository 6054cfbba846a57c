import html

import numpy as np
import pandas as pd
import pytest

from clustering.analysis.model import cluster
from clustering.analysis.sample import make_sample
from clustering.outputs import charts, palette, report
from clustering.outputs.palette import CohortView, cohort_labels, cohort_styles
from clustering.settings import AnalysisSettings
from clustering.table import validate_features
from tests.helpers import COHORT_NAMES, profiles_of, with_cohorts

RING = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]


def rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def table_of(rows: list[tuple[str, str, int, str]]) -> pd.DataFrame:
    """Rows of (neighborhood, top label, sub_cluster, cohort_name)."""
    frame = pd.DataFrame(
        rows, columns=["neighborhood", "top_cluster_label", "sub_cluster", "cohort_name"]
    )
    top = {"Stable": 0, "Distressed": 1}
    return frame.assign(top_cluster=frame["top_cluster_label"].map(top).fillna(-1).astype(int))


SMALL = table_of(
    [
        ("A", "Stable", 0, "Stable: quiet"),
        ("B", "Stable", 1, "Stable: busy"),
        ("C", "Stable", 1, "Stable: busy"),
        ("D", "Distressed", 10, "Distressed: vacant"),
        ("E", "Distressed", 11, "Distressed: crime"),
        ("F", "Excluded", -1, "Low Population (Park/Open Space) - Group 0"),
        ("G", "Excluded", -1, "Institutional/Industrial - Group 0"),
    ]
)


def test_residential_cohorts_are_named_by_stable_id_and_name_excluded_by_group():
    assert list(cohort_labels(SMALL)) == [
        "0 · Stable: quiet",
        "1 · Stable: busy",
        "1 · Stable: busy",
        "10 · Distressed: vacant",
        "11 · Distressed: crime",
        "Low Population (Park/Open Space) - Group 0",
        "Institutional/Industrial - Group 0",
    ]


def test_each_top_group_is_a_family_of_one_hue_and_excluded_groups_are_hatched_greys():
    styles = {s.label: s for s in cohort_styles(SMALL)}
    stable = [styles["0 · Stable: quiet"], styles["1 · Stable: busy"]]
    distressed = [styles["10 · Distressed: vacant"], styles["11 · Distressed: crime"]]
    excluded = [s for s in styles.values() if s.group == "Excluded"]
    assert all(rgb(s.color)[2] > rgb(s.color)[0] for s in stable)  # blues
    assert all(rgb(s.color)[0] > rgb(s.color)[2] for s in distressed)  # oranges
    assert all(len(set(rgb(s.color))) == 1 for s in excluded)  # greys
    assert len({s.color for s in styles.values()}) == len(styles)  # all told apart
    assert [s.hatch for s in stable + distressed] == [None] * 4
    assert len({s.hatch for s in excluded}) == len(excluded) and None not in {
        s.hatch for s in excluded
    }
    assert styles["1 · Stable: busy"].rows == 2 and styles["0 · Stable: quiet"].sub_cluster == 0


def test_styles_come_residential_by_top_group_and_id_then_excluded_by_name():
    order = [s.label for s in cohort_styles(SMALL.sample(frac=1, random_state=3))]
    assert order == [
        "0 · Stable: quiet",
        "1 · Stable: busy",
        "10 · Distressed: vacant",
        "11 · Distressed: crime",
        "Institutional/Industrial - Group 0",
        "Low Population (Park/Open Space) - Group 0",
    ]


def test_a_cohort_keeps_its_colour_when_names_change_but_ids_do_not():
    renamed = SMALL.assign(cohort_name=SMALL["cohort_name"].str.upper())
    before = [(s.sub_cluster, s.color) for s in cohort_styles(SMALL)]
    assert [(s.sub_cluster, s.color) for s in cohort_styles(renamed)] == before


def test_shades_run_from_dark_to_light():
    assert palette.shades("#000000", "#ffffff", 3) == ["#000000", "#808080", "#ffffff"]
    assert palette.shades("#000000", "#ffffff", 1) == ["#808080"]


@pytest.fixture(scope="module")
def run():
    settings = AnalysisSettings(k_max=4)
    result = cluster(validate_features(make_sample(), settings, "sample").frame, settings)
    table = with_cohorts(result.table)
    return result, CohortView(table, profiles_of(table, list(result.features.used)))


def test_the_same_cohort_has_the_same_name_and_colour_in_every_picture(run):
    """The visual language: scatter, heatmap, map and report take one cohort's name and colour
    from one place, so they cannot disagree."""
    result, view = run
    boundaries = {name: [RING] for name in view.table["neighborhood"]}
    tasks = charts.result_tasks(result, view, 42, boundaries, "2026-11-29 12:00 UTC")
    scatter = {s.label: s.color for s in tasks["pca_clusters.png"][1][0].styles}
    heatmap = {s.label: s.color for s in tasks["cluster_heatmap.png"][1][0].styles}
    map_data = tasks["cluster_map.png"][1][1]
    drawn = {s.label: s.color for s, _, _ in charts.map_layers(boundaries, map_data)}
    facts = report.RunFacts("r", "now", "test", None, None, "sample", None, 1, 1, 0, (), (), (), ())
    page = report.report_data(facts, view, {}, ("cluster_map.png",))
    listed = {c.label: c.color for c in page.cohorts + page.excluded}

    residential = view.table[view.table["sub_cluster"] >= 0]
    expected = {f"{sub} · {COHORT_NAMES[sub]}" for sub in residential["sub_cluster"]}
    assert set(scatter) == set(heatmap) == expected
    assert scatter == heatmap
    assert drawn == listed  # every cohort, excluded groups too
    assert {label: drawn[label] for label in scatter} == scatter
    content = report.render(page).decode()
    for label, color in listed.items():
        assert html.escape(label) in content and color in content


def test_a_cell_is_an_index_or_sds_read_as_better_or_worse_by_direction():
    features = ["crime_per_capita", "owner_occupancy_rate", "crime_yoy_change", "trees"]
    profiles = palette.Profiles(
        index=pd.DataFrame({7: [64.0, 150.0, np.nan, 100.2]}, index=features),
        sd=pd.DataFrame({7: [-0.55, 0.4, 1.26, 0.02]}, index=features),
        measures={
            "crime_per_capita": "index",
            "owner_occupancy_rate": "index",
            "crime_yoy_change": "sd",
            "trees": "index",
        },
        directions={
            "crime_per_capita": "higher_is_worse",
            "owner_occupancy_rate": "higher_is_better",
            "crime_yoy_change": "higher_is_worse",
        },
    )
    crime = palette.cell(profiles, "crime_per_capita", 7)
    # Low crime is better; 0.55 SD from the mean is strong enough to name a cohort: emphasised.
    assert (crime.text, crime.reading, crime.strong) == ("64", "better", True)
    assert crime.goodness > 0 and crime.position < 0
    owners = palette.cell(profiles, "owner_occupancy_rate", 7)
    # An index of 150 is not emphasised when it is only 0.4 SD: the emphasis is the naming bar.
    assert (owners.text, owners.reading, owners.strong) == ("150", "better", False)
    assert owners.goodness == owners.position > 0
    signed = palette.cell(profiles, "crime_yoy_change", 7)
    assert (signed.text, signed.reading, signed.strong) == ("+1.3 SD", "worse", True)
    assert signed.goodness == -signed.position
    trees = palette.cell(profiles, "trees", 7)
    assert (trees.text, trees.reading, trees.goodness) == ("100", "at the mean", None)


def test_a_cell_without_a_direction_reads_higher_or_lower():
    profiles = palette.Profiles(
        index=pd.DataFrame({1: [np.nan, 300.0]}, index=["change", "trees"]),
        sd=pd.DataFrame({1: [-0.03, 2.5]}, index=["change", "trees"]),
        measures={"change": "sd", "trees": "index"},
    )
    flat = palette.cell(profiles, "change", 1)
    assert (flat.text, flat.reading) == ("0.0 SD", "at the mean")  # never "-0.0"
    trees = palette.cell(profiles, "trees", 1)
    assert (trees.reading, trees.goodness) == ("higher", None)
    assert trees.position == pytest.approx(np.log2(3))
