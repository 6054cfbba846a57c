"""The warehouse engine's run (DESIGN.md, "Engines"; clustering.engines chooses it).

The sample is read with one query and analysed in this process exactly as the memory engine
analyses a whole table; the model document is applied to every row inside BigQuery into a
staging table; the transitions are derived there against the clusters table as published,
and one GROUP BY counts every cohort's rows. Publishing exports the CSVs (EXPORT DATA) into
runs/<id>/, copies the staging table over the clusters table in one atomic copy job, appends
the transitions and switches latest/, fenced as the memory engine's publishing is
(clustering.job._publish). No step reads all rows into the function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from clustering import InputError
from clustering.engines import Choice
from clustering.settings import WAREHOUSE, JobSettings, bq_table_id

# Transitions listed in the report of a warehouse run (all of them are in the table).
LISTED_TRANSITIONS = 200


def run_warehouse(run, store, pointer: bytes | None, pointer_token, choice: Choice):
    """One run on the warehouse engine (the module docstring); a RunReport as run_job's."""
    from clustering.adapters import warehouse

    tables = _Tables.of(run.settings, run.run_id)
    jobs = warehouse.Jobs(
        project=tables.source.split(".")[0],
        run_id=run.run_id,
        maximum_bytes_billed=run.settings.maximum_bytes_billed,
    )
    try:
        return _run(run, store, pointer, pointer_token, _Context(choice, tables, jobs))
    finally:
        _drop(tables)


@dataclass(frozen=True)
class _Tables:
    """The tables of one warehouse run: the source, the published ones and the staging ones."""

    source: str
    clusters: str
    transitions: str | None
    staged: str
    staged_moves: str

    @classmethod
    def of(cls, settings: JobSettings, run_id: str) -> _Tables:
        stem = f"{settings.staging}.nc_staged_{run_id.replace('-', '_')}"
        moves = settings.transitions_table
        return cls(
            source=bq_table_id(settings.features_source, "FEATURES_SOURCE"),
            clusters=bq_table_id(settings.clusters_table, "CLUSTERS_TABLE"),
            transitions=bq_table_id(moves, "TRANSITIONS_TABLE") if moves else None,
            staged=f"{stem}_clusters",
            staged_moves=f"{stem}_transitions",
        )


@dataclass(frozen=True)
class _Context:
    choice: Choice
    tables: _Tables
    jobs: object  # clustering.adapters.warehouse.Jobs (imported where the engine runs)


@dataclass(frozen=True)
class _Scored:
    """What the queries over every row found: the summary (rows and feature means per
    cohort) and, with a previous run, the transitions' counts and first rows."""

    summary: object  # a DataFrame (warehouse_sql.summary)
    counts: object | None  # clustering.analysis.transitions.Counts
    listed: object | None  # a DataFrame of the first transitions, by name


def _run(run, store, pointer, pointer_token, context: _Context):
    from clustering.job import MANIFEST, RunReport, _json_bytes

    done, model = _analyse(run, store, pointer, context)
    dry_run = run.request.dry_run
    prefix = None if dry_run else store.describe(f"runs/{run.run_id}/")
    exported: dict[str, str] = {}

    def manifest(timings: dict[str, float]) -> dict:
        return _manifest(run, done, model, timings, prefix, exported, context)

    if dry_run:
        return RunReport(run.run_id, "dry_run", manifest(run.clock.done()), None)
    run.clock.stage("export", f"exporting every row to {prefix}")
    exported |= _export(run, store, context)
    run.clock.stage("publish", f"publishing run {run.run_id}")
    done.files[MANIFEST] = _json_bytes(manifest(dict(run.clock.timings)))
    _publish(run, store, done.files, pointer_token, context)
    return RunReport(run.run_id, "succeeded", manifest(run.clock.done()), prefix)


