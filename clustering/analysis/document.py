"""The model document, run.json["model"]: the whole fitted model, so any row can be assigned
again without refitting (DESIGN.md, "The model document"; the rules: clustering.analysis.assign).

`fitted_model` takes a run's fit under its stable ids, `document` writes it as JSON-ready
numbers (every float exact: JSON keeps a float's shortest repr, which reads back to the same
float), `read_model` reads one back and refuses what it cannot apply. `through_model` is the
memory engine's last step: every row is assigned by the document's rules, and the result must
be the partition scikit-learn fitted.

Besides DESIGN's fields the document carries what applying it needs and DESIGN keeps
elsewhere: `version`; the residential rule (`population_column`, `min_population`,
`excluded_keys`); the top groups' labels (`residential.top_labels`) and each sub-cluster's
`name`.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

from clustering import InputError
from clustering.analysis.assign import Cohort, ExcludedModel, Model, assign
from clustering.analysis.identity import Identity
from clustering.analysis.prepare import EXCLUDED_TYPES, Space
from clustering.settings import AnalysisSettings

# The document's format. A reader refuses any other: a document of another version may mean
# other rules, and applying it by this version's would assign rows silently wrong.
VERSION = 1
MEMORY = "memory"
# The columns the fit gives every row, which the document's rules must give back exactly.
PARTITION = ("top_cluster", "sub_cluster", "excluded_type", "excluded_cluster")


def fitted_model(identity: Identity, settings: AnalysisSettings) -> Model:
    """The model of a run, under its stable ids and names (from `identity`)."""
    result = identity.result
    labels = {g.top: g.label for g in result.top_groups}
    names = {c.sub_cluster: c.name for c in identity.cohorts}
    cohorts = tuple(
        Cohort(id=sub, top=top, name=names[sub], centroid=centroid)
        for sub, (top, centroid) in sorted(result.centroids.sub.items())
    )
    groups = {g.excluded_type: g for g in result.excluded_groups}
    excluded = {}
    for excluded_type in EXCLUDED_TYPES:
        group = groups.get(excluded_type)
        if group is None or group.space is None:
            # A type without rows is "too few" as well: fewer than the 4 rows a group needs.
            label = group.note if group else f"{excluded_type} - Too few to cluster"
            excluded[excluded_type] = ExcludedModel(space=None, groups={}, label=label)
        else:
            excluded[excluded_type] = ExcludedModel(space=group.space, groups=group.centroids)
    return Model(
        key_column=settings.key_column,
        population_column=settings.population_column,
        min_population=settings.min_population,
        excluded_keys=settings.excluded_names,
        residential=result.space,
        tops=dict(sorted(result.centroids.top.items())),
        top_labels=labels,
        cohorts=cohorts,
        excluded=excluded,
    )


def document(model: Model, engine: str = MEMORY, sample: dict | None = None) -> dict:
    """run.json's "model": `model` as JSON-ready values (ids as strings, vectors as lists)."""
    space = model.residential
    return {
        "version": VERSION,
        "engine": engine,
        "key_column": model.key_column,
        "population_column": model.population_column,
        "min_population": model.min_population,
        "excluded_keys": list(model.excluded_keys),
        "sample": sample,
        "residential": {
            **_space(space),
            "clip": [[lo, hi] for lo, hi in zip(*map(_floats, space.clip), strict=True)],
            "top_labels": {str(t): label for t, label in sorted(model.top_labels.items())},
            "top": {str(t): _floats(c) for t, c in model.tops.items()},
            "sub": {
                str(c.id): {"top": c.top, "centroid": _floats(c.centroid), "name": c.name}
                for c in model.cohorts
            },
        },
        "excluded": {
            kind: (
                {"label": part.label}
                if part.label is not None
                else {
                    **_space(part.space),
                    "groups": {name: _floats(c) for name, c in part.groups.items()},
                }
            )
            for kind, part in model.excluded.items()
        },
    }


