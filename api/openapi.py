"""The OpenAPI 3.1 document served at `/openapi.json`, written to match the routes exactly."""

from __future__ import annotations

from functools import cache
from typing import Any

from api.openapi_paths import paths
from api.openapi_schemas import SCHEMAS


@cache
def document(wait_timeout_ms_max: int) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Wallet ledger", "version": "1.0.0"},
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": SCHEMAS},
        "paths": paths(wait_timeout_ms_max),
    }
