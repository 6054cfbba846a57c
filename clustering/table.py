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
from clustering.options import DEFAULTS
from clustering.settings import NO_POPULATION, AnalysisSettings

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
    """A validated features table, sorted by its key column, and what validation noticed:
    warnings (something may be wrong) and notes (expected, but worth saying once); `dropped`
    holds the keys DROP_KEYS left out, in the table's order."""

    frame: pd.DataFrame
    warnings: tuple[str, ...]
    notes: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()


def validate_features(frame: pd.DataFrame, settings: AnalysisSettings, where: str) -> ValidTable:
    """Check and normalise a features table; raise InputError on the first problem.

    Rows come back sorted by KEY_COLUMN (k-means depends on row order), without the DROP_KEYS
    rows, POPULATION_COLUMN (when there is one) as int64 when every value is a whole number
    (float64 otherwise, e.g. interpolated estimates or blanks) and every configured feature as
    float64 with blanks as NaN, or as Int64 (blanks as NA) when the input's column holds
    integers, so the outputs keep them as integers.
    """
    key, population = settings.key_column, settings.population_column
    if frame.shape[1] == 0:
        raise InputError(f"{where} has no columns: give a table with a header row")
    if len(frame) == 0:
        raise InputError(f"{where} has a header but no rows: add one row per {key}")
    required = ((key, "KEY_COLUMN"), (population, "POPULATION_COLUMN"))
    for column, setting in required if population is not None else required[:1]:
        if column not in frame.columns:
            raise InputError(
                f"{where} has no {column!r} column{did_you_mean(column, frame.columns)} "
                f"(columns: {_short(frame.columns)}): "
                + (_separator_fix(frame.columns) or _column_fix(setting))
            )
    check_column_names(frame.columns, key, where)
    frame = frame.reset_index(drop=True)
    frame = frame.assign(**{key: _names(frame[key], key, where)})
    frame, dropped, warnings = _dropped(frame, settings, where)
    names = frame[key]
    warnings += _absent_columns(
        frame.columns, settings, where, lambda: _numeric_columns(frame, settings)
    )
    _check_directions(frame.columns, settings, where)
    warnings += _exclusion_warnings(names, settings, where)
    warnings += _unknown_labels(frame.columns, settings, where)
    notes = _exclusion_notes(names, settings, where)
    if dropped:
        notes.append(
            f"DROP_KEYS left {len(dropped)} row{'' if len(dropped) == 1 else 's'} of {where} "
            f"out of the analysis and of every output: {', '.join(dropped)}"
        )

    # The severity feature names the top split, so it must be numeric even when it is not
    # clustered on.
    wanted = [*settings.clustering_features, settings.severity_feature]
    features = [f for f in dict.fromkeys(wanted) if f in frame.columns and f != population]
    numeric = features if population is None else [population, *features]
    frame = frame.assign(**{c: _numbers(frame, c, key, where) for c in numeric})
    if population is not None:
        frame, said = _with_population(frame, settings, where)
        warnings += said
    blank_features = [f for f in features if frame[f].isna().all()]
    if blank_features:
        warnings.append(f"{_features(blank_features)} blank in every row of {where}")
    frame = frame.sort_values(key, kind="stable").reset_index(drop=True)
    return ValidTable(frame, tuple(warnings), tuple(notes), dropped)


def _dropped(
    frame: pd.DataFrame, settings: AnalysisSettings, where: str
) -> tuple[pd.DataFrame, tuple[str, ...], list[str]]:
    """The frame without its DROP_KEYS rows, the keys dropped, and a warning for each
    DROP_KEYS value that matches no row (with the closest key)."""
    key = settings.key_column
    if not settings.drop_keys:
        return frame, (), []
    drop = frame[key].isin(settings.drop_keys)
    kept = frame.loc[~drop].reset_index(drop=True)
    if kept.empty:
        raise InputError(
            f"DROP_KEYS (--drop-keys) leaves no row of {where}: drop only the rows that are "
            "not areas (total rows)"
        )
    present = set(frame[key])
    warnings = [
        f"DROP_KEYS names {name!r}, which is no {key} of {where}, so it drops nothing"
        f"{did_you_mean(name, present)}"
        for name in settings.drop_keys
        if name not in present
    ]
    return kept, tuple(frame.loc[drop, key]), warnings


