"""Authentication from memory: tenants and hashed keys loaded once, kept current by LISTEN/NOTIFY.

A request costs no database round trip to authenticate. Keys are `lk_<id>_<secret>` with 256 bits of
secret; only SHA-256 of the secret is stored (a fast hash suffices for random secrets of this size).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import asyncpg

from ledger.errors import LedgerError, NotFound

SCOPES = frozenset({"read", "write"})
KEY_PREFIX = "lk"
KEY_ID_BYTES = 8
KEY_ID_RE = re.compile(f"[0-9a-f]{{{2 * KEY_ID_BYTES}}}", re.ASCII)


class Unauthorized(LedgerError):
    code = "unauthorized"


class Forbidden(LedgerError):
    code = "forbidden"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    tenant: str
    secret_sha256: bytes
    scopes: frozenset[str]
    revoked: bool


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the operator (`tenant` None, every scope) or one tenant's key."""

    tenant: str | None
    scopes: frozenset[str]
    key_id: str | None = None

    def require(self, tenant: str | None, scope: str) -> None:
        if self.tenant is None:
            return  # the operator's token may do anything
        if scope == "admin" or self.tenant != tenant:
            raise Forbidden("this key may not act on that tenant" if scope != "admin"
                            else "this route needs the operator's admin token")
        if scope not in self.scopes:
            raise Forbidden(f"this key lacks the {scope!r} scope")


def new_secret_key() -> tuple[str, str, bytes]:
    """(key id, the full key shown once to its owner, the digest stored)."""
    key_id = secrets.token_hex(KEY_ID_BYTES)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secret}", hashlib.sha256(secret.encode()).digest()


def check_key_id(value: str) -> str:
    """A key id as `new_secret_key` issues them, or `NotFound`: no key can have any other id (the contract's
    404 for an unknown key, which a client may already rely on)."""
    if KEY_ID_RE.fullmatch(value) is None:
        raise NotFound(f"no key {value!r}: key ids are {2 * KEY_ID_BYTES} hex digits")
    return value


class KeyStore:
    """Every tenant and key, in memory. Mutated only through `load_*`, from the database."""

    def __init__(self, admin_token: str) -> None:
        self.admin_digest = hashlib.sha256(admin_token.encode()).digest()
        self.tenants: dict[str, str] = {}
        self.keys: dict[str, ApiKey] = {}

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthorized("missing bearer token")
        token = authorization[7:].strip()
        digest = hashlib.sha256(token.encode()).digest()
        if hmac.compare_digest(digest, self.admin_digest):
            return Principal(None, frozenset({"admin", "read", "write"}))
        parts = token.split("_", 2)
        key = self.keys.get(parts[1]) if len(parts) == 3 and parts[0] == KEY_PREFIX else None
        secret_digest = hashlib.sha256(parts[-1].encode()).digest()
        # Compare even when the id is unknown, so timing does not reveal which ids exist.
        expected = key.secret_sha256 if key is not None else b"\0" * 32
        if not hmac.compare_digest(secret_digest, expected) or key is None or key.revoked:
            raise Unauthorized("unknown or revoked key")
        return Principal(key.tenant, key.scopes, key.id)

    async def load_all(self, conn: asyncpg.Pool | asyncpg.Connection) -> None:
        tenants = {r["id"]: r["name"] for r in await conn.fetch("SELECT id, name FROM api_tenants()")}
        keys = {r["id"]: _key(r) for r in await conn.fetch(
            "SELECT id, tenant, secret_sha256, scopes, revoked_at FROM api_keys")}
        self.tenants, self.keys = tenants, keys

    async def load_change(self, conn: asyncpg.Pool | asyncpg.Connection, payload: str) -> None:
        """Apply one NOTIFY payload: `tenant:<id>` or `key:<id>`."""
        kind, _, ident = payload.partition(":")
        if kind == "tenant":
            row = await conn.fetchrow("SELECT id, name FROM api_tenants($1)", ident)
            if row is not None:
                self.tenants[row["id"]] = row["name"]
        elif kind == "key":
            row = await conn.fetchrow(
                "SELECT id, tenant, secret_sha256, scopes, revoked_at FROM api_keys WHERE id = $1", ident)
            if row is not None:
                self.keys[row["id"]] = _key(row)


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(row["id"], row["tenant"], bytes(row["secret_sha256"]), frozenset(row["scopes"]),
                  row["revoked_at"] is not None)
