"""Neighborhood boundaries, for the optional cluster map and the clusters table's shapes.

They come as a GeoJSON file or as rows of a BigQuery table read as GeoJSON geometries. Only
what a map needs is kept: each neighborhood's outer rings as (lon, lat) arrays. Holes are
dropped (they are courtyards and parks at city scale), and nothing outside the standard
library and numpy is needed to read them.
"""

from __future__ import annotations

import json

import numpy as np

from clustering import InputError

# Property names that may carry a shape's name after KEY_COLUMN, in order of preference.
NAME_PROPERTIES = ("neighborhood", "name", "Name", "NAME", "nbrdesc")


def parse_boundaries(
    content: bytes, where: str, key_column: str = "neighborhood"
) -> dict[str, list[np.ndarray]]:
    """Name -> outer rings (arrays of lon, lat) from GeoJSON bytes; the name is the feature's
    `key_column` property, else the first of NAME_PROPERTIES it has."""
    try:
        document = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(
            f"{where} is not valid GeoJSON ({error.__class__.__name__}): "
            "give a FeatureCollection exported as .geojson"
        ) from None
    is_collection = isinstance(document, dict) and document.get("type") == "FeatureCollection"
    features = document.get("features") if is_collection else None
    if not isinstance(features, list):
        raise InputError(
            f"{where} is not a GeoJSON FeatureCollection: export the boundaries "
            "as a FeatureCollection of polygons"
        )
    return _shapes(features, where, key_column)


def boundaries_from_rows(
    rows: list[tuple[str | None, str | None]], where: str
) -> dict[str, list[np.ndarray]]:
    """Neighborhood name -> outer rings from (name, GeoJSON geometry text) rows, as a
    BigQuery boundaries table gives them (ST_ASGEOJSON)."""
    features = []
    for name, geometry in rows:
        try:
            shape = json.loads(geometry) if geometry else None
        except json.JSONDecodeError:
            raise InputError(f"{where}: the shape of {name!r} is not GeoJSON") from None
        features.append({"properties": {"name": name}, "geometry": shape})
    return _shapes(features, where, "name")


def to_wkt(rings: list[np.ndarray]) -> str:
    """Outer rings as WKT (a POLYGON, or a MULTIPOLYGON for several), closed, in lon lat order:
    what a BigQuery GEOGRAPHY column loads."""
    polygons = []
    for ring in rings:
        points = ring if np.array_equal(ring[0], ring[-1]) else np.vstack([ring, ring[:1]])
        polygons.append("((" + ", ".join(f"{x!r} {y!r}" for x, y in points.tolist()) + "))")
    if len(polygons) == 1:
        return "POLYGON" + polygons[0]
    return "MULTIPOLYGON(" + ", ".join(polygons) + ")"


def _shapes(features: list, where: str, key_column: str) -> dict[str, list[np.ndarray]]:
    keys = (key_column, *NAME_PROPERTIES)
    shapes: dict[str, list[np.ndarray]] = {}
    for feature in features:
        properties = (feature or {}).get("properties") or {}
        name = next((str(properties[k]).strip() for k in keys if properties.get(k)), None)
        rings = _outer_rings((feature or {}).get("geometry") or {})
        if name and rings:
            shapes.setdefault(name, []).extend(rings)
    if not shapes:
        raise InputError(
            f"{where} has no named polygons: each feature needs a Polygon or MultiPolygon and a "
            f"{key_column!r} (or 'name') property"
        )
    return shapes


def _outer_rings(geometry: dict) -> list[np.ndarray]:
    kind, coordinates = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        polygons = [coordinates]
    elif kind == "MultiPolygon":
        polygons = coordinates
    else:
        return []
    rings = []
    for polygon in polygons or []:
        if polygon and len(polygon[0]) >= 3:
            rings.append(np.asarray(polygon[0], dtype=np.float64)[:, :2])
    return rings
