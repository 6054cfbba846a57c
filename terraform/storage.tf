# Buckets: the artifacts the function publishes, and the zipped source it is built from.
# Both are private by construction: uniform bucket-level access (no object ACLs) and public
# access prevention enforced, so no IAM grant can ever make an object public.

resource "google_storage_bucket" "artifacts" {
  #checkov:skip=CKV_GCP_62:Usage-log buckets are a legacy feature; object access is audited by Cloud Audit Logs, and a log bucket would itself need a log bucket.
  project                     = var.project_id
  name                        = local.artifacts_bucket
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # Empty buckets only, unless protection is off: charts and run history are worth a second
  # thought before terraform destroy removes them.
  force_destroy = !var.deletion_protection
  labels        = local.labels

  # Versioning keeps the previous latest/ when a run replaces it, so a bad publish can be
  # rolled back object by object; the noncurrent copies expire below.
  versioning {
    enabled = true
  }

  # runs/<run_id>/ is history: each run adds a folder, nothing ever reads an old one.
  lifecycle_rule {
    condition {
      age            = var.artifact_retention_days
      matches_prefix = ["runs/"]
    }
    action {
      type = "Delete"
    }
  }

  # claims/ holds one empty object per event id (created with if_generation_match=0). A claim
  # is only needed while the event can still be redelivered, so it expires after a few days.
  lifecycle_rule {
    condition {
      age            = var.claim_retention_days
      matches_prefix = ["claims/"]
    }
    action {
      type = "Delete"
    }
  }

  # Replaced or deleted versions (old latest/ files, expired runs and claims) go for good.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.artifact_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.this]
}

resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:Usage-log buckets are a legacy feature; object access is audited by Cloud Audit Logs, and a log bucket would itself need a log bucket.
  project                     = var.project_id
  name                        = local.source_bucket
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = !var.deletion_protection
  labels                      = local.labels

  versioning {
    enabled = true
  }

  # Each source bundle has its own name (its MD5), so old bundles are replaced, not
  # overwritten; a week of old versions is enough to inspect what was deployed before.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.this]
}

# --- Function source -----------------------------------------------------------------------------

locals {
  repo_root = "${path.module}/.."
  # Exactly what the function needs: the entry point, the package and the runtime pins. No
  # tests, tools, bench or caches; __pycache__ and compiled files are left out so that a local
  # test run never changes the bundle's hash.
  function_source_files = toset(concat(
    ["main.py", "requirements.txt"],
    [
      for f in fileset(local.repo_root, "clustering/**") : f
      if length(regexall("(^|/)__pycache__(/|$)|\\.py[co]$", f)) == 0
    ],
  ))
}

data "archive_file" "function_source" {
  type        = "zip"
  output_path = "${path.module}/.build/function-source.zip"

  dynamic "source" {
    for_each = local.function_source_files
    content {
      filename = source.value
      content  = file("${local.repo_root}/${source.value}")
    }
  }
}

# The object name carries the bundle's hash, so a code change is a new object and Terraform
# redeploys the function; an unchanged tree plans no change.
resource "google_storage_bucket_object" "function_source" {
  bucket = google_storage_bucket.source.name
  name   = "function-source-${data.archive_file.function_source.output_md5}.zip"
  source = data.archive_file.function_source.output_path
}
