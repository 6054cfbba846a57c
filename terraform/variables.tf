# Inputs. Every value the function receives comes from here; the analytic defaults are not
# repeated: null means the code's default, read from clustering/defaults.json (defaults.tf).

# --- Project and naming ----------------------------------------------------------------------

variable "project_id" {
  description = "Project that receives every resource of the job, and holds the features table unless features_project_id names another."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID (6-30 lowercase letters, digits or hyphens, starting with a letter), not a project number or name."
  }
}

variable "region" {
  description = "Region of the function, the buckets and the Pub/Sub subscriptions."
  type        = string
  default     = "us-east4"
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a single Google Cloud region such as us-east4, not a multi-region."
  }
}

variable "name" {
  description = "Base name of the function, service accounts, topics and buckets; service account IDs append up to 8 characters to it."
  type        = string
  default     = "neighborhood-clusters"
  validation {
    # 21 characters leave room for "-trigger" within the 30-character service account ID.
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}[a-z0-9]$", var.name))
    error_message = "name must be 3-21 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}
  validation {
    condition = alltrue([
      for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))
    ])
    error_message = "labels keys must start with a lowercase letter; keys and values may hold lowercase letters, digits, _ and - (63 characters at most)."
  }
}

# --- BigQuery ----------------------------------------------------------------------------------

variable "bigquery_location" {
  description = "Location of the output dataset when this configuration creates it (US, EU or a region); use the features dataset's location."
  type        = string
  default     = "US"
  validation {
    condition     = can(regex("^[A-Za-z]+(-[a-z]+[0-9]+)?$", var.bigquery_location))
    error_message = "bigquery_location must be a multi-region (US, EU) or a region such as us-east4."
  }
}

variable "features_project_id" {
  description = "Project of the features table when it is not project_id (a shared data project). The runtime account gets read access on that one table there, the table-change log sink and its metric are created there (audit logs stay in their project), and the project joins project_id's metrics scope for the stale-results alert. Null: project_id."
  type        = string
  default     = null
  validation {
    condition     = var.features_project_id == null || can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", coalesce(var.features_project_id, "x")))
    error_message = "features_project_id must be a project ID (6-30 lowercase letters, digits or hyphens, starting with a letter)."
  }
}

variable "features_dataset_id" {
  description = "Existing dataset of the features table (in features_project_id, else project_id). It is not managed here: another pipeline owns it."
  type        = string
  default     = "analytics"
  validation {
    condition     = can(regex("^[A-Za-z0-9_]{1,1024}$", var.features_dataset_id))
    error_message = "features_dataset_id may hold only letters, digits and underscores."
  }
}

variable "features_table_id" {
  description = "Existing features table whose data changes trigger a run; read by every run, and by terraform plan: the clusters table is created with its columns."
  type        = string
  default     = "neighborhood_features"
  validation {
    # The function accepts only letters, digits and underscores in dataset and table names.
    condition     = can(regex("^[A-Za-z0-9_]{1,1024}$", var.features_table_id))
    error_message = "features_table_id may hold only letters, digits and underscores."
  }
}

variable "dataset_id" {
  description = "Dataset of the clusters and runs tables. Created here when create_dataset is true; otherwise it must exist (it may be the features dataset, as in the notebook)."
  type        = string
  default     = "neighborhood_clusters"
  validation {
    condition     = can(regex("^[A-Za-z0-9_]{1,1024}$", var.dataset_id))
    error_message = "dataset_id may hold only letters, digits and underscores."
  }
}

variable "create_dataset" {
  description = "Create dataset_id. Set false to put the output tables in an existing dataset, such as the features dataset."
  type        = bool
  default     = true
  validation {
    condition     = var.create_dataset != null
    error_message = "create_dataset must be true or false."
  }
}

variable "clusters_table_id" {
  description = "Output table, replaced by every successful run (one row per row of the features table, under its column names); the table Looker Studio reads."
  type        = string
  default     = "neighborhood_clusters"
  validation {
    condition     = can(regex("^[A-Za-z0-9_]{1,1024}$", var.clusters_table_id))
    error_message = "clusters_table_id may hold only letters, digits and underscores."
  }
}

