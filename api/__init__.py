"""The HTTP API: a thin Starlette app over the log (writes) and the projections (reads)."""
