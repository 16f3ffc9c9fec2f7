"""HTTP API: FastAPI routes that parse, call one use case and render."""
