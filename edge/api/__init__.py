"""The local HTTP API (FastAPI): routes, metrics, the event feed."""