variable "runs_table_id" {
  description = "Run history table: one row appended per run, success or failure."
  type        = string
  default     = "clustering_runs"
  validation {
    condition     = can(regex("^[A-Za-z0-9_]{1,1024}$", var.runs_table_id))
    error_message = "runs_table_id may hold only letters, digits and underscores."
  }
}

variable "freshness_view_id" {
  description = "View over the runs table with the last successful run, its time and input rows, and whether a run failed since (terraform/sql/run_freshness.sql); a Looker Studio source."
  type        = string
  default     = "run_freshness"
  validation {
    condition     = can(regex("^[A-Za-z0-9_]{1,1024}$", var.freshness_view_id))
    error_message = "freshness_view_id may hold only letters, digits and underscores."
  }
}

variable "transitions_table_id" {
  description = "Transitions table: one row appended per key (key_column value) that changed cohort, by every run that follows a published one."
  type        = string
  default     = "neighborhood_cluster_transitions"
  validation {
    condition     = can(regex("^[A-Za-z0-9_]{1,1024}$", var.transitions_table_id))
    error_message = "transitions_table_id may hold only letters, digits and underscores."
  }
}

variable "allowed_features_tables" {
  description = "Other tables (project.dataset.table) that a manual Pub/Sub message may name in features_table; the runtime account gets read access to each. The configured features table is always allowed."
  type        = list(string)
  default     = []
  validation {
    condition = alltrue([
      for t in var.allowed_features_tables : can(regex("^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_]+){2}$", t))
    ])
    error_message = "allowed_features_tables entries must be project.dataset.table (letters, digits, _ and -, as the function requires)."
  }
}

# --- Cloud Storage -----------------------------------------------------------------------------

variable "artifacts_bucket_name" {
  description = "Bucket for charts, CSVs, run manifests (runs/, latest/) and idempotency claims (claims/). Null: <project_id>-<name>-artifacts."
  type        = string
  default     = null
  validation {
    condition     = var.artifacts_bucket_name == null || can(regex("^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$", var.artifacts_bucket_name))
    error_message = "artifacts_bucket_name must be a valid bucket name (3-63 lowercase letters, digits, -, _ or .)."
  }
}

variable "source_bucket_name" {
  description = "Bucket holding the zipped function source. Null: <project_id>-<name>-source."
  type        = string
  default     = null
  validation {
    condition     = var.source_bucket_name == null || can(regex("^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$", var.source_bucket_name))
    error_message = "source_bucket_name must be a valid bucket name (3-63 lowercase letters, digits, -, _ or .)."
  }
}

variable "artifact_retention_days" {
  description = "Days a run's folder runs/<run_id>/ is kept, and days a replaced (noncurrent) object version is kept. latest/ is never expired."
  type        = number
  default     = 90
  validation {
    condition     = floor(var.artifact_retention_days) == var.artifact_retention_days && var.artifact_retention_days >= 1 && var.artifact_retention_days <= 3650
    error_message = "artifact_retention_days must be a whole number of days between 1 and 3650."
  }
}

variable "boundaries_object" {
  description = "Optional object name, inside the artifacts bucket, of a GeoJSON FeatureCollection of the rows' shapes (a boundaries_name_column property, else key_column or 'name', per polygon). When set, every run also draws cluster_map.png. Upload it outside runs/ and claims/, which expire, e.g. inputs/boundaries.geojson."
  type        = string
  default     = null
  validation {
    condition     = var.boundaries_object == null || can(regex("^[^/][^\\r\\n]*\\.(geo)?json$", var.boundaries_object)) && !startswith(coalesce(var.boundaries_object, "x"), "runs/") && !startswith(coalesce(var.boundaries_object, "x"), "claims/")
    error_message = "boundaries_object must be an object name ending in .geojson or .json, not under runs/ or claims/ (both expire)."
  }
}

