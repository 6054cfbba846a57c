"""Settings: the analytic parameters and the job's sources and destinations, validated once.

Every value has the notebook's default. The function reads them from the environment
(`JobSettings.from_env`), the CLI from its flags; both end in the same frozen objects, so an
invalid value fails before any data is read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from clustering import InputError
from clustering.naming import readable, row_noun, rows_called
from clustering.options import DEFAULTS, OPTIONS, Option, env_vars

# The notebook's one exclusion list: industrial/entertainment areas, whose crime per capita a
# tiny residential population inflates, and institutional campuses with atypical property
# patterns. Kept in defaults.json with the other defaults, which Terraform reads too.
DEFAULT_EXCLUDE_NEIGHBORHOODS: tuple[str, ...] = tuple(DEFAULTS["exclude_neighborhoods"])
DEFAULT_CLUSTERING_FEATURES: tuple[str, ...] = tuple(DEFAULTS["clustering_features"])
# Which way is better, for the notebook's features that have one (population and med_age
# have none: neither more nor fewer residents, nor older ones, is better in itself).
HIGHER_IS_WORSE = "higher_is_worse"
HIGHER_IS_BETTER = "higher_is_better"
DIRECTIONS = (HIGHER_IS_WORSE, HIGHER_IS_BETTER)
DEFAULT_FEATURE_DIRECTIONS: tuple[tuple[str, str], ...] = tuple(
    DEFAULTS["feature_directions"].items()
)
# POPULATION_COLUMN's value for a table without one (any case).
NO_POPULATION = "none"

# Size limits (docs/configuration.md, Limits): a features table or boundaries object above
# them is refused before it is read, with a clear error, instead of an out-of-memory crash that
# the trigger would retry. The function's 4 GiB instance clusters 250k rows at about 2 GiB
# (make bench). The row limit is MEMORY_MAX_ROWS's default: under ENGINE=auto a larger bq://
# table goes to the warehouse engine instead of being refused.
MAX_FEATURES_ROWS: int = DEFAULTS["memory_max_rows"]
MAX_FEATURES_BYTES = 512 * 1024**2
MAX_BOUNDARIES_BYTES = 64 * 1024**2

# The largest difference tolerated between this instance's clock and Google's servers' (the
# times of Cloud Logging entries, BigQuery tables and Cloud Storage objects). Every comparison
# of an instance time with a server time leaves this much room: a table change this close to a
# run's start is not taken as covered by it, and lock ages are measured from the lock object's
# server time. Google synchronizes its machines' clocks far more closely than this.
MAX_CLOCK_SKEW_SECONDS = 1.0
# The shortest CLI time budget: less could not even read a small table from BigQuery.
MIN_RUN_BUDGET_SECONDS = 10

# A BigQuery table id as `project.dataset.table` (DESIGN.md, reliability rules).
TABLE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_]+){2}$")
# A Pub/Sub subscription's full name.
SUBSCRIPTION_PATTERN = re.compile(
    r"^projects/[a-z0-9-]+/subscriptions/[A-Za-z][A-Za-z0-9._~%+-]{2,254}$"
)
# A BigQuery column name: the only identifiers ever written into a query (boundaries).
COLUMN_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
# A dataset as `project.dataset` (STAGING_DATASET).
DATASET_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_]+$")

# ENGINE's values (DESIGN.md, "Engines").
AUTO, MEMORY, WAREHOUSE = "auto", "memory", "warehouse"
ENGINES = (AUTO, MEMORY, WAREHOUSE)
# The warehouse engine's sample: enough rows for the K searches and the excluded groups, few
# enough for the function's memory (make bench measures 200,000).
MIN_SAMPLE_ROWS = 1_000
MAX_SAMPLE_ROWS = 1_000_000
# BigQuery bills at least 10 MB per table a query reads: a lower cap fails every job.
MIN_BYTES_BILLED = 10 * 1024**2

# Every environment variable the function reads, from the one registry of settings
# (clustering/options.py). Terraform sets exactly these (checked by tests/test_terraform.py).
ENV_VARS: tuple[str, ...] = env_vars()


@dataclass(frozen=True)
class AnalysisSettings:
    """Parameters of the clustering, with the notebook's defaults.

    key_column: the column naming each row (one row each); outputs keep it under this name.
    population_column: the column of residents per row; None (POPULATION_COLUMN=none) for a
        table without one: every row is residential unless excluded by name.
    min_population: rows below it are "Low Population (Park/Open Space)", not residential
        (unused without a population column).
    k_min, k_max: the K range of the elbow/silhouette diagnostic. It only informs: the top
        split is always K=2, as in the notebook.
    sub_k_min, sub_k_max: the K range searched inside each top group.
    random_state: seeds every k-means fit, PCA and the silhouette sample.
    exclude_neighborhoods: the ONE list of institutional/industrial areas kept out of the
        residential clustering and analysed separately.
    exclude_also: names excluded in addition to `exclude_neighborhoods` (extends the list
        where `exclude_neighborhoods` replaces it).
    drop_keys: keys of rows that are not areas (a citywide total row): left out of the
        analysis and of every output.
    clustering_features: the columns to cluster on. With the default list, those absent from
        the table are skipped with a warning; a list given by the user must all exist.
    severity_feature: names the top split: the group worse on it, by its direction, is
        "Distressed", the other "Stable".
    feature_directions: (feature, "higher_is_worse" | "higher_is_better") pairs; features
        without one are described as higher/lower, never better/worse. The severity feature
        must have one (checked with the table's columns, clustering.table).
    silhouette_sample_size: above this many rows, silhouettes are computed on a fixed-seed
        sample of this size (the exact score is O(n^2) in time and memory).
    feature_labels: (column, words) pairs: what people read for a column in the cohort
        names, the report and the charts; other columns read as `label` makes them.
    row_noun: what one row is ("community area"); None: from KEY_COLUMN (`noun`).
    """

    key_column: str = DEFAULTS["key_column"]
    population_column: str | None = DEFAULTS["population_column"]
    min_population: int = DEFAULTS["min_population"]
    k_min: int = DEFAULTS["k_min"]
    k_max: int = DEFAULTS["k_max"]
    sub_k_min: int = DEFAULTS["sub_k_min"]
    sub_k_max: int = DEFAULTS["sub_k_max"]
    random_state: int = DEFAULTS["random_state"]
    exclude_neighborhoods: tuple[str, ...] = DEFAULT_EXCLUDE_NEIGHBORHOODS
    exclude_also: tuple[str, ...] = ()
    drop_keys: tuple[str, ...] = ()
    clustering_features: tuple[str, ...] = DEFAULT_CLUSTERING_FEATURES
    severity_feature: str = DEFAULTS["severity_feature"]
    feature_directions: tuple[tuple[str, str], ...] = DEFAULT_FEATURE_DIRECTIONS
    silhouette_sample_size: int = DEFAULTS["silhouette_sample_size"]
    feature_labels: tuple[tuple[str, str], ...] = ()
    row_noun: str | None = None

    @property
    def excluded_names(self) -> tuple[str, ...]:
        """Every name kept out of the residential clustering, each once, in list order."""
        return tuple(dict.fromkeys(self.exclude_neighborhoods + self.exclude_also))

    @property
    def default_features(self) -> bool:
        """True for the built-in feature list, whose absent columns are only skipped."""
        return self.clustering_features == DEFAULT_CLUSTERING_FEATURES

    @property
    def default_exclusions(self) -> bool:
        """True for the built-in (Baltimore) exclusion list."""
        return self.exclude_neighborhoods == DEFAULT_EXCLUDE_NEIGHBORHOODS

    @property
    def directions(self) -> dict[str, str]:
        """Feature -> "higher_is_worse" | "higher_is_better", for the features that have one."""
        return dict(self.feature_directions)

    @property
    def labels(self) -> dict[str, str]:
        """The columns FEATURE_LABELS names, with their words."""
        return dict(self.feature_labels)

    def label(self, column: str) -> str:
        """What people read for a column: its FEATURE_LABELS words, else its name made
        readable ("PCT_HOUSEHOLDS_IN_POVERTY" -> "pct households in poverty")."""
        return self.labels.get(column) or readable(column)

    @property
    def noun(self) -> str:
        """What one row is: ROW_NOUN, else KEY_COLUMN's words (naming.row_noun)."""
        return self.row_noun or row_noun(self.key_column)

    @property
    def rows_called(self) -> str:
        """The rows in the plural: "neighborhoods", "community areas"."""
        return rows_called(self.key_column, self.row_noun)

    @property
    def given_directions(self) -> dict[str, str]:
        """The directions the user gave (FEATURE_DIRECTIONS), without the unchanged defaults:
        the ones that must name a column of the table."""
        defaults = set(DEFAULT_FEATURE_DIRECTIONS)
        return {f: d for f, d in self.feature_directions if (f, d) not in defaults}

    def __post_init__(self) -> None:
        if (self.population_column or "").strip().lower() == NO_POPULATION:
            object.__setattr__(self, "population_column", None)
        if not self.key_column.strip():
            raise InputError(
                "KEY_COLUMN (--key-column) is empty: name the column of the features table"
            )
        if self.population_column is not None and not self.population_column.strip():
            raise InputError(
                "POPULATION_COLUMN (--population-column) is empty: name the column of the "
                f"features table, or use {NO_POPULATION} for a table without one"
            )
        if self.key_column == self.population_column:
            raise InputError(
                f"KEY_COLUMN and POPULATION_COLUMN are both {self.key_column!r}: the names and "
                "the residents are two different columns"
            )
        if self.min_population < 0:
            raise InputError(
                f"MIN_POPULATION (--min-population) is {self.min_population}: use 0 or more"
            )
        if not 2 <= self.k_min <= self.k_max:
            raise InputError(
                f"K_MIN={self.k_min}, K_MAX={self.k_max} (--k-min, --k-max): "
                "need 2 <= K_MIN <= K_MAX"
            )
        if not 2 <= self.sub_k_min <= self.sub_k_max:
            raise InputError(
                f"SUB_K_MIN={self.sub_k_min}, SUB_K_MAX={self.sub_k_max} "
                "(--sub-k-min, --sub-k-max): "
                "need 2 <= SUB_K_MIN <= SUB_K_MAX"
            )
        if not 0 <= self.random_state < 2**32:
            raise InputError(
                f"RANDOM_STATE (--random-state) is {self.random_state}: use an integer in [0, 2^32)"
            )
        if not self.clustering_features:
            raise InputError(
                "CLUSTERING_FEATURES (--clustering-features) is empty: name at least one column"
            )
        if len(set(self.clustering_features)) != len(self.clustering_features):
            raise InputError(
                "CLUSTERING_FEATURES (--clustering-features) lists a column twice: remove one"
            )
        if not self.severity_feature:
            raise InputError(
                "SEVERITY_FEATURE (--severity-feature) is empty: "
                "name the column that ranks severity"
            )
        _check_directions(self.feature_directions)
        _check_labels(self.feature_labels)
        if self.row_noun is not None and not self.row_noun.strip():
            raise InputError(
                'ROW_NOUN (--row-noun) is blank: name what one row is, e.g. "community area", '
                "or leave it unset"
            )
        if self.silhouette_sample_size < 100:
            raise InputError(
                "SILHOUETTE_SAMPLE_SIZE (--silhouette-sample-size) is "
                f"{self.silhouette_sample_size}: "
                "use 100 or more"
            )


@dataclass(frozen=True)
class JobSettings:
    """Where a run reads and writes, plus the analysis settings.

    features_source: `bq://project.dataset.table`, `gs://bucket/file.csv|.parquet` or a local
        .csv/.parquet path; None means the built-in synthetic sample.
    artifacts_dest: `gs://bucket/prefix` or a local folder; receives runs/<id>/ and latest/.
    clusters_table: optional `bq://project.dataset.table` (or a local .csv/.parquet path)
        replaced by every successful run.
    runs_table: optional `bq://project.dataset.table` (or a local .jsonl path): one row
        appended per run, success or failure.
    watched_table: `project.dataset.table` whose data changes trigger a run; defaults to the
        features table when the source is `bq://`.
    boundaries_source: optional neighborhood shapes: a GeoJSON (`gs://...` or a local path)
        or a BigQuery table with a GEOGRAPHY column (`bq://project.dataset.table`); when
        given, each run also draws cluster_map.png and the clusters table gains
        `<KEY_COLUMN>_shape` (GEOGRAPHY) for Looker Studio's filled map.
    boundaries_name_column, boundaries_geography_column: the columns of a `bq://` boundaries
        table holding the key (None: a column named as KEY_COLUMN) and the shape (geometry).
    allowed_features_tables: table ids a Pub/Sub message may select instead of the default.
    function_service_account: the function's own principal; audit-log events it caused are
        skipped.
    max_event_age_seconds: a manual message older than this is skipped; a table change older
        than this still runs unless a successful run has started since it happened. Longer
        than the retry window Terraform configures (checked by tests/test_terraform.py).
    min_rows_ratio: the row-drop guard: a features table with fewer rows than this share of
        the last published run's input fails as bad data unless the run is forced.
    function_timeout_seconds: the platform's timeout of one invocation (the function's
        Terraform passes it); the handler stops a run before it. None: no deadline (CLI).
    run_budget_seconds: the CLI run's own deadline (`--time-budget`, 6 hours by default):
        every client call and job wait of the run fits in what is left of it.
    transitions_table: optional `bq://project.dataset.table` (or a local .csv/.jsonl path):
        the neighborhoods that changed cohort, appended by every run that has a previous one.
    label_overrides: (stable sub-cluster id, cohort name) pairs that replace the generated
        cohort names; the names must be unique.
    table_changes_subscription: the log sink topic's push subscription; only deliveries
        through it are taken as table changes (manual messages never are).
    settle_seconds: a bq:// features table last modified less than this long before the
        run read it (or modified while it was read) is not published; the event is retried.
    output_columns: the features table's columns that reach the outputs (the key column
        always does); empty keeps every column.
    engine: "auto", "memory" or "warehouse" (DESIGN.md, "Engines"); "warehouse" needs a
        bq:// features table and a bq:// clusters table.
    memory_max_rows: the most rows of a bq:// table the memory engine reads; auto sends a
        larger one to the warehouse engine.
    sample_rows: the warehouse engine's fitting sample, in rows.
    maximum_bytes_billed: the cap every query job of the warehouse engine carries.
    staging_dataset: `project.dataset` of the warehouse engine's staging tables; None means
        the clusters table's dataset.
    """

    features_source: str | None = None
    artifacts_dest: str = "output"
    clusters_table: str | None = None
    runs_table: str | None = None
    watched_table: str | None = None
    boundaries_source: str | None = None
    boundaries_name_column: str | None = None
    boundaries_geography_column: str = "geometry"
    allowed_features_tables: tuple[str, ...] = ()
    function_service_account: str | None = None
    max_event_age_seconds: int = DEFAULTS["max_event_age_seconds"]
    min_rows_ratio: float = DEFAULTS["min_rows_ratio"]
    function_timeout_seconds: int | None = None
    run_budget_seconds: int = 21_600
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    transitions_table: str | None = None
    label_overrides: tuple[tuple[int, str], ...] = ()
    table_changes_subscription: str | None = None
    settle_seconds: int = DEFAULTS["settle_seconds"]
    output_columns: tuple[str, ...] = ()
    engine: str = DEFAULTS["engine"]
    memory_max_rows: int = DEFAULTS["memory_max_rows"]
    sample_rows: int = DEFAULTS["sample_rows"]
    maximum_bytes_billed: int = DEFAULTS["maximum_bytes_billed"]
    staging_dataset: str | None = None

    def __post_init__(self) -> None:
        self._check_destinations()
        if (
            self.watched_table is None
            and self.features_source
            and self.features_source.startswith("bq://")
        ):
            object.__setattr__(
                self, "watched_table", bq_table_id(self.features_source, "FEATURES_SOURCE")
            )
        if self.watched_table is not None:
            check_table_id(self.watched_table, "WATCHED_TABLE")
        for table in self.allowed_features_tables:
            check_table_id(table, "ALLOWED_FEATURES_TABLES")
        self._check_delivery_limits()
        _check_transitions_table(self.transitions_table)
        _check_label_overrides(self.label_overrides)
        _check_engine(self)

    def _check_destinations(self) -> None:
        """Every source and destination given in a form the adapters take."""
        if not self.artifacts_dest:
            raise InputError("ARTIFACTS_DEST is empty: give a gs://bucket/prefix or a folder")
        for name, uri in (
            ("FEATURES_SOURCE", self.features_source),
            ("CLUSTERS_TABLE", self.clusters_table),
            ("RUNS_TABLE", self.runs_table),
            ("BOUNDARIES_SOURCE", self.boundaries_source),
            ("TRANSITIONS_TABLE", self.transitions_table),
        ):
            if uri and uri.startswith("bq://"):
                bq_table_id(uri, name)
        for name, column in (
            ("BOUNDARIES_NAME_COLUMN", self.boundaries_key_column),
            ("BOUNDARIES_GEOGRAPHY_COLUMN", self.boundaries_geography_column),
        ):
            if self.boundaries_source and self.boundaries_source.startswith("bq://"):
                check_column(column, name)
        clusters, runs = self.clusters_table or "bq://", self.runs_table or "bq://"
        if not clusters.startswith("bq://") and not clusters.lower().endswith((".csv", ".parquet")):
            raise InputError(
                f"CLUSTERS_TABLE {clusters!r}: give bq://project.dataset.table or a "
                ".csv/.parquet path or gs:// object"
            )
        if not runs.startswith("bq://") and (
            runs.startswith("gs://") or not runs.endswith(".jsonl")
        ):
            raise InputError(
                f"RUNS_TABLE {runs!r}: give bq://project.dataset.table or a local .jsonl path "
                "(objects cannot be appended to)"
            )

    def _check_delivery_limits(self) -> None:
        """The function's age, row-drop, timeout, subscription and settling settings."""
        if self.max_event_age_seconds <= 0:
            raise InputError(
                f"MAX_EVENT_AGE_SECONDS is {self.max_event_age_seconds}: use a positive number"
            )
        if not 0 <= self.min_rows_ratio <= 1:
            raise InputError(
                f"MIN_ROWS_RATIO is {self.min_rows_ratio}: use a share between 0 (guard off) and 1"
            )
        if self.function_timeout_seconds is not None and self.function_timeout_seconds < 120:
            # A run stops 30 s before the timeout and publishes only with 30 s left (job.py):
            # below 120 s too little would remain to cluster.
            raise InputError(
                f"FUNCTION_TIMEOUT_SECONDS is {self.function_timeout_seconds}: use the "
                "function's timeout in seconds (120 or more)"
            )
        if self.run_budget_seconds < MIN_RUN_BUDGET_SECONDS:
            raise InputError(
                f"--time-budget is {self.run_budget_seconds}: give the run "
                f"{MIN_RUN_BUDGET_SECONDS} seconds or more"
            )
        subscription = self.table_changes_subscription
        if subscription is not None and not SUBSCRIPTION_PATTERN.fullmatch(subscription):
            raise InputError(
                f"TABLE_CHANGES_SUBSCRIPTION {subscription!r}: write it as "
                "projects/PROJECT/subscriptions/NAME"
            )
        if self.settle_seconds < 0:
            raise InputError(
                f"SETTLE_SECONDS (--settle-seconds) is {self.settle_seconds}: use 0 (no check) "
                "or more"
            )

    @property
    def staging(self) -> str | None:
        """The warehouse engine's staging dataset (`project.dataset`), None without a bq://
        clusters table to default to."""
        if self.staging_dataset:
            return self.staging_dataset
        clusters = self.clusters_table or ""
        if not clusters.startswith("bq://"):
            return None
        return clusters.removeprefix("bq://").rsplit(".", 1)[0]

    @property
    def boundaries_key_column(self) -> str:
        """The column of a bq:// boundaries table that holds the KEY_COLUMN values."""
        return self.boundaries_name_column or self.analysis.key_column

    def with_features_source(self, source: str) -> JobSettings:
        """The same settings reading another features source (a validated message override)."""
        return replace(self, features_source=source)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> JobSettings:
        """Build and validate the settings of the deployed function.

        FEATURES_SOURCE and ARTIFACTS_DEST are required; everything else has a default.
        """
        values: dict[str, dict[str, object]] = {"job": {}, "analysis": {}}
        for option in OPTIONS:
            if option.env:
                scope = "analysis" if option.analysis else "job"
                values[scope][option.field] = _from_env(environ, option)
        return cls(**values["job"], analysis=AnalysisSettings(**values["analysis"]))


def _from_env(environ: Mapping[str, str], option: Option) -> object:
    """The option's value from its environment variable; blank or unset means its default."""
    raw = environ.get(option.env, "").strip()
    if not raw:
        if option.required:
            raise InputError(f"{option.env} is not set: set it in the function's environment")
        return option.default
    return parse_value(option, raw, option.env)


def parse_value(option: Option, raw: str, where: str) -> object:
    """An option's value from its text (an environment variable's, or a JSON flag's)."""
    if option.kind in ("int", "float"):
        what = "an integer" if option.kind == "int" else "a number"
        try:
            return option.type(raw)
        except ValueError:
            fix = "a whole number" if option.kind == "int" else "a number such as 0.5"
            raise InputError(f"{where}={raw!r} is not {what}: set it to {fix}") from None
    if option.kind == "names":
        return parse_name_list(raw, where, option.example)
    if option.kind == "overrides":
        return parse_label_overrides(raw, where)
    if option.kind == "directions":
        return parse_feature_directions(raw, where)
    if option.kind == "labels":
        return parse_feature_labels(raw, where, option.example)
    return raw


def parse_feature_labels(raw: str, where: str, example: str) -> tuple[tuple[str, str], ...]:
    """Parse a JSON object of column -> words, e.g. '{"PCT_POVERTY": "households in
    poverty"}'; an entry that is not a column name and non-empty words is named."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise InputError(
            f"{where} must be a JSON object of column to words, like {example}; got "
            + repr(raw[:80])
        )
    for column, words in value.items():
        if not str(column).strip() or not isinstance(words, str) or not words.strip():
            raise InputError(
                f"{where}: the entry {json.dumps({column: words})} must map a column to "
                f"non-empty words, like {example}"
            )
    return tuple((str(k).strip(), v.strip()) for k, v in value.items())


def _check_labels(pairs: tuple[tuple[str, str], ...]) -> None:
    """Labels built in code (not parsed) give each column once, with words."""
    columns = [column for column, _ in pairs]
    if len(set(columns)) != len(columns) or not all(w.strip() for _, w in pairs):
        raise InputError(
            "FEATURE_LABELS (--feature-labels) must give each column once, with non-empty words"
        )


def parse_feature_directions(raw: str, where: str) -> tuple[tuple[str, str], ...]:
    """Parse a JSON object of feature -> "higher_is_worse" | "higher_is_better", e.g.
    '{"median_income": "higher_is_better"}', over the default directions: a feature named
    here takes this direction, the others keep theirs."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or not all(str(k).strip() for k in value):
        raise InputError(
            f'{where} must be a JSON object of feature to "higher_is_worse" or '
            '"higher_is_better", like {"median_income": "higher_is_better"}; got ' + repr(raw[:80])
        )
    for feature, direction in value.items():
        if direction not in DIRECTIONS:
            raise InputError(
                f"{where}: the entry {json.dumps({feature: direction})} is not a direction: "
                f'give "{feature}" one of {" or ".join(map(json.dumps, DIRECTIONS))}'
            )
    given = {str(k).strip(): v for k, v in value.items()}
    return tuple((dict(DEFAULT_FEATURE_DIRECTIONS) | given).items())


def _check_directions(pairs: tuple[tuple[str, str], ...]) -> None:
    """Directions built in code (not parsed) hold the two words only, each feature once."""
    features = [feature for feature, _ in pairs]
    wrong = [d for _, d in pairs if d not in DIRECTIONS]
    if wrong or len(set(features)) != len(features):
        raise InputError(
            "FEATURE_DIRECTIONS (--feature-directions) must give each feature once, as "
            f'"higher_is_worse" or "higher_is_better"; got {wrong[:1] or "a feature twice"}'
        )


def _check_transitions_table(dest: str | None) -> None:
    """A local destination must be appendable; a bq:// one is checked with the other ids."""
    if not dest or dest.startswith("bq://"):
        return
    if dest.startswith("gs://") or not dest.lower().endswith((".csv", ".jsonl")):
        raise InputError(
            f"TRANSITIONS_TABLE {dest!r}: give bq://project.dataset.table or a local .csv or "
            ".jsonl path (objects cannot be appended to)"
        )


def _check_engine(settings: JobSettings) -> None:
    """ENGINE and the warehouse engine's settings; ENGINE=warehouse needs BigQuery on both
    ends, since it reads and writes nothing else."""
    if settings.engine not in ENGINES:
        raise InputError(
            f"ENGINE (--engine) is {settings.engine!r}: use one of {', '.join(ENGINES)}"
        )
    if settings.memory_max_rows < 1:
        raise InputError(
            f"MEMORY_MAX_ROWS (--memory-max-rows) is {settings.memory_max_rows}: use 1 or more"
        )
    if not MIN_SAMPLE_ROWS <= settings.sample_rows <= MAX_SAMPLE_ROWS:
        raise InputError(
            f"SAMPLE_ROWS (--sample-rows) is {settings.sample_rows}: use "
            f"{MIN_SAMPLE_ROWS:,} to {MAX_SAMPLE_ROWS:,} rows"
        )
    if settings.maximum_bytes_billed < MIN_BYTES_BILLED:
        raise InputError(
            f"MAXIMUM_BYTES_BILLED (--maximum-bytes-billed) is {settings.maximum_bytes_billed}: "
            f"use at least {MIN_BYTES_BILLED} (BigQuery bills 10 MB per table a query reads)"
        )
    staging = settings.staging_dataset
    if staging and not DATASET_ID_PATTERN.fullmatch(staging):
        raise InputError(
            f"STAGING_DATASET (--staging-dataset): {staging!r} is not a dataset id; write it "
            "as project.dataset (letters, digits, _ and -)"
        )
    if settings.engine != WAREHOUSE:
        return
    check_no_drop_keys(settings.analysis, "ENGINE=warehouse")
    for name, uri in (
        ("FEATURES_SOURCE (--features)", settings.features_source),
        ("CLUSTERS_TABLE (--clusters-table)", settings.clusters_table),
    ):
        if not (uri or "").startswith("bq://"):
            raise InputError(
                f"ENGINE=warehouse needs {name} to be a bq://project.dataset.table, not "
                f"{uri or 'unset'}: set it, or use ENGINE=auto or memory"
            )


def check_no_drop_keys(analysis: AnalysisSettings, why: str) -> None:
    """The warehouse engine assigns every row of the table inside BigQuery: it does not leave
    DROP_KEYS rows out, so it refuses them rather than publish them."""
    if analysis.drop_keys:
        raise InputError(
            f"{why}: the warehouse engine does not apply DROP_KEYS (--drop-keys) yet: leave "
            "those rows out of the table (or a view of it), or use ENGINE=memory"
        )


def _check_label_overrides(overrides: tuple[tuple[int, str], ...]) -> None:
    ids = [sub for sub, _ in overrides]
    if len(set(ids)) != len(ids):
        raise InputError("LABEL_OVERRIDES (--label-overrides) names a cohort id twice: keep one")
    names = [name for _, name in overrides]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InputError(
            f"LABEL_OVERRIDES (--label-overrides) gives the name {twice[0]!r} to more than one "
            "cohort: cohort names must be unique"
        )


def parse_label_overrides(raw: str, where: str) -> tuple[tuple[int, str], ...]:
    """Parse a JSON object of stable sub-cluster id -> cohort name, e.g.
    '{"11": "Rowhouse core", "3": "Leafy north"}', into sorted (id, name) pairs."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    valid = isinstance(value, dict) and all(
        re.fullmatch(r"\d{1,9}", str(k).strip()) and isinstance(v, str) and v.strip()
        for k, v in value.items()
    )
    if not valid:
        raise InputError(
            f"{where} must be a JSON object of cohort id (sub_cluster) to name, like "
            '{"11": "Rowhouse core"}; got ' + repr(raw[:80])
        )
    return tuple(sorted((int(k), v.strip()) for k, v in value.items()))


def check_table_id(table_id: str, where: str) -> str:
    """Return `table_id` if it is a plain `project.dataset.table`, else raise InputError."""
    if not TABLE_ID_PATTERN.fullmatch(table_id):
        raise InputError(
            f"{where}: {table_id!r} is not a table id; write it as project.dataset.table "
            "(letters, digits, _ and -)"
        )
    return table_id


def check_column(column: str, where: str) -> str:
    """Return `column` if it is a plain BigQuery column name, else raise InputError."""
    if not COLUMN_PATTERN.fullmatch(column):
        raise InputError(
            f"{where}: {column!r} is not a column name; use letters, digits and _ "
            "(not starting with a digit)"
        )
    return column


def bq_table_id(uri: str, where: str) -> str:
    """The `project.dataset.table` of a `bq://` URI, validated."""
    return check_table_id(uri.removeprefix("bq://"), where)


def parse_name_list(raw: str, where: str, example: str) -> tuple[str, ...]:
    """Parse a JSON list of non-empty strings, e.g. '["Inner Harbor", "Perkins"]'; `example`
    shows a valid value of the setting when `raw` is not one."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InputError(
            f"{where} must be a JSON list of non-empty strings, like {example}; got "
            + repr(raw[:80])
        )
    return tuple(v.strip() for v in value)
