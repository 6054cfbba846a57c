# Provider pins: each provider is pinned to one exact release, so two `terraform init`s on
# different days plan with the same provider code (releases listed at
# https://releases.hashicorp.com/terraform-provider-google and
# https://releases.hashicorp.com/terraform-provider-archive/). The resources used here
# (cloudfunctions2 with build/service config, cloud_run_v2 IAM, bucket soft delete and
# lifecycle prefixes) are stable within 7.x; moving the pin is a reviewed change of this file.
# `archive` zips the function source at plan time, so the bundle is built without a shell step.

terraform {
  # `precondition` blocks need Terraform 1.2 or later; 1.5 is the oldest release still common
  # in CI images, and nothing here needs more.
  required_version = ">= 1.5.0"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "= 7.15.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "= 2.7.1"
    }
  }
}