def _analyse(run, store, pointer, context: _Context):
    """The sample read, the fit, the scoring of every row, the counts; charts and report."""
    from clustering import job
    from clustering.analysis.document import fitted_model, through_model
    from clustering.outputs import charts, report

    with charts.ChartRenderer() as renderer:
        given = _read_sample(run, pointer, context)
        previous = job._previous(store, pointer, run.settings.analysis.key_column, with_rows=False)
        run.clock.stage("cluster", f"clustering the sample of {len(given.frame):,} rows")
        result = job._cluster(run, renderer, given)
        identity = job._identify(result, previous, run, job._named_drawer(run, renderer, given))
        model = fitted_model(identity, run.settings.analysis)
        identity = through_model(identity, model)
        for warning in result.warnings + identity.warnings:
            run.warn(warning)
        scored = _score(run, context, identity, model, previous)
        identity = _with_counts(identity, scored)
        run.clock.stage("charts", "drawing charts")
        view = job.cohort_view(identity, run.settings.analysis)
        view = replace(view, sizes=_sizes(scored.summary, identity))
        job._submit(renderer, charts.heatmap_task(view))
        warnings = given.warnings + result.warnings + identity.warnings
        facts = _facts(run, identity, warnings, scored)
        job._submit(renderer, job.report_task(facts, identity.result, view, given.boundaries))
        files = renderer.collect(job._time_left())
        files[job.HTML_REPORT] = report.embed(files[job.HTML_REPORT], files)
    return job._Analysed(given, identity, None, files, None), model


def _read_sample(run, pointer, context: _Context):
    """The table checked (one row per key), guarded against a row drop by its full count,
    then the sample read with one query and validated as the memory engine validates."""
    from clustering import job
    from clustering.adapters import warehouse
    from clustering.adapters import warehouse_sql as sql
    from clustering.table import validate_features

    settings, source = run.settings, f"bq://{context.tables.source}"
    analysis = settings.analysis
    key = analysis.key_column
    table = sql.Table(context.tables.source)
    columns = sql.source_columns(context.choice.columns, source)
    run.clock.stage("read", f"checking {source} ({context.choice.rows:,} rows)")
    checks = warehouse.read(context.jobs, "checks", sql.checks(table, key)).iloc[0]
    _check_keys(source, checks, key)
    job.check_row_drop(
        int(checks["rows"]),
        job._manifest_of(pointer),
        settings.min_rows_ratio,
        run.request.force,
        source,
    )
    wanted = {key, analysis.population_column, *analysis.clustering_features}
    wanted.add(analysis.severity_feature)
    needed = tuple(c for c in columns if c in wanted)
    run.clock.progress(f"reading a sample of {settings.sample_rows:,} rows from {source}")
    statement = sql.sample(table, needed, key, analysis.excluded_names, settings.sample_rows)
    frame = warehouse.read(context.jobs, "sample", statement)
    where = f"{source} (sample)"
    run.clock.stage("validate", f"validating the sample of {len(frame):,} rows")
    valid = validate_features(frame, analysis, where)
    boundaries, map_warnings = job._boundaries(settings, valid.frame)
    warnings = tuple(valid.warnings) + tuple(map_warnings)
    for warning in warnings:
        run.warn(warning)
    for note in valid.notes:
        run.clock.progress(f"note: {note}")
    return job._Input(valid.frame, where, boundaries, warnings, valid.notes)


def _check_keys(source: str, checks, key: str) -> None:
    """One row per key, none blank: what the memory engine's validation refuses too."""
    blank, rows, keys = (int(checks[c]) for c in ("blank_keys", "rows", "keys"))
    if blank:
        raise InputError(f"{source}: {key} is blank in {blank:,} rows: give every row a name")
    if keys != rows:
        raise InputError(
            f"{source}: {rows - keys:,} rows repeat a {key} of another row: keep one row per {key}"
        )


