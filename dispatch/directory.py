"""The dispatcher's view of the active endpoints (`Directory`), read from PostgreSQL and probed for changes."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import NamedTuple

import asyncpg

from dispatch.events import Event, wanted
from dispatch.statements import ACTIVE_WEBHOOKS, LAST_CHANGE


class Webhook(NamedTuple):
    tenant: str
    id: str
    url: str
    events: frozenset[str]
    secret: str
    created_at: datetime



class Directory:
    """The active endpoints, from PostgreSQL. Reloaded when the latest registration or deletion (`changed_at`)
    is newer than the one this view has: a cheap probe of an index per batch of decisions, the whole list only
    when something changed."""

    def __init__(self) -> None:
        self.by_tenant: dict[str, list[Webhook]] = {}
        self.by_id: dict[tuple[str, str], Webhook] = {}
        self.changed_at: datetime | None = None
        self.loaded = False
        self.lock = asyncio.Lock()  # one load at a time: an older snapshot never lands after a newer one

    async def refresh(self, conn: asyncpg.Connection, force: bool = False) -> None:
        async with self.lock:
            changed = await conn.fetchval(LAST_CHANGE)
            if changed == self.changed_at and self.loaded and not force:
                return  # with no endpoint ever registered, None: it was reloaded on every batch
            rows = await conn.fetch(ACTIVE_WEBHOOKS)
            by_tenant: dict[str, list[Webhook]] = {}
            for r in rows:
                hook = Webhook(r["tenant"], r["id"], r["url"], frozenset(r["events"]), r["secret"], r["created_at"])
                by_tenant.setdefault(hook.tenant, []).append(hook)
            self.by_tenant, self.changed_at, self.loaded = by_tenant, changed, True
            self.by_id = {(h.tenant, h.id): h for hooks in by_tenant.values() for h in hooks}

    def subscribed(self, event: Event, at: datetime) -> list[Webhook]:
        """The endpoints that take `event`: subscribed to its type, and registered by the time it happened."""
        return [h for h in self.by_tenant.get(event.tenant, ()) if h.created_at <= at and wanted(h.events, event.type)]
