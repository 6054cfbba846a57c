"""The features table: validation on the way in, column types on the way out.

Whatever the source (CSV, Parquet, BigQuery), a table passes `validate_features` before the
analysis sees it, so every bad input fails with one line that says what, where and how to fix.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

from clustering import InputError
from clustering.settings import AnalysisSettings

# Far above any city's neighborhood, far below where int64 overflows.
MAX_POPULATION = 10**12

CLUSTER_COLUMNS: tuple[str, ...] = (
    "top_cluster",
    "top_cluster_label",
    "sub_cluster",
    "cluster_label",
    "excluded_type",
    "excluded_cluster",
    "cohort_name",
    "cohort_stability",
    "fit_margin",
    "runner_up_cluster",
    "runner_up_name",
    "run_id",
    "_clustered_at",
)


@dataclass(frozen=True)
class Unmatched:
    """An exclusion name that matches no row, and the table's closest name, if any."""

    name: str
    did_you_mean: str | None


@dataclass(frozen=True)
class ValidTable:
    """A validated features table, sorted by neighborhood, and what validation noticed."""

    frame: pd.DataFrame
    warnings: tuple[str, ...]


def validate_features(frame: pd.DataFrame, settings: AnalysisSettings, where: str) -> ValidTable:
    """Check and normalise a features table; raise InputError on the first problem.

    Rows come back sorted by neighborhood (k-means depends on row order), population as
    int64 when every value is a whole number (float64 otherwise, e.g. interpolated estimates
    or blanks) and every configured feature as float64 with blanks as NaN.
    """
    if frame.shape[1] == 0:
        raise InputError(f"{where} has no columns: give a table with a header row")
    if len(frame) == 0:
        raise InputError(f"{where} has a header but no rows: add one row per neighborhood")
    for required in ("neighborhood", "population"):
        if required not in frame.columns:
            raise InputError(
                f"{where} has no {required!r} column{_did_you_mean(required, frame.columns)} "
                f"(columns: {_short(frame.columns)}): "
                + (_separator_fix(frame.columns) or "add it or rename the column that holds it")
            )
    frame = frame.reset_index(drop=True)
    names = _names(frame["neighborhood"], where)
    frame = frame.assign(neighborhood=names)
    warnings = _absent_columns(frame.columns, settings, where)
    warnings += _exclusion_warnings(names, settings, where)

    # The severity feature names the top split, so it must be numeric even when it is not
    # clustered on.
    wanted = [*settings.clustering_features, settings.severity_feature]
    numeric = ["population"] + [
        f for f in dict.fromkeys(wanted) if f in frame.columns and f != "population"
    ]
    columns = {c: _numbers(frame, c, where) for c in numeric}
    population = columns["population"]
    _check_population(population, names, where)
    frame = frame.assign(**columns)
    blank = population.isna().to_numpy()
    if blank.any():
        # Unknown is not residential: like the notebook, such rows never join the residential
        # clustering; unlike it, they are kept, in the low-population group.
        shown = ", ".join(names[blank][:5]) + (", ..." if blank.sum() > 5 else "")
        warnings.append(
            f"population is blank in {int(blank.sum())} rows of {where} ({shown}): they are "
            "analysed with the low-population rows"
        )
    elif (population % 1 == 0).all():
        frame = frame.astype({"population": np.int64})
    blank_features = [f for f in numeric[1:] if frame[f].isna().all()]
    if blank_features:
        warnings.append(f"{_features(blank_features)} blank in every row of {where}")
    frame = frame.sort_values("neighborhood", kind="stable").reset_index(drop=True)
    return ValidTable(frame=frame, warnings=tuple(warnings))


