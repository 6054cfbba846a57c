# What an operator needs after apply: where to publish, where results land, who runs what.

output "function_name" {
  description = "Name of the gen2 function (for gcloud functions logs read)."
  value       = google_cloudfunctions2_function.recluster.name
}

output "function_uri" {
  description = "Internal URL of the function's service; only the push subscription may call it."
  value       = google_cloudfunctions2_function.recluster.service_config[0].uri
}

output "runs_topic" {
  description = "Topic that starts a run: publish a JSON message to it."
  value       = google_pubsub_topic.runs.name
}

output "table_changes_topic" {
  description = "Topic the log sink publishes table changes to; nobody else may publish there."
  value       = google_pubsub_topic.table_changes.name
}

output "manual_run_command" {
  description = "gcloud command that starts a run by hand."
  value       = "gcloud pubsub topics publish ${google_pubsub_topic.runs.name} --project=${var.project_id} --message='{\"reason\": \"manual\"}'"
}

output "dead_letter_subscription" {
  description = "Subscription that keeps messages the function failed to process max_delivery_attempts times."
  value       = google_pubsub_subscription.dead_letter.name
}

output "artifacts_bucket" {
  description = "Bucket of the charts and CSVs: latest/ is the last successful run, runs/<run_id>/ every run."
  value       = google_storage_bucket.artifacts.name
}

output "clusters_table" {
  description = "project.dataset.table of the clusters table (the Looker Studio source)."
  value       = local.clusters_table
}

output "runs_table" {
  description = "project.dataset.table of the run history table."
  value       = local.runs_table
}

output "freshness_view" {
  description = "project.dataset.table of the run freshness view (the last successful run and failures since), for Looker Studio."
  value       = "${google_bigquery_table.run_freshness.project}.${google_bigquery_table.run_freshness.dataset_id}.${google_bigquery_table.run_freshness.table_id}"
}

output "alert_policies" {
  description = "Names of the alerting policies (Monitoring > Alerting in the console)."
  value       = { for key, policy in local.alert_policies : key => policy.name }
}

output "notification_channels" {
  description = "Notification channels every alert notifies (alert_emails and notification_channel_ids); empty means incidents open in the console only."
  value       = local.notification_channels
}

# Looker Studio's Linking API: a link that opens a new report already connected to the table
# (a BigQuery data source on it, queries billed to project_id); save the report to keep it.
locals {
  looker_studio_links = {
    for name, table in { clusters = google_bigquery_table.clusters, transitions = google_bigquery_table.transitions } : name => join("&", [
      "https://lookerstudio.google.com/reporting/create?r.reportName=${urlencode("${var.name} ${name}")}",
      "ds.ds0.connector=bigQuery",
      "ds.ds0.type=TABLE",
      "ds.ds0.projectId=${table.project}",
      "ds.ds0.datasetId=${table.dataset_id}",
      "ds.ds0.tableId=${table.table_id}",
      "ds.ds0.billingProjectId=${var.project_id}",
      "ds.ds0.datasourceName=${urlencode(table.table_id)}",
    ])
  }
}

output "looker_studio_clusters_report" {
  description = "Open this link to start a Looker Studio report already connected to the clusters table (docs/deploy.md, Looker Studio)."
  value       = local.looker_studio_links.clusters
}

output "looker_studio_transitions_report" {
  description = "Open this link to start a Looker Studio report already connected to the transitions table."
  value       = local.looker_studio_links.transitions
}

output "transitions_table" {
  description = "project.dataset.table of the cohort transitions table (rows that changed cohort, per run)."
  value       = local.transitions_table
}

output "runtime_service_account" {
  description = "Service account the function runs as."
  value       = google_service_account.runtime.email
}

output "trigger_service_account" {
  description = "Service account whose token Pub/Sub presents to the function."
  value       = google_service_account.trigger.email
}

output "log_sink_writer_identity" {
  description = "Identity the table-change log sink publishes as."
  value       = google_logging_project_sink.features_changed.writer_identity
}
