"""Names shared by every layer: run ids, artifact names, claim object names, job labels and
what the rows are called."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime

# The artifacts of a run, in the order they are written; run.json always goes last.
CSV_CLUSTERS = "neighborhood_clusters.csv"
CSV_EXCLUDED = "excluded_neighborhood_analysis.csv"
PNG_ELBOW = "elbow_silhouette.png"
PNG_PCA = "pca_clusters.png"
PNG_HEATMAP = "cluster_heatmap.png"
PNG_MAP = "cluster_map.png"  # only when boundaries are given (before the report)
HTML_REPORT = "report.html"  # self-contained: the run's facts, charts, cohorts and changes
CSV_TRANSITIONS = "neighborhood_cluster_transitions.csv"  # only when a previous run exists
MANIFEST = "run.json"
ARTIFACTS = (CSV_CLUSTERS, CSV_EXCLUDED, PNG_ELBOW, PNG_PCA, PNG_HEATMAP, HTML_REPORT, MANIFEST)

# Every BigQuery job the function runs carries these labels. BigQuery copies them into
# jobInsertion/jobChange.job.jobConfig.labels of its audit logs, which is how the events layer
# recognises an event caused by our own job even under another principal.
JOB_LABELS: dict[str, str] = {"app": "neighborhood-clusters"}

CONTENT_TYPES = {
    ".csv": "text/csv",
    ".png": "image/png",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
}


def new_run_id(started: datetime) -> str:
    """A run id that sorts by start time and never collides: 20261127T120000Z-1a2b3c4d."""
    return f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def claim_name(key: str) -> str:
    """A file/object name for an idempotency key: readable, safe, and unique by its hash."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[-80:]
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{readable}-{digest}"


# Words a key column's name often ends with that say what identifies a row, not what a row is:
# COMMUNITY_AREA_NAME is a community area, TRACT_ID a tract.
KEY_SUFFIXES = ("name", "number", "id", "code")


def readable(column: str) -> str:
    """A column name as words for people: PCT_HOUSEHOLDS_IN_POVERTY -> "pct households in
    poverty", housing_vacancy_rate -> "housing vacancy rate" (lower_snake names read as they
    are, with spaces)."""
    return " ".join(column.replace("_", " ").split()).lower()


def row_noun(key_column: str) -> str:
    """What one row is, after KEY_COLUMN without a trailing name/number/id/code:
    COMMUNITY_AREA_NAME -> "community area", neighborhood -> "neighborhood"."""
    words = readable(key_column).split()
    while len(words) > 1 and words[-1] in KEY_SUFFIXES:
        words.pop()
    return " ".join(words)


def plural(noun: str) -> str:
    """The plural of a row noun, by rule: "neighborhoods", "community areas", "counties",
    "parishes"."""
    if re.search(r"[^aeiou]y$", noun, re.IGNORECASE):
        return noun[:-1] + "ies"
    if re.search(r"(s|x|z|ch|sh)$", noun, re.IGNORECASE):
        return noun + "es"
    return noun + "s"


def rows_called(key_column: str, noun: str | None = None) -> str:
    """What the rows are called in messages, charts and the report: ROW_NOUN (`noun`) in the
    plural, or the noun KEY_COLUMN names."""
    return plural(noun or row_noun(key_column))


def content_type(name: str) -> str:
    suffix = name[name.rfind(".") :]
    return CONTENT_TYPES.get(suffix, "application/octet-stream")
