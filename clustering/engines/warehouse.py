"""The warehouse engine (DESIGN.md, "Engines"; clustering.engines chooses it).

The key-hashed sample is read with one query and fitted in this process as the memory engine
fits a whole table; the model document is applied to every row inside BigQuery into a staging
table; the transitions are derived there against the clusters table as published, and one
GROUP BY counts every cohort's rows. Publishing exports the CSVs (EXPORT DATA) into runs/<id>/
and copies the staging table over the clusters table in one atomic copy job; the stages
around all of it (validation, identity, publishing, history) are every run's
(clustering.job). No step reads all rows into this process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from clustering import InputError
from clustering.engines.choice import Choice
from clustering.settings import WAREHOUSE, JobSettings, bq_table_id
from clustering.stages.context import Analysed, Counts, Input, NotSettled, Rows, Run
from clustering.stages.publish import Steps
from clustering.table import shape_column

# Transitions listed in the report of a warehouse run (all of them are in the table).
LISTED_TRANSITIONS = 200


@dataclass(frozen=True)
class Tables:
    """The tables of one warehouse run: the source, the published ones and the staging ones."""

    source: str
    clusters: str
    transitions: str | None
    staged: str
    staged_moves: str
    staged_shapes: str
    scored: str  # every column scored, when OUTPUT_COLUMNS withholds some from `staged`

    @classmethod
    def of(cls, settings: JobSettings, run_id: str) -> Tables:
        stem = f"{settings.staging}.nc_staged_{run_id.replace('-', '_')}"
        moves = settings.transitions_table
        return cls(
            source=bq_table_id(settings.features_source, "FEATURES_SOURCE"),
            clusters=bq_table_id(settings.clusters_table, "CLUSTERS_TABLE"),
            transitions=bq_table_id(moves, "TRANSITIONS_TABLE") if moves else None,
            staged=f"{stem}_clusters",
            staged_moves=f"{stem}_transitions",
            staged_shapes=f"{stem}_shapes",
            scored=f"{stem}_scored",
        )

    @property
    def staging(self) -> tuple[str, ...]:
        return (self.staged, self.staged_moves, self.staged_shapes, self.scored)


@dataclass(frozen=True)
class _Scored:
    """What the queries over every row found: the summary (rows and feature means per
    cohort) and, with a previous run, the transitions' counts and first rows."""

    summary: object  # a DataFrame (warehouse_sql.summary)
    counts: object | None  # clustering.analysis.transitions.Counts
    listed: object | None  # a DataFrame of the first transitions, by name


