# The output tables, created before the first run so Looker Studio can connect to them at once.
# Their schemas are the code's own files: the same JSON the function loads with, never a copy,
# with its placeholders filled as the code fills them ({key}: key_column, {population}:
# population_column). The clusters table also has the features table's own columns, read at
# plan time, so a report built before the first run is built on the real fields.

# The features table as it is now (another pipeline owns it): its columns, for the clusters
# table. Terraform's own credentials read its metadata.
data "google_bigquery_table" "features" {
  project    = local.features_project
  dataset_id = var.features_dataset_id
  table_id   = var.features_table_id
}

locals {
  # Each schema file's fields with the configured names in place of the placeholders.
  schemas = {
    for name in ["clusters_table", "transitions_table"] : name => [
      for field in jsondecode(file("${local.repo_root}/clustering/schemas/${name}.json")) : {
        for key, value in field : key => (key == "name" ? replace(replace(value, "{key}", local.analysis.key_column), "{population}", local.analysis.population_column) : value)
      }
    ]
  }
  # Cluster columns the features table provides itself, and the shape without boundaries
  # (with population_column = "none" the population field is named "none" and left out).
  not_added = concat(
    [local.analysis.key_column, local.analysis.population_column],
    var.boundaries_table == null && var.boundaries_object == null ? ["${local.analysis.key_column}_shape"] : [],
  )
  # The features table's columns in its order (name, type, mode, description), then the cluster
  # columns, then the shape column when boundaries are configured: what the first run's load
  # writes. The key and population columns come from the features table, with its types.
  clusters_schema = concat(
    [
      for field in jsondecode(data.google_bigquery_table.features.schema) : {
        for key, value in field : key => value if contains(["name", "type", "mode", "description"], key)
      }
    ],
    [
      for field in local.schemas.clusters_table : field if !contains(local.not_added, field.name)
    ],
  )
}

resource "google_bigquery_dataset" "output" {
  #checkov:skip=CKV_GCP_81:The tables hold public neighborhood statistics and cluster labels; Google-managed encryption is adequate and a customer key would add a KMS key ring this job does not otherwise need.
  count       = var.create_dataset ? 1 : 0
  project     = var.project_id
  dataset_id  = var.dataset_id
  location    = var.bigquery_location
  description = "Neighborhood clusters and the history of the clustering runs."
  labels      = local.labels
  # Terraform deletes the tables it manages first; anything else found in the dataset
  # (someone's own table) makes destroy fail rather than vanish.
  delete_contents_on_destroy = false
  depends_on                 = [google_project_service.this]
}

locals {
  # Depend on the dataset when it is created here; use the existing one otherwise.
  output_dataset_id = var.create_dataset ? google_bigquery_dataset.output[0].dataset_id : var.dataset_id
}

resource "google_bigquery_table" "clusters" {
  #checkov:skip=CKV_GCP_80:Public neighborhood statistics and cluster labels; Google-managed encryption is adequate (see the dataset).
  project             = var.project_id
  dataset_id          = local.output_dataset_id
  table_id            = var.clusters_table_id
  description         = "One row per ${local.analysis.key_column} of ${local.features_table}: its features and cluster labels. Replaced by every successful run."
  labels              = local.labels
  deletion_protection = var.deletion_protection
  schema              = jsonencode(local.clusters_schema)

  lifecycle {
    # Every run replaces this table with a WRITE_TRUNCATE load, which also sets its schema:
    # the columns are those of the features table plus the cluster columns, so they change
    # whenever the features table gains or loses a column. Terraform only needs the table to
    # exist with the expected columns before the first run. Without ignore_changes, the next
    # plan would report that drift, and for a removed column the provider replaces the table:
    # refused by deletion protection, or (without it) a dropped table that Looker Studio reads.
    # The price: an edit of clusters_table.json, or a new column of the features table, reaches
    # this table through the next run, not through terraform apply.
    ignore_changes = [schema]
  }
}

resource "google_bigquery_table" "runs" {
  #checkov:skip=CKV_GCP_80:Run history (timings, counts, settings); Google-managed encryption is adequate (see the dataset).
  project             = var.project_id
  dataset_id          = local.output_dataset_id
  table_id            = var.runs_table_id
  description         = "One row per run, success or failure, appended by the function."
  labels              = local.labels
  deletion_protection = var.deletion_protection
  # Append-only with a fixed schema, so drift here is real: a column added to runs_table.json
  # is applied in place (additive schema change), and a difference is worth seeing in a plan.
  schema = file("${path.module}/../clustering/schemas/runs_table.json")
}

# The freshness of the results in one row, for the dashboard: the last successful run, its
# time and input rows, and whether a run failed since. The SQL is its own file, which the tests
# run on the BigQuery emulator exactly as rendered here.
resource "google_bigquery_table" "run_freshness" {
  #checkov:skip=CKV_GCP_80:A view stores no data of its own; it reads the runs table, whose encryption applies.
  project             = var.project_id
  dataset_id          = local.output_dataset_id
  table_id            = var.freshness_view_id
  description         = "One row: the last successful clustering run, its time and input rows, and whether a run failed since. Dry runs count as neither."
  labels              = local.labels
  deletion_protection = var.deletion_protection

  view {
    query = templatefile("${path.module}/sql/run_freshness.sql", {
      runs_table = "${google_bigquery_table.runs.project}.${google_bigquery_table.runs.dataset_id}.${google_bigquery_table.runs.table_id}"
    })
    use_legacy_sql = false
  }
}

resource "google_bigquery_table" "transitions" {
  #checkov:skip=CKV_GCP_80:Neighborhood names and cohort ids; Google-managed encryption is adequate (see the dataset).
  project             = var.project_id
  dataset_id          = local.output_dataset_id
  table_id            = var.transitions_table_id
  description         = "One row per ${local.analysis.key_column} that changed cohort (moved, appeared, disappeared), appended by every run that follows a published one."
  labels              = local.labels
  deletion_protection = var.deletion_protection
  # Append-only with a fixed schema, like the runs table.
  schema = jsonencode(local.schemas.transitions_table)
}

# The warehouse engine's staging tables (clustering/engines/warehouse.py): each run scores every
# row into a table here, which then replaces the clusters table in one copy job and is dropped.
# A dataset of its own, so that the function may create and delete tables here and nowhere
# else; a table a crashed run left behind expires by the default table expiration.
resource "google_bigquery_dataset" "staging" {
  #checkov:skip=CKV_GCP_81:Transient copies of the clusters table (public neighborhood statistics); Google-managed encryption is adequate, as for the output dataset.
  project                     = var.project_id
  dataset_id                  = var.staging_dataset_id
  location                    = var.bigquery_location
  description                 = "Staging tables of the neighborhood clustering runs; each is dropped when its run ends."
  labels                      = local.labels
  default_table_expiration_ms = var.staging_expiration_hours * 3600000
  # Only transient tables live here: destroy removes them with the dataset.
  delete_contents_on_destroy = true
  depends_on                 = [google_project_service.this]
}
