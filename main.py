"""Cloud Function entry point (gen2): glue only.

Registered with the HTTP signature on purpose: functions-framework's CloudEvent signature
answers 400, before any code of ours runs, to a Pub/Sub push without `data` (an attributes-only
message) or with `"data": ""`, and Pub/Sub retries that until the dead letter, unlogged. As an
HTTP function, every push body and every CloudEvent (structured or binary mode) reaches
clustering.cloud.handler.respond, which parses it and answers with a JSON decision. Settings are
read and validated once per instance, at import.
"""

import functions_framework
from flask import jsonify

from clustering.cloud.handler import load_settings, log_warnings, respond
from clustering.cloud.logs import JsonLog

log_warnings(JsonLog())
SETTINGS = load_settings()


@functions_framework.http
def recluster(request):
    """Re-cluster on a Pub/Sub push or a CloudEvent (a message, or a change of the features
    table); the answer is JSON: event, action, reason and run_id."""
    if request.method != "POST":
        return jsonify(error="deliveries are POSTed: a Pub/Sub push or a CloudEvent"), 405
    body, status = respond(request.get_data(), request.headers, request.path, SETTINGS)
    return jsonify(body), status