variable "boundaries_table" {
  description = "Optional BigQuery table of the rows' shapes, as project.dataset.table, with a name column and a GEOGRAPHY column (boundaries_name_column, boundaries_geography_column). When set, the function may read this table (and no other), every run draws cluster_map.png and the clusters table gains <key_column>_shape (GEOGRAPHY) for Looker Studio's filled map. Set this or boundaries_object; if both are set, this table is used."
  type        = string
  default     = null
  validation {
    condition     = var.boundaries_table == null || can(regex("^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_]+){2}$", coalesce(var.boundaries_table, "x")))
    error_message = "boundaries_table must be project.dataset.table (letters, digits, _ and -)."
  }
}

variable "boundaries_name_column" {
  description = "Column of boundaries_table (or property of the GeoJSON's features) holding the key_column values, as the features table writes them. Null: a column named as key_column."
  type        = string
  default     = null
  validation {
    condition     = var.boundaries_name_column == null || can(regex("^[A-Za-z_][A-Za-z0-9_]{0,299}$", coalesce(var.boundaries_name_column, "x")))
    error_message = "boundaries_name_column must be a plain column name (letters, digits and _, not starting with a digit)."
  }
}

variable "boundaries_geography_column" {
  description = "GEOGRAPHY column of boundaries_table holding the neighborhood's shape."
  type        = string
  default     = "geometry"
  validation {
    condition     = can(regex("^[A-Za-z_][A-Za-z0-9_]{0,299}$", var.boundaries_geography_column))
    error_message = "boundaries_geography_column must be a plain column name (letters, digits and _, not starting with a digit)."
  }
}

variable "claim_retention_days" {
  description = "Days an idempotency claim under claims/ is kept. It must outlive every redelivery of an event (retries stop after max_event_age_seconds, at most a day)."
  type        = number
  default     = 7
  validation {
    condition     = floor(var.claim_retention_days) == var.claim_retention_days && var.claim_retention_days >= 2 && var.claim_retention_days <= 365
    error_message = "claim_retention_days must be a whole number between 2 and 365: a shorter life would let a late redelivery run twice."
  }
}

# --- Function and delivery ---------------------------------------------------------------------

variable "function_memory" {
  description = "Memory of the function instance. The benchmark's 250k-row run peaks near 2 GiB RSS, so 4Gi (2 vCPU) is the smallest size with headroom; the vCPU count follows the memory."
  type        = string
  default     = "4Gi"
  validation {
    condition     = contains(["4Gi", "8Gi", "16Gi", "32Gi"], var.function_memory)
    error_message = "function_memory must be one of 4Gi, 8Gi, 16Gi, 32Gi (smaller sizes do not fit the benchmark's largest run)."
  }
}

variable "function_timeout_seconds" {
  description = "Run time limit of one invocation, in seconds. Passed to the code as FUNCTION_TIMEOUT_SECONDS: a run stops itself 30 s before it, and a run lock older than it plus 60 s is taken over."
  type        = number
  default     = 540
  validation {
    # Pub/Sub waits at most 600 s for a push response; 540 s keeps a timed-out run from
    # overlapping its own redelivery.
    # At least 120 s: the code stops a run 30 s before the timeout and publishes only with
    # 30 s left, which leaves a minute to read and cluster.
    condition     = floor(var.function_timeout_seconds) == var.function_timeout_seconds && var.function_timeout_seconds >= 120 && var.function_timeout_seconds <= 540
    error_message = "function_timeout_seconds must be a whole number between 120 and 540."
  }
}

variable "max_delivery_attempts" {
  description = "Deliveries of one message (first try and retries of transient failures) before it is moved to the dead-letter topic."
  type        = number
  default     = 10
  validation {
    condition     = floor(var.max_delivery_attempts) == var.max_delivery_attempts && var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be a whole number between 5 and 100 (the Pub/Sub limits)."
  }
}

variable "grant_pubsub_token_creator" {
  description = "Grant the Pub/Sub service agent roles/iam.serviceAccountTokenCreator on the trigger service account. Needed only in projects whose Pub/Sub service agent was created before April 8, 2021."
  type        = bool
  default     = false
  validation {
    condition     = var.grant_pubsub_token_creator != null
    error_message = "grant_pubsub_token_creator must be true or false."
  }
}

