# Inputs. Every value the function receives comes from here; the analytic defaults are the
# notebook's and equal clustering/settings.py (tests/test_terraform.py checks both ways).

# --- Project and naming ----------------------------------------------------------------------

variable "project_id" {
  description = "Project that holds the features table and receives every resource of the job."
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

variable "features_dataset_id" {
  description = "Existing dataset of the features table (in project_id). It is not managed here: another pipeline owns it."
  type        = string
  default     = "analytics"
  validation {
    condition     = can(regex("^[A-Za-z0-9_]{1,1024}$", var.features_dataset_id))
    error_message = "features_dataset_id may hold only letters, digits and underscores."
  }
}

variable "features_table_id" {
  description = "Existing features table whose data changes trigger a run; read by every run."
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
  description = "Output table, replaced by every successful run (one row per neighborhood); the table Looker Studio reads."
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

variable "transitions_table_id" {
  description = "Transitions table: one row appended per neighborhood that changed cohort, by every run that follows a published one."
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
  description = "Optional object name, inside the artifacts bucket, of a GeoJSON FeatureCollection of the neighborhoods (a 'neighborhood' or 'name' property per polygon). When set, every run also draws cluster_map.png. Upload it outside runs/ and claims/, which expire, e.g. inputs/neighborhoods.geojson."
  type        = string
  default     = null
  validation {
    condition     = var.boundaries_object == null || can(regex("^[^/][^\\r\\n]*\\.(geo)?json$", var.boundaries_object)) && !startswith(coalesce(var.boundaries_object, "x"), "runs/") && !startswith(coalesce(var.boundaries_object, "x"), "claims/")
    error_message = "boundaries_object must be an object name ending in .geojson or .json, not under runs/ or claims/ (both expire)."
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
  description = "Run time limit of one invocation, in seconds."
  type        = number
  default     = 540
  validation {
    # Pub/Sub waits at most 600 s for a push response; 540 s keeps a timed-out run from
    # overlapping its own redelivery.
    condition     = floor(var.function_timeout_seconds) == var.function_timeout_seconds && var.function_timeout_seconds >= 60 && var.function_timeout_seconds <= 540
    error_message = "function_timeout_seconds must be a whole number between 60 and 540."
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

variable "min_population" {
  description = "Neighborhoods with fewer residents are analysed as Low Population (Park/Open Space), not clustered as residential."
  type        = number
  default     = 100
  validation {
    condition     = floor(var.min_population) == var.min_population && var.min_population >= 0
    error_message = "min_population must be a whole number, 0 or more."
  }
}

variable "k_min" {
  description = "Smallest K of the elbow/silhouette diagnostics."
  type        = number
  default     = 2
  validation {
    condition     = floor(var.k_min) == var.k_min && var.k_min >= 2
    error_message = "k_min must be a whole number, 2 or more."
  }
}

variable "k_max" {
  description = "Largest K of the elbow/silhouette diagnostics (at least k_min)."
  type        = number
  default     = 10
  validation {
    condition     = floor(var.k_max) == var.k_max && var.k_max >= 2 && var.k_max <= 50
    error_message = "k_max must be a whole number between 2 and 50."
  }
}

variable "sub_k_min" {
  description = "Smallest number of sub-clusters searched inside each top group."
  type        = number
  default     = 2
  validation {
    condition     = floor(var.sub_k_min) == var.sub_k_min && var.sub_k_min >= 2
    error_message = "sub_k_min must be a whole number, 2 or more."
  }
}

variable "sub_k_max" {
  description = "Largest number of sub-clusters searched inside each top group (at least sub_k_min)."
  type        = number
  default     = 5
  validation {
    condition     = floor(var.sub_k_max) == var.sub_k_max && var.sub_k_max >= 2 && var.sub_k_max <= 20
    error_message = "sub_k_max must be a whole number between 2 and 20."
  }
}

variable "random_state" {
  description = "Seed of every k-means fit, the PCA and the silhouette sample: the same input gives the same clusters."
  type        = number
  default     = 42
  validation {
    condition     = floor(var.random_state) == var.random_state && var.random_state >= 0 && var.random_state < 4294967296
    error_message = "random_state must be a whole number in [0, 2^32)."
  }
}

variable "exclude_neighborhoods" {
  description = "Institutional and industrial areas kept out of the residential clustering and analysed separately (the notebook's one list)."
  type        = list(string)
  default = [
    "Canton Industrial Area",
    "Fairfield Area",
    "Inner Harbor",
    "Pulaski Industrial Area",
    "Stadium/Entertainment Area",
    "Dunbar-Broadway",
    "Hopkins Bayview",
    "Johns Hopkins Homewood",
    "Morgan State University",
    "Penn-Fallsway",
    "Perkins",
    "University of Maryland",
    "Harbor Point",
  ]
  validation {
    condition     = alltrue([for n in var.exclude_neighborhoods : trimspace(n) != ""])
    error_message = "exclude_neighborhoods entries must be non-empty neighborhood names."
  }
}

variable "clustering_features" {
  description = "Feature columns to cluster on; configured columns absent from the table are skipped and reported in run.json."
  type        = list(string)
  default = [
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
  ]
  validation {
    condition = (
      length(var.clustering_features) > 0
      && length(distinct(var.clustering_features)) == length(var.clustering_features)
      && alltrue([for f in var.clustering_features : trimspace(f) != ""])
    )
    error_message = "clustering_features must name at least one column, each once, none empty."
  }
}

variable "severity_feature" {
  description = "Column that names the top split: the group whose mean is below the residential mean is Stable, the other Distressed."
  type        = string
  default     = "crime_per_capita"
  validation {
    condition     = trimspace(var.severity_feature) != ""
    error_message = "severity_feature must name a column."
  }
}

variable "silhouette_sample_size" {
  description = "Above this many rows, silhouettes are computed on a fixed-seed sample of this size (the exact score is O(n^2))."
  type        = number
  default     = 3000
  validation {
    condition     = floor(var.silhouette_sample_size) == var.silhouette_sample_size && var.silhouette_sample_size >= 100
    error_message = "silhouette_sample_size must be a whole number, 100 or more."
  }
}

variable "max_event_age_seconds" {
  description = "Events older than this are acked without a run: a redelivery that late would only repeat stale work."
  type        = number
  default     = 3600
  validation {
    condition     = floor(var.max_event_age_seconds) == var.max_event_age_seconds && var.max_event_age_seconds >= 60 && var.max_event_age_seconds <= 86400
    error_message = "max_event_age_seconds must be a whole number between 60 and 86400 (one day)."
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
