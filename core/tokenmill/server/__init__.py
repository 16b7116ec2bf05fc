"""The OpenAI-compatible HTTP server: FastAPI routes over an AsyncEngine, metrics and shutdown."""