def validate_for_model(
    frame: pd.DataFrame, key_column: str, columns: tuple[str, ...], where: str
) -> pd.DataFrame:
    """A table a model document is applied to: every column of `columns` present (the key
    first, the others numbers or blank), every key filled in; rows keep their order."""
    if len(frame) == 0:
        raise InputError(f"{where} has no rows: give one row per neighborhood to assign")
    for column in columns:
        if column not in frame.columns:
            raise InputError(
                f"{where} has no {column!r} column{_did_you_mean(column, frame.columns)}, which "
                "the run's model needs: add it (the features table's columns, by the same names)"
            )
    keys = frame[key_column].astype("string").str.strip()
    blank = (keys.isna() | (keys == "")).to_numpy()
    if blank.any():
        row = int(np.flatnonzero(blank)[0])
        raise InputError(f"{where}: {key_column} is blank in data row {row + 1}: fill it in")
    frame = frame.reset_index(drop=True).assign(**{key_column: keys.astype(object)})
    numbers = {c: _numbers(frame, c, where, key_column) for c in columns if c != key_column}
    return frame.assign(**numbers)


def unmatched_exclusions(names: pd.Series, settings: AnalysisSettings) -> tuple[Unmatched, ...]:
    """The exclusion names (EXCLUDE_NEIGHBORHOODS and EXCLUDE_ALSO) that match no row of
    `names`, each with the closest name of the table."""
    present = set(names)
    return tuple(
        Unmatched(name, closest(name, present))
        for name in settings.excluded_names
        if name not in present
    )


def closest(name: str, candidates) -> str | None:
    """The candidate `name` most likely meant: the same up to case and spacing, else the
    closest spelling (difflib), else None."""
    candidates = [str(c) for c in candidates]
    key = _normalised(name)
    for candidate in candidates:
        if _normalised(candidate) == key:
            return candidate
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def _features(names: list[str]) -> str:
    if len(names) == 1:
        return f"feature {names[0]!r} is"
    return f"features {', '.join(map(repr, names))} are"


def _normalised(name: str) -> str:
    return "".join(name.lower().replace("_", " ").split())


def _separator_fix(columns: pd.Index) -> str | None:
    """How to fix a header that was split on the wrong character, if it looks like one."""
    for separator, name in ((";", "semicolons"), ("\t", "tabs")):
        if any(separator in str(column) for column in columns):
            return (
                f"the header looks separated by {name}, not commas: export the file as "
                "comma-separated CSV (or with one separator only)"
            )
    return None


def _did_you_mean(name: str, candidates) -> str:
    match = closest(name, candidates)
    return f" (did you mean {match!r}?)" if match is not None else ""


def _absent_columns(columns: pd.Index, settings: AnalysisSettings, where: str) -> list[str]:
    """Features and the severity feature the table lacks: an error for a list the user gave,
    a warning for the built-in list (the notebook's skip-and-report)."""
    severity = settings.severity_feature
    if severity not in columns:
        raise InputError(
            f"{where} has no column {severity!r}{_did_you_mean(severity, columns)}, which "
            "SEVERITY_FEATURE (--severity-feature) names: fix the name or add the column"
        )
    missing = [f for f in settings.clustering_features if f not in columns]
    if not missing:
        return []
    if not settings.default_features:
        others = f" (nor {', '.join(map(repr, missing[1:]))})" if missing[1:] else ""
        raise InputError(
            f"{where} has no column {missing[0]!r}{_did_you_mean(missing[0], columns)}, which "
            f"CLUSTERING_FEATURES (--clustering-features) names{others}: fix the names or "
            "remove them"
        )
    return [f"features not in the table, skipped: {', '.join(missing)} ({where})"]


def _exclusion_warnings(names: pd.Series, settings: AnalysisSettings, where: str) -> list[str]:
    unmatched = unmatched_exclusions(names, settings)
    if not unmatched:
        return []
    shown = ", ".join(
        repr(u.name) + (f" (did you mean {u.did_you_mean!r}?)" if u.did_you_mean else "")
        for u in unmatched
    )
    count = (
        "1 excluded name matches"
        if len(unmatched) == 1
        else (f"{len(unmatched)} excluded names match")
    )
    return [
        f"{count} no neighborhood of {where}, so it excludes nothing: {shown} "
        "(EXCLUDE_NEIGHBORHOODS replaces the default list, EXCLUDE_ALSO extends it)"
    ]


