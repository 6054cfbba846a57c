# Topics: one topic starts runs (manual publishes and the log sink's table-change entries
# both land here), and a dead-letter topic keeps what the function could not process.

resource "google_pubsub_topic" "runs" {
  #checkov:skip=CKV_GCP_83:Messages carry only run requests and audit-log metadata (table names, job ids, principals); Google-managed encryption is adequate and a customer key would add a KMS key ring this job does not otherwise need.
  project    = var.project_id
  name       = "${var.name}-runs"
  labels     = local.labels
  depends_on = [google_project_service.this]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Dead letters are copies of run-topic messages (see above); Google-managed encryption is adequate.
  project    = var.project_id
  name       = "${var.name}-dead-letter"
  labels     = local.labels
  depends_on = [google_project_service.this]
}

# A pull subscription that nobody consumes automatically: it keeps failed messages for a week
# so someone can read them (see docs/operations.md) after fixing the cause. A topic without a
# subscription would drop them.
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = "${var.name}-dead-letter"
  topic                      = google_pubsub_topic.dead_letter.id
  labels                     = local.labels
  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60
  retain_acked_messages      = false

  # Never delete the subscription for inactivity: failures are rare, and the default 31-day
  # expiry would silently remove the only place they are kept.
  expiration_policy {
    ttl = ""
  }
}
