# Another city's table, deployed with settings alone: 77 community areas keyed by
# `community_area`, residents in `total_pop`, and features the seed notebook never had. The
# features table lives in the city's open-data project; everything of the job goes to its own.
#
#   terraform apply -var-file=examples/community-areas.tfvars
#
# Checked by tests/test_terraform.py (formatting, checkov with this file, every value accepted
# by the variables' rules and by the function's settings).

project_id          = "city-analytics-prod"
features_project_id = "city-open-data"
features_dataset_id = "community"
features_table_id   = "community_area_features"

dataset_id           = "community_clusters"
clusters_table_id    = "community_area_clusters"
transitions_table_id = "community_area_transitions"

# The table's own names: no column is renamed, and the outputs keep them.
key_column        = "community_area"
population_column = "total_pop"

clustering_features = [
  "median_income",
  "poverty_rate",
  "unemployment_rate",
  "degree_share",
  "violent_crime_rate",
  "vacant_lot_share",
  "crime_change_yoy",
]

# Stable and Distressed are named by income: the group with the higher mean is Stable.
# crime_change_yoy has no direction: it is described as higher/lower, never better/worse
# (docs/configuration.md, Another city's table, runs these same settings).
severity_feature = "median_income"
feature_directions = {
  median_income      = "higher_is_better"
  poverty_rate       = "higher_is_worse"
  unemployment_rate  = "higher_is_worse"
  degree_share       = "higher_is_better"
  violent_crime_rate = "higher_is_worse"
  vacant_lot_share   = "higher_is_worse"
}

# The seed notebook's 13 Baltimore names match nothing here: name this city's own.
exclude_neighborhoods = ["Area 77"]

alert_emails = ["analytics@city.example.org"]
