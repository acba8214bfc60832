"""The API's reads and registry writes in PostgreSQL, as the `ledger_api` role.

Every tenant read is one call of a plpgsql function that sets the tenant for its own transaction and
returns the rows: one round trip, and row-level security on. asyncpg errors become `Unavailable` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from api.auth import check_key_id
from infra.settings import KEYS_CHANNEL
from ledger.errors import NotFound, Unavailable

QUERY_TIMEOUT_S = 2.0
ACQUIRE_TIMEOUT_S_DEFAULT = 1.0
BALANCES = "SELECT * FROM api_balances($1, $2)"
TRANSACTION = "SELECT * FROM api_transaction($1, $2)"
TRANSACTION_BY_KEY = "SELECT * FROM api_transaction_by_key($1, $2)"
ENTRIES = "SELECT * FROM api_entries($1, $2, $3, $4, $5, $6)"
HOLD = "SELECT * FROM api_hold($1, $2)"
TRANSACTIONS = "SELECT * FROM api_transactions($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
ALL_LIMITS = "SELECT tenant, writes_per_s, reads_per_s, burst_s FROM tenant_limits"
LIMITS_OF = f"{ALL_LIMITS} WHERE tenant = $1"
# InternalClientError: asyncpg's own, among them no server of a multi-host URL being read-write yet (a failover);
# ReadOnlySQLTransaction: a former primary still answering as it is demoted.
CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                     asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, TimeoutError,
                     asyncpg.QueryCanceledError, asyncpg.InternalClientError, asyncpg.ReadOnlySQLTransactionError)
FAILOVER_RETRY_S = 0.2
# What a failover looks like from here: no server to connect to, or none read-write yet, or a connection cut.
# Not a query timeout, a lock wait or an exhausted pool: retrying those would only add load.
FAILOVER_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
                   asyncpg.AdminShutdownError, asyncpg.InternalClientError, asyncpg.ReadOnlySQLTransactionError,
                   asyncpg.ConnectionDoesNotExistError)


async def keep_session(conn: asyncpg.Connection) -> None:
    """A pool's `reset`: release without asyncpg's default `RESET ALL; UNLISTEN *; ...`. The API and the
    dispatcher never change session state (the tenant is set transaction-locally inside each read function), so
    that reset would only cost a second round trip on every release. asyncpg still rolls back a transaction
    left open."""


async def init_connection(conn: asyncpg.Connection) -> None:
    """JSON columns as Python values, as every reader of the API's functions expects them (the dispatcher too)."""
    await conn.set_type_codec("jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
                              schema="pg_catalog")


@contextlib.asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    try:
        yield
    except CONNECTION_ERRORS as e:
        raise Unavailable(f"the database is unavailable: {type(e).__name__}") from e