@dataclass
class WarehouseEngine:
    """One warehouse run's engine: its tables, its jobs, and the state of the source it read
    (`version`, recorded first; every later check compares with it)."""

    choice: Choice
    tables: Tables
    jobs: object  # clustering.adapters.warehouse.Jobs
    name: str = WAREHOUSE
    version: tuple | None = None
    columns: tuple[str, ...] = field(default=())  # the source's, validated
    published: tuple[str, ...] = field(default=())  # those OUTPUT_COLUMNS keeps
    pinned: object = None  # warehouse_sql.Table at the snapshot's time (set by `read`)

    @classmethod
    def open(cls, run: Run, choice: Choice) -> WarehouseEngine:
        from clustering.adapters import warehouse

        tables = Tables.of(run.settings, run.run_id)
        jobs = warehouse.Jobs(
            project=tables.source.split(".")[0],
            run_id=run.run_id,
            maximum_bytes_billed=run.settings.maximum_bytes_billed,
        )
        return cls(choice, tables, jobs)

    def read(self, run: Run, pointer: bytes | None) -> Rows:
        """The table's state recorded and settled, its keys checked over every row, then the
        sample read with one query."""
        from clustering.adapters import warehouse
        from clustering.adapters import warehouse_sql as sql
        from clustering.stages.guards import check_settled
        from clustering.table import check_schema, withheld_columns

        settings, source = run.settings, f"bq://{self.tables.source}"
        analysis = settings.analysis
        key = analysis.key_column
        columns = self.columns = sql.source_columns(self.choice.columns, source, key)
        withheld = set(withheld_columns(columns, settings.output_columns, key))
        self.published = tuple(c for c in columns if c not in withheld)
        run.clock.stage("read", f"checking {source} ({self.choice.rows:,} rows)")
        check_schema(self.choice.schema, analysis, source)
        self.version = warehouse.modified(self.tables.source)
        check_settled(source, self.version, self.version, settings.settle_seconds)
        # Every later statement reads this one state of the table, whatever lands meanwhile.
        table = self.pinned = warehouse.snapshot(self.jobs, self.tables.source)
        checks = warehouse.read(self.jobs, "checks", sql.checks(table, key)).iloc[0]
        _check_keys(source, checks, key)
        wanted = {key, analysis.population_column, *analysis.clustering_features}
        wanted.add(analysis.severity_feature)
        needed = tuple(c for c in columns if c in wanted)
        run.clock.progress(f"reading a sample of {settings.sample_rows:,} rows from {source}")
        statement = sql.sample(table, needed, key, analysis.excluded_names, settings.sample_rows)
        frame = warehouse.read(self.jobs, "sample", statement)
        return Rows(frame, source, int(checks["rows"]), columns)

    def previous(self, run: Run, store, pointer: bytes | None):
        """The last published run without its rows: they are compared inside BigQuery."""
        from clustering.stages.previous import previous

        key = run.settings.analysis.key_column
        return previous(store, pointer, key, with_rows=False)

    def assign(self, run: Run, identity, model, previous) -> tuple[object, Counts]:
        """Every row scored into staging, the transitions derived there, every row counted."""
        scored = self._score(run, identity, model, previous)
        identity = _with_counts(identity, scored)
        summary = scored.summary
        rows = int(summary["rows"].sum())
        residential = int(summary.loc[summary["excluded_type"] == "Residential", "rows"].sum())
        moves = scored.counts
        return identity, Counts(
            rows=rows,
            residential=residential,
            fitted=len(identity.table),
            sample=f"drawn from a sample of {len(identity.table):,} of {rows:,} rows",
            changes=moves.moved + moves.appeared + moves.disappeared if moves else None,
            sizes=_sizes(summary, identity),
        )

    def document(self, model, counts: Counts | None) -> dict:
        from clustering.adapters.warehouse_sql import SAMPLE_RULE
        from clustering.analysis.document import document

        sample = {"rows": counts.fitted, "of_rows": counts.rows, "rule": SAMPLE_RULE}
        return document(model, engine=WAREHOUSE, sample=sample)

    def files(self, run: Run, given: Input, identity) -> tuple[None, dict[str, bytes]]:
        """No CSV from memory: the rows are exported by BigQuery (`export`)."""
        return None, {}

    def export(self, run: Run, store) -> dict[str, str]:
        """EXPORT DATA of the run's CSVs into runs/<id>/ as shards (`<name>-*.csv`): artifact
        name -> the shards' URI pattern. Text cells are formula-safe as the memory engine's
        CSVs are. A local --out gets no CSV: the rows stay in BigQuery, which the run says."""
        from clustering.adapters import warehouse
        from clustering.adapters import warehouse_sql as sql
        from clustering.naming import CSV_CLUSTERS, CSV_EXCLUDED, CSV_TRANSITIONS

        tables, jobs = self.tables, self.jobs
        folder = store.describe(f"runs/{run.run_id}/")
        run.clock.stage("export", f"exporting every row to {folder}")
        if not folder.startswith("gs://"):
            where = f"bq://{tables.clusters}" + (
                f" and bq://{tables.transitions}" if tables.transitions else ""
            )
            run.clock.progress(
                f"the rows are in {where}: with a local --out the warehouse engine writes no "
                "CSV of them (ARTIFACTS_DEST=gs://... gets them as EXPORT DATA shards)"
            )
            return {}
        run.fence("exporting the rows")
        shape = shape_column(run.settings.analysis.key_column)
        staged = tuple(f for f in warehouse.fields(tables.staged) if f[0] != shape)
        inputs = [f for f in staged if f[0] not in sql.OUTPUT_COLUMNS]
        excluded = (*inputs, *(f for f in staged if f[0] in ("excluded_type", "excluded_cluster")))
        parts = [
            (CSV_CLUSTERS, tables.staged, staged, None),
            (CSV_EXCLUDED, tables.staged, excluded, sql.excluded_rows()),
        ]
        if warehouse.exists(tables.staged_moves):
            moves = warehouse.fields(tables.staged_moves)
            parts.append((CSV_TRANSITIONS, tables.staged_moves, moves, None))
        exported = {}
        for name, table, selected, where in parts:
            uri = f"{folder}{name.removesuffix('.csv')}-*.csv"
            statement = sql.export(sql.Table(table), uri, selected, where)
            warehouse.query(jobs, f"export_{name.removesuffix('.csv')}", statement)
            exported[name] = uri
        return exported

    def steps(self, run: Run, store, done: Analysed) -> Steps:
        """The staging table copied over the clusters table (under the run's load job id,
        which the next run waits for), the transitions appended by a query, and the source
        checked unchanged since it was read just before the copy."""
        from clustering.adapters import bigquery, warehouse

        tables, jobs = self.tables, self.jobs
        key = run.settings.analysis.key_column

        def check() -> None:
            now = warehouse.modified(tables.source)
            if now != self.version:
                raise NotSettled(
                    f"bq://{tables.source} changed while the run read it (last modified "
                    f"{self.version[0] if self.version else '?'} when read, "
                    f"{now[0] if now else '?'} now): nothing was published, the run is retried"
                )

        def replace_table() -> None:
            job_id = bigquery.load_job_id(run.run_id)
            warehouse.copy(
                jobs, "replace", tables.staged, tables.clusters, "WRITE_TRUNCATE", job_id=job_id
            )

        def move() -> None:
            if tables.transitions is None or not warehouse.exists(tables.staged_moves):
                return
            run.fence("appending the transitions")
            self._append_moves(key, tables.staged_moves, "append_transitions")

        return Steps(replace_table, move, check)

    def recover_transitions(self, run: Run, store, run_id: str) -> None:
        """Run `run_id`'s transitions, from its staging table while it has not expired."""
        from clustering.adapters import warehouse

        staged = Tables.of(run.settings, run_id).staged_moves
        if self.tables.transitions is None or not warehouse.exists(staged):
            return
        self._append_moves(run.settings.analysis.key_column, staged, "recover_transitions")
        warehouse.drop(staged)

    def _append_moves(self, key: str, staged: str, step: str) -> None:
        """INSERT the staged transitions into TRANSITIONS_TABLE, made first when missing
        (Terraform creates it; the CLI may not)."""
        from clustering.adapters import warehouse
        from clustering.adapters import warehouse_sql as sql
        from clustering.table import table_schema

        dest = self.tables.transitions
        if not warehouse.exists(dest):
            schema = list(table_schema("transitions_table", key))
            warehouse.create_table(dest, schema, expires=None)  # published: it never expires
        statement = sql.append(sql.Table(staged), sql.Table(dest), key)
        warehouse.query(self.jobs, step, statement)

    def close(self) -> None:
        """Drop the staging tables, with a budget of their own (a run stopped by its deadline
        drops them too); a table left behind expires (warehouse.create_table)."""
        from contextlib import suppress

        from clustering.adapters import budget, warehouse

        with budget.bounded(budget.Budget.lasting(budget.FINAL_STEP_SECONDS)):
            for table in self.tables.staging:
                with suppress(Exception):
                    warehouse.drop(table)

    def _score(self, run: Run, identity, model, previous) -> _Scored:
        """Every row assigned into the staging table; the transitions against the published
        table (with a previous run published under the same key); the counts of every row."""
        from clustering.adapters import warehouse
        from clustering.adapters import warehouse_sql as sql
        from clustering.table import table_schema

        tables, jobs = self.tables, self.jobs
        analysis = run.settings.analysis
        key = analysis.key_column
        run.clock.stage("scoring", f"assigning every row of {tables.source} inside BigQuery")
        shapes = self._shapes(run, identity)
        schema = staging_schema(self.choice.schema, key, analysis.population_column)
        if shapes is not None:
            schema.append({"name": shape_column(key), "type": "GEOGRAPHY", "mode": "NULLABLE"})
        withheld = set(self.columns) - set(self.published)
        # The scored rows keep every column for the summary's means; with OUTPUT_COLUMNS the
        # published ones are then selected into the table the copy and the exports read.
        scored = tables.scored if withheld else tables.staged
        warehouse.create_table(scored, schema)
        stamp = sql.Stamp(run.run_id, run.started.isoformat())
        stability = {c.sub_cluster: _finite_or_none(c.stability) for c in identity.cohorts}
        source = self.pinned
        statement = sql.score(
            source, self.columns, model, stability, stamp, sql.Scoring(shapes=shapes)
        )
        warehouse.query(jobs, "score", statement, scored, "WRITE_APPEND")
        if withheld:
            kept = [f for f in schema if f["name"] not in withheld]
            warehouse.create_table(tables.staged, kept)
            selected = sql.project(sql.Table(scored), tuple(f["name"] for f in kept))
            warehouse.query(jobs, "publish_columns", selected, tables.staged, "WRITE_APPEND")
        counts = listed = None
        published = warehouse.columns(tables.clusters) if previous is not None else None
        if published is not None and key.lower() in {c.lower() for c in published}:
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
        summary = warehouse.read(jobs, "summary", sql.summary(sql.Table(scored), features))
        return _Scored(summary, counts, listed)

    def _shapes(self, run: Run, identity):
        """With BOUNDARIES, a staging table of every boundary (name, GEOGRAPHY) that the
        scoring joins each row's `<key>_shape` from; None without."""
        if not run.settings.boundaries_source:
            return None
        import pandas as pd

        from clustering import adapters
        from clustering.adapters import bigquery, warehouse
        from clustering.adapters import warehouse_sql as sql
        from clustering.stages.publish import shapes_wkt

        settings = run.settings
        if settings.boundaries_source.startswith("bq://"):
            # The shapes never leave BigQuery: one capped query stages them.
            return warehouse.stage_shapes(
                self.jobs,
                settings.boundaries_source,
                settings.boundaries_key_column,
                settings.boundaries_geography_column,
                self.tables.staged_shapes,
            )
        boundaries = adapters.read_boundaries(
            settings.boundaries_source,
            settings.boundaries_key_column,
            settings.boundaries_geography_column,
        )
        names, shapes = (
            zip(*shapes_wkt(boundaries).items(), strict=True) if boundaries else ((), ())
        )
        name, shape = (f["name"] for f in sql.SHAPES_SCHEMA)
        warehouse.create_table(self.tables.staged_shapes, list(sql.SHAPES_SCHEMA))
        frame = pd.DataFrame({name: list(names), shape: list(shapes)})
        bigquery.append_table(f"bq://{self.tables.staged_shapes}", frame, list(sql.SHAPES_SCHEMA))
        return sql.Table(self.tables.staged_shapes)


def _check_keys(source: str, checks, key: str) -> None:
    """One row per key, none blank: what the memory engine's validation refuses too."""
    blank, rows, keys = (int(checks[c]) for c in ("blank_keys", "rows", "keys"))
    if blank:
        raise InputError(f"{source}: {key} is blank in {blank:,} rows: give every row a name")
    if keys != rows:
        raise InputError(
            f"{source}: {rows - keys:,} rows repeat a {key} of another row: keep one row per {key}"
        )


def _moves(jobs, tables: Tables, identity, previous, key: str):
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
