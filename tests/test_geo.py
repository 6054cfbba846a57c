import json
import uuid

import numpy as np
import pytest

from clustering import InputError
from clustering.outputs.geo import boundaries_from_rows, parse_boundaries, to_wkt
from tests.helpers import REAL_BOUNDARIES

SQUARE = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]


def collection(*features) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": list(features)}).encode()


def feature(properties, geometry) -> dict:
    return {"type": "Feature", "properties": properties, "geometry": geometry}


def test_the_real_boundaries_give_every_neighborhood_of_the_real_table():
    from tests.helpers import real_table

    shapes = parse_boundaries(REAL_BOUNDARIES.read_bytes(), "real")
    assert set(shapes) == set(real_table()["neighborhood"])
    assert all(ring.shape[1] == 2 and len(ring) >= 3 for rings in shapes.values() for ring in rings)


def test_polygons_and_multipolygons_keep_outer_rings_only():
    hole = [[0.2, 0.2], [0.4, 0.2], [0.4, 0.4], [0.2, 0.2]]
    content = collection(
        feature({"neighborhood": "A"}, {"type": "Polygon", "coordinates": [SQUARE, hole]}),
        feature({"name": "B"}, {"type": "MultiPolygon", "coordinates": [[SQUARE], [SQUARE]]}),
        feature({"neighborhood": "C"}, {"type": "Point", "coordinates": [0, 0]}),
        feature({}, {"type": "Polygon", "coordinates": [SQUARE]}),
    )
    shapes = parse_boundaries(content, "test")
    assert sorted(shapes) == ["A", "B"]
    assert len(shapes["A"]) == 1 and len(shapes["B"]) == 2
    np.testing.assert_array_equal(shapes["A"][0], np.array(SQUARE, dtype=float))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid GeoJSON"),
        (b"\xff\xfe", "not valid GeoJSON"),
        (json.dumps({"type": "Feature"}).encode(), "not a GeoJSON FeatureCollection"),
        (b"[]", "not a GeoJSON FeatureCollection"),
        (
            collection(feature({"other": "x"}, {"type": "Polygon", "coordinates": [SQUARE]})),
            "no named polygons",
        ),
    ],
)
def test_bad_geojson_is_an_input_error_naming_the_source(content, message):
    with pytest.raises(InputError, match=message) as error:
        parse_boundaries(content, "bounds.geojson")
    assert "bounds.geojson" in str(error.value)


def test_rows_of_name_and_geojson_geometry_give_the_same_shapes():
    square = json.dumps({"type": "Polygon", "coordinates": [SQUARE]})
    pair = json.dumps({"type": "MultiPolygon", "coordinates": [[SQUARE], [SQUARE]]})
    shapes = boundaries_from_rows([("A", square), ("B", pair), ("C", None), (None, square)], "t")
    assert sorted(shapes) == ["A", "B"] and len(shapes["B"]) == 2
    np.testing.assert_array_equal(shapes["A"][0], np.array(SQUARE, dtype=float))
    with pytest.raises(InputError, match="'A' is not GeoJSON"):
        boundaries_from_rows([("A", "{oops")], "bq://p.d.t")


def test_rings_become_closed_wkt_polygons_or_multipolygons():
    open_ring = np.array([[0, 0], [1.5, 0], [1, 1]], dtype=float)
    assert to_wkt([open_ring]) == "POLYGON((0.0 0.0, 1.5 0.0, 1.0 1.0, 0.0 0.0))"
    closed = np.array(SQUARE, dtype=float)
    assert to_wkt([closed, closed + 2]).startswith("MULTIPOLYGON(((0.0 0.0, 1.0 0.0")
    assert to_wkt([closed, closed + 2]).count("((") == 2


# --- BigQuery boundaries and the clusters table's shapes, on the local emulator --------------


@pytest.fixture(scope="module")
def bq_boundaries(bigquery_emulator):
    """The real boundaries loaded into a table with a GEOGRAPHY column, as city teams keep
    them; yields (client, table id)."""
    from google.cloud import bigquery

    from tests import emulators

    bq = emulators.bigquery_client(bigquery_emulator)
    dataset = f"{bigquery_emulator.project}.geo_{uuid.uuid4().hex[:8]}"
    bq.create_dataset(dataset)
    schema = [
        bigquery.SchemaField("nbr_name", "STRING"),
        bigquery.SchemaField("shape", "GEOGRAPHY"),
    ]
    shapes = parse_boundaries(REAL_BOUNDARIES.read_bytes(), "real")
    rows = [{"nbr_name": name, "shape": to_wkt(rings)} for name, rings in shapes.items()]
    table = bq.create_table(bigquery.Table(f"{dataset}.boundaries", schema=schema))
    assert bq.insert_rows_json(table, rows) == []
    yield bq, f"{dataset}.boundaries", shapes
    bq.delete_dataset(dataset, delete_contents=True)


