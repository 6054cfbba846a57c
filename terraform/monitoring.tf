# Alerts: the job runs by itself, so it must say when it is broken. Four policies, each with
# documentation that arrives with the notification (what happened, what to do, where in
# docs/operations.md):
#
# - a run failed: permanent failures (bad data, bad settings, a rejected message), counted by
#   a log-based metric on the function's own log lines;
# - a message was dead-lettered: the dead-letter subscription holds undelivered messages;
# - stale results: the features table changed within stale_after_days and no run succeeded in
#   those days;
# - the function keeps erroring or timing out: server errors of its Cloud Run service.
#
# The log-based metrics filter on severity and on `event`, the outcome field of the function's
# final log line (clustering/cloud/logs.py Outcome), never on message text; tests/test_logs.py checks
# that every name below is one the code writes.
#
# Nothing here is granted to the runtime account: Cloud Logging computes the metrics from lines
# the function already writes, and Cloud Monitoring reads its own metrics.

locals {
  # One email channel per address plus the channels passed by id. With none, the policies are
  # still created: incidents open in the console, and a channel added later needs nothing else.
  notification_channels = concat(
    [for address in var.alert_emails : google_monitoring_notification_channel.email[address].id],
    var.notification_channel_ids,
  )

  # Log-based metric names reappear in PromQL (logging_googleapis_com:user_<name>), where a
  # hyphen is not allowed.
  metric_prefix = replace(var.name, "-", "_")

  # The function's own lines: a gen2 function runs as the Cloud Run service of the same name.
  function_logs = <<-EOT
    resource.type="cloud_run_revision"
    resource.labels.service_name="${google_cloudfunctions2_function.recluster.name}"
  EOT

  # What the documentation texts point at.
  logs_query = "resource.type=\"cloud_run_revision\" resource.labels.service_name=\"${google_cloudfunctions2_function.recluster.name}\" jsonPayload.event:*"

  alert_policies = {
    run_failed      = google_monitoring_alert_policy.run_failed
    dead_letter     = google_monitoring_alert_policy.dead_letter
    stale_results   = google_monitoring_alert_policy.stale_results
    function_errors = google_monitoring_alert_policy.function_errors
  }
}

resource "google_monitoring_notification_channel" "email" {
  for_each     = toset(var.alert_emails)
  project      = var.project_id
  display_name = "${var.name} alerts: ${each.value}"
  description  = "Receives the alerts of the neighborhood clusters job."
  type         = "email"
  labels = {
    email_address = each.value
  }
  user_labels = local.labels
  depends_on  = [google_project_service.this]
}

# --- Log-based metrics ---------------------------------------------------------------------------

# Deliveries that ended in a permanent failure a person must fix. run_failed logs WARNING for
# bad data and ERROR otherwise, event_rejected ERROR, settings_invalid CRITICAL: hence WARNING
# and above. Retries (run_retry, run_busy) are left to Pub/Sub and to the other alerts.
resource "google_logging_metric" "run_failures" {
  project     = var.project_id
  name        = "${local.metric_prefix}_run_failures"
  description = "Deliveries of ${var.name} that ended in a permanent failure (jsonPayload.event run_failed, event_rejected or settings_invalid)."
  filter      = <<-EOT
    ${local.function_logs}
    severity>=WARNING
    jsonPayload.event=("run_failed" OR "event_rejected" OR "settings_invalid")
  EOT

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "event"
      value_type  = "STRING"
      description = "run_failed, event_rejected or settings_invalid"
    }
    labels {
      key         = "trigger"
      value_type  = "STRING"
      description = "pubsub or table-change"
    }
  }
  label_extractors = {
    event   = "EXTRACT(jsonPayload.event)"
    trigger = "EXTRACT(jsonPayload.trigger)"
  }
  depends_on = [google_project_service.this]
}

