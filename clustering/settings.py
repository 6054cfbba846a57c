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

from clustering.errors import InputError

DEFAULT_EXCLUDE_NEIGHBORHOODS: tuple[str, ...] = (
    # Industrial / entertainment areas: crime per capita inflated by a tiny residential population.
    "Canton Industrial Area",
    "Fairfield Area",
    "Inner Harbor",
    "Pulaski Industrial Area",
    "Stadium/Entertainment Area",
    # Institutional campuses with atypical property patterns.
    "Dunbar-Broadway",
    "Hopkins Bayview",
    "Johns Hopkins Homewood",
    "Morgan State University",
    "Penn-Fallsway",
    "Perkins",
    "University of Maryland",
    "Harbor Point",
)

DEFAULT_CLUSTERING_FEATURES: tuple[str, ...] = (
    "population",
    "med_age",
    "housing_vacancy_rate",
    "owner_occupancy_rate",
    "crime_per_capita",
    "arrest_per_capita",
    "crime_yoy_change",
    "vacant_notices_per_unit",
    "rehab_to_vacant_ratio",
    "permit_value_per_capita",
    "permit_recent_5yr",
    "requests_311_per_capita",
    "requests_311_blight",
    "median_assessed_value",
    "avg_assessed_value",
)

# A BigQuery table id as `project.dataset.table` (DESIGN.md, reliability rules).
TABLE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_]+){2}$")

# Every environment variable the function reads. Terraform sets exactly these (checked by
# tests/test_terraform.py), so this tuple is the one source of truth for both.
ENV_VARS: tuple[str, ...] = (
    "FEATURES_SOURCE",
    "ARTIFACTS_DEST",
    "CLUSTERS_TABLE",
    "RUNS_TABLE",
    "WATCHED_TABLE",
    "BOUNDARIES_SOURCE",
    "ALLOWED_FEATURES_TABLES",
    "FUNCTION_SERVICE_ACCOUNT",
    "MAX_EVENT_AGE_SECONDS",
    "MIN_POPULATION",
    "K_MIN",
    "K_MAX",
    "SUB_K_MIN",
    "SUB_K_MAX",
    "RANDOM_STATE",
    "EXCLUDE_NEIGHBORHOODS",
    "CLUSTERING_FEATURES",
    "SEVERITY_FEATURE",
    "SILHOUETTE_SAMPLE_SIZE",
    "TRANSITIONS_TABLE",
    "LABEL_OVERRIDES",
)


