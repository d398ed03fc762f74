"""The HTTP endpoints: /metrics, /status, /maintenance_windows, the status page."""
