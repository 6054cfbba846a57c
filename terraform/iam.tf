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

# What each write the code makes needs, from Google's documentation (permission -> where):
#   load job, WRITE_TRUNCATE (clusters) or WRITE_APPEND (transitions; memory engine):
#     bigquery.tables.create, bigquery.tables.updateData, bigquery.tables.update, jobs.create
#     https://cloud.google.com/bigquery/docs/loading-data-cloud-storage-parquet
#   streaming insert (runs table): bigquery.tables.updateData and bigquery.tables.get on the
#     table, bigquery.datasets.get on the dataset
#     https://cloud.google.com/bigquery/docs/reference/rest/v2/tabledata/insertAll
#   copy of a staging table over the clusters table (warehouse engine, WRITE_TRUNCATE):
#     bigquery.tables.get and bigquery.tables.getData on the source, bigquery.tables.create
#     and bigquery.tables.updateData on the destination's dataset
#     https://cloud.google.com/bigquery/docs/table-clones-create
#   query job into a table (staging tables; the INSERT into transitions):
#     bigquery.tables.create on the dataset, bigquery.tables.getData on every table read
#     https://cloud.google.com/bigquery/docs/tables
#   EXPORT DATA / extract of a staging table: bigquery.tables.export on it
#     https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs/insert
#     https://cloud.google.com/bigquery/docs/exporting-data
#   dropping a staging table: bigquery.tables.delete on it
#     https://cloud.google.com/bigquery/docs/reference/rest/v2/tables/delete
# tests/test_terraform.py pins each role's permissions to this list.

# Write access on the three output tables only: read a table's metadata and rows (the clusters
# table's run_id is read back after each load, the transitions query reads it), replace its
# rows and schema (the WRITE_TRUNCATE load or copy), append (runs, transitions).
# bigquery.dataEditor would add bigquery.tables.delete. bigquery.tables.update is what a
# WRITE_TRUNCATE load needs to replace the schema; it also lets the account change the tables'
# other metadata, an expiration included (docs/deploy.md says what that means).
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

# What the load, copy and insert above need on the output dataset itself: bigquery.tables.create
# (checked on the destination's dataset by loads and copies, even over an existing table) and
# bigquery.datasets.get (streaming inserts). Neither reads, changes or deletes any table of the
# dataset, which may hold other tables (the features table among them); a table the account
# creates there gets no grant from it.
resource "google_project_iam_custom_role" "output_dataset_user" {
  project     = var.project_id
  role_id     = replace("${var.name}_output_dataset_user", "-", "_")
  title       = "Neighborhood clusters output dataset user"
  description = "Look up the output dataset and create tables in it, as loads and copies into its tables require."
  permissions = [
    "bigquery.datasets.get",
    "bigquery.tables.create",
  ]
}

resource "google_bigquery_dataset_iam_member" "runtime_output_dataset_user" {
  project    = var.project_id
  dataset_id = local.output_dataset_id
  role       = google_project_iam_custom_role.output_dataset_user.name
  member     = "serviceAccount:${google_service_account.runtime.email}"
}

# The warehouse engine's staging dataset, and only it: each run creates its staging tables, fills
# them with query jobs, reads them (the copy over the clusters table, the transitions INSERT),
# exports them (EXPORT DATA) and drops them. Exactly those permissions, instead of
# bigquery.dataEditor (which adds table IAM, tags, snapshots and more).
resource "google_project_iam_custom_role" "staging_user" {
  project     = var.project_id
  role_id     = replace("${var.name}_staging_user", "-", "_")
  title       = "Neighborhood clusters staging tables"
  description = "Create, fill, read, export and drop the staging tables of a warehouse run."
  permissions = [
    "bigquery.datasets.get",
    "bigquery.tables.create",
    "bigquery.tables.delete",
    "bigquery.tables.export",
    "bigquery.tables.get",
    "bigquery.tables.getData",
    "bigquery.tables.updateData",
  ]
}

resource "google_bigquery_dataset_iam_member" "runtime_staging_user" {
  project    = var.project_id
  dataset_id = google_bigquery_dataset.staging.dataset_id
  role       = google_project_iam_custom_role.staging_user.name
  member     = "serviceAccount:${google_service_account.runtime.email}"
}

# Object access on the artifacts bucket only. The code creates claims with
# if_generation_match=0, writes runs/<run_id>/, then overwrites latest/ (an overwrite needs
# storage.objects.delete), reads, lists and deletes under latest/. objectCreator cannot
# overwrite or delete and objectViewer cannot write; objectAdmin would add object IAM
# management, which uniform bucket-level access makes moot. objectUser is the narrowest
# predefined role with create, get, list, update and delete, and it carries no bucket
# administration; it holds storage.objects.create and storage.objects.delete, which EXPORT DATA
# needs on the bucket it writes (https://cloud.google.com/bigquery/docs/exporting-data).
# Prefix conditions are not used: listing is checked on the bucket, not on
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