@dataclass(frozen=True)
class AnalysisSettings:
    """Parameters of the clustering, with the notebook's defaults.

    min_population: rows below it are "Low Population (Park/Open Space)", not residential.
    k_min, k_max: the K range of the elbow/silhouette diagnostics.
    sub_k_min, sub_k_max: the K range searched inside each top group.
    random_state: seeds every k-means fit, PCA and the silhouette sample.
    exclude_neighborhoods: the ONE list of institutional/industrial areas kept out of the
        residential clustering and analysed separately.
    clustering_features: the columns to cluster on; those absent from the table are reported.
    severity_feature: names the top split: the group whose mean is below the residential
        mean is "Stable", the other "Distressed".
    silhouette_sample_size: above this many rows, silhouettes are computed on a fixed-seed
        sample of this size (the exact score is O(n^2) in time and memory).
    """

    min_population: int = 100
    k_min: int = 2
    k_max: int = 10
    sub_k_min: int = 2
    sub_k_max: int = 5
    random_state: int = 42
    exclude_neighborhoods: tuple[str, ...] = DEFAULT_EXCLUDE_NEIGHBORHOODS
    clustering_features: tuple[str, ...] = DEFAULT_CLUSTERING_FEATURES
    severity_feature: str = "crime_per_capita"
    silhouette_sample_size: int = 3_000

    def __post_init__(self) -> None:
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
    boundaries_source: optional GeoJSON of the neighborhoods (`gs://...` or a local path);
        when given, each run also draws cluster_map.png.
    allowed_features_tables: table ids a Pub/Sub message may select instead of the default.
    function_service_account: the function's own principal; audit-log events it caused are
        skipped.
    max_event_age_seconds: older events are dropped (they are retries of a long outage).
    transitions_table: optional `bq://project.dataset.table` (or a local .csv/.jsonl path):
        the neighborhoods that changed cohort, appended by every run that has a previous one.
    label_overrides: (stable sub-cluster id, cohort name) pairs that replace the generated
        cohort names; the names must be unique.
    """

    features_source: str | None = None
    artifacts_dest: str = "output"
    clusters_table: str | None = None
    runs_table: str | None = None
    watched_table: str | None = None
    boundaries_source: str | None = None
    allowed_features_tables: tuple[str, ...] = ()
    function_service_account: str | None = None
    max_event_age_seconds: int = 3600
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    transitions_table: str | None = None
    label_overrides: tuple[tuple[int, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.artifacts_dest:
            raise InputError("ARTIFACTS_DEST is empty: give a gs://bucket/prefix or a folder")
        for name, uri in (
            ("FEATURES_SOURCE", self.features_source),
            ("CLUSTERS_TABLE", self.clusters_table),
            ("RUNS_TABLE", self.runs_table),
            ("TRANSITIONS_TABLE", self.transitions_table),
        ):
            if uri and uri.startswith("bq://"):
                bq_table_id(uri, name)
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
        if self.max_event_age_seconds <= 0:
            raise InputError(
                f"MAX_EVENT_AGE_SECONDS is {self.max_event_age_seconds}: use a positive number"
            )
        _check_transitions_table(self.transitions_table)
        _check_label_overrides(self.label_overrides)

    def with_features_source(self, source: str) -> JobSettings:
        """The same settings reading another features source (a validated message override)."""
        return replace(self, features_source=source)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> JobSettings:
        """Build and validate the settings of the deployed function.

        FEATURES_SOURCE and ARTIFACTS_DEST are required; everything else has a default.
        """
        for required in ("FEATURES_SOURCE", "ARTIFACTS_DEST"):
            if not environ.get(required, "").strip():
                raise InputError(f"{required} is not set: set it in the function's environment")
        defaults = AnalysisSettings()
        analysis = AnalysisSettings(
            min_population=_env_int(environ, "MIN_POPULATION", defaults.min_population),
            k_min=_env_int(environ, "K_MIN", defaults.k_min),
            k_max=_env_int(environ, "K_MAX", defaults.k_max),
            sub_k_min=_env_int(environ, "SUB_K_MIN", defaults.sub_k_min),
            sub_k_max=_env_int(environ, "SUB_K_MAX", defaults.sub_k_max),
            random_state=_env_int(environ, "RANDOM_STATE", defaults.random_state),
            exclude_neighborhoods=_env_names(
                environ, "EXCLUDE_NEIGHBORHOODS", defaults.exclude_neighborhoods
            ),
            clustering_features=_env_names(
                environ, "CLUSTERING_FEATURES", defaults.clustering_features
            ),
            severity_feature=environ.get("SEVERITY_FEATURE", "").strip()
            or defaults.severity_feature,
            silhouette_sample_size=_env_int(
                environ, "SILHOUETTE_SAMPLE_SIZE", defaults.silhouette_sample_size
            ),
        )
        return cls(
            features_source=environ["FEATURES_SOURCE"].strip(),
            artifacts_dest=environ["ARTIFACTS_DEST"].strip(),
            clusters_table=environ.get("CLUSTERS_TABLE", "").strip() or None,
            runs_table=environ.get("RUNS_TABLE", "").strip() or None,
            watched_table=environ.get("WATCHED_TABLE", "").strip() or None,
            boundaries_source=environ.get("BOUNDARIES_SOURCE", "").strip() or None,
            allowed_features_tables=_env_names(environ, "ALLOWED_FEATURES_TABLES", ()),
            function_service_account=environ.get("FUNCTION_SERVICE_ACCOUNT", "").strip() or None,
            max_event_age_seconds=_env_int(environ, "MAX_EVENT_AGE_SECONDS", 3600),
            analysis=analysis,
            transitions_table=environ.get("TRANSITIONS_TABLE", "").strip() or None,
            label_overrides=parse_label_overrides(
                environ.get("LABEL_OVERRIDES", "").strip() or "{}", "LABEL_OVERRIDES"
            ),
        )


def _check_transitions_table(dest: str | None) -> None:
    if not dest:
        return
    if dest.startswith("bq://"):
        bq_table_id(dest, "TRANSITIONS_TABLE")
    elif dest.startswith("gs://") or not dest.lower().endswith((".csv", ".jsonl")):
        raise InputError(
            f"TRANSITIONS_TABLE {dest!r}: give bq://project.dataset.table or a local .csv or "
            ".jsonl path (objects cannot be appended to)"
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


def bq_table_id(uri: str, where: str) -> str:
    """The `project.dataset.table` of a `bq://` URI, validated."""
    return check_table_id(uri.removeprefix("bq://"), where)


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not an integer: set it to a whole number") from None


def _env_names(environ: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    return parse_name_list(raw, name)


def parse_name_list(raw: str, where: str) -> tuple[str, ...]:
    """Parse a JSON list of non-empty strings, e.g. '["Inner Harbor", "Perkins"]'."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InputError(
            f"{where} must be a JSON list of non-empty strings, like "
            '["Inner Harbor", "Perkins"]; got ' + repr(raw[:80])
        )
    return tuple(v.strip() for v in value)
