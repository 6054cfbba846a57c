"""The model document (run.json["model"]) and its rules: every row a run clustered is assigned
back to its cohort from the document alone, and the rules are the documented ones."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clustering import InputError
from clustering.analysis.assign import ASSIGNED_COLUMNS, Cohort, ExcludedModel, Model, assign
from clustering.analysis.document import (
    VERSION,
    document,
    fitted_model,
    read_model,
    through_model,
)
from clustering.analysis.identity import identify
from clustering.analysis.model import cluster
from clustering.analysis.prepare import INSTITUTIONAL, LOW_POPULATION, Space
from clustering.analysis.sample import make_sample
from clustering.settings import AnalysisSettings
from clustering.table import validate_features
from tests.helpers import real_table
from tests.notebook_reference import notebook_partitions

SETTINGS = AnalysisSettings()
PARTITION = ["top_cluster", "sub_cluster", "excluded_type", "excluded_cluster", "cohort_name"]


def fitted(table: pd.DataFrame, settings: AnalysisSettings = SETTINGS):
    """(identity, the document as run.json would hold it, read back) of a first run."""
    frame = validate_features(table, settings, "test").frame
    identity = identify(cluster(frame, settings), None, {}, "run-1")
    written = json.loads(json.dumps({"model": document(fitted_model(identity, settings))}))
    return identity, written["model"], read_model(written, "run.json")


@pytest.fixture(scope="module")
def real():
    return fitted(real_table())


def test_every_row_of_the_real_table_is_assigned_back_to_its_cohort(real):
    identity, _, model = real
    again = assign(identity.table, model)
    pd.testing.assert_frame_equal(
        again[PARTITION].astype(object), identity.table[PARTITION].astype(object)
    )
    # ... which are the notebook's partitions.
    expected = notebook_partitions(real_table())
    residential = again[again["excluded_type"] == "Residential"]
    assert residential["neighborhood"].tolist() == expected["neighborhood"].tolist()
    assert residential["sub_cluster"].astype(int).tolist() == expected["sub_cluster"].tolist()
    assert len(again) == 279


def test_every_row_of_the_sample_is_assigned_back_to_its_cohort():
    identity, _, model = fitted(make_sample(400, random_state=7))
    again = through_model(identity, model)
    assert again.table["fit_margin"].notna().sum() == identity.result.residential.sum()


def test_the_document_has_designs_shape(real):
    identity, written, _ = real
    assert written["version"] == VERSION
    assert (written["engine"], written["key_column"], written["sample"]) == (
        "memory",
        "neighborhood",
        None,
    )
    part = written["residential"]
    features = part["features"]
    assert features == list(identity.result.features.used)
    for key in ("impute", "center", "scale", "clip"):
        assert len(part[key]) == len(features)
    assert all(lo <= hi for lo, hi in part["clip"])
    assert sorted(part["top"]) == ["0", "1"]
    assert set(part["top_labels"].values()) == {"Stable", "Distressed"}
    for sub, entry in part["sub"].items():
        assert entry["top"] == int(sub) // 10 and len(entry["centroid"]) == len(features)
    assert set(written["excluded"]) == {INSTITUTIONAL, LOW_POPULATION}
    for kind, entry in written["excluded"].items():
        groups = identity.table.loc[identity.table["excluded_type"] == kind, "excluded_cluster"]
        assert sorted(entry["groups"]) == sorted(groups.unique())
        assert set(entry["features"]) <= set(features)


def test_centroids_are_stored_under_their_stable_ids():
    identity, written, model = fitted(make_sample(200, random_state=3))
    renamed = {c.sub_cluster: c.name for c in identity.cohorts}
    assert {int(s): e["name"] for s, e in written["residential"]["sub"].items()} == renamed
    # Each stable cohort's centroid is the mean of its rows in the scaled space.
    z = identity.result.scaled
    subs = identity.table.loc[identity.result.residential, "sub_cluster"].to_numpy()
    for cohort in model.cohorts:
        np.testing.assert_allclose(cohort.centroid, z[subs == cohort.id].mean(axis=0), atol=1e-2)


def test_scale_is_one_where_a_feature_has_no_spread():
    table = make_sample(120, random_state=5).assign(med_age=40.0)
    _, written, _ = fitted(table)
    at = written["residential"]["features"].index("med_age")
    assert written["residential"]["scale"][at] == 1.0
    assert written["residential"]["center"][at] == 40.0


def test_a_neighborhood_moved_onto_another_cohorts_centroid_is_assigned_to_it(real):
    identity, _, model = real
    space = model.residential
    table = identity.table
    for target in model.cohorts:
        row = table[table["excluded_type"] == "Residential"].iloc[[0]].copy()
        row[list(space.features)] = target.centroid * space.scale + space.center
        got = assign(row, model).iloc[0]
        assert (got["sub_cluster"], got["cohort_name"]) == (target.id, target.name)
        assert got["top_cluster"] == target.top
        assert got["fit_margin"] == pytest.approx(1.0)


def test_null_and_nan_are_imputed_alike_and_values_are_clipped(real):
    identity, _, model = real
    space = model.residential
    rows = identity.table[identity.table["excluded_type"] == "Residential"].head(3)
    # Population decides whether a row is residential: it is not blanked.
    features = [f for f in space.features if f != "population"]
    at = [space.features.index(f) for f in features]
    imputed = rows.copy()
    imputed[features] = np.broadcast_to(space.impute[at], (3, len(features)))
    nan = rows.assign(**{f: np.nan for f in features})
    null = rows.assign(**{f: pd.array([pd.NA] * 3, dtype="Float64") for f in features})
    expected = assign(imputed, model)
    pd.testing.assert_frame_equal(assign(nan, model), expected)
    pd.testing.assert_frame_equal(assign(null, model), expected)
    clipped = rows.copy()
    clipped[features] = np.broadcast_to(space.clip[1][at], (3, len(features)))
    huge = rows.assign(**{f: 1e12 for f in features})
    pd.testing.assert_frame_equal(assign(huge, model), assign(clipped, model))


# --- the rules on a model small enough to check by hand ----------------------------------------


def tiny(excluded: dict | None = None) -> Model:
    """One feature x, unscaled, clipped to +-100; tops at -1 and 5; sub-clusters 0 (at -3)
    and 1 (at 1) of top 0, 10 (at 2.2) and 11 (at 8) of top 1."""
    bounds = (np.array([-100.0]), np.array([100.0]))
    points = {0: (0, -3.0), 1: (0, 1.0), 10: (1, 2.2), 11: (1, 8.0)}
    return Model(
        key_column="key",
        population_column="people",
        min_population=100,
        excluded_keys=("Campus",),
        residential=Space(("x",), np.array([0.0]), np.array([0.0]), np.array([1.0]), bounds),
        tops={0: np.array([-1.0]), 1: np.array([5.0])},
        top_labels={0: "Stable", 1: "Distressed"},
        cohorts=tuple(
            Cohort(i, top, f"cohort {i}", np.array([x])) for i, (top, x) in points.items()
        ),
        excluded=excluded or {},
    )


def rows(**columns) -> pd.DataFrame:
    count = len(next(iter(columns.values())))
    return pd.DataFrame({"key": [f"n{i}" for i in range(count)], "people": 500} | columns)


def test_the_top_split_decides_first_then_the_nearest_sub_cluster_of_that_group():
    got = assign(rows(x=[-2.5, 1.2, 3.0, 7.0]), tiny())
    # DESIGN.md's columns, by name.
    assert (
        list(got.columns)
        == ["key", *ASSIGNED_COLUMNS]
        == [
            "key",
            "top_cluster",
            "top_cluster_label",
            "sub_cluster",
            "cluster_label",
            "excluded_type",
            "excluded_cluster",
            "cohort_name",
            "fit_margin",
            "runner_up_cluster",
            "runner_up_name",
        ]
    )
    assert got["top_cluster"].tolist() == [0, 0, 1, 1]
    assert got["top_cluster_label"].tolist() == ["Stable", "Stable", "Distressed", "Distressed"]
    assert got["sub_cluster"].tolist() == [0, 1, 10, 11]
    assert got["cluster_label"].tolist() == ["Cluster 0", "Cluster 1", "Cluster 10", "Cluster 11"]
    assert got["cohort_name"].tolist() == ["cohort 0", "cohort 1", "cohort 10", "cohort 11"]
    assert got["excluded_type"].eq("Residential").all() and got["excluded_cluster"].isna().all()


def test_fit_margin_is_b_minus_a_over_the_larger_with_the_runner_up_of_any_top_group():
    # x=1.2: own 1 at 0.2, runner-up 10 (the other top group) at 1.0: (1.0 - 0.2) / 1.0.
    # x=1.9: top 0 (2.9 < 3.1), so sub-cluster 1 at 0.9, although 10 is nearer (0.3): negative.
    # x=-1: own 0 at 2, runner-up 1 at 2: a tie, 0.
    got = assign(rows(x=[1.2, 1.9, -1.0]), tiny())
    assert got["sub_cluster"].tolist() == [1, 1, 0]
    assert got["fit_margin"].tolist() == pytest.approx([0.8, (0.3 - 0.9) / 0.9, 0.0])
    assert got["runner_up_cluster"].tolist() == [10, 10, 1]
    assert got["runner_up_name"].tolist() == ["cohort 10", "cohort 10", "cohort 1"]


def test_excluded_rows_get_their_types_group_in_its_own_space_without_clipping():
    own = Space(("x",), np.array([7.0]), np.array([10.0]), np.array([2.0]))
    groups = {"Low - Group 0": np.array([0.0]), "Low - Group 1": np.array([1000.0])}
    model = tiny(
        {
            LOW_POPULATION: ExcludedModel(space=own, groups=groups),
            INSTITUTIONAL: ExcludedModel(space=None, groups={}, label="Inst - Too few"),
        }
    )
    table = rows(x=[12.0, 2000.0, np.nan, 1.0, 1.0]).assign(
        people=[5, 5, 5, np.nan, 900], key=["a", "b", "c", "d", "Campus"]
    )
    got = assign(table, model)
    # 2000 -> z 995: nearer group 1; clipped to the residential +-100 it would be group 0.
    assert got["excluded_cluster"].tolist() == [
        "Low - Group 0",
        "Low - Group 1",
        "Low - Group 0",
        "Low - Group 0",
        "Inst - Too few",
    ]
    assert got["excluded_type"].tolist() == [LOW_POPULATION] * 4 + [INSTITUTIONAL]
    assert (got["cluster_label"] == got["excluded_cluster"]).all()
    assert (got["cohort_name"] == got["excluded_cluster"]).all()
    assert got["top_cluster"].tolist() == got["sub_cluster"].tolist() == [-1] * 5
    assert got["top_cluster_label"].eq("Excluded").all()
    assert got["fit_margin"].isna().all() and got["runner_up_cluster"].isna().all()
    assert got["runner_up_name"].isna().all()


# --- reading a document ------------------------------------------------------------------------


def test_a_run_json_without_a_model_or_of_another_version_is_refused(real):
    _, written, _ = real
    with pytest.raises(InputError, match="holds no model document"):
        read_model({"run_id": "x"}, "old/run.json")
    with pytest.raises(InputError, match=r"version 0, but this version .* applies version 1"):
        read_model({"model": written | {"version": 0}}, "old/run.json")


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["residential"].pop("center"),
        lambda d: d["residential"]["scale"].pop(),
        lambda d: d["residential"]["top"]["0"].append(1.0),
        lambda d: d["residential"]["sub"]["0"].update(top=7),
        lambda d: d["excluded"][INSTITUTIONAL]["groups"].clear(),
        lambda d: d["residential"]["scale"].__setitem__(0, 0.0),
    ],
)
def test_a_malformed_document_is_refused_in_one_line(real, damage):
    _, written, _ = real
    broken = json.loads(json.dumps(written))
    damage(broken)
    with pytest.raises(InputError, match=r"run\.json: the model document is malformed"):
        read_model({"model": broken}, "run.json")


def refused(written: dict, damage) -> str:
    """The one line read_model answers a copy of `written` damaged by `damage` with."""
    broken = json.loads(json.dumps(written))
    damage(broken)
    with pytest.raises(InputError) as caught:
        read_model({"model": broken}, "run.json")
    line = str(caught.value)
    assert "\n" not in line and line.startswith("run.json: the model document is malformed: ")
    assert line.endswith("restore run.json as the run wrote it"), line
    return line


# The hand-edited documents an outside review ran with exit 0 or a traceback, each refused.
def test_a_nan_clip_bound_is_refused_not_applied(real):
    _, written, _ = real
    line = refused(written, lambda d: d["residential"]["clip"][0].__setitem__(1, float("nan")))
    assert "residential.clip[0][1] is nan, not a finite number" in line


def test_a_nan_min_population_is_refused_not_applied(real):
    _, written, _ = real
    line = refused(written, lambda d: d.update(min_population=float("nan")))
    assert "min_population is nan, not a finite number" in line
    line = refused(written, lambda d: d.update(min_population=-1))
    assert "min_population is -1, below 0" in line


def test_excluded_keys_as_a_text_are_refused_not_split_into_letters(real):
    _, written, _ = real
    line = refused(written, lambda d: d.update(excluded_keys="abc"))
    assert "excluded_keys is 'abc', not a list" in line
    line = refused(written, lambda d: d.update(excluded_keys=["Harbor Point", 7]))
    assert "excluded_keys[1] is 7, not a text" in line


def test_a_sub_cluster_id_out_of_range_is_refused(real):
    _, written, _ = real

    def renamed(key):
        def damage(d):
            subs = d["residential"]["sub"]
            subs[key] = subs.pop(sorted(subs)[0])

        return damage

    assert f"{'1' * 20!r} is not a cohort id" in refused(written, renamed("1" * 20))
    for bad in ("-1", "01", " 1", "1.0", "\u0661"):  # sign, leading zero, space, ..., Arabic 1
        assert "is not a cohort id" in refused(written, renamed(bad)), bad
    line = refused(written, lambda d: d["residential"]["sub"]["0"].update(top=10**20))
    assert "residential.sub.0.top: 100000000000000000000 is not a cohort id" in line


def test_a_missing_or_stray_field_is_named(real):
    _, written, _ = real
    line = refused(written, lambda d: d["residential"].pop("top_labels"))
    assert "residential lacks top_labels" in line
    line = refused(written, lambda d: d["excluded"].update(Parks={"label": "x"}))
    assert "excluded must have exactly the types" in line
    line = refused(written, lambda d: d.update(extra=1))
    assert "model has unknown fields: 'extra'" in line


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda d: d["residential"]["scale"].__setitem__(1, -2.0), "residential.scale must be"),
        (lambda d: d["residential"]["clip"].__setitem__(0, [5.0, 1.0]), "low bound above"),
        (lambda d: d["residential"]["impute"].__setitem__(0, True), "is True, not a number"),
        (lambda d: d["residential"]["center"].__setitem__(0, "1"), "is '1', not a number"),
        (lambda d: d["residential"]["center"].__setitem__(0, 10**400), "not a finite number"),
        (lambda d: d.update(engine="gpu"), "engine is 'gpu', not one of memory, warehouse"),
        (lambda d: d.update(sample={"rows": 5, "of_rows": 4, "rule": "r"}), "sample.of_rows"),
        (lambda d: d.update(key_column=""), "key_column is '', not a text"),
        (lambda d: d.update(key_column="k" * 2000), "not a text of 1 to 1000"),
        (lambda d: d["residential"]["features"].append("population"), "each once"),
        (lambda d: d.update(excluded_keys=["x"] * 100_001), "more than 100,000"),
        (lambda d: d["residential"].update(top={}), "name the same top ids"),
        (lambda d: d["residential"]["top_labels"].update({"7": "x"}), "name the same top ids"),
        (lambda d: d["residential"]["sub"].clear(), "no sub-cluster for every top group"),
        (lambda d: d["residential"]["sub"].update({"5": 1}), "residential.sub.5 is 1, not an"),
        (lambda d: d["residential"]["sub"].update({"5\nx": 1}), "residential.sub.'5\\nx'"),
        (lambda d: d.update(residential=[[[[]]]]), "residential is a JSON array"),
    ],
)
def test_every_field_is_checked_for_its_type_range_and_shape(real, damage, words):
    _, written, _ = real
    assert words in refused(written, damage)


def test_a_document_that_does_not_reproduce_the_fit_stops_the_run(real):
    identity, written, _ = real
    tampered = json.loads(json.dumps(written))
    subs = tampered["residential"]["sub"]
    first, second = sorted(subs)[:2]
    subs[first]["centroid"], subs[second]["centroid"] = (
        subs[second]["centroid"],
        subs[first]["centroid"],
    )
    with pytest.raises(RuntimeError, match=r"assigns .* rows otherwise than the fit"):
        through_model(identity, read_model({"model": tampered}, "run.json"))


def test_a_model_without_a_population_column_is_written_read_and_applied_without_one():
    table = make_sample(200, random_state=3).drop(columns=["population"])
    settings = AnalysisSettings(
        population_column="none",
        clustering_features=("med_age", "housing_vacancy_rate", "crime_per_capita"),
    )
    identity, written, model = fitted(table, settings)
    assert written["population_column"] is None and model.population_column is None
    assert "population" not in model.columns
    again = assign(identity.table.drop(columns=["population"], errors="ignore"), model)
    assert set(again["excluded_type"]) <= {"Residential", INSTITUTIONAL}
    pd.testing.assert_frame_equal(
        again[PARTITION].astype(object), identity.table[PARTITION].astype(object)
    )
