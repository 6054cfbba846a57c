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


def plural(key_column: str) -> str:
    """What the rows are called in messages, charts and the report, after KEY_COLUMN:
    "neighborhoods", "community areas", "tracts", "counties"."""
    words = " ".join(key_column.replace("_", " ").split())
    if re.search(r"[^aeiou]y$", words, re.IGNORECASE):
        return words[:-1] + "ies"
    if re.search(r"(s|x|z|ch|sh)$", words, re.IGNORECASE):
        return words + "es"
    return words + "s"


def content_type(name: str) -> str:
    suffix = name[name.rfind(".") :]
    return CONTENT_TYPES.get(suffix, "application/octet-stream")
