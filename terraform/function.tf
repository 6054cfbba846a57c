# The gen2 function. Its environment is exactly clustering.settings.ENV_VARS (checked by
# tests/test_terraform.py both ways), in the formats JobSettings.from_env parses.

locals {
  boundaries_object_uri = var.boundaries_object == null ? "" : "gs://${google_storage_bucket.artifacts.name}/${var.boundaries_object}"

  # Memory decides the vCPU count (Cloud Run's minimums for each memory size).
  function_cpu = {
    "4Gi"  = "2"
    "8Gi"  = "2"
    "16Gi" = "4"
    "32Gi" = "8"
  }

  function_environment = {
    FEATURES_SOURCE = "bq://${local.features_table}"
    # The bucket root: runs/, latest/ and claims/ sit at the top, where the lifecycle rules
    # (storage.tf) expect them.
    ARTIFACTS_DEST = "gs://${google_storage_bucket.artifacts.name}"
    CLUSTERS_TABLE = "bq://${google_bigquery_table.clusters.project}.${google_bigquery_table.clusters.dataset_id}.${google_bigquery_table.clusters.table_id}"
    RUNS_TABLE     = "bq://${google_bigquery_table.runs.project}.${google_bigquery_table.runs.dataset_id}.${google_bigquery_table.runs.table_id}"
    WATCHED_TABLE  = local.features_table
    # Optional: a GeoJSON in the artifacts bucket, read with the bucket access the function
    # already has; each run then also draws cluster_map.png.
    # Or a BigQuery table with a GEOGRAPHY column, which iam.tf lets the function read.
    BOUNDARIES_SOURCE           = var.boundaries_table == null ? "${local.boundaries_object_uri}" : "bq://${var.boundaries_table}"
    BOUNDARIES_NAME_COLUMN      = var.boundaries_name_column == null ? local.analysis.key_column : var.boundaries_name_column
    BOUNDARIES_GEOGRAPHY_COLUMN = var.boundaries_geography_column
    # JSON lists, as settings.parse_name_list reads them.
    ALLOWED_FEATURES_TABLES = jsonencode(var.allowed_features_tables)
    # Only deliveries through this subscription (the log sink's topic) are table changes.
    TABLE_CHANGES_SUBSCRIPTION = local.table_changes_subscription
    # Audit-log events caused by this principal are skipped by the code, as by the sink filter.
    FUNCTION_SERVICE_ACCOUNT = google_service_account.runtime.email
    MAX_EVENT_AGE_SECONDS    = tostring(local.limits.max_event_age_seconds)
    # The code stops a run before this timeout (clustering/adapters/budget.py) and only takes a run
    # lock over once it is older than it.
    FUNCTION_TIMEOUT_SECONDS = tostring(var.function_timeout_seconds)
    MIN_ROWS_RATIO           = tostring(local.limits.min_rows_ratio)
    # A features table modified this recently is read again later (the run is retried).
    SETTLE_SECONDS = tostring(local.limits.settle_seconds)
    # The input columns that reach the outputs; [] keeps every column.
    OUTPUT_COLUMNS = jsonencode(var.output_columns)
    # The analytic settings, with the code's defaults where a variable is null (defaults.tf).
    KEY_COLUMN            = local.analysis.key_column
    POPULATION_COLUMN     = local.analysis.population_column
    MIN_POPULATION        = tostring(local.analysis.min_population)
    K_MIN                 = tostring(local.analysis.k_min)
    K_MAX                 = tostring(local.analysis.k_max)
    SUB_K_MIN             = tostring(local.analysis.sub_k_min)
    SUB_K_MAX             = tostring(local.analysis.sub_k_max)
    RANDOM_STATE          = tostring(local.analysis.random_state)
    EXCLUDE_NEIGHBORHOODS = jsonencode(local.analysis.exclude_neighborhoods)
    EXCLUDE_ALSO          = jsonencode(var.exclude_also)
    DROP_KEYS             = jsonencode(var.drop_keys)
    CLUSTERING_FEATURES   = jsonencode(local.analysis.clustering_features)
    SEVERITY_FEATURE      = local.analysis.severity_feature
    # A JSON object, as settings.parse_feature_directions reads it (over the code's defaults).
    FEATURE_DIRECTIONS     = jsonencode(local.analysis.feature_directions)
    SILHOUETTE_SAMPLE_SIZE = tostring(local.analysis.silhouette_sample_size)
    # Words for people: a JSON object as settings.parse_feature_labels reads it, and the row
    # noun ("" derives it from KEY_COLUMN).
    FEATURE_LABELS    = jsonencode(var.feature_labels)
    ROW_NOUN          = var.row_noun == null ? "" : "${var.row_noun}"
    TRANSITIONS_TABLE = "bq://${google_bigquery_table.transitions.project}.${google_bigquery_table.transitions.dataset_id}.${google_bigquery_table.transitions.table_id}"
    # A JSON object, as settings.parse_label_overrides reads it.
    LABEL_OVERRIDES = jsonencode(var.label_overrides)
    # The engines, with the code's defaults where a variable is null (defaults.tf).
    ENGINE               = local.engine.engine
    MEMORY_MAX_ROWS      = tostring(local.engine.memory_max_rows)
    SAMPLE_ROWS          = tostring(local.engine.sample_rows)
    MAXIMUM_BYTES_BILLED = tostring(local.engine.maximum_bytes_billed)
    STAGING_DATASET      = "${google_bigquery_dataset.staging.project}.${google_bigquery_dataset.staging.dataset_id}"
  }
}