def read_model(manifest: dict, where: str) -> Model:
    """The model of a run manifest (run.json), validated whole before any of it is used: every
    field of its type, shape and meaning (finite numbers, clip low <= high, scale > 0,
    min_population >= 0, ids in range, sizes bounded). Anything else is an InputError of one
    line naming the field: a hand-edited or damaged document must never assign rows wrongly."""
    found = manifest.get("model") if isinstance(manifest, dict) else None
    if not isinstance(found, dict):
        raise InputError(
            f"{where} holds no model document (run.json from before version {VERSION} of the "
            "document): run the job again to write one"
        )
    if found.get("version") != VERSION or isinstance(found.get("version"), bool):
        raise InputError(
            f"{where}: model document version {_shown(found.get('version'))}, but this version "
            f"of the package applies version {VERSION} only: run the job again to write one"
        )
    try:
        return _parse(found)
    except _Malformed as error:
        raise InputError(
            f"{where}: the model document is malformed: {error}: restore run.json as the run "
            "wrote it"
        ) from None


# Bounds of a document this package could have written: far above any real run, low enough
# that a hostile document cannot make `assign` allocate or loop without end.
MAX_FEATURES = 1000
MAX_CENTROIDS = 1000
MAX_EXCLUDED_KEYS = 100_000
MAX_TEXT = 1000
MAX_ID = 999_999_999
# Numbers a document holds stay within +-MAX_MAGNITUDE and scales at MIN_SCALE or more, so
# that z and its squared distances stay finite: a finite but huge value (1.5e308) would make
# every distance infinite and the nearest centroid arbitrary. scikit-learn's smallest scale is
# about 2.2e-15 (it sets 1 below ten machine epsilons), and no feature of a neighborhood table
# comes near 1e12.
MAX_MAGNITUDE = 1e12
MIN_SCALE = 1e-15
ENGINES = ("memory", "warehouse")


class _Malformed(ValueError):
    """A field of the document that cannot be applied: "<path> <what is wrong>"."""


def _parse(found: dict) -> Model:
    _keys(
        found,
        "model",
        {
            "version",
            "engine",
            "key_column",
            "population_column",
            "min_population",
            "excluded_keys",
            "sample",
            "residential",
            "excluded",
        },
    )
    if found["engine"] not in ENGINES:
        raise _Malformed(f"engine is {_shown(found['engine'])}, not one of {', '.join(ENGINES)}")
    _sample(found["sample"])
    keys = _list(found["excluded_keys"], "excluded_keys", MAX_EXCLUDED_KEYS)
    part = _mapping(found["residential"], "residential")
    _keys(
        part,
        "residential",
        {"features", "impute", "center", "scale", "clip", "top_labels", "top", "sub"},
    )
    space = _read_space(part, "residential", clipped=True)
    tops = {
        _id(t, _at("residential.top", t)): _vector(c, _at("residential.top", t), space)
        for t, c in _mapping(part["top"], "residential.top", MAX_CENTROIDS).items()
    }
    labels = _mapping(part["top_labels"], "residential.top_labels", MAX_CENTROIDS)
    top_labels = {
        _id(t, "residential.top_labels"): _text(v, _at("residential.top_labels", t))
        for t, v in labels.items()
    }
    if not tops or set(top_labels) != set(tops):
        raise _Malformed("residential.top and residential.top_labels must name the same top ids")
    cohorts = _cohorts(part["sub"], tops, space)
    return Model(
        key_column=_text(found["key_column"], "key_column"),
        population_column=_optional_text(found["population_column"], "population_column"),
        min_population=_number(found["min_population"], "min_population", minimum=0.0),
        excluded_keys=tuple(_text(k, f"excluded_keys[{i}]") for i, k in enumerate(keys)),
        residential=space,
        tops=dict(sorted(tops.items())),
        top_labels=top_labels,
        cohorts=cohorts,
        excluded=_excluded(found["excluded"]),
    )


def _cohorts(found, tops: dict, space: Space) -> tuple[Cohort, ...]:
    cohorts = []
    for sub, entry in _mapping(found, "residential.sub", MAX_CENTROIDS).items():
        path = _at("residential.sub", sub)
        _keys(_mapping(entry, path), path, {"top", "centroid", "name"})
        top = _id(entry["top"], f"{path}.top")
        if top not in tops:
            raise _Malformed(f"{path}.top is {top}, which is not a residential.top id")
        centroid = _vector(entry["centroid"], f"{path}.centroid", space)
        cohorts.append(Cohort(_id(sub, path), top, _text(entry["name"], f"{path}.name"), centroid))
    if set(tops) - {c.top for c in cohorts}:
        raise _Malformed("residential.sub has no sub-cluster for every top group")
    return tuple(sorted(cohorts, key=lambda c: c.id))