def _check_directions(columns: pd.Index, settings: AnalysisSettings, where: str) -> None:
    """SEVERITY_FEATURE has a direction, and every feature FEATURE_DIRECTIONS names (beyond
    the unchanged defaults) is a column: a typo would silently lose its direction."""
    severity = settings.severity_feature
    if severity not in settings.directions:
        raise InputError(
            f"SEVERITY_FEATURE {severity!r} has no direction, so which top group is "
            "Distressed is unknown: add it to FEATURE_DIRECTIONS (--feature-directions), e.g. "
            f'\'{{"{severity}": "higher_is_worse"}}\' (or "higher_is_better")'
        )
    for feature in settings.given_directions:
        if feature not in columns:
            raise InputError(
                f"{where} has no column {feature!r}{did_you_mean(feature, columns)}, which "
                "FEATURE_DIRECTIONS (--feature-directions) names: fix the name or remove it"
            )


def _column_fix(setting: str) -> str:
    flag = "--" + setting.lower().replace("_", "-")
    fix = f"add it, or set {setting} ({flag}) to the column that holds it"
    if setting == "POPULATION_COLUMN":
        fix += f" ({NO_POPULATION} for a table without one)"
    return fix


def _with_population(
    frame: pd.DataFrame, settings: AnalysisSettings, where: str
) -> tuple[pd.DataFrame, list[str]]:
    """The frame with its population checked (int64 when every value is whole), a warning
    for blank populations and one for populations that are not whole numbers."""
    key, column = settings.key_column, settings.population_column
    population = frame[column]
    _check_population(population, frame[key], column, where)
    blank = population.isna().to_numpy()
    warnings = []
    fraction = (population.notna() & (population % 1 != 0)).to_numpy()
    if fraction.any():
        warnings.append(
            f"POPULATION_COLUMN {column!r} holds {_count(fraction)} that {_are(fraction)} not a "
            f"whole number of residents ({_keys(frame[key], fraction)}) in {where}: if it is "
            f"not a count of residents, set POPULATION_COLUMN={NO_POPULATION}"
        )
    if blank.any():
        # Unknown is not residential: like the notebook, such rows never join the residential
        # clustering; unlike it, they are kept, in the low-population group.
        warnings.append(
            f"{column} is blank in {int(blank.sum())} rows of {where} "
            f"({_keys(frame[key], blank)}): they are analysed with the low-population rows"
        )
    elif not fraction.any():
        frame = frame.astype({column: np.int64})
    return frame, warnings


def _count(mask: np.ndarray) -> str:
    n = int(mask.sum())
    return f"{n} value" if n == 1 else f"{n} values"


def _are(mask: np.ndarray) -> str:
    return "is" if int(mask.sum()) == 1 else "are"


def _keys(keys: pd.Series, mask: np.ndarray) -> str:
    """Up to five keys of the masked rows, for a warning."""
    return ", ".join(keys[mask][:5]) + (", ..." if mask.sum() > 5 else "")


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
                f"{where} has no {column!r} column{did_you_mean(column, frame.columns)}, which "
                "the run's model needs: add it (the features table's columns, by the same names)"
            )
    # The index first: a Parquet file keeps the one it was written with, and the keys are
    # put back by index.
    frame = frame.reset_index(drop=True)
    keys = frame[key_column].astype("string").str.strip()
    blank = (keys.isna() | (keys == "")).to_numpy()
    if blank.any():
        row = int(np.flatnonzero(blank)[0])
        raise InputError(f"{where}: {key_column} is blank in data row {row + 1}: fill it in")
    frame = frame.assign(**{key_column: keys.astype(object)})
    numbers = {c: _numbers(frame, c, key_column, where) for c in columns if c != key_column}
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