def _score(run, context: _Context, identity, model, previous) -> _Scored:
    """Every row assigned into the staging table; the transitions against the published
    table (with a previous run); the counts over every row."""
    from clustering.adapters import warehouse
    from clustering.adapters import warehouse_sql as sql
    from clustering.table import table_schema

    tables, jobs = context.tables, context.jobs
    analysis = run.settings.analysis
    key = analysis.key_column
    run.clock.stage("scoring", f"assigning every row of {tables.source} inside BigQuery")
    schema = staging_schema(context.choice.schema, key, analysis.population_column)
    warehouse.create_table(tables.staged, schema)
    stamp = sql.Stamp(run.run_id, run.started.isoformat())
    stability = {c.sub_cluster: _finite_or_none(c.stability) for c in identity.cohorts}
    columns = sql.source_columns(context.choice.columns, tables.source)
    statement = sql.score(sql.Table(tables.source), columns, model, stability, stamp)
    warehouse.query(jobs, "score", statement, tables.staged, "WRITE_APPEND")
    counts = listed = None
    published = warehouse.columns(tables.clusters) if previous is not None else None
    if published is not None:
        run.clock.stage("transitions", f"comparing every row with {tables.clusters}")
        moves_schema = _nullable(table_schema("transitions_table", key))
        warehouse.create_table(tables.staged_moves, moves_schema)
        moves = sql.transitions(
            sql.Table(tables.staged),
            sql.Table(tables.clusters),
            key,
            (previous.run_id, run.run_id),
            margins="fit_margin" in published,
        )
        warehouse.query(jobs, "transitions", moves, tables.staged_moves, "WRITE_APPEND")
        counts, listed = _moves(jobs, tables, identity, previous, key)
    run.clock.stage("summary", "counting every cohort's rows")
    features = tuple(identity.result.features.used)
    summary = warehouse.read(jobs, "summary", sql.summary(sql.Table(tables.staged), features))
    return _Scored(summary, counts, listed)


def _moves(jobs, tables: _Tables, identity, previous, key: str):
    """The transitions' counts (Stable/Distressed by the top groups' labels, this run's and
    the previous one's) and the first of them by name, for the report."""
    from clustering.adapters import warehouse
    from clustering.adapters import warehouse_sql as sql
    from clustering.analysis.model import DISTRESSED, STABLE
    from clustering.analysis.transitions import Counts

    labels = {g.top: g.label for g in identity.result.top_groups}
    labels |= {t.id: t.label for t in previous.tops}
    stable = tuple(sorted(t for t, label in labels.items() if label == STABLE))
    distressed = tuple(sorted(t for t, label in labels.items() if label == DISTRESSED))
    staged = sql.Table(tables.staged_moves)
    found = warehouse.read(
        jobs, "transition_counts", sql.transition_counts(staged, stable, distressed)
    ).iloc[0]
    counts = Counts(**{name: int(found[name]) for name in Counts.__dataclass_fields__})
    first = sql.first_rows(staged, key, LISTED_TRANSITIONS)
    return counts, warehouse.read(jobs, "transition_rows", first)


def staging_schema(
    source: tuple[dict, ...], key: str = "neighborhood", population: str = "population"
) -> list[dict]:
    """The staging table's schema: the features columns it keeps, then the cluster columns
    as clustering/schemas declares them; every field NULLABLE, since a query's result is."""
    from clustering.adapters.warehouse_sql import OUTPUT_COLUMNS, kept_columns
    from clustering.table import table_schema

    declared = {f["name"]: f for f in table_schema("clusters_table", key, population)}
    kept = set(kept_columns(tuple(f["name"] for f in source)))
    fields = [f for f in source if f["name"] in kept]
    return _nullable([*fields, *(declared[c] for c in OUTPUT_COLUMNS)])


def _nullable(fields) -> list[dict]:
    return [f | {"mode": "NULLABLE"} if f.get("mode") == "REQUIRED" else dict(f) for f in fields]


