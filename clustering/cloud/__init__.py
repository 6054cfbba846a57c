"""The Cloud Function's delivery: which messages run, the handler, logs, send-event."""