def check_column_names(columns, key: str, where: str) -> None:
    """Column names as BigQuery compares them, without case: two input columns that differ
    only in case, or one that differs only in case from a column the run adds (`Top_Cluster`
    beside top_cluster), would make a clusters table BigQuery refuses, run after run. A
    column spelt exactly as one the run adds is replaced by the run's."""
    added = {c.lower(): c for c in (*CLUSTER_COLUMNS, shape_column(key))}
    seen: dict[str, str] = {}
    for column in map(str, columns):
        folded = column.lower()
        if folded in seen:
            raise InputError(
                f"{where}: columns {seen[folded]!r} and {column!r} differ only in case, which "
                "BigQuery takes for the same column: rename one of them"
            )
        seen[folded] = column
        ours = added.get(folded)
        if ours is not None and ours != column:
            raise InputError(
                f"{where}: column {column!r} differs only in case from {ours!r}, a column the "
                "run adds, which BigQuery takes for the same column: rename it"
            )


def check_output_columns(keep: tuple[str, ...], columns, where: str) -> None:
    """Every name OUTPUT_COLUMNS gives is a column of the input."""
    for name in keep:
        if name not in columns:
            raise InputError(
                f"{where} has no column {name!r}{did_you_mean(name, columns)}, which "
                "OUTPUT_COLUMNS (--output-columns) names: fix the name or remove it"
            )


def withheld_columns(inputs, keep: tuple[str, ...], key: str) -> tuple[str, ...]:
    """The input columns OUTPUT_COLUMNS leaves out of every output (the key column always
    stays); none when `keep` is empty."""
    if not keep:
        return ()
    return tuple(str(c) for c in inputs if c != key and c not in keep)


def did_you_mean(name: str, candidates) -> str:
    match = closest(name, candidates)
    return f" (did you mean {match!r}?)" if match is not None else ""


def _absent_columns(columns, settings: AnalysisSettings, where: str, numeric) -> list[str]:
    """Features and the severity feature the table lacks: an error for a list the user gave,
    a warning for the built-in list (the notebook's skip-and-report), and an error when the
    table has none of the built-in list's features: it is another city's table, and the hint
    lists its numeric columns (`numeric()`, a JSON list or "none ...")."""
    missing = [f for f in settings.clustering_features if f not in columns]
    present = [
        f for f in settings.clustering_features if f in columns and f != settings.population_column
    ]
    if settings.default_features and not present:
        raise InputError(
            f"{where} has none of the default clustering features (the seed notebook's "
            f"Baltimore columns: {', '.join(settings.clustering_features)}): set "
            "CLUSTERING_FEATURES (--clustering-features) to a JSON list of the columns to "
            f"cluster on; its numeric columns are {numeric()}"
        )
    severity = settings.severity_feature
    if severity not in columns:
        raise InputError(
            f"{where} has no column {severity!r}{did_you_mean(severity, columns)}, which "
            "SEVERITY_FEATURE (--severity-feature) names: fix the name or add the column"
        )
    if not missing:
        return []
    if not settings.default_features:
        others = f" (nor {', '.join(map(repr, missing[1:]))})" if missing[1:] else ""
        raise InputError(
            f"{where} has no column {missing[0]!r}{did_you_mean(missing[0], columns)}, which "
            f"CLUSTERING_FEATURES (--clustering-features) names{others}: fix the names or "
            "remove them"
        )
    return [f"features not in the table, skipped: {', '.join(missing)} ({where})"]


def _unknown_labels(columns: pd.Index, settings: AnalysisSettings, where: str) -> list[str]:
    """A FEATURE_LABELS entry for a column the table lacks is a warning with the closest
    column: the label would silently go unused, and the column it meant shows its name."""
    return [
        f"FEATURE_LABELS names {column!r}, which is not a column of {where}"
        f"{did_you_mean(column, columns)}: its label is unused"
        for column in settings.labels
        if column not in columns
    ]


def _numeric_columns(frame: pd.DataFrame, settings: AnalysisSettings) -> str:
    """The table's columns that hold numbers (text that parses counts), as a JSON list."""
    found = []
    for column in frame.columns:
        if column in (settings.key_column, settings.population_column):
            continue
        values = frame[column]
        if pd.api.types.is_bool_dtype(values):
            continue
        if not pd.api.types.is_numeric_dtype(values):
            text = values.astype("string").str.strip()
            text = text[text.notna() & (text != "")]
            if text.empty or pd.to_numeric(text, errors="coerce").isna().any():
                continue
        found.append(str(column))
    return _listed(found)