def test_boundaries_are_read_from_a_bigquery_geography_column(
    bq_boundaries, bigquery_emulator, monkeypatch
):
    from clustering import adapters

    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator.endpoint)
    _, table_id, expected = bq_boundaries
    shapes = adapters.read_boundaries(f"bq://{table_id}", "nbr_name", "shape")
    assert sorted(shapes) == sorted(expected)
    for name, rings in expected.items():
        assert len(shapes[name]) == len(rings)
        np.testing.assert_allclose(shapes[name][0], rings[0])


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [("nope", "shape", "BOUNDARIES_NAME_COLUMN"), ("nbr_name", "nope", "BOUNDARIES_NAME_COLUMN")],
)
@pytest.mark.googlesql_rejects("read_boundaries", match=r"Unrecognized name: nope|Table not found")
def test_wrong_boundary_columns_are_an_input_error(
    bq_boundaries, bigquery_emulator, monkeypatch, name, shape, message
):
    from clustering import adapters

    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator.endpoint)
    _, table_id, _ = bq_boundaries
    with pytest.raises(InputError, match=message):
        adapters.read_boundaries(f"bq://{table_id}", name, shape)
    with pytest.raises(InputError, match="not found"):
        adapters.read_boundaries(f"bq://{table_id}_missing", "nbr_name", "shape")


@pytest.mark.parametrize("column", ["shape`; DROP TABLE x --", "1st", "a b", ""])
def test_boundary_columns_must_be_plain_identifiers(column):
    from clustering.settings import JobSettings

    with pytest.raises(InputError, match="BOUNDARIES_GEOGRAPHY_COLUMN"):
        JobSettings(boundaries_source="bq://p.d.t", boundaries_geography_column=column)


def test_the_clusters_table_carries_each_neighborhoods_shape_as_geography(
    bq_boundaries, bigquery_emulator, monkeypatch, tmp_path
):
    """What Looker Studio's filled map reads: a GEOGRAPHY per row of the clusters table."""
    from clustering.job import RunRequest, run_job
    from clustering.settings import AnalysisSettings, JobSettings
    from tests.helpers import REAL_FEATURES

    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator.endpoint)
    bq, table_id, shapes = bq_boundaries
    clusters = table_id.rsplit(".", 1)[0] + ".clusters"
    settings = JobSettings(
        features_source=str(REAL_FEATURES),
        artifacts_dest=str(tmp_path / "out"),
        clusters_table=f"bq://{clusters}",
        boundaries_source=f"bq://{table_id}",
        boundaries_name_column="nbr_name",
        boundaries_geography_column="shape",
        analysis=AnalysisSettings(k_max=4),
    )
    run_job(settings, RunRequest(trigger="test"))
    schema = {f.name: f.field_type for f in bq.get_table(clusters).schema}
    assert schema["neighborhood_shape"] == "GEOGRAPHY"
    sql = (
        f"SELECT neighborhood, ST_ASGEOJSON(neighborhood_shape) AS g, "
        f"ST_AREA(neighborhood_shape) AS area FROM `{clusters}`"
    )
    rows = {r["neighborhood"]: r for r in bq.query(sql).result()}
    assert sorted(rows) == sorted(shapes)  # every neighborhood has a row and a shape
    assert all(r["area"] > 0 for r in rows.values())
    name = "Abell"
    geometry = json.loads(rows[name]["g"])
    np.testing.assert_allclose(np.array(geometry["coordinates"][0]), shapes[name][0])
    assert (tmp_path / "out" / "latest" / "cluster_map.png").exists()


def test_the_boundary_columns_come_from_the_environment_and_the_cli():
    from clustering.cli import build_parser, settings_from_args
    from clustering.settings import JobSettings

    env = {
        "FEATURES_SOURCE": "f.csv",
        "ARTIFACTS_DEST": "out",
        "BOUNDARIES_SOURCE": "bq://p.d.t",
        "BOUNDARIES_NAME_COLUMN": "nbr",
        "BOUNDARIES_GEOGRAPHY_COLUMN": "geom",
    }
    settings = JobSettings.from_env(env)
    assert (settings.boundaries_name_column, settings.boundaries_geography_column) == (
        "nbr",
        "geom",
    )
    defaults = JobSettings.from_env({"FEATURES_SOURCE": "f.csv", "ARTIFACTS_DEST": "out"})
    # The name column defaults to KEY_COLUMN.
    assert (defaults.boundaries_key_column, defaults.boundaries_geography_column) == (
        "neighborhood",
        "geometry",
    )
    args = build_parser().parse_args(
        [
            "run",
            "--boundaries",
            "bq://p.d.t",
            "--boundaries-name-column",
            "nbr",
            "--boundaries-geography-column",
            "geom",
        ]
    )
    cli = settings_from_args(args)
    assert (cli.boundaries_source, cli.boundaries_name_column) == ("bq://p.d.t", "nbr")
    assert cli.boundaries_geography_column == "geom"
    with pytest.raises(InputError, match="BOUNDARIES_SOURCE"):
        JobSettings(boundaries_source="bq://not a table")
