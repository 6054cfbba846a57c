# A single project and region: every resource of the job lives beside the features table,
# because the log sink that watches the table only sees this project's audit logs.
provider "google" {
  project = var.project_id
  region  = var.region
}