def _listed(columns: list[str]) -> str:
    return json.dumps(columns) if columns else "none (only text columns)"


# BigQuery's numeric column types by both their names: the legacy ones the tables API
# returns (INTEGER, FLOAT) and GoogleSQL's (INT64, FLOAT64), with the exact decimals.
NUMERIC_TYPES = frozenset(
    {"INTEGER", "INT64", "FLOAT", "FLOAT64", "NUMERIC", "BIGNUMERIC", "DECIMAL", "BIGDECIMAL"}
)


def numeric_fields(schema, settings: AnalysisSettings) -> list[str]:
    """The numeric columns of a BigQuery schema (JSON fields), key and population aside."""
    skip = (settings.key_column, settings.population_column)
    return [
        f["name"]
        for f in schema
        if str(f.get("type", "")).upper() in NUMERIC_TYPES and f["name"] not in skip
    ]


def check_schema(schema, settings: AnalysisSettings, where: str) -> None:
    """The checks of the features and severity columns that validate_features makes, made on
    a BigQuery table's schema (JSON fields) before any row is read: a warehouse run reads
    only the columns it needs, so the hint's numeric columns come from the schema's types."""
    names = pd.Index([str(f["name"]) for f in schema])
    _absent_columns(names, settings, where, lambda: _listed(numeric_fields(schema, settings)))
    _check_directions(names, settings, where)


def _exclusion_warnings(names: pd.Series, settings: AnalysisSettings, where: str) -> list[str]:
    """Exclusion names that match no row, with a guess each. The built-in list matching no row
    at all is not a typo but another city's table: that is a note (below), not a warning."""
    unmatched = unmatched_exclusions(names, settings)
    if _default_list_unused(names, settings):
        unmatched = tuple(u for u in unmatched if u.name in settings.exclude_also)
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
        f"{count} no {settings.key_column} of {where}, so it excludes nothing: {shown} "
        "(EXCLUDE_NEIGHBORHOODS replaces the default list, EXCLUDE_ALSO extends it)"
    ]


def _exclusion_notes(names: pd.Series, settings: AnalysisSettings, where: str) -> list[str]:
    if not _default_list_unused(names, settings):
        return []
    return [
        f"the default EXCLUDE_NEIGHBORHOODS is the seed notebook's list of Baltimore names, "
        f"none of which is a {settings.key_column} of {where}: nothing is excluded by name "
        "(set EXCLUDE_NEIGHBORHOODS to this table's institutional or industrial areas, or [])"
    ]


def _default_list_unused(names: pd.Series, settings: AnalysisSettings) -> bool:
    """The built-in exclusion list is in use and matches no row."""
    return settings.default_exclusions and not names.isin(settings.exclude_neighborhoods).any()


def _names(column: pd.Series, key: str, where: str) -> pd.Series:
    text = column.astype("string").str.strip()
    blank = text.isna() | (text == "")
    if blank.any():
        row = int(np.flatnonzero(blank.to_numpy())[0])
        raise InputError(f"{where}: {key} is blank in data row {row + 1}: give every row a name")
    duplicated = text.duplicated(keep=False)
    if duplicated.any():
        name = text[duplicated].iloc[0]
        rows = ", ".join(str(i + 1) for i in np.flatnonzero(duplicated.to_numpy())[:5])
        raise InputError(
            f"{where}: {key} {name!r} appears more than once (data rows {rows}): "
            f"keep one row per {key}"
        )
    return text.astype(object)


def _numbers(frame: pd.DataFrame, column: str, key: str, where: str) -> pd.Series:
    """The column as float64, or as Int64 when the input's column holds integers (which the
    outputs keep as integers); text, booleans or non-finite values raise InputError (which
    names the row by its `key`)."""
    values = frame[column]
    if pd.api.types.is_bool_dtype(values):
        raise InputError(f"{where}: column {column!r} holds true/false values: it must be numeric")
    if pd.api.types.is_integer_dtype(values):
        return values.astype("Int64")
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


