-- How fresh the clustering results are: always exactly one row, for the Looker Studio
-- dashboard and for anyone who wants to know whether the clusters table is current.
-- Read by terraform/bigquery.tf with templatefile() (runs_table is project.dataset.table) and
-- run by tests/test_freshness.py on the BigQuery emulator.
--
-- A dry run is neither a success nor a failure here: it publishes nothing and replaces nothing.
-- Every failed row counts as a failure, including the attempts that Pub/Sub retried later
-- (a transient failure is recorded before it is retried).
WITH last_success AS (
  SELECT run_id, finished_at, input_rows, source_table
  FROM `${runs_table}`
  WHERE status = 'succeeded'
  ORDER BY finished_at DESC, run_id DESC
  LIMIT 1
),
failures_since AS (
  SELECT run_id, finished_at, error
  FROM `${runs_table}`
  WHERE status = 'failed'
    AND finished_at > COALESCE(
      (SELECT MAX(finished_at) FROM last_success), TIMESTAMP '1970-01-01 00:00:00+00'
    )
),
last_failure AS (
  SELECT finished_at, error
  FROM failures_since
  ORDER BY finished_at DESC, run_id DESC
  LIMIT 1
)
SELECT
  (SELECT run_id FROM last_success) AS last_success_run_id,
  (SELECT finished_at FROM last_success) AS last_success_at,
  (SELECT input_rows FROM last_success) AS last_success_input_rows,
  (SELECT source_table FROM last_success) AS last_success_source_table,
  TIMESTAMP_DIFF(
    CURRENT_TIMESTAMP(), (SELECT finished_at FROM last_success), HOUR
  ) AS hours_since_success,
  (SELECT COUNT(*) FROM failures_since) > 0 AS failed_since_success,
  (SELECT COUNT(*) FROM failures_since) AS failures_since_success,
  (SELECT finished_at FROM last_failure) AS last_failure_at,
  (SELECT error FROM last_failure) AS last_failure_error