variable "deletion_protection" {
  description = "Protect the output tables from deletion and keep buckets that still hold objects. Set false (and apply) before terraform destroy."
  type        = bool
  default     = true
  validation {
    condition     = var.deletion_protection != null
    error_message = "deletion_protection must be true or false."
  }
}

# --- Analytic settings (passed to the function as environment variables) -----------------------
# Null (the default) means the code's default, read from clustering/defaults.json by
# defaults.tf; `python -m clustering run --help` and docs/configuration.md show the values.
# The defaults are the seed notebook's, for Baltimore's table: another city's table sets at
# least key_column, population_column, clustering_features, severity_feature and
# feature_directions (terraform/examples/community-areas.tfvars).

variable "key_column" {
  description = "Column of the features table naming each row (a neighborhood, tract, community area...), one row each; the clusters and transitions tables keep it under this name. Null: the code's default (neighborhood)."
  type        = string
  default     = null
  validation {
    condition     = var.key_column == null || can(regex("^[A-Za-z_][A-Za-z0-9_]{0,299}$", coalesce(var.key_column, "x")))
    error_message = "key_column must be a BigQuery column name (letters, digits and _, not starting with a digit)."
  }
}

variable "population_column" {
  description = "Column of the features table holding each row's residents; rows below min_population are analysed apart. \"none\" for a table without one: every row is clustered unless excluded by name, and there is no Low Population group. Null: the code's default (population)."
  type        = string
  default     = null
  validation {
    condition     = var.population_column == null || can(regex("^[A-Za-z_][A-Za-z0-9_]{0,299}$", coalesce(var.population_column, "x")))
    error_message = "population_column must be a BigQuery column name (letters, digits and _, not starting with a digit)."
  }
}

variable "feature_directions" {
  description = "Which way is better for each feature: feature => \"higher_is_worse\" or \"higher_is_better\", added to (and overriding) the code's defaults for the notebook's features. The severity feature needs one; the report and heatmap say better/worse by them. Null: the code's defaults only."
  type        = map(string)
  default     = null
  validation {
    condition     = var.feature_directions == null || alltrue([for f, d in coalesce(var.feature_directions, {}) : trimspace(f) != "" && contains(["higher_is_worse", "higher_is_better"], d)])
    error_message = "feature_directions values must be \"higher_is_worse\" or \"higher_is_better\", keyed by feature column."
  }
}

variable "min_population" {
  description = "Rows with fewer residents (population_column) are analysed as Low Population (Park/Open Space), not clustered as residential. Null: the code's default."
  type        = number
  default     = null
  validation {
    condition     = var.min_population == null ? true : floor(var.min_population) == var.min_population && var.min_population >= 0
    error_message = "min_population must be a whole number, 0 or more."
  }
}

variable "k_min" {
  description = "Smallest K of the elbow/silhouette diagnostic (a diagnostic only: the top split is always K=2). Null: the code's default."
  type        = number
  default     = null
  validation {
    condition     = var.k_min == null ? true : floor(var.k_min) == var.k_min && var.k_min >= 2
    error_message = "k_min must be a whole number, 2 or more."
  }
}

variable "k_max" {
  description = "Largest K of the elbow/silhouette diagnostic (at least k_min; a diagnostic only: the top split is always K=2). Null: the code's default."
  type        = number
  default     = null
  validation {
    condition     = var.k_max == null ? true : floor(var.k_max) == var.k_max && var.k_max >= 2 && var.k_max <= 50
    error_message = "k_max must be a whole number between 2 and 50."
  }
}

variable "sub_k_min" {
  description = "Smallest number of sub-clusters searched inside each top group. Null: the code's default."
  type        = number
  default     = null
  validation {
    condition     = var.sub_k_min == null ? true : floor(var.sub_k_min) == var.sub_k_min && var.sub_k_min >= 2
    error_message = "sub_k_min must be a whole number, 2 or more."
  }
}