# Runs that published their results (dry runs log dry_run and are not counted).
resource "google_logging_metric" "run_successes" {
  project     = var.project_id
  name        = "${local.metric_prefix}_run_successes"
  description = "Runs of ${var.name} that published new clusters (jsonPayload.event run_succeeded)."
  filter      = <<-EOT
    ${local.function_logs}
    severity=INFO
    jsonPayload.event="run_succeeded"
  EOT

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }
  depends_on = [google_project_service.this]
}

# Data changes of the features table: the very audit-log entries the table-change sink
# forwards (its filter, not a copy), counted whether or not a run followed.
resource "google_logging_metric" "features_changes" {
  project     = var.project_id
  name        = "${local.metric_prefix}_features_changes"
  description = "BigQuery data changes of ${local.features_table} (the entries the table-change sink forwards)."
  filter      = google_logging_project_sink.features_changed.filter

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }
  depends_on = [google_project_service.this]
}

# --- Alerting policies ---------------------------------------------------------------------------

resource "google_monitoring_alert_policy" "run_failed" {
  project               = var.project_id
  display_name          = "${var.name}: a run failed"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "A delivery ended in run_failed, event_rejected or settings_invalid"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.run_failures.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      # Every failure counts at once: one is already a run that published nothing.
      duration = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.event"]
      }
      trigger {
        count = 1
      }
      # A counter without new failures writes no points: that is "no failure", not unknown.
      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.name}: a run failed ($${metric.label.event})"
    content   = <<-EOT
      **What happened.** A delivery to the ${var.name} function ended in `$${metric.label.event}`:
      `run_failed` (bad data in the features table, a missing or denied bucket or table),
      `event_rejected` (a malformed or disallowed Pub/Sub message) or `settings_invalid` (the
      function's configuration is wrong and it cannot start). Nothing was published: the
      clusters table and latest/ still hold the last successful run. Pub/Sub does not retry it.

      **What to do.** Read the failing line in Logs Explorer (`${local.logs_query}`): its
      message says what and where. The runs table ${local.runs_table} holds the run with its
      error. Fix the cause, then start a run by hand:
      `gcloud pubsub topics publish ${google_pubsub_topic.runs.name} --project=${var.project_id} --message='{"reason": "manual"}'`.
      See docs/operations.md, "Troubleshooting", under "Alert: a run failed".
    EOT
  }
  depends_on = [google_project_service.this]
}

resource "google_monitoring_alert_policy" "dead_letter" {
  project               = var.project_id
  display_name          = "${var.name}: a message reached the dead-letter topic"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "Undelivered messages in ${google_pubsub_subscription.dead_letter.name} > 0"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${google_pubsub_subscription.dead_letter.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
      trigger {
        count = 1
      }
    }
  }

  # The incident stays open while a dead letter waits, and closes once it is pulled (acked).
  alert_strategy {
    auto_close = "604800s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.name}: a run request was dead-lettered"
    content   = <<-EOT
      **What happened.** A message failed ${var.max_delivery_attempts} deliveries to the
      ${var.name} function (every attempt raised, timed out or found the instance busy) and was
      moved to the dead-letter topic. Its run never happened. The subscription
      ${google_pubsub_subscription.dead_letter.name} keeps it for 7 days.

      **What to do.** Find why the deliveries failed: the function's `run_retry` and `run_busy`
      lines and its errors in Logs Explorer (`${local.logs_query}`). Fix the cause, read the
      message (`gcloud pubsub subscriptions pull ${google_pubsub_subscription.dead_letter.name} --project=${var.project_id} --auto-ack`),
      and publish it again to ${google_pubsub_topic.runs.name} if the run is still wanted. The
      incident closes when the subscription is empty. See docs/operations.md, "Logs and dead letters"
      and "Troubleshooting", under "Alert: a message reached the dead-letter topic".
    EOT
  }
  depends_on = [google_project_service.this]
}

