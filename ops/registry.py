"""Tenants and keys from the command line, through the same store (and NOTIFY) the API uses."""

from __future__ import annotations

import asyncpg

from api.auth import SCOPES, new_secret_key
from api.store import Store
from ledger.errors import InvalidRequest
from ledger.validation import check_tenant


async def create_tenant(url: str, tenant: str, name: str | None) -> None:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        await Store(pool).create_tenant(check_tenant(tenant), name or tenant)
    finally:
        await pool.close()


async def create_key(url: str, tenant: str, scopes: list[str]) -> tuple[str, str]:
    if not scopes or not set(scopes) <= SCOPES:
        raise InvalidRequest(f"must be some of {sorted(SCOPES)}", "scopes")
    key_id, key, digest = new_secret_key()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        await Store(pool).create_key(key_id, check_tenant(tenant), digest, sorted(set(scopes)))
    except asyncpg.ForeignKeyViolationError:
        raise InvalidRequest(f"no tenant {tenant!r}", "tenant") from None
    finally:
        await pool.close()
    return key_id, key


async def revoke_key(url: str, tenant: str, key_id: str) -> None:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        await Store(pool).revoke_key(check_tenant(tenant), key_id)
    finally:
        await pool.close()
