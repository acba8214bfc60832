"""Tenants and keys from the command line, through the same store (and NOTIFY) the API uses."""

from __future__ import annotations

from typing import Any

import asyncpg

from api.auth import SCOPES, new_secret_key
from api.store import Store
from client import LedgerProducer
from infra.settings import Settings
from ledger.errors import InvalidRequest
from ledger.validation import check_tenant

OUTCOME_TIMEOUT_S = 30.0


async def create_tenant(cfg: Settings, tenant: str, name: str | None) -> dict[str, Any]:
    """Append the tenant's creation to the log (tenants are on the log) and return its outcome."""
    async with LedgerProducer(cfg.kafka_bootstrap, topic=cfg.transactions_topic,
                              outcomes_topic=cfg.outcomes_topic) as ledger:
        return await ledger.outcome(await ledger.create_tenant(tenant, name), OUTCOME_TIMEOUT_S)


async def create_key(url: str, tenant: str, scopes: list[str]) -> tuple[str, str]:
    if not scopes or not set(scopes) <= SCOPES:
        raise InvalidRequest(f"must be some of {sorted(SCOPES)}", "scopes")
    key_id, key, digest = new_secret_key()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        store = Store(pool)
        if await store.tenant(check_tenant(tenant)) is None:
            raise InvalidRequest(f"no tenant {tenant!r}", "tenant")
        await store.create_key(key_id, tenant, digest, sorted(set(scopes)))
    finally:
        await pool.close()
    return key_id, key


async def revoke_key(url: str, tenant: str, key_id: str) -> None:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        await Store(pool).revoke_key(check_tenant(tenant), key_id)
    finally:
        await pool.close()
