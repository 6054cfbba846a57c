"""Cloud Function entry point (gen2, CloudEvent signature): glue only.

Settings are read and validated once per instance, at import; the work is in
clustering.handler.
"""

import functions_framework

from clustering.handler import handle, load_settings, log_warnings
from clustering.logs import JsonLog

log_warnings(JsonLog())
SETTINGS = load_settings()


@functions_framework.cloud_event
def recluster(cloud_event):
    """Re-cluster on a Pub/Sub message or a change of the features table."""
    handle(cloud_event, SETTINGS)
