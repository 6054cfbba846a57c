import json

import numpy as np
import pytest

from clustering.errors import InputError
from clustering.geo import parse_boundaries
from tests.helpers import REPO

REAL_BOUNDARIES = REPO.parent / "shared" / "data" / "baltimore" / "baltimore_neighborhoods.geojson"
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
        (collection(feature({"other": "x"}, {"type": "Polygon", "coordinates": [SQUARE]})),
         "no named polygons"),
    ],
)  # fmt: skip
def test_bad_geojson_is_an_input_error_naming_the_source(content, message):
    with pytest.raises(InputError, match=message) as error:
        parse_boundaries(content, "bounds.geojson")
    assert "bounds.geojson" in str(error.value)
