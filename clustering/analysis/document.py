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
    """The model of a run manifest (run.json); an InputError names what cannot be applied."""
    found = manifest.get("model") if isinstance(manifest, dict) else None
    if not isinstance(found, dict):
        raise InputError(
            f"{where} holds no model document (run.json from before version {VERSION} of the "
            "document): run the job again to write one"
        )
    if found.get("version") != VERSION:
        raise InputError(
            f"{where}: model document version {found.get('version')!r}, but this version of "
            f"the package applies version {VERSION} only: run the job again to write one"
        )
    try:
        return _parse(found)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(
            f"{where}: the model document is malformed ({type(error).__name__}: {error}): "
            "restore run.json as the run wrote it"
        ) from None


def _parse(found: dict) -> Model:
    part = found["residential"]
    space = _read_space(part, clip=np.array(part["clip"], dtype=np.float64).reshape(-1, 2))
    tops = {int(t): _vector(c, space) for t, c in part["top"].items()}
    cohorts = tuple(
        Cohort(int(s), int(c["top"]), str(c["name"]), _vector(c["centroid"], space))
        for s, c in sorted(part["sub"].items(), key=lambda item: int(item[0]))
    )
    if not tops or not cohorts or {c.top for c in cohorts} - set(tops):
        raise ValueError("the top and sub centroids do not fit together")
    excluded = {}
    for kind, entry in found["excluded"].items():
        if "label" in entry:
            excluded[kind] = ExcludedModel(space=None, groups={}, label=str(entry["label"]))
            continue
        own = _read_space(entry)
        groups = {str(name): _vector(c, own) for name, c in entry["groups"].items()}
        if not groups:
            raise ValueError(f"{kind} has no groups")
        excluded[kind] = ExcludedModel(space=own, groups=groups)
    return Model(
        key_column=str(found["key_column"]),
        population_column=_optional_text(found["population_column"]),
        min_population=float(found["min_population"]),
        excluded_keys=tuple(str(k) for k in found["excluded_keys"]),
        residential=space,
        tops=dict(sorted(tops.items())),
        top_labels={int(t): str(label) for t, label in part["top_labels"].items()},
        cohorts=cohorts,
        excluded=excluded,
    )


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


def _read_space(entry: dict, clip: np.ndarray | None = None) -> Space:
    features = tuple(str(f) for f in entry["features"])
    vectors = [np.array(entry[k], dtype=np.float64) for k in ("impute", "center", "scale")]
    if clip is not None:
        vectors.append(clip[:, 0])
    if not features or any(v.shape != (len(features),) for v in vectors):
        raise ValueError("every vector must have one value per feature")
    if not all(np.isfinite(v).all() for v in vectors) or (vectors[2] <= 0).any():
        raise ValueError("impute, center and scale must be finite, scale positive")
    bounds = None if clip is None else (clip[:, 0].copy(), clip[:, 1].copy())
    return Space(features, vectors[0], vectors[1], vectors[2], bounds)


def _vector(values, space: Space) -> np.ndarray:
    vector = np.array(values, dtype=np.float64)
    if vector.shape != (len(space.features),) or not np.isfinite(vector).all():
        raise ValueError("a centroid must have one finite value per feature")
    return vector


def _floats(values) -> list[float]:
    floats = [float(v) for v in np.asarray(values, dtype=np.float64)]
    if not all(math.isfinite(v) for v in floats):
        raise ValueError("a model value is not finite")
    return floats


def _optional_text(value) -> str | None:
    return None if value is None else str(value)