def _names(column: pd.Series, where: str) -> pd.Series:
    text = column.astype("string").str.strip()
    blank = text.isna() | (text == "")
    if blank.any():
        row = int(np.flatnonzero(blank.to_numpy())[0])
        raise InputError(
            f"{where}: neighborhood is blank in data row {row + 1}: give every row a name"
        )
    duplicated = text.duplicated(keep=False)
    if duplicated.any():
        name = text[duplicated].iloc[0]
        rows = ", ".join(str(i + 1) for i in np.flatnonzero(duplicated.to_numpy())[:5])
        raise InputError(
            f"{where}: neighborhood {name!r} appears more than once (data rows {rows}): "
            "keep one row per neighborhood"
        )
    return text.astype(object)


def _numbers(frame: pd.DataFrame, column: str, where: str, key: str = "neighborhood") -> pd.Series:
    """The column as float64; text, booleans or non-finite values raise InputError (which
    names the row by its `key`)."""
    values = frame[column]
    if pd.api.types.is_bool_dtype(values):
        raise InputError(f"{where}: column {column!r} holds true/false values: it must be numeric")
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.astype("float64")
        bad = np.isinf(numbers.to_numpy())
    else:
        text = values.astype("string").str.strip()
        blank = text.isna() | (text == "")
        numbers = pd.to_numeric(text.where(~blank), errors="coerce").astype("float64")
        bad = (~blank & (numbers.isna() | np.isinf(numbers))).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{where}: column {column!r} has {str(values.iloc[row])!r} in data row {row + 1} "
            f"({frame[key].iloc[row]}): use a finite number, or leave it blank"
        )
    return numbers


def _check_population(population: pd.Series, names: pd.Series, where: str) -> None:
    problems = (
        (population < 0, "is negative", "population must be 0 or more"),
        (population > MAX_POPULATION, "is implausibly large", "population counts residents"),
    )
    for mask, what, fix in problems:
        mask = mask.to_numpy()
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            raise InputError(
                f"{where}: population {what} in data row {row + 1} ({names.iloc[row]}): {fix}"
            )


def _short(columns: pd.Index) -> str:
    shown = ", ".join(map(str, columns[:8]))
    return shown + (", ..." if len(columns) > 8 else "")


@cache
def table_schema(name: str) -> tuple[dict, ...]:
    """A BigQuery JSON schema shipped with the package: 'clusters_table', 'runs_table' or
    'transitions_table'.

    The same files create the tables in Terraform, so code and deployment cannot drift.
    """
    text = resources.files("clustering.schemas").joinpath(f"{name}.json").read_text()
    return tuple(json.loads(text))


def output_schema(frame: pd.DataFrame) -> list[dict]:
    """The clusters table's schema for `frame`: declared types for known columns, and a type
    from the dtype for any extra column the features table carries."""
    declared = {field["name"]: field for field in table_schema("clusters_table")}
    fields = []
    for column in frame.columns:
        if column in declared and not _widened(declared[column], frame[column]):
            fields.append(declared[column])
        else:
            fields.append(
                {"name": column, "type": _bigquery_type(frame[column]), "mode": "NULLABLE"}
            )
    return fields


def _widened(field: dict, values: pd.Series) -> bool:
    """A declared INTEGER column holding fractions or blanks (population estimates) is
    written as FLOAT rather than failing the load."""
    return field["type"] == "INTEGER" and pd.api.types.is_float_dtype(values)


def _bigquery_type(values: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(values):
        return "BOOLEAN"
    if pd.api.types.is_integer_dtype(values):
        return "INTEGER"
    if pd.api.types.is_float_dtype(values):
        return "FLOAT"
    if pd.api.types.is_datetime64_any_dtype(values):
        return "TIMESTAMP"
    return "STRING"