def _finite_or_none(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _with_counts(identity, scored: _Scored):
    """The identity with the counts of every row: each cohort's and top group's rows and
    index scores, and the transitions' counts and first rows."""
    from clustering.analysis.cohorts import INDEX, index_scores

    summary = scored.summary
    features = list(identity.result.features.used)
    residential = summary[summary["excluded_type"] == "Residential"]
    means, overall = _means(residential, features, by="sub_cluster")
    rows = residential.groupby("sub_cluster")["rows"].sum()
    # Index scores over every row, for the features the sample describes by an index (the
    # signed ones keep the sample's standard deviations).
    indexed = [f for f in features if identity.measures.get(f) == INDEX]
    cohorts = tuple(
        replace(
            c,
            rows=int(rows.get(c.sub_cluster, 0)),
            index_scores=index_scores(means.loc[c.sub_cluster], overall, indexed)
            if c.sub_cluster in means.index
            else c.index_scores,
        )
        for c in identity.cohorts
    )
    by_top = residential.groupby("top_cluster")["rows"].sum()
    by_type = summary.groupby("excluded_type")["rows"].sum()
    result = identity.result
    result = replace(
        result,
        top_groups=tuple(replace(g, size=int(by_top.get(g.top, 0))) for g in result.top_groups),
        excluded_groups=tuple(
            replace(g, size=int(by_type.get(g.excluded_type, 0))) for g in result.excluded_groups
        ),
    )
    return replace(
        identity, result=result, cohorts=cohorts, counts=scored.counts, transitions=scored.listed
    )


def _means(rows, features: list[str], by: str):
    """Each group's feature means and the overall means, weighted by each mean's count of
    values (blanks left out, as pandas' mean leaves them)."""
    import pandas as pd

    means, overall = {}, {}
    for i, feature in enumerate(features):
        values, mean = rows[f"values_{i}"].astype("float64"), rows[f"mean_{i}"].astype("float64")
        total = (values * mean.fillna(0)).groupby(rows[by]).sum()
        count = values.groupby(rows[by]).sum()
        means[feature] = total / count.where(count > 0)
        overall[feature] = total.sum() / count.sum() if count.sum() else float("nan")
    return pd.DataFrame(means), pd.Series(overall)


def _sizes(summary, identity) -> dict[str, int]:
    """Rows per cohort label (as the pictures name cohorts) over the whole table."""
    from clustering.outputs.palette import cohort_labels

    table = identity.table
    labels = cohort_labels(table)
    named = dict(zip(labels, table["sub_cluster"].astype("int64"), strict=True))
    groups = dict(zip(labels, table["cohort_name"], strict=True))
    residential = summary[summary["excluded_type"] == "Residential"]
    by_sub = residential.groupby("sub_cluster")["rows"].sum()
    by_group = summary[summary["excluded_type"] != "Residential"].groupby("excluded_cluster")
    by_group = by_group["rows"].sum()
    sizes = {}
    for label in set(labels):
        excluded = table.loc[labels == label, "top_cluster_label"].iloc[0] == "Excluded"
        found = by_group.get(groups[label]) if excluded else by_sub.get(named[label])
        sizes[label] = int(found or 0)
    return sizes


def _facts(run, identity, warnings, scored: _Scored):
    """The report's header with the whole table's counts and what the sample was."""
    from clustering import job

    summary = scored.summary
    rows = int(summary["rows"].sum())
    residential = int(summary.loc[summary["excluded_type"] == "Residential", "rows"].sum())
    sampled = len(identity.table)
    facts = job.report_facts(run, identity.result, warnings)
    counts = scored.counts
    return replace(
        facts,
        rows=rows,
        residential_rows=residential,
        excluded_rows=rows - residential,
        sample=f"drawn from a sample of {sampled:,} of {rows:,} rows",
        changes=counts.moved + counts.appeared + counts.disappeared if counts else None,
    )


def _export(run, store, context: _Context) -> dict[str, str]:
    """EXPORT DATA of the run's CSVs into runs/<id>/ as shards (`<name>-*.csv`): artifact
    name -> the shards' URI pattern. A local --out gets no CSV: the rows stay in BigQuery,
    which the run says."""
    from clustering.adapters import warehouse
    from clustering.adapters import warehouse_sql as sql
    from clustering.naming import CSV_CLUSTERS, CSV_EXCLUDED, CSV_TRANSITIONS

    tables, jobs = context.tables, context.jobs
    folder = store.describe(f"runs/{run.run_id}/")
    if not folder.startswith("gs://"):
        where = f"bq://{tables.clusters}" + (
            f" and bq://{tables.transitions}" if tables.transitions else ""
        )
        run.clock.progress(
            f"the rows are in {where}: with a local --out the warehouse engine writes no CSV "
            "of them (ARTIFACTS_DEST=gs://... gets them as EXPORT DATA shards)"
        )
        return {}
    run.fence("exporting the rows")
    columns = sql.kept_columns(sql.source_columns(context.choice.columns, tables.source))
    parts = [
        (CSV_CLUSTERS, tables.staged, None, None),
        (CSV_EXCLUDED, tables.staged, (*columns, "excluded_type", "excluded_cluster"), True),
    ]
    if warehouse.exists(tables.staged_moves):
        parts.append((CSV_TRANSITIONS, tables.staged_moves, None, None))
    exported = {}
    for name, staged, selected, excluded_only in parts:
        uri = f"{folder}{name.removesuffix('.csv')}-*.csv"
        where = sql.excluded_rows() if excluded_only else None
        statement = sql.export(sql.Table(staged), uri, selected, where)
        warehouse.query(jobs, f"export_{name.removesuffix('.csv')}", statement)
        exported[name] = uri
    return exported


def _publish(run, store, files: dict[str, bytes], pointer_token, context: _Context) -> None:
    """The memory engine's publishing steps (clustering.job._publish) with BigQuery's own:
    the staging table copied over the clusters table, the transitions appended by a query."""
    from clustering import job
    from clustering.adapters import warehouse
    from clustering.adapters import warehouse_sql as sql
    from clustering.table import table_schema

    tables, jobs = context.tables, context.jobs

    def load() -> None:
        warehouse.copy(jobs, "replace", tables.staged, tables.clusters, "WRITE_TRUNCATE")

    key = run.settings.analysis.key_column

    def move() -> None:
        if tables.transitions is None or not warehouse.exists(tables.staged_moves):
            return
        run.fence("appending the transitions")
        if not warehouse.exists(tables.transitions):  # Terraform creates it; the CLI may not
            schema = list(table_schema("transitions_table", key))
            warehouse.create_table(tables.transitions, schema)
        statement = sql.append(sql.Table(tables.staged_moves), sql.Table(tables.transitions), key)
        warehouse.query(jobs, "append_transitions", statement)

    job._publish(run, store, files, pointer_token, load, move)


def _drop(tables: _Tables) -> None:
    """Drop the staging tables, with a budget of its own (a run stopped by its deadline
    drops them too); a table left behind expires with its dataset's default expiration."""
    from contextlib import suppress

    from clustering.adapters import budget, warehouse

    with budget.bounded(budget.Budget.lasting(budget.FINAL_STEP_SECONDS)):
        for table in (tables.staged, tables.staged_moves):
            with suppress(Exception):
                warehouse.drop(table)


def _manifest(run, done, model, timings, prefix, exported, context: _Context) -> dict:
    """run.json as the memory engine writes it, with the whole table's counts, the model
    document and where the exported rows are."""
    from clustering import job
    from clustering.adapters.warehouse_sql import SAMPLE_RULE
    from clustering.analysis.document import document

    manifest = job._manifest(run, done, timings, prefix)
    sample = {
        "rows": len(done.identity.table),
        "of_rows": sum(g.size for g in done.identity.result.top_groups)
        + sum(g.size for g in done.identity.result.excluded_groups),
        "rule": SAMPLE_RULE,
    }
    manifest["engine"] = WAREHOUSE
    manifest["model"] = document(model, engine=WAREHOUSE, sample=sample)
    manifest["input"] |= _input_counts(done.identity.result, sample)
    manifest["outputs"]["exported"] = exported
    manifest["outputs"]["report"] = None if prefix is None else f"{prefix}{job.HTML_REPORT}"
    manifest["outputs"]["staging"] = context.tables.staged
    return manifest


def _input_counts(result, sample: dict) -> dict:
    by_type = {g.excluded_type: g.size for g in result.excluded_groups}
    residential = sum(g.size for g in result.top_groups)
    return {
        "rows": sample["of_rows"],
        "residential_rows": residential,
        "excluded_rows": sum(by_type.values()),
        "rows_by_type": {t: n for t, n in {"Residential": residential, **by_type}.items() if n},
        "sample_rows": sample["rows"],
    }