def _excluded(found) -> dict[str, ExcludedModel]:
    found = _mapping(found, "excluded")
    if set(found) != set(EXCLUDED_TYPES):
        raise _Malformed(f"excluded must have exactly the types {', '.join(EXCLUDED_TYPES)}")
    excluded = {}
    for kind, entry in found.items():
        path = _at("excluded", kind)
        entry = _mapping(entry, path)
        if "label" in entry:
            _keys(entry, path, {"label"})
            label = _text(entry["label"], f"{path}.label")
            excluded[kind] = ExcludedModel(space=None, groups={}, label=label)
            continue
        _keys(entry, path, {"features", "impute", "center", "scale", "groups"})
        own = _read_space(entry, path, clipped=False)
        groups = {
            _text(name, f"{path}.groups"): _vector(c, _at(f"{path}.groups", name), own)
            for name, c in _mapping(entry["groups"], f"{path}.groups", MAX_CENTROIDS).items()
        }
        if not groups:
            raise _Malformed(f"{path}.groups is empty: a clustered type has one group or more")
        excluded[kind] = ExcludedModel(space=own, groups=groups)
    return excluded


def _sample(found) -> None:
    """None (every row was fitted) or how the warehouse engine's sample was drawn."""
    if found is None:
        return
    _keys(_mapping(found, "sample"), "sample", {"rows", "of_rows", "rule"})
    rows = _count(found["rows"], "sample.rows")
    if _count(found["of_rows"], "sample.of_rows") < rows:
        raise _Malformed("sample.of_rows is smaller than sample.rows")
    _text(found["rule"], "sample.rule")


def _read_space(entry: dict, path: str, clipped: bool) -> Space:
    names = _list(entry["features"], f"{path}.features", MAX_FEATURES)
    features = tuple(_text(f, f"{path}.features[{i}]") for i, f in enumerate(names))
    if not features or len(set(features)) != len(features):
        raise _Malformed(f"{path}.features must name one feature or more, each once")
    impute, center, scale = (
        _floats_of(entry[k], f"{path}.{k}", len(features)) for k in ("impute", "center", "scale")
    )
    if (scale < MIN_SCALE).any():
        raise _Malformed(
            f"{path}.scale must be positive, {MIN_SCALE:g} or more (1 where a feature has no "
            "spread)"
        )
    bounds = None
    if clipped:
        pairs = _list(entry["clip"], f"{path}.clip", MAX_FEATURES)
        clip = np.array(
            [_floats_of(pair, f"{path}.clip[{i}]", 2) for i, pair in enumerate(pairs)]
        ).reshape(-1, 2)
        if len(clip) != len(features):
            raise _Malformed(f"{path}.clip must have one [low, high] per feature")
        if (clip[:, 0] > clip[:, 1]).any():
            raise _Malformed(f"{path}.clip has a low bound above its high bound")
        bounds = (clip[:, 0].copy(), clip[:, 1].copy())
    return Space(features, impute, center, scale, bounds)


def _vector(values, path: str, space: Space) -> np.ndarray:
    """A centroid: one finite number per feature of `space`."""
    return _floats_of(values, path, len(space.features))


def _floats_of(values, path: str, size: int) -> np.ndarray:
    values = _list(values, path, MAX_FEATURES)
    if len(values) != size:
        raise _Malformed(f"{path} has {len(values)} values, not {size}")
    return np.array([_number(v, f"{path}[{i}]") for i, v in enumerate(values)], dtype=np.float64)


