# APIs the job needs. disable_on_destroy is false: other workloads in the project may use the
# same APIs, and disabling one on destroy would break them.

locals {
  services = toset([
    "artifactregistry.googleapis.com", # the function's built image
    "bigquery.googleapis.com",
    "cloudbuild.googleapis.com", # builds the function from the zipped source
    "cloudfunctions.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com", # the log sink that reports table changes
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com", # gen2 functions run as Cloud Run services
    "storage.googleapis.com",
  ])
}

resource "google_project_service" "this" {
  for_each           = local.services
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}