def _check_population(population: pd.Series, names: pd.Series, column: str, where: str) -> None:
    problems = (
        (
            population < 0,
            "is negative",
            f"{column} must be 0 or more (POPULATION_COLUMN={NO_POPULATION} for a table "
            "without a count of residents)",
        ),
        (population > MAX_POPULATION, "is implausibly large", f"{column} counts residents"),
    )
    for mask, what, fix in problems:
        mask = mask.to_numpy(dtype=bool, na_value=False)
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            raise InputError(
                f"{where}: {column} {what} in data row {row + 1} ({names.iloc[row]}): {fix}"
            )


def _short(columns: pd.Index) -> str:
    shown = ", ".join(map(str, columns[:8]))
    return shown + (", ..." if len(columns) > 8 else "")


# A text cell starting with one of these is a formula to a spreadsheet (= + - @) or hides a
# formula behind a control character; "'" is escaped too, so that unescaping is exact.
FORMULA_STARTS = frozenset("=+-@'") | frozenset(chr(code) for code in range(32))


def escape_cell(value):
    """A text value as a spreadsheet shows it as text: with a leading "'" where it could be
    read as a formula. Anything else is returned unchanged."""
    if isinstance(value, str) and value and value[0] in FORMULA_STARTS:
        return "'" + value
    return value


def unescape_cell(value):
    """The exact value `escape_cell` was given."""
    if isinstance(value, str) and value.startswith("'"):
        return value[1:]
    return value


def _text_columns(frame: pd.DataFrame) -> list:
    types = pd.api.types
    return [
        c
        for c in frame.columns
        if types.is_object_dtype(frame[c]) or types.is_string_dtype(frame[c])
    ]


def people_csv(frame: pd.DataFrame, header: bool = True) -> bytes:
    """The CSV of `frame` as every CSV this job writes (DESIGN.md, reliability rules): text
    cells and names escaped for spreadsheets (`escape_cell`), every value in the bytes pandas'
    `to_csv(index=False)` writes for it (a test compares them), rows ended by "\\n".

    Each column's distinct values are formatted once and the rows joined as text: a
    200,000-row clusters table takes about a second, pandas' writer ten."""
    lines = [",".join(row) for row in zip(*map(_cells, _columns(frame)), strict=True)]
    if header:
        lines.insert(0, ",".join(_quoted(escape_cell(str(name))) for name in frame.columns))
    if frame.shape[1] == 1:  # the csv module quotes a row's only cell when it is empty
        lines = [line or '""' for line in lines]
    return ("\n".join(lines) + "\n" if lines else "").encode()


def _columns(frame: pd.DataFrame) -> list[pd.Series]:
    return [frame.iloc[:, position] for position in range(frame.shape[1])]


def _cells(values: pd.Series) -> list[str]:
    """Each value's CSV text, worked out once per distinct value; a blank for a missing one."""
    kind = values.dtype.kind if isinstance(values.dtype, np.dtype) else None
    if kind == "O" and pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
        # Mixed objects: 1, 1.0 and True are one value to a hash table, three to a CSV.
        blank = pd.isna(values).to_numpy()
        return [
            "" if b else _text(str(v)) if isinstance(v, str) else _quoted(str(v))
            for v, b in zip(values, blank, strict=True)
        ]
    if kind == "f" and values.dtype == np.float64:
        # By their bits: -0.0 and 0.0 are equal, and written differently.
        numbers = values.to_numpy()
        codes, bits = pd.factorize(numbers.view(np.int64))
        codes[np.isnan(numbers)] = -1
        shown = [repr(number) for number in bits.view(np.float64).tolist()]
    else:
        codes, uniques = pd.factorize(values)
        shown = _shown(uniques, text=kind == "O" or pd.api.types.is_string_dtype(values))
    # Code -1 (missing) takes the last entry, the blank.
    return np.array([*shown, ""], dtype=object)[codes].tolist()


def _shown(uniques, text: bool) -> list[str]:
    """The CSV text of distinct, present values: text escaped and quoted; numbers, times and
    the rest as pandas formats them (its choices depend only on the set of values)."""
    if text:
        return [_text(str(value)) for value in np.asarray(uniques, dtype=object)]
    written = pd.DataFrame({"value": uniques}).to_csv(index=False, header=False)
    return written.splitlines()


