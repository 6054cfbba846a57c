# The analytic settings the function receives. Their defaults are read from the file the code
# reads (clustering/defaults.json, bundled with the function source), so Terraform keeps no
# copy of the feature list, the exclusion list or the limits: a variable left null takes the
# code's default.

locals {
  code_defaults = jsondecode(file("${local.repo_root}/clustering/defaults.json"))

  analysis = {
    key_column             = var.key_column == null ? local.code_defaults.key_column : var.key_column
    population_column      = var.population_column == null ? local.code_defaults.population_column : var.population_column
    min_population         = var.min_population == null ? local.code_defaults.min_population : var.min_population
    k_min                  = var.k_min == null ? local.code_defaults.k_min : var.k_min
    k_max                  = var.k_max == null ? local.code_defaults.k_max : var.k_max
    sub_k_min              = var.sub_k_min == null ? local.code_defaults.sub_k_min : var.sub_k_min
    sub_k_max              = var.sub_k_max == null ? local.code_defaults.sub_k_max : var.sub_k_max
    random_state           = var.random_state == null ? local.code_defaults.random_state : var.random_state
    exclude_neighborhoods  = var.exclude_neighborhoods == null ? local.code_defaults.exclude_neighborhoods : var.exclude_neighborhoods
    clustering_features    = var.clustering_features == null ? local.code_defaults.clustering_features : var.clustering_features
    severity_feature       = var.severity_feature == null ? local.code_defaults.severity_feature : var.severity_feature
    feature_directions     = var.feature_directions == null ? local.code_defaults.feature_directions : var.feature_directions
    silhouette_sample_size = var.silhouette_sample_size == null ? local.code_defaults.silhouette_sample_size : var.silhouette_sample_size
  }

  # The delivery limits the code and Terraform share (the age limit is also checked against
  # the retry window at plan time, function.tf).
  limits = {
    max_event_age_seconds = var.max_event_age_seconds == null ? local.code_defaults.max_event_age_seconds : var.max_event_age_seconds
    min_rows_ratio        = var.min_rows_ratio == null ? local.code_defaults.min_rows_ratio : var.min_rows_ratio
    settle_seconds        = var.settle_seconds == null ? local.code_defaults.settle_seconds : var.settle_seconds
  }

  # The engines (clustering/engines): which one clusters a run and the warehouse engine's
  # sample and byte cap, with the code's defaults where a variable is null.
  engine = {
    engine               = var.engine == null ? local.code_defaults.engine : var.engine
    memory_max_rows      = var.memory_max_rows == null ? local.code_defaults.memory_max_rows : var.memory_max_rows
    sample_rows          = var.sample_rows == null ? local.code_defaults.sample_rows : var.sample_rows
    maximum_bytes_billed = var.maximum_bytes_billed == null ? local.code_defaults.maximum_bytes_billed : var.maximum_bytes_billed
  }
}
