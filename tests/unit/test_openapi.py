"""The OpenAPI document states the bounds the code enforces, from the same constants."""

from __future__ import annotations

from typing import Any

from api.openapi import document
from api.routes import ENTRIES_LIMIT_MAX
from infra import settings as settings_mod
from ledger.validation import TENANT_NAME_LEN_MAX


def _param(doc: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    found = [p for p in doc["paths"][path][method].get("parameters", []) if p.get("name") == name]
    assert len(found) == 1, (path, name)
    return found[0]


def test_timeout_bounds_follow_the_setting() -> None:
    for ceiling in (settings_mod.load({}).wait_timeout_ms_max, 1234):
        doc = document(ceiling)
        for path, method in (("/v1/tenants/{tenant}/transactions", "post"), ("/v1/tenants", "post"),
                             ("/v1/tenants/{tenant}/accounts/{address}", "get"),
                             ("/v1/tenants/{tenant}/transactions/{id}", "get")):
            assert _param(doc, path, method, "timeout_ms")["schema"]["maximum"] == ceiling


def test_other_bounds_are_the_codes() -> None:
    doc = document(30_000)
    limit = _param(doc, "/v1/tenants/{tenant}/accounts/{address}/entries", "get", "limit")
    assert limit["schema"]["maximum"] == ENTRIES_LIMIT_MAX
    body = doc["paths"]["/v1/tenants"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["name"]["maxLength"] == TENANT_NAME_LEN_MAX