class Store:
    """Every use of the pool waits at most `acquire_timeout_s` for a connection, then answers 503: with all
    connections busy (slow queries, a stuck backend) requests fail fast instead of queueing without end."""

    def __init__(self, pool: asyncpg.Pool, acquire_timeout_s: float = ACQUIRE_TIMEOUT_S_DEFAULT,
                 failover_wait_s: float = 0.0) -> None:
        self.pool = pool
        self.acquire_timeout_s = acquire_timeout_s
        # How long a read waits for the database to be back (a failover: the standby promoted) before 503.
        self.failover_wait_s = failover_wait_s

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, with connection errors (and no free connection in time) as `Unavailable`."""
        async with _translated():
            try:
                conn = await self.pool.acquire(timeout=self.acquire_timeout_s)
            except TimeoutError:
                raise Unavailable(f"no database connection was free within {self.acquire_timeout_s:g} s") from None
            try:
                yield conn
            finally:
                # Bounded: a connection whose server stopped answering must not hold its caller for ever.
                await self.pool.release(conn, timeout=QUERY_TIMEOUT_S)

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Every read: retried on the database's absence for up to `failover_wait_s` (a read may wait for a
        failover, never fail for it sooner), then `Unavailable`."""
        deadline = time.monotonic() + self.failover_wait_s
        while True:
            try:
                async with self.connection() as conn:
                    rows: list[asyncpg.Record] = await conn.fetch(query, *args, timeout=QUERY_TIMEOUT_S)
                    return rows
            except Unavailable as e:
                failover = isinstance(e.__cause__, FAILOVER_ERRORS) and not isinstance(e.__cause__, TimeoutError)
                if not failover or time.monotonic() + FAILOVER_RETRY_S > deadline:
                    raise
                await asyncio.sleep(FAILOVER_RETRY_S)

    @staticmethod
    async def warm(conn: asyncpg.Connection) -> None:
        """Prepare the hot reads on `conn` and have its backend compile them (no tenant matches '')."""
        await conn.fetch(BALANCES, "", "")
        await conn.fetch(TRANSACTION, "", "")
        await conn.fetch(TRANSACTION_BY_KEY, "", "")
        await conn.fetch(ENTRIES, "", "", None, 0, 0, 1)

    async def balances(self, tenant: str, account: str) -> list[asyncpg.Record]:
        return await self._fetch(BALANCES, tenant, account)

    async def balances_at(self, tenant: str, account: str, at: datetime) -> list[asyncpg.Record]:
        return await self._fetch("SELECT * FROM api_balances_at($1, $2, $3)", tenant, account, at)

    async def transaction(self, tenant: str, id: str) -> asyncpg.Record | None:
        rows = await self._fetch(TRANSACTION, tenant, id)
        return rows[0] if rows else None

    async def batch_by_key(self, tenant: str, key: str) -> asyncpg.Record | None:
        """The batch that `key` binds: its id, fingerprint, decision and items' ids in order."""
        rows = await self._fetch("SELECT * FROM api_batch_by_key($1, $2)", tenant, key)
        return rows[0] if rows else None

    async def transaction_by_key(self, tenant: str, key: str) -> asyncpg.Record | None:
        rows = await self._fetch(TRANSACTION_BY_KEY, tenant, key)
        return rows[0] if rows else None

    async def entries(self, tenant: str, account: str, asset: str | None, before: tuple[int, int],
                      limit: int) -> list[asyncpg.Record]:
        return await self._fetch(ENTRIES, tenant, account, asset, before[0], before[1], limit)

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    async def _notify_change(self, conn: asyncpg.Connection, payload: str) -> None:
        await conn.execute("SELECT pg_notify($1, $2)", KEYS_CHANNEL, payload)

    async def hold(self, tenant: str, id: str) -> asyncpg.Record | None:
        rows = await self._fetch(HOLD, tenant, id)
        return rows[0] if rows else None

    async def transactions(self, tenant: str, filters: dict[str, Any], before: tuple[int, str],
                           limit: int) -> list[asyncpg.Record]:
        return await self._fetch(TRANSACTIONS, tenant, filters.get("account"), filters.get("reference"),
                                 filters.get("status"), filters.get("metadata"), filters.get("since"),
                                 filters.get("until"), before[0], before[1], limit)

    async def accounts(self, tenant: str, low: str, high: str, after: str | None, limit: int) -> list[asyncpg.Record]:
        return await self._fetch("SELECT * FROM api_accounts($1, $2, $3, $4, $5)", tenant, low, high, after, limit)

    async def statement(self, tenant: str, account: str, asset: str, since: datetime | None,
                        until: datetime | None) -> list[asyncpg.Record]:
        """The account's last entry before each bound (`from`, `until`), with its running totals."""
        return await self._fetch("SELECT * FROM api_statement($1, $2, $3, $4, $5)", tenant, account, asset, since,
                                 until)

    async def transaction_answer(self, tenant: str, id: str) -> asyncpg.Record | None:
        """The transaction as `transaction` gives it, with its accounts' balances right after it
        (`balances_after`: account -> asset -> balance, or None) and its chain link (`hash`, `previous_hash`):
        a waited write's answer in one round trip."""
        rows = await self._fetch("SELECT * FROM api_transaction_answer($1, $2)", tenant, id)
        return rows[0] if rows else None

    async def balances_after(self, tenant: str, id: str, accounts: list[str], offset: int) -> list[asyncpg.Record]:
        return await self._fetch("SELECT * FROM api_balances_after($1, $2, $3, $4)", tenant, id, accounts, offset)

    async def chain(self, tenant: str) -> asyncpg.Record | None:
        rows = await self._fetch("SELECT * FROM api_chain($1)", tenant)
        return rows[0] if rows else None

    async def chain_link(self, tenant: str, id: str) -> asyncpg.Record | None:
        rows = await self._fetch("SELECT * FROM api_chain_link($1, $2)", tenant, id)
        return rows[0] if rows else None

    async def snapshot(self, tenant: str, accounts: list[str]) -> list[asyncpg.Record]:
        """The accounts' balance and policy rows and the tenant's applied position, in one snapshot."""
        return await self._fetch("SELECT * FROM api_snapshot($1, $2)", tenant, accounts)

    async def balance_sums(self, tenant: str, low: str, high: str) -> list[asyncpg.Record]:
        return await self._fetch("SELECT * FROM api_balance_sums($1, $2, $3)", tenant, low, high)

    # --- many at once, for the dispatcher: one round trip for a batch of one tenant's events ---------------

    async def transactions_many(self, tenant: str, ids: list[str]) -> list[asyncpg.Record]:
        return await self._fetch("SELECT k.asked, t.* FROM unnest($2::text[]) AS k(asked)"
                                 " CROSS JOIN LATERAL api_transaction($1, k.asked) t", tenant, ids)

    async def holds_many(self, tenant: str, ids: list[str]) -> list[asyncpg.Record]:
        return await self._fetch("SELECT k.asked, h.* FROM unnest($2::text[]) AS k(asked)"
                                 " CROSS JOIN LATERAL api_hold($1, k.asked) h", tenant, ids)

    async def balances_after_many(self, tenant: str, asked: list[tuple[str, list[str], int]]) -> list[asyncpg.Record]:
        """Per (transaction id, its accounts, its offset), those accounts' balances right after it."""
        return await self._fetch(
            "SELECT k.id AS asked, a.* FROM unnest($2::text[], $3::text[], $4::bigint[]) AS k(id, accounts, o)"
            " CROSS JOIN LATERAL api_balances_after($1, k.id, string_to_array(k.accounts, chr(31)), k.o) a",
            tenant, [a[0] for a in asked], ["\x1f".join(a[1]) for a in asked], [a[2] for a in asked])

    async def chain_links_many(self, tenant: str, ids: list[str]) -> list[asyncpg.Record]:
        return await self._fetch("SELECT k.asked, c.* FROM unnest($2::text[]) AS k(asked)"
                                 " CROSS JOIN LATERAL api_chain_link($1, k.asked) c", tenant, ids)

    async def monitor(self, tenant: str, id: str) -> asyncpg.Record | None:
        rows = await self._fetch("SELECT * FROM api_monitor($1, $2)", tenant, id)
        return rows[0] if rows else None

    async def monitors(self, tenant: str, after: str | None, limit: int, removed: bool) -> list[asyncpg.Record]:
        return await self._fetch("SELECT * FROM api_monitors($1, $2, $3, $4)", tenant, after, limit, removed)

    @contextlib.asynccontextmanager
    async def as_tenant(self, tenant: str) -> AsyncIterator[asyncpg.Connection]:
        """A transaction that row-level security confines to `tenant` (the endpoints' tables are read and
        written directly, not through a function)."""
        async with self.connection() as conn, conn.transaction():
            await conn.execute("SELECT set_config('ledger.tenant', $1, true)", tenant)
            yield conn

    async def create_webhook(self, tenant: str, id: str, url: str, events: list[str], secret: str,
                             most: int) -> asyncpg.Record | str:
        """Register an endpoint; or why not: "too_many" (the tenant has `most` already: counted under a lock of
        the tenant's, so two creations at once cannot both pass the count) or "taken" (its URL is registered)."""
        async with self.as_tenant(tenant) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('webhooks:' || $1))", tenant,
                               timeout=QUERY_TIMEOUT_S)
            active = await conn.fetchval("SELECT count(*) FROM webhooks WHERE tenant = $1 AND deleted_at IS NULL",
                                         tenant, timeout=QUERY_TIMEOUT_S)
            if active >= most:
                return "too_many"
            row: asyncpg.Record | None = await conn.fetchrow(
                "INSERT INTO webhooks (tenant, id, url, events, secret) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (tenant, url) WHERE deleted_at IS NULL DO NOTHING"
                " RETURNING id, url, events, created_at", tenant, id, url, events, secret, timeout=QUERY_TIMEOUT_S)
            return "taken" if row is None else row

    async def count_webhooks(self, tenant: str) -> int:
        async with self.as_tenant(tenant) as conn:
            count: int = await conn.fetchval("SELECT count(*) FROM webhooks WHERE tenant = $1"
                                             " AND deleted_at IS NULL", tenant, timeout=QUERY_TIMEOUT_S)
            return count

    async def webhooks(self, tenant: str) -> list[asyncpg.Record]:
        async with self.as_tenant(tenant) as conn:
            rows: list[asyncpg.Record] = await conn.fetch(
                "SELECT id, url, events, created_at FROM webhooks WHERE tenant = $1 AND deleted_at IS NULL"
                " ORDER BY created_at, id", tenant, timeout=QUERY_TIMEOUT_S)
            return rows

    async def webhook(self, tenant: str, id: str) -> asyncpg.Record | None:
        async with self.as_tenant(tenant) as conn:
            row: asyncpg.Record | None = await conn.fetchrow(
                "SELECT id, url, events, created_at FROM webhooks WHERE tenant = $1 AND id = $2"
                " AND deleted_at IS NULL", tenant, id, timeout=QUERY_TIMEOUT_S)
            return row

    async def delete_webhook(self, tenant: str, id: str) -> asyncpg.Record | None:
        """Delete an endpoint (the dispatchers cancel what it still had to receive); None if there was none."""
        async with self.as_tenant(tenant) as conn:
            row: asyncpg.Record | None = await conn.fetchrow(
                "UPDATE webhooks SET deleted_at = clock_timestamp(), changed_at = clock_timestamp()"
                " WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL"
                " RETURNING id, url, events, created_at, deleted_at", tenant, id, timeout=QUERY_TIMEOUT_S)
            return row

    async def attempts(self, tenant: str, webhook_id: str, before: tuple[datetime, str, int] | None,
                       limit: int) -> list[asyncpg.Record]:
        """An endpoint's delivery attempts, newest first, before the cursor (at, event, attempt) if given."""
        async with self.as_tenant(tenant) as conn:
            rows: list[asyncpg.Record] = await conn.fetch(
                "SELECT a.event_id, e.type, a.status_code, a.error, a.attempt, a.at FROM webhook_attempts a"
                " JOIN webhook_events e ON e.id = a.event_id"
                " WHERE a.tenant = $1 AND a.webhook_id = $2"
                " AND ($3::timestamptz IS NULL OR (a.at, a.event_id, a.attempt) < ($3, $4, $5))"
                " ORDER BY a.at DESC, a.event_id DESC, a.attempt DESC LIMIT $6",
                tenant, webhook_id, *(before or (None, "", 0)), limit, timeout=QUERY_TIMEOUT_S)
            return rows

    async def limits_of(self, tenant: str) -> asyncpg.Record | None:
        rows = await self._fetch(LIMITS_OF, tenant)
        return rows[0] if rows else None

    async def set_limits(self, tenant: str, writes_per_s: int | None, reads_per_s: int | None, burst_s: int | None,
                         *defaults: int) -> asyncpg.Record:
        """Set the limits given (None: kept, or the default for a tenant without its own) in one statement, and
        tell every API process (`limits:<tenant>` on the keys channel); the limits now stored."""
        async with self.connection() as conn, conn.transaction():
            row: asyncpg.Record = await conn.fetchrow(
                "INSERT INTO tenant_limits (tenant, writes_per_s, reads_per_s, burst_s)"
                " VALUES ($1, coalesce($2::int, $5::int), coalesce($3::int, $6::int), coalesce($4::int, $7::int))"
                " ON CONFLICT (tenant) DO UPDATE SET writes_per_s = coalesce($2::int, tenant_limits.writes_per_s),"
                " reads_per_s = coalesce($3::int, tenant_limits.reads_per_s),"
                " burst_s = coalesce($4::int, tenant_limits.burst_s), updated_at = now()"
                " RETURNING writes_per_s, reads_per_s, burst_s",
                tenant, writes_per_s, reads_per_s, burst_s, *defaults)
            await self._notify_change(conn, f"limits:{tenant}")
            return row

    async def heartbeat(self, process: str) -> int:
        """Say this API process is alive; how many are (it included), by their heartbeats of the last 3 s."""
        async with self.connection() as conn, conn.transaction():
            await conn.execute("INSERT INTO api_processes (id, seen_at) VALUES ($1, now())"
                               " ON CONFLICT (id) DO UPDATE SET seen_at = now()", process)
            await conn.execute("DELETE FROM api_processes WHERE seen_at < now() - interval '1 minute'")
            others: int = await conn.fetchval(
                "SELECT count(*) FROM api_processes WHERE id <> $1 AND seen_at > now() - interval '3 seconds'",
                process)
            return others + 1

    async def tenant(self, id: str) -> asyncpg.Record | None:
        """The tenant as its creation record on the log made it, with that record's position."""
        rows = await self._fetch("SELECT * FROM api_tenants($1)", id)
        return rows[0] if rows else None

    async def create_key(self, key_id: str, tenant: str, digest: bytes, scopes: list[str]) -> None:
        async with self.connection() as conn, conn.transaction():
            await conn.execute("INSERT INTO api_keys (id, tenant, secret_sha256, scopes) VALUES ($1, $2, $3, $4)",
                               key_id, tenant, digest, scopes)
            await self._notify_change(conn, f"key:{key_id}")

    async def revoke_key(self, tenant: str, key_id: str) -> None:
        check_key_id(key_id)  # anything else (a NUL byte, say) would reach PostgreSQL, which refuses NULs
        async with self.connection() as conn, conn.transaction():
            done = await conn.fetchval(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 AND tenant = $2 "
                "RETURNING id", key_id, tenant)
            if done is None:
                raise NotFound(f"no key {key_id!r} for tenant {tenant!r}")
            await self._notify_change(conn, f"key:{key_id}")