# The characters that can make the csv module quote a cell (pandas' writer is the csv module,
# with "," and '"' and lines ended by "\n").
_QUOTING = frozenset(',"\r\n')


def _text(text: str) -> str:
    """A text cell, escaped and quoted."""
    if text and text[0] not in FORMULA_STARTS and _QUOTING.isdisjoint(text):
        return text  # most cells: nothing to do
    return _quoted(escape_cell(text))


def _quoted(text: str) -> str:
    if _QUOTING.isdisjoint(text):
        return text
    import csv
    import io

    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([text])
    return out.getvalue()[:-1]


def read_people_csv(content: bytes, **options) -> pd.DataFrame:
    """A CSV written by `people_csv`, read back with the exact names and text it was given.
    `options` go to pandas.read_csv; `usecols` and `dtype` use the unescaped names."""
    import io

    wanted = options.pop("usecols", None)
    types = {escape_cell(k): v for k, v in (options.pop("dtype", None) or {}).items()}
    frame = pd.read_csv(
        io.BytesIO(content),
        usecols=(lambda c: wanted(unescape_cell(c))) if wanted else None,
        dtype=types or None,
        **options,
    )
    frame = frame.set_axis([unescape_cell(c) for c in frame.columns], axis=1)
    return frame.assign(**{str(c): frame[c].map(unescape_cell) for c in _text_columns(frame)})


@cache
def table_schema(
    name: str,
    key_column: str = DEFAULTS["key_column"],
    population_column: str | None = DEFAULTS["population_column"],
) -> tuple[dict, ...]:
    """A BigQuery JSON schema shipped with the package: 'clusters_table', 'runs_table',
    'transitions_table' or 'features_table', with its placeholders filled in: `{key}` is
    KEY_COLUMN and `{population}` POPULATION_COLUMN (a field left out without one).

    The same files create the tables in Terraform (which fills the placeholders with the same
    settings), so code and deployment cannot drift.
    """
    text = resources.files("clustering.schemas").joinpath(f"{name}.json").read_text()
    fields = json.loads(text)
    if population_column is None:
        fields = [f for f in fields if f["name"] != "{population}"]
    return tuple(
        field | {"name": field["name"].format(key=key_column, population=population_column)}
        for field in fields
    )


def shape_column(key_column: str) -> str:
    """The GEOGRAPHY column a run adds with boundaries (clusters_table.json's `{key}_shape`)."""
    return f"{key_column}_shape"


def output_schema(
    frame: pd.DataFrame,
    key_column: str = DEFAULTS["key_column"],
    population_column: str | None = DEFAULTS["population_column"],
) -> list[dict]:
    """The clusters table's schema for `frame`: declared types for the key, the population
    and the cluster columns, and a type from the dtype for every other column (the features
    table's, under their own names)."""
    declared = {
        field["name"]: field
        for field in table_schema("clusters_table", key_column, population_column)
    }
    fields = []
    for column in frame.columns:
        if column in declared and not _widened(declared[column], frame[column]):
            fields.append(declared[column])
        else:
            fields.append(
                {"name": column, "type": _bigquery_type(frame[column]), "mode": "NULLABLE"}
            )
    return fields


def typed_clusters(
    frame: pd.DataFrame,
    key_column: str = DEFAULTS["key_column"],
    population_column: str | None = DEFAULTS["population_column"],
) -> pd.DataFrame:
    """A clusters table read back from its CSV with the declared types of its known columns
    (whole numbers as Int64, times as UTC timestamps), ready to be loaded again."""
    return typed_rows(frame, table_schema("clusters_table", key_column, population_column))


def typed_rows(frame: pd.DataFrame, schema) -> pd.DataFrame:
    """Rows read back from a CSV with the types `schema` declares for their columns."""
    declared = {field["name"]: field["type"] for field in schema}
    typed = {}
    for column in frame.columns:
        kind = declared.get(column)
        if kind == "INTEGER" and (frame[column].dropna() % 1 == 0).all():
            typed[column] = frame[column].astype("Int64")
        elif kind == "TIMESTAMP":
            typed[column] = pd.to_datetime(frame[column], utc=True)
    return frame.assign(**typed)


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