def _number(value, path: str, minimum: float | None = None) -> float:
    """A finite JSON number (never a boolean, a string or NaN), at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Malformed(f"{path} is {_shown(value)}, not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _Malformed(f"{path} is {_shown(value)}, not a finite number")
    if abs(number) > MAX_MAGNITUDE:
        raise _Malformed(f"{path} is {number:g}, beyond +-{MAX_MAGNITUDE:g}")
    if minimum is not None and number < minimum:
        raise _Malformed(f"{path} is {number:g}, below {minimum:g}")
    return number


def _count(value, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**15:
        raise _Malformed(f"{path} is {_shown(value)}, not a row count")
    return value


def _id(value, path: str) -> int:
    """A stable cohort id: 0..MAX_ID, as an integer or (a JSON key) its decimal digits."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        number = int(value)
        canonical = str(number) == value
    else:
        number = value if isinstance(value, int) and not isinstance(value, bool) else -1
        canonical = True
    if not canonical or not 0 <= number <= MAX_ID:
        raise _Malformed(f"{path}: {_shown(value)} is not a cohort id (0 to {MAX_ID:,})")
    return number


def _text(value, path: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise _Malformed(f"{path} is {_shown(value)}, not a text of 1 to {MAX_TEXT} characters")
    return value


def _list(value, path: str, most: int) -> list:
    if not isinstance(value, list):
        raise _Malformed(f"{path} is {_shown(value)}, not a list")
    if len(value) > most:
        raise _Malformed(f"{path} has {len(value):,} entries, more than {most:,}")
    return value


def _mapping(value, path: str, most: int = 100) -> dict:
    if not isinstance(value, dict):
        raise _Malformed(f"{path} is {_shown(value)}, not an object")
    if len(value) > most:
        raise _Malformed(f"{path} has {len(value):,} entries, more than {most:,}")
    return value


def _keys(found: dict, path: str, expected: set[str]) -> None:
    """Exactly the fields a document has there: a missing one or a stray one is named."""
    missing, extra = sorted(expected - set(found)), sorted(set(found) - expected)
    if missing:
        raise _Malformed(f"{path} lacks {', '.join(missing)}")
    if extra:
        raise _Malformed(f"{path} has unknown fields: {', '.join(map(_shown, extra[:3]))}")


def _at(path: str, key) -> str:
    """`path.key`, with a key that would not read well on one line shown as a short repr."""
    plain = isinstance(key, str) and key.isprintable() and 0 < len(key) <= 40
    return f"{path}.{key if plain else _shown(key)}"


def _shown(value) -> str:
    """A value as the one-line error shows it: its type for containers, a short repr else."""
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def through_model(identity: Identity, model: Model) -> Identity:
    """The identity with every row assigned by the model document's rules: the partition
    must be the fitted one (else the document would not describe the run, a bug: raised),
    and each row gains fit_margin, runner_up_cluster and runner_up_name."""
    table = identity.table
    assigned = assign(table, model)
    differ = np.zeros(len(table), dtype=bool)
    for column in PARTITION:
        differ |= _differ(table[column], assigned[column])
    if differ.any():
        keys = ", ".join(map(str, table.loc[differ, model.key_column].head(5)))
        raise RuntimeError(
            f"the model document assigns {int(differ.sum())} rows otherwise than the fit "
            f"({keys}): the document does not describe this run"
        )
    out = table.copy()
    for column in assigned.columns.drop(model.key_column):
        out[column] = assigned[column].array  # keeps Int64 ids Int64 (INTEGER in BigQuery)
    return replace(identity, table=out, result=replace(identity.result, table=out))


def _differ(fitted: pd.Series, again: pd.Series) -> np.ndarray:
    """Where two columns disagree, a blank (None, NaN, NA) equal to a blank only."""
    first, second = (
        np.where(s.isna().to_numpy(), "\0", s.astype(str).to_numpy()) for s in (fitted, again)
    )
    return first != second


def _space(space: Space) -> dict:
    return {
        "features": list(space.features),
        "impute": _floats(space.impute),
        "center": _floats(space.center),
        "scale": _floats(space.scale),
    }


def _floats(values) -> list[float]:
    floats = [float(v) for v in np.asarray(values, dtype=np.float64)]
    if not all(math.isfinite(v) for v in floats):
        raise ValueError("a model value is not finite")
    return floats


def _optional_text(value, path: str) -> str | None:
    """A text, or null where the setting is off (POPULATION_COLUMN=none)."""
    return None if value is None else _text(value, path)