variable "sub_k_max" {
  description = "Largest number of sub-clusters searched inside each top group (at least sub_k_min). Null: the code's default."
  type        = number
  default     = null
  validation {
    condition     = var.sub_k_max == null ? true : floor(var.sub_k_max) == var.sub_k_max && var.sub_k_max >= 2 && var.sub_k_max <= 20
    error_message = "sub_k_max must be a whole number between 2 and 20."
  }
}

variable "random_state" {
  description = "Seed of every k-means fit, the PCA and the silhouette sample: the same input gives the same clusters. Null: the code's default."
  type        = number
  default     = null
  validation {
    condition     = var.random_state == null ? true : floor(var.random_state) == var.random_state && var.random_state >= 0 && var.random_state < 4294967296
    error_message = "random_state must be a whole number in [0, 2^32)."
  }
}

variable "exclude_neighborhoods" {
  description = "Replaces the list of institutional and industrial areas (key_column values) kept out of the residential clustering and analysed separately ([] excludes none). Null: the seed notebook's 13 Baltimore names from the code. To add names to that list instead, use exclude_also."
  type        = list(string)
  default     = null
  validation {
    condition     = var.exclude_neighborhoods == null ? true : alltrue([for n in var.exclude_neighborhoods : trimspace(n) != ""])
    error_message = "exclude_neighborhoods entries must be non-empty key_column values."
  }
}

variable "exclude_also" {
  description = "Names excluded in addition to exclude_neighborhoods (extends the list where exclude_neighborhoods replaces it)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for n in var.exclude_also : trimspace(n) != ""])
    error_message = "exclude_also entries must be non-empty key_column values."
  }
}

variable "feature_labels" {
  description = "Words people read for a column in the cohort names, the report and the charts, e.g. { PCT_HOUSEHOLDS_IN_POVERTY = \"households in poverty\" }; the tables keep the column names. A column not named here reads as its name made readable (lower case, spaces for _)."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for column, words in var.feature_labels : trimspace(column) != "" && trimspace(words) != ""])
    error_message = "feature_labels must map column names to non-empty words."
  }
}

variable "row_noun" {
  description = "What one row is, in the report, the charts and the messages (\"community area\"; counted in the plural by rule). Null: key_column in words without a trailing name, number, id or code."
  type        = string
  default     = null
  validation {
    condition     = var.row_noun == null ? true : trimspace(var.row_noun) != ""
    error_message = "row_noun must be non-empty words, or null."
  }
}

variable "drop_keys" {
  description = "key_column values of rows that are not areas (a citywide total row): left out of the analysis and of every output, and listed in run.json and the report."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for n in var.drop_keys : trimspace(n) != ""])
    error_message = "drop_keys entries must be non-empty key_column values."
  }
}

variable "clustering_features" {
  description = "Feature columns to cluster on; a column named here that the table lacks fails the run (the code's default list, the seed notebook's Baltimore columns, used when null, skips absent columns with a warning)."
  type        = list(string)
  default     = null
  validation {
    condition = var.clustering_features == null ? true : (
      length(var.clustering_features) > 0
      && length(distinct(var.clustering_features)) == length(var.clustering_features)
      && alltrue([for f in var.clustering_features : trimspace(f) != ""])
    )
    error_message = "clustering_features must name at least one column, each once, none empty."
  }
}

variable "severity_feature" {
  description = "Column that names the top split: the group worse on it, by its feature_directions entry (which it needs), is Distressed, the other Stable. Null: the code's default (crime_per_capita)."
  type        = string
  default     = null
  validation {
    condition     = var.severity_feature == null ? true : trimspace(var.severity_feature) != ""
    error_message = "severity_feature must name a column."
  }
}

variable "silhouette_sample_size" {
  description = "Above this many rows, silhouettes are computed on a fixed-seed sample of this size (the exact score is O(n^2)). Null: the code's default."
  type        = number
  default     = null
  validation {
    condition     = var.silhouette_sample_size == null ? true : floor(var.silhouette_sample_size) == var.silhouette_sample_size && var.silhouette_sample_size >= 100
    error_message = "silhouette_sample_size must be a whole number, 100 or more."
  }
}

