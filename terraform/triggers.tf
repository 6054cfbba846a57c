# The two ways a run starts, each through a topic and a push subscription of its own:
#
# 1. Manual: `gcloud pubsub topics publish <runs topic> --message='{"reason": "manual"}'`.
# 2. Table change: a Cloud Logging sink forwards the BigQuery audit-log entry of every data
#    change of the features table to the table-change topic, which nobody else may publish
#    to. The function takes a LogEntry as a table change only from that topic's subscription
#    (TABLE_CHANGES_SUBSCRIPTION), and refuses one on the run topic: a manual publisher cannot
#    forge a change (skip the age limit, take a future job's idempotency key).
#
# Why a log sink and not an Eventarc audit-log trigger: Eventarc filters audit logs only on
# serviceName, methodName and resourceName. Every read of the features table by the function
# itself logs an entry with the same resourceName and method (InsertJob), so an Eventarc
# trigger would invoke the function for its own reads, and it cannot require tableDataChange
# nor exclude a principal. The logging filter language can: the sink below forwards only
# tableDataChange entries of exactly the features table that the function's own account did
# not cause. The function re-checks all of this (clustering/cloud/events.py), so a too-broad filter
# costs an invocation, never a loop.
#
# Why a push subscription and not the function's own event_trigger: a Cloud Functions trigger
# manages its subscription itself, with retries for up to a day and no dead-letter topic that
# Terraform can attach. Owning the subscription gives bounded retries, a dead-letter topic for
# messages that still fail, an ack deadline longer than the function timeout and no expiry.

locals {
  # Known before the subscription exists: the function's environment names it, and the
  # subscription's push endpoint names the function, so its id cannot be used (a cycle).
  table_changes_subscription_name = "${var.name}-table-changes-push"
  table_changes_subscription      = "projects/${var.project_id}/subscriptions/${local.table_changes_subscription_name}"
}

resource "google_logging_project_sink" "features_changed" {
  # In the features table's project: its audit logs are written there (features_project_id).
  project     = local.features_project
  name        = "${var.name}-features-changed"
  description = "BigQuery data changes of ${local.features_table} -> ${google_pubsub_topic.table_changes.name}"
  destination = "pubsub.googleapis.com/${google_pubsub_topic.table_changes.id}"
  # A dedicated writer identity, granted publish on the table-change topic alone (iam.tf).
  unique_writer_identity = true

  # The conditions, one per line, are ANDed:
  # - the data_access audit log of BigQuery, which BigQuery writes by default (no audit config
  #   is managed here);
  # - exactly the features table, not a dataset-wide pattern, which would also match the
  #   function's writes to the clusters and runs tables (when they share the dataset);
  # - only data changes: the function's own read of the table (tableDataRead) has the same
  #   resourceName and method (InsertJob);
  # - not the Storage Write API's unfinished entries (each append, and FINALIZE, logs one; the
  #   data becomes visible at BATCH_COMMIT or FLUSH, which do pass), the same reasons the
  #   code skips (clustering/cloud/events.py NON_RUN_REASONS; tests/test_terraform.py compares);
  # - never an entry caused by the function's own service account.
  filter = <<-EOT
    logName="projects/${local.features_project}/logs/cloudaudit.googleapis.com%2Fdata_access"
    protoPayload.serviceName="bigquery.googleapis.com"
    protoPayload.resourceName="projects/${local.features_project}/datasets/${var.features_dataset_id}/tables/${var.features_table_id}"
    protoPayload.metadata.tableDataChange:*
    NOT protoPayload.metadata.tableDataChange.reason="WRITE_API_APPEND_ROWS"
    NOT protoPayload.metadata.tableDataChange.reason="FINALIZE"
    NOT protoPayload.authenticationInfo.principalEmail="${google_service_account.runtime.email}"
  EOT

  depends_on = [google_project_service.this]
}

# The Pub/Sub trigger: pushes every message of the run topic to the function, authenticated
# with the trigger account's OIDC token (the function accepts internal traffic only, and Pub/Sub
# push from this project counts as internal).
resource "google_pubsub_subscription" "function_push" {
  project = var.project_id
  name    = "${var.name}-runs-push"
  topic   = google_pubsub_topic.runs.id
  labels  = local.labels

  # For a push subscription this is the request timeout: longer than the function's own
  # timeout, so a run still in progress is never delivered a second time. It and the maximum
  # backoff make the retry window the age limit must outlast (function.tf precondition).
  ack_deadline_seconds = 600
  # A message that waited longer than a day is dropped by the function anyway.
  message_retention_duration = "86400s"
  retain_acked_messages      = false

  # Retries: a transient failure (the function raised, timed out, or the single instance was
  # busy) is redelivered with exponential backoff; permanent errors are acked by the function
  # and never come back.
  retry_policy {
    minimum_backoff = "30s"
    maximum_backoff = "600s"
  }

  # After max_delivery_attempts the message moves to the dead-letter topic and its
  # subscription keeps it (pubsub.tf).
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  push_config {
    # The topic path in the URL names the source of the event the code builds from the raw
    # push body; the function serves every path.
    push_endpoint = "${google_cloudfunctions2_function.recluster.service_config[0].uri}/${google_pubsub_topic.runs.id}"
    oidc_token {
      service_account_email = google_service_account.trigger.email
      audience              = google_cloudfunctions2_function.recluster.service_config[0].uri
    }
  }

  # The invoker grant and the dead-letter grants must exist before the first delivery.
  depends_on = [
    google_cloud_run_v2_service_iam_member.trigger_invoker,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}

# The table-change topic's push subscription: the same delivery settings as the run topic's
# (above), to the same function; its name is the function's TABLE_CHANGES_SUBSCRIPTION.
resource "google_pubsub_subscription" "table_changes_push" {
  project = var.project_id
  name    = local.table_changes_subscription_name
  topic   = google_pubsub_topic.table_changes.id
  labels  = local.labels

  ack_deadline_seconds       = 600
  message_retention_duration = "86400s"
  retain_acked_messages      = false

  retry_policy {
    minimum_backoff = "30s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  push_config {
    push_endpoint = "${google_cloudfunctions2_function.recluster.service_config[0].uri}/${google_pubsub_topic.table_changes.id}"
    oidc_token {
      service_account_email = google_service_account.trigger.email
      audience              = google_cloudfunctions2_function.recluster.service_config[0].uri
    }
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.trigger_invoker,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}
