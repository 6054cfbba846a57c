# Identities and every grant the job needs, each on the narrowest resource that works.
# No primitive roles, no project-wide data access, no keys: the function runs as its attached
# service account (Application Default Credentials) and Pub/Sub signs its pushes with a
# short-lived OIDC token of the trigger account.

# --- Runtime: what the function's code runs as -------------------------------------------------

resource "google_service_account" "runtime" {
  project      = var.project_id
  account_id   = "${var.name}-run"
  display_name = "Neighborhood clusters function (runtime)"
  description  = "Reads the features table, writes the clusters and runs tables and the artifacts bucket."
  depends_on   = [google_project_service.this]
}

# Creating a query or load job is a project-level permission (bigquery.jobs.create); jobUser
# carries no access to any table data.
resource "google_project_iam_member" "runtime_job_user" {
  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = "serviceAccount:${google_service_account.runtime.email}"
}

# Read access on the features table and on each table a message may select, table by table:
# a dataset-level grant would expose every other table of the (shared) analytics dataset.
resource "google_bigquery_table_iam_member" "runtime_features_reader" {
  for_each   = local.readable_tables
  project    = split(".", each.value)[0]
  dataset_id = split(".", each.value)[1]
  table_id   = split(".", each.value)[2]
  role       = "roles/bigquery.dataViewer"
  member     = "serviceAccount:${google_service_account.runtime.email}"
}

# Read access on the boundaries table, only when one is configured, and on that table alone.
resource "google_bigquery_table_iam_member" "runtime_boundaries_reader" {
  count      = var.boundaries_table == null ? 0 : 1
  project    = split(".", var.boundaries_table)[0]
  dataset_id = split(".", var.boundaries_table)[1]
  table_id   = split(".", var.boundaries_table)[2]
  role       = "roles/bigquery.dataViewer"
  member     = "serviceAccount:${google_service_account.runtime.email}"
}

# Write access on the three output tables only, with a role of exactly what the code does:
# read a table's metadata and rows (the clusters table's run_id is read back after each load),
# replace its rows and schema (the WRITE_TRUNCATE load of the clusters table), append (the
# runs and transitions tables). bigquery.dataEditor would add bigquery.tables.delete (and
# create, which on a table grants nothing: tables are created by Terraform, on the dataset).
resource "google_project_iam_custom_role" "output_writer" {
  project     = var.project_id
  role_id     = replace("${var.name}_output_writer", "-", "_")
  title       = "Neighborhood clusters output writer"
  description = "Replace and append rows of the clusters, runs and transitions tables; never delete them."
  permissions = [
    "bigquery.tables.get",
    "bigquery.tables.getData",
    "bigquery.tables.update",
    "bigquery.tables.updateData",
  ]
}

resource "google_bigquery_table_iam_member" "runtime_output_writer" {
  for_each = {
    clusters    = google_bigquery_table.clusters.table_id
    runs        = google_bigquery_table.runs.table_id
    transitions = google_bigquery_table.transitions.table_id
  }
  project    = var.project_id
  dataset_id = var.dataset_id
  table_id   = each.value
  role       = google_project_iam_custom_role.output_writer.name
  member     = "serviceAccount:${google_service_account.runtime.email}"
}

# The warehouse engine's staging dataset, and only it: dataEditor on a dataset creates and
# deletes its tables (a run's staging table) and lets query jobs write them. The copy of a
# staging table over the clusters table and the append to the transitions table use the
# table-level grants above; EXPORT DATA writes the CSVs with the bucket grant below.
resource "google_bigquery_dataset_iam_member" "runtime_staging_editor" {
  project    = var.project_id
  dataset_id = google_bigquery_dataset.staging.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = "serviceAccount:${google_service_account.runtime.email}"
}

# Object access on the artifacts bucket only. The code creates claims with
# if_generation_match=0, writes runs/<run_id>/, then overwrites latest/ (an overwrite needs
# storage.objects.delete), reads, lists and deletes under latest/. objectCreator cannot
# overwrite or delete and objectViewer cannot write; objectAdmin would add object IAM
# management, which uniform bucket-level access makes moot. objectUser is the narrowest
# predefined role with create, get, list, update and delete, and it carries no bucket
# administration. Prefix conditions are not used: listing is checked on the bucket, not on
# object names, so a prefix condition would break the list under latest/.
resource "google_storage_bucket_iam_member" "runtime_artifacts" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.runtime.email}"
}

# --- Trigger: the identity Pub/Sub presents when it pushes a message to the function ------------

resource "google_service_account" "trigger" {
  project      = var.project_id
  account_id   = "${var.name}-trigger"
  display_name = "Neighborhood clusters function (trigger)"
  description  = "Identity of the Pub/Sub push subscription; may only invoke the function."
  depends_on   = [google_project_service.this]
}

# Invoking a gen2 function is invoking its Cloud Run service: run.invoker on that one service.
resource "google_cloud_run_v2_service_iam_member" "trigger_invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.recluster.service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.trigger.email}"
}

# Pub/Sub mints the trigger account's OIDC token itself in projects created after April 2021;
# older projects need this grant, on this one account only.
resource "google_service_account_iam_member" "pubsub_token_creator" {
  count              = var.grant_pubsub_token_creator ? 1 : 0
  service_account_id = google_service_account.trigger.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# --- Log sink and dead lettering ------------------------------------------------------------------

# The sink's writer identity may publish to the table-change topic, and to nothing else; no
# one else may publish there (the function trusts a LogEntry only from this topic).
resource "google_pubsub_topic_iam_member" "sink_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.table_changes.name
  role    = "roles/pubsub.publisher"
  member  = google_logging_project_sink.features_changed.writer_identity
}

# Dead lettering is done by the Pub/Sub service agent: it must publish to the dead-letter
# topic and acknowledge the message on the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.function_push.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "table_changes_dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.table_changes_push.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# Who may start a run by hand: publishers of the run topic (var.run_publishers). A manual
# message may ask for a dry run, another allowed features table, or `force` (the row-drop
# guard off for that run): grant it to the people who may replace the published results.
resource "google_pubsub_topic_iam_member" "run_publishers" {
  for_each = toset(var.run_publishers)
  project  = var.project_id
  topic    = google_pubsub_topic.runs.name
  role     = "roles/pubsub.publisher"
  member   = each.value
}

locals {
  # The features table plus every table a manual message may select (duplicates collapse).
  readable_tables = toset(concat([local.features_table], var.allowed_features_tables))
}