variable "max_event_age_seconds" {
  description = "A manual message older than this is acked without a run. A table change older than this still runs unless a successful run started after it. Must outlast the push subscription's retry window (checked at plan time)."
  type        = number
  default     = null # the code's default, clustering/defaults.json (defaults.tf)
  validation {
    condition     = var.max_event_age_seconds == null ? true : floor(var.max_event_age_seconds) == var.max_event_age_seconds && var.max_event_age_seconds >= 60 && var.max_event_age_seconds <= 86400
    error_message = "max_event_age_seconds must be a whole number between 60 and 86400 (one day)."
  }
}

variable "min_rows_ratio" {
  description = "Row-drop guard: a features table with fewer rows than this share of the last published run's input fails as bad data and publishes nothing, unless a message says \"force\": true. 0 turns the guard off."
  type        = number
  default     = null # the code's default, clustering/defaults.json (defaults.tf)
  validation {
    condition     = var.min_rows_ratio == null ? true : var.min_rows_ratio >= 0 && var.min_rows_ratio <= 1
    error_message = "min_rows_ratio must be between 0 and 1."
  }
}

variable "run_publishers" {
  description = "Members (user:..., group:..., serviceAccount:...) who may publish to the run topic, i.e. start a run by hand, also forced (the row-drop guard off for that run). The table-change topic has one publisher, the log sink."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for m in var.run_publishers : can(regex("^(user|group|serviceAccount|domain):", m))])
    error_message = "run_publishers entries must be IAM members such as group:analysts@example.com."
  }
}

variable "settle_seconds" {
  description = "A features table modified this recently (or while a run read it) is not published: the run is retried, so a refresh spread over several load or DML jobs is read whole. 0 turns the check off."
  type        = number
  default     = null # the code's default, clustering/defaults.json (defaults.tf)
  validation {
    condition     = var.settle_seconds == null ? true : var.settle_seconds >= 0 && floor(var.settle_seconds) == var.settle_seconds
    error_message = "settle_seconds must be a whole number of seconds, 0 or more."
  }
}

variable "output_columns" {
  description = "Columns of the features table that reach the clusters table, the CSVs and Looker Studio (the key_column always does). Empty keeps every column; set it when the features table carries a column that must not be published."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for c in var.output_columns : can(regex("^[A-Za-z_][A-Za-z0-9_]*$", c))])
    error_message = "output_columns entries must be column names (letters, digits and _)."
  }
}

# --- Engines (clustering/engines; the staging dataset: bigquery.tf) ---------------------------

variable "engine" {
  description = "Where rows are clustered: auto (in the function up to memory_max_rows rows of the features table, inside BigQuery above), memory or warehouse. Null: the code's default (auto)."
  type        = string
  default     = null # the code's default, clustering/defaults.json (defaults.tf)
  validation {
    condition     = var.engine == null ? true : contains(["auto", "memory", "warehouse"], var.engine)
    error_message = "engine must be auto, memory or warehouse."
  }
}

variable "memory_max_rows" {
  description = "The most rows of the features table the function reads into its own memory; under engine auto a larger table is fitted on a sample and scored inside BigQuery. Null: the code's default."
  type        = number
  default     = null # the code's default, clustering/defaults.json (defaults.tf)
  validation {
    condition     = var.memory_max_rows == null ? true : floor(var.memory_max_rows) == var.memory_max_rows && var.memory_max_rows >= 1
    error_message = "memory_max_rows must be a whole number, 1 or more."
  }
}

variable "sample_rows" {
  description = "Rows of the warehouse engine's fitting sample, chosen by a hash of the neighborhood key. Null: the code's default."
  type        = number
  default     = null # the code's default, clustering/defaults.json (defaults.tf)
  validation {
    condition     = var.sample_rows == null ? true : floor(var.sample_rows) == var.sample_rows && var.sample_rows >= 1000 && var.sample_rows <= 1000000
    error_message = "sample_rows must be a whole number from 1000 to 1000000."
  }
}

