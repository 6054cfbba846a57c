"""Stable ids across runs: matching to the previous run's centroids, renumbering, transitions.

Runs are chained in memory here: the previous run is what `manifest_entries` would put in its
run.json (round-tripped through JSON) plus the rows of its clusters table. The same chain
through files, the CLI and the function is tested in test_job, test_cli and the e2e tests.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from clustering.analysis.identity import (
    FIRST_RUN,
    NEXT_ID,
    NO_CENTROIDS,
    Matching,
    ScaledSpace,
    identify,
    manifest_entries,
    previous_run,
    renumber,
)
from clustering.analysis.model import cluster
from clustering.analysis.transitions import PREVIOUS_COLUMNS
from clustering.settings import AnalysisSettings
from clustering.table import validate_features
from tests.helpers import cohort_table, move_rows, real_table

SETTINGS = AnalysisSettings()


def clustered(table: pd.DataFrame, settings: AnalysisSettings = SETTINGS):
    return cluster(validate_features(table, settings, "test").frame, settings)


def published(identity, run_id: str):
    """The PreviousRun the next run reads back from this run's run.json and clusters CSV."""
    manifest = {"run_id": run_id, "features": {"used": list(identity.result.features.used)}}
    manifest |= json.loads(json.dumps(manifest_entries(identity)))
    return previous_run(manifest, identity.table[list(PREVIOUS_COLUMNS)].copy())


def ids(identity) -> pd.DataFrame:
    return identity.table.set_index("neighborhood")[["top_cluster", "sub_cluster", "cohort_name"]]


@pytest.fixture(scope="module")
def chain():
    """Cohort table: a first run, and an identical second run matched to it."""
    table = cohort_table()
    first = identify(clustered(table), None, {}, "run-1")
    second = identify(clustered(table), published(first, "run-1"), {}, "run-2")
    return table, first, second


def test_the_first_run_keeps_the_clusterings_own_numbering(chain):
    table, first, _ = chain
    result = clustered(table)
    own = result.table.set_index("neighborhood")[["top_cluster", "sub_cluster", "cluster_label"]]
    ours = first.table.set_index("neighborhood")[["top_cluster", "sub_cluster", "cluster_label"]]
    pd.testing.assert_frame_equal(ours, own)
    assert first.matching["rule"] == FIRST_RUN and first.matching["pairs"] == []
    assert first.transitions is None and first.previous_run_id is None


def test_an_identical_rerun_changes_no_id_or_name_and_reports_no_transition(chain):
    _, first, second = chain
    pd.testing.assert_frame_equal(ids(second), ids(first))
    assert [c.name for c in second.cohorts] == [c.name for c in first.cohorts]
    assert second.transitions is not None and second.transitions.empty
    assert second.counts.moved == second.counts.appeared == second.counts.disappeared == 0
    pairs = second.matching["pairs"]
    assert len(pairs) == 2 + 6 and all(p["distance"] == pytest.approx(0, abs=1e-9) for p in pairs)
    assert second.matching["new"] == second.matching["vanished"] == []
    assert second.previous_run_id == "run-1"


def test_a_differently_numbered_clustering_is_mapped_back_to_the_previous_ids(chain):
    table, first, _ = chain
    result = clustered(table)
    # The same partitions under other numbers, as another k-means run could produce them.
    swapped = renumber(
        result,
        Matching(
            top_ids={0: 1, 1: 0},
            sub_ids={0: 12, 1: 10, 2: 11, 10: 2, 11: 0, 12: 1},
            record={},
        ),
    )
    assert not swapped.table["sub_cluster"].equals(first.table["sub_cluster"])
    again = identify(swapped, published(first, "run-1"), {}, "run-2")
    pd.testing.assert_frame_equal(ids(again), ids(first))
    assert again.transitions.empty
    assert {(p["own"], p["current"]) for p in again.matching["pairs"] if p["level"] == "top"} == {
        (0, 1),
        (1, 0),
    }


def test_centroids_are_recorded_in_original_units_and_match_the_kmeans_centroids(chain):
    _table, first, _ = chain
    cohort = next(c for c in first.cohorts if c.sub_cluster == 1)
    rows = first.table[first.table["sub_cluster"] == 1]
    # Within the winsorizing bounds, the mean of the values is the centroid.
    assert cohort.centroid["med_age"] == pytest.approx(rows["med_age"].mean(), rel=1e-3)
    assert cohort.rows == len(rows) == 30
    assert set(cohort.centroid) == set(first.result.features.used)
    tops = {t["top_cluster"]: t for t in first.top_centroids}
    assert {t["label"] for t in tops.values()} == {"Stable", "Distressed"}
    assert sum(t["rows"] for t in tops.values()) == 180


