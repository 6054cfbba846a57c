"""The warehouse engine's SQL: BigQuery statements built with sqlglot's expression builder.

Three kinds of values reach the SQL text, and nothing else: identifiers validated first (table
ids by TABLE_ID_PATTERN, columns by COLUMN_PATTERN), always quoted; numbers (the model
document's floats, written as the shortest decimal that reads back as the same double, and
cohort ids); and a snapshot's time, an aware datetime written in ISO form (Table.as_of). Every
text value (an excluded name, a cohort name, a group label, the run id) travels as a query
parameter; the one exception is the export's gs:// URI, which BigQuery takes only as a literal
and which is checked against a plain path pattern first. tests/test_warehouse_sql.py parses
every statement back as BigQuery SQL.

The scoring statement applies the model document's rules (DESIGN.md, "The model document") to
every row: impute a blank (null or NaN alike), clip, scale, squared Euclidean distances in z,
the nearest top centroid, the nearest sub-cluster centroid of that top group, the margin and
runner-up against every other sub-cluster, and each excluded type's nearest group in its own z.
Ties go to the centroid listed first, as numpy's argmin does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlglot import exp

from clustering import InputError
from clustering.analysis.assign import BORDERLINE_MARGIN, NO_CLUSTER, Model
from clustering.analysis.model import EXCLUDED as EXCLUDED_LABEL
from clustering.analysis.prepare import (
    EXCLUDED_TYPES,
    INSTITUTIONAL,
    LOW_POPULATION,
    RESIDENTIAL,
    Space,
)
from clustering.analysis.transitions import columns as transition_columns
from clustering.options import DEFAULTS
from clustering.settings import check_column, check_table_id
from clustering.table import CLUSTER_COLUMNS, FORMULA_STARTS, check_column_names, shape_column

DIALECT = "bigquery"
# The columns the scoring adds, in the clusters table's order (clustering/schemas).
OUTPUT_COLUMNS = CLUSTER_COLUMNS
# Columns of the statements' own steps; a features column with this prefix is refused.
INTERNAL = "_nc_"
# A gs:// URI the export may write to: a bucket name and a plain object path.
EXPORT_URI = re.compile(
    r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[A-Za-z0-9._=-]+)*/[A-Za-z0-9._-]+-\*\.csv$"
)


@dataclass(frozen=True)
class Parameter:
    """A named query parameter: `type` is STRING, TIMESTAMP or ARRAY<STRING>."""

    name: str
    type: str
    value: object


@dataclass(frozen=True)
class Statement:
    """One statement's SQL and the parameters it names."""

    sql: str
    parameters: tuple[Parameter, ...] = ()


@dataclass(frozen=True)
class Table:
    """A validated `project.dataset.table`; with `as_of` (an aware datetime), the table as it
    was then: every statement built over it reads that one state (FOR SYSTEM_TIME AS OF)."""

    id: str
    as_of: datetime | None = None

    def __post_init__(self) -> None:
        check_table_id(self.id, "warehouse table")
        if self.as_of is not None and self.as_of.utcoffset() is None:
            raise ValueError(f"{self.as_of!r} has no time zone: a snapshot time must be aware")

    @property
    def node(self) -> exp.Table:
        project, dataset, table = self.id.split(".")
        node = exp.table_(table, dataset, project, quoted=True)
        if self.as_of is not None:
            moment = exp.Literal.string(self.as_of.astimezone(UTC).isoformat())
            node.set(
                "version",
                exp.Version(
                    this="TIMESTAMP",
                    kind="AS OF",
                    expression=exp.cast(moment, "TIMESTAMP", dialect=DIALECT),
                ),
            )
        return node


# --- Building blocks ----------------------------------------------------------------------


@dataclass
class _Params:
    """The parameters one statement collects; each text value gets a generated name."""

    items: dict[str, Parameter] = field(default_factory=dict)

    def text(self, name: str, value: str) -> exp.Expression:
        self.items[name] = Parameter(name, "STRING", str(value))
        return _parameter(name)

    def add(self, name: str, kind: str, value: object) -> exp.Expression:
        self.items[name] = Parameter(name, kind, value)
        return _parameter(name)