variable "maximum_bytes_billed" {
  description = "Cap on the bytes each query job of the warehouse engine may bill; a job above it fails before it costs anything. Null: the code's default (1 TiB)."
  type        = number
  default     = null # the code's default, clustering/defaults.json (defaults.tf)
  validation {
    condition     = var.maximum_bytes_billed == null ? true : floor(var.maximum_bytes_billed) == var.maximum_bytes_billed && var.maximum_bytes_billed >= 10485760
    error_message = "maximum_bytes_billed must be a whole number of bytes, at least 10485760 (BigQuery bills 10 MB per table a query reads)."
  }
}

variable "staging_dataset_id" {
  description = "Dataset created for the warehouse engine's staging tables (one scored copy of the clusters table per run, dropped when the run ends), in bigquery_location."
  type        = string
  default     = "neighborhood_clusters_staging"
  validation {
    condition     = can(regex("^[A-Za-z0-9_]{1,1024}$", var.staging_dataset_id))
    error_message = "staging_dataset_id may hold only letters, digits and underscores."
  }
}

variable "staging_expiration_hours" {
  description = "A staging table left behind by a run that crashed is deleted after this many hours (the dataset's default table expiration)."
  type        = number
  default     = 24
  validation {
    condition     = floor(var.staging_expiration_hours) == var.staging_expiration_hours && var.staging_expiration_hours >= 1 && var.staging_expiration_hours <= 720
    error_message = "staging_expiration_hours must be a whole number of hours from 1 to 720."
  }
}

# --- Alerts (monitoring.tf) --------------------------------------------------------------------

variable "alert_emails" {
  description = "Email addresses that receive every alert (one email notification channel each). Empty: the alerting policies are still created and open incidents in the console, but notify nobody unless notification_channel_ids names a channel."
  type        = list(string)
  default     = []
  validation {
    condition = (
      length(distinct(var.alert_emails)) == length(var.alert_emails)
      && alltrue([for e in var.alert_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    )
    error_message = "alert_emails must be distinct email addresses such as ops@example.org."
  }
}

variable "notification_channel_ids" {
  description = "Existing Cloud Monitoring notification channels (projects/<project>/notificationChannels/<id>: Slack, PagerDuty, SMS...) that receive every alert, besides alert_emails."
  type        = list(string)
  default     = []
  validation {
    condition = alltrue([
      for c in var.notification_channel_ids : can(regex("^projects/[^/]+/notificationChannels/[0-9]+$", c))
    ])
    error_message = "notification_channel_ids entries must be full channel names: projects/<project>/notificationChannels/<number>."
  }
}

variable "stale_after_days" {
  description = "The stale-results alert opens when the features table changed within this many days and no run succeeded in them."
  type        = number
  default     = 7
  validation {
    condition     = floor(var.stale_after_days) == var.stale_after_days && var.stale_after_days >= 1 && var.stale_after_days <= 90
    error_message = "stale_after_days must be a whole number of days between 1 and 90."
  }
}

variable "function_errors_per_hour" {
  description = "The function-errors alert opens when the function answers more than this many deliveries in one hour with a server error (an exception, a timeout, a crash at start-up)."
  type        = number
  default     = 3
  validation {
    condition     = floor(var.function_errors_per_hour) == var.function_errors_per_hour && var.function_errors_per_hour >= 0 && var.function_errors_per_hour <= 1000
    error_message = "function_errors_per_hour must be a whole number between 0 and 1000."
  }
}

variable "label_overrides" {
  description = "Cohort names that replace the generated ones, by stable cohort id (the sub_cluster column), e.g. { \"11\" = \"Rowhouse core\" }. Ids persist from run to run, so a name set here stays on its cohort."
  type        = map(string)
  default     = {}
  validation {
    condition = (
      alltrue([for id, label in var.label_overrides : can(regex("^[0-9]{1,9}$", id)) && trimspace(label) != ""])
      && length(distinct(values(var.label_overrides))) == length(var.label_overrides)
    )
    error_message = "label_overrides keys must be cohort ids (whole numbers such as \"11\") and values non-empty names, each name used once."
  }
}