def test_a_few_moved_neighborhoods_are_exactly_the_transitions_and_the_rest_keep_their_ids(chain):
    table, first, _ = chain
    moved = ["Cohort 0 Street 003", "Cohort 0 Street 017", "Cohort 1 Street 020"]
    changed = move_rows(table, moved, like="Cohort 4 Street 000")
    after = identify(clustered(changed), published(first, "run-1"), {}, "run-2")
    rest = ids(first).drop(moved)
    pd.testing.assert_frame_equal(ids(after).drop(moved), rest)
    moves = after.transitions
    assert moves["neighborhood"].tolist() == sorted(moved)
    assert set(moves["change"]) == {"moved"}
    target = ids(first).loc["Cohort 4 Street 000"]
    assert (moves["sub_cluster"] == target["sub_cluster"]).all()
    assert (moves["cohort_name"] == target["cohort_name"]).all()
    assert set(moves["previous_run_id"]) == {"run-1"} and set(moves["run_id"]) == {"run-2"}
    assert after.counts.moved == 3 and after.counts.stable_to_distressed == 3
    assert after.counts.between_top_groups == 3 and after.counts.distressed_to_stable == 0


def test_each_transition_says_whether_the_previous_run_found_it_borderline(chain):
    table, first, _ = chain
    moved = ["Cohort 0 Street 003", "Cohort 0 Street 017", "Cohort 1 Street 020"]
    changed = move_rows(table, moved, like="Cohort 4 Street 000")
    changed = pd.concat([changed, changed.iloc[[0]].assign(neighborhood="Newtown")])
    before = published(first, "run-1")
    # The margins the previous run recorded: 0.1 is the bar, and below 0 is borderline too.
    margins = dict(zip(moved, [0.0999, -0.3, 0.1], strict=True))
    rows = before.rows.assign(fit_margin=before.rows["neighborhood"].map(margins))
    after = identify(clustered(changed), replace(before, rows=rows), {}, "run-2")
    flags = after.transitions.set_index("neighborhood")["previously_borderline"]
    assert flags[moved].tolist() == [True, True, False]
    assert pd.isna(flags["Newtown"])  # appeared: no previous margin
    # A previous run from before margins says nothing either way.
    older = identify(clustered(changed), before, {}, "run-2")
    assert older.transitions["previously_borderline"].isna().all()


def test_appeared_and_disappeared_neighborhoods_are_transitions(chain):
    table, first, _ = chain
    gone = "Cohort 2 Street 005"
    new = table[table["neighborhood"] == "Cohort 2 Street 006"].assign(neighborhood="Newtown")
    changed = pd.concat([table[table["neighborhood"] != gone], new], ignore_index=True)
    after = identify(clustered(changed), published(first, "run-1"), {}, "run-2")
    moves = after.transitions.set_index("neighborhood")
    assert sorted(moves.index) == ["Cohort 2 Street 005", "Newtown"]
    assert moves.loc["Newtown", "change"] == "appeared"
    assert pd.isna(moves.loc["Newtown", "previous_sub_cluster"])
    assert moves.loc[gone, "change"] == "disappeared" and pd.isna(moves.loc[gone, "sub_cluster"])
    assert moves.loc[gone, "previous_sub_cluster"] == ids(first).loc[gone, "sub_cluster"]
    assert (after.counts.appeared, after.counts.disappeared, after.counts.moved) == (1, 1, 0)


def test_a_new_cohort_gets_the_next_unused_id_and_is_reported(chain):
    table, first, _ = chain
    more = AnalysisSettings(sub_k_min=4, sub_k_max=4)
    after = identify(clustered(table, more), published(first, "run-1"), {}, "run-2")
    before_ids = {c.sub_cluster for c in first.cohorts}
    new = after.matching["new"]
    assert [(n["level"], n["rule"]) for n in new] == [("sub", NEXT_ID)] * 2
    assert sorted(n["current"] for n in new) == [3, 13]
    assert {c.sub_cluster for c in after.cohorts} == before_ids | {3, 13}
    assert after.matching["vanished"] == []
    # Exactly the neighborhoods now in another cohort are listed, each a move.
    merged = ids(first).merge(
        ids(after), left_index=True, right_index=True, suffixes=("", "_after")
    )
    changed = merged.index[merged["sub_cluster"] != merged["sub_cluster_after"]]
    assert len(changed) > 0
    assert after.transitions["neighborhood"].tolist() == sorted(changed)
    assert set(after.transitions["sub_cluster"]) <= {3, 13}


def test_a_vanished_cohort_is_reported_and_its_id_not_reused(chain):
    table, first, _ = chain
    fewer = AnalysisSettings(sub_k_min=2, sub_k_max=2)
    after = identify(clustered(table, fewer), published(first, "run-1"), {}, "run-2")
    vanished = after.matching["vanished"]
    assert len(vanished) == 2 and {v["level"] for v in vanished} == {"sub"}
    names = {c.sub_cluster: c.name for c in first.cohorts}
    assert all(v["name"] == names[v["previous"]] for v in vanished)
    remaining = {c.sub_cluster for c in after.cohorts}
    assert remaining == set(names) - {v["previous"] for v in vanished}
    gone = after.transitions
    assert set(gone["previous_sub_cluster"]) == {v["previous"] for v in vanished}