# Stale results: the features table changed within stale_after_days and no run succeeded in
# them. A metric-absence condition cannot say this: its window ends at 24.5 hours and it cannot
# ask whether the table changed. PromQL can, over days: absent_over_time() is true when no run
# succeeded in the window, and the second half requires a data change of the features table in
# the same window, so a table that simply did not change raises nothing. The incident closes
# once a run succeeds (or the change leaves the window).
resource "google_monitoring_alert_policy" "stale_results" {
  project               = var.project_id
  display_name          = "${var.name}: results are stale"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "Features changed in ${var.stale_after_days} days without a successful run"
    condition_prometheus_query_language {
      query               = <<-EOT
        absent_over_time(logging_googleapis_com:user_${google_logging_metric.run_successes.name}{monitored_resource="cloud_run_revision"}[${var.stale_after_days}d])
        and on()
        sum(increase(logging_googleapis_com:user_${google_logging_metric.features_changes.name}[${var.stale_after_days}d])) > 0
      EOT
      duration            = "0s"
      evaluation_interval = "3600s"
      # The descriptors of log-based metrics created in the same apply reach Cloud Monitoring
      # a little later than the metrics themselves; validation would fail the first apply.
      disable_metric_validation = true
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.name}: no successful run in ${var.stale_after_days} days although the features changed"
    content   = <<-EOT
      **What happened.** The features table ${local.features_table} changed within the last
      ${var.stale_after_days} days, but no run of ${var.name} succeeded in that time: the
      clusters table and the dashboard show older results than the data.

      **What to do.** Look at the view ${google_bigquery_table.run_freshness.project}.${google_bigquery_table.run_freshness.dataset_id}.${google_bigquery_table.run_freshness.table_id}
      (last success and failures since) and the runs table ${local.runs_table}. Failures there
      have their own alerts and causes. No run at all means the table changes never reached
      the function: check the log sink ${google_logging_project_sink.features_changed.name} and
      the push subscription ${google_pubsub_subscription.function_push.name}. Then start a run:
      `gcloud pubsub topics publish ${google_pubsub_topic.runs.name} --project=${var.project_id} --message='{"reason": "manual"}'`.
      See docs/operations.md, "Troubleshooting", under "Alert: results are stale".
    EOT
  }
  depends_on = [google_project_service.this]
}

# Server errors of the function's service: an exception the handler raised for a retry, a run
# that hit the timeout (504), an instance that crashed or could not start. Several in an hour
# mean the retries are not recovering and messages are heading for the dead-letter topic.
resource "google_monitoring_alert_policy" "function_errors" {
  project               = var.project_id
  display_name          = "${var.name}: the function keeps failing"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "More than ${var.function_errors_per_hour} server errors (5xx) in an hour"
    condition_threshold {
      filter          = "metric.type=\"run.googleapis.com/request_count\" AND resource.type=\"cloud_run_revision\" AND resource.label.service_name=\"${google_cloudfunctions2_function.recluster.name}\" AND metric.label.response_code_class=\"5xx\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.function_errors_per_hour
      duration        = "0s"
      aggregations {
        alignment_period     = "3600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      trigger {
        count = 1
      }
      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.name}: the function answered more than ${var.function_errors_per_hour} deliveries in an hour with an error"
    content   = <<-EOT
      **What happened.** The ${var.name} function answered more than
      ${var.function_errors_per_hour} deliveries within an hour with a server error: it raised
      for a retry (`run_retry`: BigQuery or Cloud Storage unreachable; `run_busy`: another
      delivery holds the event), a run exceeded the ${var.function_timeout_seconds} s timeout,
      or the instance crashed or could not start (`settings_invalid`, out of memory). Pub/Sub
      retries each message up to ${var.max_delivery_attempts} times, then dead-letters it.

      **What to do.** In Logs Explorer (`${local.logs_query}`), or with
      `gcloud functions logs read ${google_cloudfunctions2_function.recluster.name} --gen2 --region=${var.region} --project=${var.project_id} --limit=100`,
      find the `run_retry`/`run_busy` lines and any error without `event` (a crash, a timeout). An outage
      of BigQuery or Cloud Storage passes by itself; timeouts need a larger function_memory or
      function_timeout_seconds; memory errors a larger function_memory. See docs/operations.md,
      "Troubleshooting", under "Alert: the function keeps failing".
    EOT
  }
  depends_on = [google_project_service.this]
}