resource "google_cloudfunctions2_function" "recluster" {
  project     = var.project_id
  location    = var.region
  name        = var.name
  description = "Re-clusters the rows of ${local.features_table} when it changes or a message asks for a run."
  labels      = local.labels

  build_config {
    runtime     = "python311" # the version the tests run on
    entry_point = "recluster" # main.py, HTTP signature: the code parses every push body itself
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.function_source.name
      }
    }
  }

  # No event_trigger: the push subscription in triggers.tf delivers the events, so that
  # retries and dead lettering are under this configuration's control. The function is an
  # HTTP function that parses each raw push body itself (clustering/cloud/events.py): the
  # framework's CloudEvent conversion answers 400 to attribute-only messages before any code
  # runs.
  service_config {
    available_memory = var.function_memory
    available_cpu    = local.function_cpu[var.function_memory]
    timeout_seconds  = var.function_timeout_seconds
    # One run at a time per revision. This alone does not serialize runs (a redeploy runs two
    # revisions, and a timed-out run keeps its thread): the run lock in the artifacts bucket
    # does (clustering/adapters/claims.py); this keeps a second delivery from waiting on the first.
    min_instance_count               = 0
    max_instance_count               = 1
    max_instance_request_concurrency = 1
    # Only Google-internal callers (the push subscription); IAM still requires run.invoker.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.runtime.email
    environment_variables          = local.function_environment
  }

  lifecycle {
    # Cross-variable checks the variables cannot express; the function would refuse these
    # settings at start-up, after a deploy that looked fine.
    precondition {
      condition     = local.analysis.k_min <= local.analysis.k_max
      error_message = "k_min must not exceed k_max."
    }
    precondition {
      condition     = local.analysis.sub_k_min <= local.analysis.sub_k_max
      error_message = "sub_k_min must not exceed sub_k_max."
    }
    # The code adds feature_directions to its defaults; the severity feature needs one of them.
    precondition {
      condition     = contains(keys(merge(local.code_defaults.feature_directions, coalesce(var.feature_directions, {}))), local.analysis.severity_feature)
      error_message = "severity_feature needs a direction: add it to feature_directions (\"higher_is_worse\" or \"higher_is_better\")."
    }
    precondition {
      condition     = local.analysis.key_column != local.analysis.population_column
      error_message = "key_column and population_column must be two different columns."
    }
    # A table change that waited through every retry must still be recognised as one to run:
    # the age limit outlasts the push subscription's retry window (triggers.tf: attempts x
    # (600 s ack deadline + 600 s maximum backoff), and Pub/Sub keeps a message a day at most).
    precondition {
      condition     = local.limits.max_event_age_seconds >= min(86400, var.max_delivery_attempts * 1200)
      error_message = "max_event_age_seconds must be at least the retry window: max_delivery_attempts x 1200 s, or 86400."
    }
  }

  depends_on = [google_project_service.this]
}