def _parameter(name: str) -> exp.Expression:
    return exp.Parameter(this=exp.var(name))


def _statement(node: exp.Expression, params: _Params | None = None) -> Statement:
    parameters = tuple(params.items.values()) if params else ()
    return Statement(node.sql(dialect=DIALECT, identify=True), parameters)


def number(value: float) -> exp.Expression:
    """A finite float as a literal that BigQuery reads back as the same double."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{value!r} cannot be written into SQL: not a finite number")
    literal = exp.Literal.number(repr(abs(value)))
    return exp.Neg(this=literal) if math.copysign(1.0, value) < 0 and value != 0 else literal


def integer(value: int) -> exp.Expression:
    literal = exp.Literal.number(str(abs(int(value))))
    return exp.Neg(this=literal) if value < 0 else literal


def _fn(name: str, *args) -> exp.Expression:
    return exp.func(name, *args, dialect=DIALECT)


def _col(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def _float(node: exp.Expression) -> exp.Expression:
    return exp.cast(node, "FLOAT64", dialect=DIALECT)


def _null(kind: str) -> exp.Expression:
    return exp.cast(exp.null(), kind, dialect=DIALECT)


def _blank(value: exp.Expression) -> exp.Expression:
    """Null or NaN: BigQuery keeps NaN in FLOAT64 columns, and both mean "no value"."""
    return exp.or_(exp.Is(this=value, expression=exp.null()), _fn("IS_NAN", value))


def _paren(node: exp.Expression) -> exp.Paren:
    return exp.Paren(this=node)


def _sum(terms: list[exp.Expression]) -> exp.Expression:
    total = terms[0]
    for term in terms[1:]:
        total = exp.Add(this=total, expression=term)
    return total


def _argmin(distances: list[exp.Expression], ids: list[exp.Expression]) -> exp.Expression:
    """The id of the smallest distance, the first one on a tie (numpy's argmin): entry i wins
    when it is no larger than every later entry, the earlier ones having lost already."""
    if len(ids) == 1:
        return ids[0]
    case = exp.Case()
    for i in range(len(ids) - 1):
        rest = [exp.LTE(this=distances[i], expression=d) for d in distances[i + 1 :]]
        case = case.when(exp.and_(*rest), ids[i])
    return case.else_(ids[-1])


def _least(values: list[exp.Expression]) -> exp.Expression:
    return values[0] if len(values) == 1 else _fn("LEAST", *values)


def _select(*expressions: exp.Expression, source: str) -> exp.Select:
    return exp.select(exp.Star(), *expressions).from_(exp.to_identifier(source))


def _as(node: exp.Expression, name: str) -> exp.Alias:
    return exp.alias_(node, name, quoted=True)


def _case(subject: exp.Expression, branches: list[tuple[exp.Expression, exp.Expression]]):
    """CASE subject WHEN value THEN result ... END (null when nothing matches)."""
    case = exp.Case(this=subject)
    for value, result in branches:
        case = case.when(value, result)
    return case


# --- Statements ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stamp:
    """What every row of a run carries: its run id and when it clustered (an ISO timestamp)."""

    run_id: str
    clustered_at: str


def source_columns(columns, where: str, key: str = DEFAULTS["key_column"]) -> tuple[str, ...]:
    """The features table's columns, each a plain column name, none of ours, and none that
    BigQuery, comparing without case, would take for another (table.check_column_names)."""
    checked = tuple(check_column(str(c), f"{where}: column") for c in columns)
    ours = [c for c in checked if c.lower().startswith(INTERNAL)]
    if ours:
        raise InputError(
            f"{where}: column {ours[0]!r} starts with {INTERNAL!r}, which the warehouse "
            "engine uses for its own steps: rename it"
        )
    check_column_names(checked, key, where)
    return checked


def kept_columns(columns: tuple[str, ...]) -> tuple[str, ...]:
    """The features columns the clusters table keeps: all but those the run replaces."""
    return tuple(c for c in columns if c not in OUTPUT_COLUMNS)


def kind(model: Model, params: _Params) -> exp.Expression:
    """A row's excluded_type: a listed key first, then residents >= min_population; a blank
    population (null or NaN, which DuckDB would rank above every number) is low. Without a
    population column every row not listed is residential."""
    if model.population_column is None:
        resident = exp.true()
    else:
        population = _float(_col(model.population_column))
        resident = exp.and_(
            exp.not_(_blank(population)),
            exp.GTE(this=population, expression=number(model.min_population)),
        )
    return (
        exp.Case()
        .when(
            _listed(model.key_column, model.excluded_keys, params),
            exp.Literal.string(INSTITUTIONAL),
        )
        .when(resident, exp.Literal.string(RESIDENTIAL))
        .else_(exp.Literal.string(LOW_POPULATION))
    )


def _listed(key: str, names: tuple[str, ...], params: _Params) -> exp.Expression:
    """The key is one of the excluded names (compared as text, exactly)."""
    value = exp.cast(_col(key), "STRING", dialect=DIALECT)
    listed = params.add("excluded_keys", "ARRAY<STRING>", list(names))
    return exp.In(this=value, unnest=exp.Unnest(expressions=[listed]))


def _z(space: Space, i: int) -> exp.Expression:
    """Feature i of a row in the space's z: imputed, clipped (when the space clips), scaled."""
    value = _float(_col(space.features[i]))
    filled = exp.Case().when(_blank(value), number(space.impute[i])).else_(value)
    if space.clip is not None:
        low, high = space.clip[0][i], space.clip[1][i]
        filled = _fn("LEAST", _fn("GREATEST", filled, number(low)), number(high))
    centred = _paren(exp.Sub(this=filled, expression=number(space.center[i])))
    return exp.Div(this=centred, expression=number(space.scale[i]))


def _distance(names: list[str], point) -> exp.Expression:
    """Squared Euclidean distance from the z columns `names` to `point`, in feature order."""
    terms = [
        _fn("POW", _paren(exp.Sub(this=_col(n), expression=number(c))), integer(2))
        for n, c in zip(names, point, strict=True)
    ]
    return _sum(terms)


def _excluded_parts(model: Model):
    """(type index, type, space, ((group name, centroid), ...)) of each clustered type."""
    for t, excluded_type in enumerate(EXCLUDED_TYPES):
        part = model.excluded.get(excluded_type)
        if part is not None and part.label is None:
            yield t, excluded_type, part.space, tuple(part.groups.items())


def _scaled(source: Table, columns, model: Model, params: _Params) -> exp.Select:
    res = model.residential
    z = [_as(_z(res, i), f"{INTERNAL}z{i}") for i in range(len(res.features))]
    for t, _, space, _ in _excluded_parts(model):
        z += [_as(_z(space, i), f"{INTERNAL}e{t}_{i}") for i in range(len(space.features))]
    return exp.select(
        *(_col(c) for c in columns), _as(kind(model, params), f"{INTERNAL}kind"), *z
    ).from_(source.node)


def _distances(model: Model) -> exp.Select:
    res = [f"{INTERNAL}z{i}" for i in range(len(model.residential.features))]
    found = [_as(_distance(res, c), f"{INTERNAL}dt{t}") for t, c in model.tops.items()]
    found += [
        _as(_distance(res, c.centroid), f"{INTERNAL}ds{k}") for k, c in enumerate(model.cohorts)
    ]
    for t, _, space, groups in _excluded_parts(model):
        own = [f"{INTERNAL}e{t}_{i}" for i in range(len(space.features))]
        found += [_as(_distance(own, c), f"{INTERNAL}dg{t}_{k}") for k, (_, c) in enumerate(groups)]
    return _select(*found, source=f"{INTERNAL}scaled")


def _nearest(model: Model, params: _Params) -> exp.Select:
    """The nearest top centroid, and each excluded row's group (or its type's one label)."""
    top = _argmin([_col(f"{INTERNAL}dt{t}") for t in model.tops], [integer(t) for t in model.tops])
    branches = []
    for t, excluded_type in enumerate(EXCLUDED_TYPES):
        part = model.excluded.get(excluded_type)
        if part is None:  # no such type in the document: no group (as `assign` gives)
            continue
        if part.label is not None:
            label = params.text(f"group_{t}", part.label)
        else:
            names = list(part.groups)
            label = _argmin(
                [_col(f"{INTERNAL}dg{t}_{k}") for k in range(len(names))],
                [params.text(f"group_{t}_{k}", name) for k, name in enumerate(names)],
            )
        branches.append((exp.Literal.string(excluded_type), label))
    group = _case(_col(f"{INTERNAL}kind"), branches) if branches else _null("STRING")
    return _select(
        _as(top, f"{INTERNAL}top"), _as(group, f"{INTERNAL}group"), source=f"{INTERNAL}distances"
    )


def _subs(model: Model) -> exp.Select:
    """The nearest sub-cluster centroid among those of the row's top group."""
    branches = []
    for top in model.tops:
        mine = [(k, c.id) for k, c in enumerate(model.cohorts) if c.top == top]
        choice = _argmin(
            [_col(f"{INTERNAL}ds{k}") for k, _ in mine], [integer(sub) for _, sub in mine]
        )
        branches.append((integer(top), choice))
    chosen = _case(_col(f"{INTERNAL}top"), branches)
    return _select(_as(chosen, f"{INTERNAL}sub"), source=f"{INTERNAL}nearest")


def _fits(model: Model) -> exp.Select:
    """Distance to the row's own sub-cluster, to the nearest other one (any top group), and
    which one that is."""
    own, other, runner = [], [], []
    for k, cohort in enumerate(model.cohorts):
        rest = [(j, c.id) for j, c in enumerate(model.cohorts) if j != k]
        distances = [_col(f"{INTERNAL}ds{j}") for j, _ in rest]
        own.append((integer(cohort.id), _col(f"{INTERNAL}ds{k}")))
        if rest:
            other.append((integer(cohort.id), _least(distances)))
            runner.append((integer(cohort.id), _argmin(distances, [integer(s) for _, s in rest])))
    chosen = _col(f"{INTERNAL}sub")
    return _select(
        _as(_case(chosen, own), f"{INTERNAL}own"),
        _as(_case(chosen, other) if other else _null("FLOAT64"), f"{INTERNAL}other"),
        _as(_case(chosen, runner) if runner else _null("INT64"), f"{INTERNAL}runner"),
        source=f"{INTERNAL}subs",
    )


def _outputs(
    model: Model, stability: dict[int, float | None], stamp: Stamp, params: _Params
) -> list[exp.Alias]:
    """The cluster columns of every row (clustering/schemas/clusters_table.json)."""
    resident = exp.EQ(this=_col(f"{INTERNAL}kind"), expression=exp.Literal.string(RESIDENTIAL))
    top, sub, group = (_col(f"{INTERNAL}{n}") for n in ("top", "sub", "group"))
    runner = _col(f"{INTERNAL}runner")

    def residential(value: exp.Expression, otherwise: exp.Expression) -> exp.Expression:
        return _fn("IF", resident, value, otherwise)

    names = [(integer(c.id), params.text(f"cohort_name_{c.id}", c.name)) for c in model.cohorts]
    top_labels = [
        (integer(t), params.text(f"top_label_{t}", label)) for t, label in model.top_labels.items()
    ]
    stable = [(integer(c.id), _number_or_null(stability.get(c.id))) for c in model.cohorts]
    label = exp.DPipe(
        this=exp.Literal.string("Cluster "), expression=exp.cast(sub, "STRING", dialect=DIALECT)
    )
    return [
        _as(residential(top, integer(NO_CLUSTER)), "top_cluster"),
        _as(
            residential(_case(top, top_labels), exp.Literal.string(EXCLUDED_LABEL)),
            "top_cluster_label",
        ),
        _as(residential(sub, integer(NO_CLUSTER)), "sub_cluster"),
        _as(residential(label, group), "cluster_label"),
        _as(_col(f"{INTERNAL}kind"), "excluded_type"),
        _as(residential(_null("STRING"), group), "excluded_cluster"),
        _as(residential(_case(sub, names), group), "cohort_name"),
        _as(residential(_case(sub, stable), _null("FLOAT64")), "cohort_stability"),
        _as(residential(_margin(), _null("FLOAT64")), "fit_margin"),
        _as(residential(runner, _null("INT64")), "runner_up_cluster"),
        _as(residential(_case(runner, names), _null("STRING")), "runner_up_name"),
        _as(params.text("run_id", stamp.run_id), "run_id"),
        _as(params.add("clustered_at", "TIMESTAMP", stamp.clustered_at), "_clustered_at"),
    ]


def _margin() -> exp.Expression:
    """(b - a) / max(a, b) on Euclidean distances; 0 where both are 0."""
    a, b = (_fn("SQRT", _col(f"{INTERNAL}{n}")) for n in ("own", "other"))
    widest = _fn("GREATEST", a, b)
    quotient = exp.Div(this=_paren(exp.Sub(this=b, expression=a)), expression=widest)
    return _fn("IF", exp.GT(this=widest, expression=integer(0)), quotient, number(0.0))


def _number_or_null(value: float | None) -> exp.Expression:
    if value is None or not math.isfinite(value):
        return _null("FLOAT64")
    return number(value)


@dataclass(frozen=True)
class Scoring:
    """What the scoring writes besides the model's columns: the features columns it
    publishes (all of them when None; OUTPUT_COLUMNS applied), and with boundaries the
    staging table of shapes (`_nc_name` STRING, `_nc_shape` GEOGRAPHY) whose shape each row
    gets in `<key>_shape` (null where it has none)."""

    published: tuple[str, ...] | None = None
    shapes: Table | None = None


SHAPES_SCHEMA = (
    {"name": f"{INTERNAL}name", "type": "STRING", "mode": "NULLABLE"},
    {"name": f"{INTERNAL}shape", "type": "GEOGRAPHY", "mode": "NULLABLE"},
)


def score(
    source: Table,
    columns: tuple[str, ...],
    model: Model,
    stability: dict[int, float | None],
    stamp: Stamp,
    scoring: Scoring = Scoring(),
) -> Statement:
    """Every row of `source` (its `columns`, validated by source_columns) with the cluster
    columns the model document gives it: one SELECT over the whole table. `stability` holds
    each cohort's cohort_stability by stable id. A column left out of `scoring.published`
    is read only when the model needs it, and never written."""
    missing = [c for c in model.columns if c not in columns]
    if missing:
        raise InputError(
            f"{source.id} has no column {missing[0]!r}, which the model document needs: "
            "restore the column or run with the features the table has"
        )
    published = columns if scoring.published is None else scoring.published
    read = tuple(c for c in columns if c in published or c in model.columns)
    params = _Params()
    steps = (
        ("scaled", _scaled(source, read, model, params)),
        ("distances", _distances(model)),
        ("nearest", _nearest(model, params)),
        ("subs", _subs(model)),
        ("fits", _fits(model)),
    )
    outputs = _outputs(model, stability, stamp, params)
    query = exp.select(*(_col(c) for c in kept_columns(published)), *outputs)
    query = query.from_(exp.to_identifier(f"{INTERNAL}fits"))
    if scoring.shapes is not None:
        query = _with_shapes(query, scoring.shapes, model.key_column)
    for name, step in steps:
        query = query.with_(f"{INTERNAL}{name}", as_=step)
    return _statement(query, params)


def _with_shapes(query: exp.Select, shapes: Table, key: str) -> exp.Select:
    """Each row's shape from the shapes table, matched by the key as text."""
    name = exp.cast(_col(key), "STRING", dialect=DIALECT)
    query = query.select(_as(_col(f"{INTERNAL}shape"), shape_column(key)))
    return query.join(
        shapes.node,
        on=exp.EQ(this=name, expression=_col(f"{INTERNAL}name")),
        join_type="LEFT",
    )


def key_hash(key: str) -> exp.Expression:
    """A deterministic 60-bit hash of the key alone: the first 15 hex digits of its MD5 as an
    INT64. FARM_FINGERPRINT would do in BigQuery, but the emulator runs it 15x slower."""
    digest = _fn("TO_HEX", _fn("MD5", exp.cast(_col(key), "STRING", dialect=DIALECT)))
    hexadecimal = _fn(
        "CONCAT", exp.Literal.string("0x"), _fn("SUBSTR", digest, integer(1), integer(15))
    )
    return exp.cast(hexadecimal, "INT64", dialect=DIALECT)


SAMPLE_RULE = (
    "every row whose key is an excluded name, then the rows with the smallest hash of the key "
    "(the first 15 hex digits of MD5(CAST(key AS STRING)) as an integer; ties by key) up to "
    "SAMPLE_ROWS rows"
)


def sample(
    source: Table, columns: tuple[str, ...], key: str, excluded: tuple[str, ...], limit: int
) -> Statement:
    """The fitting sample: the same keys run after run (a hash of the key alone decides), and
    always the rows of the `excluded` names, whose group the model must know."""
    params = _Params()
    first = _fn("IF", _listed(key, excluded, params), integer(0), integer(1))
    query = (
        exp.select(*(_col(c) for c in columns))
        .from_(source.node)
        .order_by(first, key_hash(key), _col(key))
        .limit(integer(limit))
    )
    return _statement(query, params)


def transitions(
    staged: Table, current: Table, key: str, runs: tuple[str, str], margins: bool
) -> Statement:
    """The rows (by `key`) whose cohort (or excluded type) differs between the clusters table
    as published and the staged rows, and those that appeared or disappeared; `runs` is
    (previous run id, this run id). Each says whether it was borderline in the published
    table (its fit_margin below BORDERLINE_MARGIN), when that table has `margins`."""
    previous_run_id, run_id = runs
    params = _Params()
    new, old = exp.to_identifier("n", quoted=True), exp.to_identifier("o", quoted=True)

    def side(alias, name: str) -> exp.Column:
        return exp.column(name, table=alias, quoted=True)

    new_key, old_key = side(new, key), side(old, key)
    absent_old = exp.Is(this=old_key, expression=exp.null())
    absent_new = exp.Is(this=new_key, expression=exp.null())
    change = (
        exp.Case()
        .when(absent_old, exp.Literal.string("appeared"))
        .when(absent_new, exp.Literal.string("disappeared"))
        .else_(exp.Literal.string("moved"))
    )
    borderline = _was_borderline(side(old, "fit_margin")) if margins else _null("BOOL")
    differs = [
        exp.NullSafeNEQ(this=side(new, c), expression=side(old, c))
        for c in ("sub_cluster", "excluded_type")
    ]
    query = (
        exp.select(
            _as(
                exp.cast(_fn("COALESCE", new_key, old_key), "STRING", dialect=DIALECT),
                key,
            ),
            _as(params.text("previous_run_id", previous_run_id), "previous_run_id"),
            _as(params.text("run_id", run_id), "run_id"),
            _as(side(old, "top_cluster"), "previous_top_cluster"),
            _as(side(old, "sub_cluster"), "previous_sub_cluster"),
            _as(side(old, "cohort_name"), "previous_cohort_name"),
            _as(side(new, "top_cluster"), "top_cluster"),
            _as(side(new, "sub_cluster"), "sub_cluster"),
            _as(side(new, "cohort_name"), "cohort_name"),
            _as(change, "change"),
            _as(borderline, "previously_borderline"),
        )
        .from_(exp.alias_(staged.node, new))
        .join(
            exp.alias_(current.node, old),
            on=exp.EQ(this=new_key, expression=old_key),
            join_type="FULL OUTER",
        )
        .where(exp.or_(absent_old, absent_new, *differs))
    )
    return _statement(query, params)


def _was_borderline(margin: exp.Expression) -> exp.Expression:
    """Null where the published row had no margin (excluded, or not there), else whether it
    was below BORDERLINE_MARGIN."""
    below = exp.LT(this=margin, expression=number(BORDERLINE_MARGIN))
    return _fn("IF", _blank(margin), _null("BOOL"), below)


def transition_counts(
    staged: Table, stable: tuple[int, ...], distressed: tuple[int, ...]
) -> Statement:
    """How many moved, appeared and disappeared, and how many moved between the Stable and
    the Distressed top groups each way (by stable top ids, which the identity matching keeps)."""

    def among(column: str, ids: tuple[int, ...]) -> exp.Expression:
        if not ids:
            return exp.false()
        return exp.In(this=_col(column), expressions=[integer(i) for i in ids])

    def count(*conditions) -> exp.Expression:
        return _fn("COUNTIF", exp.and_(*conditions))

    def change(value: str) -> exp.Expression:
        return exp.EQ(this=_col("change"), expression=exp.Literal.string(value))

    query = exp.select(
        _as(count(change("moved")), "moved"),
        _as(
            count(
                change("moved"),
                among("previous_top_cluster", stable),
                among("top_cluster", distressed),
            ),
            "stable_to_distressed",
        ),
        _as(
            count(
                change("moved"),
                among("previous_top_cluster", distressed),
                among("top_cluster", stable),
            ),
            "distressed_to_stable",
        ),
        _as(count(change("appeared")), "appeared"),
        _as(count(change("disappeared")), "disappeared"),
    ).from_(staged.node)
    return _statement(query)


def summary(staged: Table, features: tuple[str, ...]) -> Statement:
    """Rows per cohort (and per excluded group) over the whole table, with each feature's
    mean and count of values (blanks left out, as pandas' mean does): column mean_<i> and
    values_<i> for features[i]."""
    keys = ("excluded_type", "top_cluster", "sub_cluster", "excluded_cluster")
    aggregates = [_as(_fn("COUNT", exp.Star()), "rows")]
    for i, feature in enumerate(features):
        value = _float(_col(feature))
        kept = _fn("IF", _blank(value), _null("FLOAT64"), value)
        aggregates += [_as(_fn("AVG", kept), f"mean_{i}"), _as(_fn("COUNT", kept), f"values_{i}")]
    query = (
        exp.select(*(_col(k) for k in keys), *aggregates)
        .from_(staged.node)
        .group_by(*(_col(k) for k in keys))
    )
    return _statement(query)


def export(staged: Table, uri: str, fields: tuple[tuple[str, str], ...], where=None) -> Statement:
    """EXPORT DATA of `staged`'s `fields` ((name, BigQuery type) pairs) as CSV shards with a
    header at `uri`, a gs:// path ending in -*.csv. Never overwrites: each run's folder is
    new. Text cells are formula-safe as the memory engine's CSVs are (table.escape_cell):
    a leading = + - @ ' or control character gets a "'" before it; the header is safe as it
    is, since a column name starts with a letter or _ (settings.COLUMN_PATTERN)."""
    if not EXPORT_URI.fullmatch(uri):
        raise InputError(f"{uri!r} is not a gs:// path the export can write to")
    selected = [
        _as(_escaped(_col(name)), name) if kind == "STRING" else _col(name) for name, kind in fields
    ]
    query = exp.select(*selected).from_(staged.node)
    if where is not None:
        query = query.where(where)
    options = exp.Properties(
        expressions=[
            exp.Property(this=exp.var("uri"), value=exp.Literal.string(uri)),
            exp.FileFormatProperty(this=exp.Literal.string("CSV")),
            exp.Property(this=exp.var("header"), value=exp.true()),
            exp.Property(this=exp.var("overwrite"), value=exp.false()),
        ]
    )
    return _statement(exp.Export(this=query, options=options))


# FORMULA_STARTS split as SQL tests it: the printable characters by name, the control ones
# (code points 0-31) by their code point.
_PRINTABLE_STARTS = tuple(sorted(c for c in FORMULA_STARTS if ord(c) >= 32))
_CONTROL_BELOW = max(ord(c) for c in FORMULA_STARTS if ord(c) < 32) + 1


def _escaped(value: exp.Expression) -> exp.Expression:
    """A text value as table.escape_cell writes it (null and "" unchanged)."""
    first = exp.Substring(this=value, start=integer(1), length=integer(1))
    printable = exp.In(this=first, expressions=[exp.Literal.string(c) for c in _PRINTABLE_STARTS])
    control = exp.LT(this=_fn("UNICODE", value), expression=integer(_CONTROL_BELOW))
    formula = exp.and_(
        exp.NEQ(this=value, expression=exp.Literal.string("")), _paren(exp.or_(printable, control))
    )
    return _fn("IF", formula, _fn("CONCAT", exp.Literal.string("'"), value), value)


def now() -> Statement:
    """One row: BigQuery's clock (`now`), the time a snapshot is pinned to."""
    return _statement(exp.select(_as(exp.CurrentTimestamp(), "now")))


def boundaries(table: Table, name: str, shape: str) -> Statement:
    """(name, geometry) rows of a boundaries table: its `name` column as text and its
    GEOGRAPHY `shape` column as GeoJSON."""
    name, shape = (check_column(c, "boundaries column") for c in (name, shape))
    text = exp.cast(_col(name), "STRING", dialect=DIALECT)
    query = exp.select(_as(text, "name"), _as(_fn("ST_ASGEOJSON", _col(shape)), "geometry")).from_(
        table.node
    )
    return _statement(query)


def shapes(table: Table, name: str, shape: str) -> Statement:
    """A boundaries table's rows as SHAPES_SCHEMA's: the name as text and the GEOGRAPHY."""
    name, shape = (check_column(c, "boundaries column") for c in (name, shape))
    text = exp.cast(_col(name), "STRING", dialect=DIALECT)
    query = exp.select(_as(text, f"{INTERNAL}name"), _as(_col(shape), f"{INTERNAL}shape"))
    return _statement(query.from_(table.node))


def excluded_rows() -> exp.Expression:
    """The rows of excluded_neighborhood_analysis.csv: those not clustered as residential."""
    return exp.NEQ(this=_col("excluded_type"), expression=exp.Literal.string(RESIDENTIAL))


def checks(source: Table, key: str) -> Statement:
    """One row: the table's rows, its distinct keys and its blank keys (one row per key is
    the table's contract). Reads the key column alone."""
    value = exp.cast(_col(key), "STRING", dialect=DIALECT)
    blank = exp.or_(
        exp.Is(this=value, expression=exp.null()),
        exp.EQ(this=_fn("TRIM", value), expression=exp.Literal.string("")),
    )
    query = exp.select(
        _as(_fn("COUNT", exp.Star()), "rows"),
        _as(exp.Count(this=exp.Distinct(expressions=[value])), "keys"),
        _as(_fn("COUNTIF", blank), "blank_keys"),
    ).from_(source.node)
    return _statement(query)


def first_rows(source: Table, order: str, limit: int) -> Statement:
    """The first `limit` rows of a (small) table by `order`."""
    query = exp.select(exp.Star()).from_(source.node).order_by(_col(order)).limit(integer(limit))
    return _statement(query)


def project(source: Table, columns: tuple[str, ...]) -> Statement:
    """`columns` of every row of `source`: the scored rows without the columns
    OUTPUT_COLUMNS withholds, for the clusters table and the CSVs."""
    return _statement(exp.select(*(_col(c) for c in columns)).from_(source.node))


def append(source: Table, destination: Table, key: str = "neighborhood") -> Statement:
    """INSERT the rows of `source` into `destination`, column by name (the transitions table's
    columns, keyed by `key`). DML rather than a copy job: it checks REQUIRED columns row by row,
    where a copy would refuse the staging table's NULLABLE schema."""
    names = transition_columns(key)
    columns = [_col(c) for c in names]
    select = exp.select(*columns).from_(source.node)
    target = exp.Schema(
        this=destination.node,
        expressions=[exp.to_identifier(c, quoted=True) for c in names],
    )
    return _statement(exp.insert(select, target))
