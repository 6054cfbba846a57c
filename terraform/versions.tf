# Provider pins. The google provider is pinned to one major version: the resources used here
# (cloudfunctions2 with build/service config, cloud_run_v2 IAM, bucket soft delete and
# lifecycle prefixes) are all stable within 7.x, and a new major may rename arguments.
# `archive` zips the function source at plan time, so the bundle is built without a shell step.

terraform {
  # `precondition` blocks need Terraform 1.2 or later; 1.5 is the oldest release still common
  # in CI images, and nothing here needs more.
  required_version = ">= 1.5.0"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 7.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.7"
    }
  }
}
