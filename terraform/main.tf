# Names and identifiers shared by several files. Each resource lives in the file of its
# concern: apis, iam, storage, pubsub, function, triggers, bigquery.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  # Labels on everything: the app label is the one the function also puts on its own BigQuery
  # jobs (clustering/naming.py JOB_LABELS), so all of the job's resources filter together.
  labels = merge(var.labels, { app = "neighborhood-clusters" })

  artifacts_bucket = coalesce(var.artifacts_bucket_name, "${var.project_id}-${var.name}-artifacts")
  source_bucket    = coalesce(var.source_bucket_name, "${var.project_id}-${var.name}-source")

  # The features table may live in another project (features_project_id): its read grant,
  # its log sink and its change metric are created there.
  features_project = coalesce(var.features_project_id, var.project_id)

  # project.dataset.table of every table the function touches.
  features_table    = "${local.features_project}.${var.features_dataset_id}.${var.features_table_id}"
  clusters_table    = "${var.project_id}.${var.dataset_id}.${var.clusters_table_id}"
  runs_table        = "${var.project_id}.${var.dataset_id}.${var.runs_table_id}"
  transitions_table = "${var.project_id}.${var.dataset_id}.${var.transitions_table_id}"

  # The Google-managed Pub/Sub service agent: it pushes messages with the trigger account's
  # token and moves undeliverable messages to the dead-letter topic.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}