def test_overrides_win_and_survive_a_rerun(chain):
    table, first, _ = chain
    overrides = {1: "Young renters", 12: "Older owners in distress"}
    named = identify(clustered(table), published(first, "run-1"), overrides, "run-2")
    names = named.table.set_index("sub_cluster")["cohort_name"]
    assert names.loc[1].unique().tolist() == ["Young renters"]
    assert names.loc[12].unique().tolist() == ["Older owners in distress"]
    again = identify(clustered(table), published(named, "run-2"), overrides, "run-3")
    pd.testing.assert_frame_equal(ids(again), ids(named))
    assert again.transitions.empty
    sources = {c.sub_cluster: c.name_source for c in again.cohorts}
    assert sources[1] == sources[12] == "override"
    assert {s for k, s in sources.items() if k not in overrides} == {"kept"}
    # The cluster_label keeps its notebook meaning.
    assert set(again.table.loc[again.table["sub_cluster"] == 1, "cluster_label"]) == {"Cluster 1"}


def test_an_override_for_an_id_the_run_lacks_is_a_warning(chain):
    table, _first, _ = chain
    named = identify(clustered(table), None, {42: "Nowhere"}, "run-1")
    assert any("LABEL_OVERRIDES names cohort 42," in w for w in named.warnings)
    assert "Nowhere" not in set(named.table["cohort_name"])


def test_a_previous_run_without_centroids_keeps_the_own_numbering_but_lists_moves(chain):
    table, first, _ = chain
    old = previous_run({"run_id": "old"}, first.table[list(PREVIOUS_COLUMNS)].copy())
    after = identify(clustered(table), old, {}, "run-2")
    assert after.matching["rule"] == NO_CENTROIDS
    pd.testing.assert_frame_equal(ids(after), ids(first))
    assert after.transitions.empty and after.previous_run_id == "old"


def test_names_are_unique_and_excluded_rows_keep_their_group_names():
    result = clustered(real_table())
    named = identify(result, None, {}, "run-1")
    residential = named.table.loc[result.residential]
    per_cohort = residential.groupby("sub_cluster")["cohort_name"].nunique()
    assert (per_cohort == 1).all()
    assert residential.drop_duplicates("sub_cluster")["cohort_name"].is_unique
    assert all(n.startswith(("Stable: ", "Distressed: ")) for n in residential["cohort_name"])
    excluded = named.table.loc[~result.residential]
    assert (excluded["cohort_name"] == excluded["excluded_cluster"]).all()
    assert excluded["cohort_stability"].isna().all()
    # The partitions are the clustering's, and cluster_label is still "Cluster <id>".
    assert (
        residential["cluster_label"] == "Cluster " + residential["sub_cluster"].astype(str)
    ).all()
    columns = list(named.table.columns)
    assert columns[-3:] == ["excluded_cluster", "cohort_name", "cohort_stability"]


def test_the_real_table_rerun_with_rows_shuffled_changes_nothing():
    table = real_table()
    first = identify(clustered(table), None, {}, "run-1")
    shuffled = table.sample(frac=1, random_state=3).reset_index(drop=True)
    second = identify(clustered(shuffled), published(first, "run-1"), {}, "run-2")
    pd.testing.assert_frame_equal(ids(second), ids(first))
    assert second.transitions.empty
    assert np.allclose([p["distance"] for p in second.matching["pairs"]], 0)


def test_old_centroids_enter_the_new_scaled_space_clipped_and_standardised(chain):
    table, first, _ = chain
    result = clustered(table)
    used = list(result.features.used)
    space = ScaledSpace.of(result, used)
    # A recorded centroid lands exactly on the k-means centroid of its cohort.
    cohort = next(c for c in first.cohorts if c.sub_cluster == 12)
    scaled = pd.DataFrame(result.scaled, columns=used)[
        (first.table["sub_cluster"] == 12).to_numpy()
    ]
    np.testing.assert_allclose(space.project(cohort.centroid), scaled.mean().to_numpy(), atol=1e-9)
    # Beyond this run's winsorizing bounds a value counts as the bound; a feature the old run
    # did not record sits at the mean.
    far = dict(cohort.centroid, med_age=1e9)
    del far["population"]
    point = dict(zip(used, space.project(far), strict=True))
    assert point["med_age"] == pytest.approx(
        pd.DataFrame(result.scaled, columns=used)["med_age"].max()
    )
    assert point["population"] == pytest.approx(0)
