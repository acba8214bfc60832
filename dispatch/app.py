"""The dispatcher: contract v3's events out, a process of its own (`python -m dispatch`).

It reads `ledger.outcomes` in a consumer group of its own, turns each decision into events (dispatch/events.py)
for the endpoints subscribed to them, and keeps every event and delivery in PostgreSQL before it commits its
Kafka offsets: a restart re-reads at most what it had not committed, and the events' ids (derived from their
place in the log) make the second reading store nothing. Deliveries are claimed with a lease, so one that a
crash interrupted is sent again once its lease runs out (at least once).

Each endpoint has a bounded queue and its own few workers, under one bound on all deliveries in flight: an
endpoint that is slow or dead fills its own queue and no other's, and nothing here is on the path of a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import signal
import sys
import time
from datetime import UTC, datetime

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge, start_http_server

from api.store import Store, init_connection, keep_session
from dispatch.deliveries import DELIVERIES, GIVE_UP_AFTER, LEASE_S, QUEUE_MAX, Deliveries
from dispatch.directory import Webhook
from dispatch.events import Event, events_of
from dispatch.statements import CANCEL_DELETED, CLAIM_DUE, INSERT_DELIVERIES, INSERT_EVENTS
from infra import logs
from infra import settings as settings_mod
from infra.kafka import PacedCommits
from infra.settings import Settings

log = logging.getLogger("ledger.dispatcher")

FETCH_RECORDS_MAX = 1000
FETCH_WAIT_MS = 100
# Kafka answers the dispatcher's fetch once this much has gathered, or after `FETCH_WAIT_MS`: a few fetches a
# second under load, not one per batch the projector applies (each woke the broker and this process). Webhooks
# have no latency promise; at most `FETCH_WAIT_MS` is added to a delivery.
FETCH_MIN_BYTES = 64 * 1024
POLL_INTERVAL_S = 0.5
CLAIM_PER_ENDPOINT = 250  # claimed per endpoint per poll: one endpoint's backlog does not hold back another's
PROJECTED_WAIT_S = 5.0  # how long the consumer waits for the projection to commit the decisions it read
PROJECTED_POLL_S = 0.01
BACKLOG_INTERVAL_S = 5.0
CANCEL_BATCH = 5000  # pending deliveries of deleted endpoints cancelled per round
STATEMENT_TIMEOUT_MS = "10000"

EVENTS = Counter("ledger_webhook_events_total", "Events taken from the log's decisions for some endpoint", ["type"])
BACKLOG = Gauge("ledger_webhook_backlog", "Deliveries pending per endpoint", ["webhook"])
CONSUMED = Counter("ledger_dispatcher_outcomes_total", "Outcomes read from the log")


class Dispatcher(Deliveries):
    """Decisions in, events and deliveries stored, then their offsets committed; due deliveries claimed, and
    the backlog counted. What it stores or claims goes to the endpoints' queues (`Deliveries`)."""

    def __init__(self, cfg: Settings, key: bytes) -> None:
        super().__init__(cfg, key)
        self.key = key
        self.stopping = asyncio.Event()
        # Kafka's offsets of what is stored, at most once a second: a restart consumes again what followed, and
        # storing it again changes nothing (events and deliveries are inserted once per id). A commit per fetch
        # cost a Kafka round trip for every batch the projector applied.
        self.commits: PacedCommits | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        settings = {"statement_timeout": STATEMENT_TIMEOUT_MS}
        self.pool = await asyncpg.create_pool(self.cfg.projector_database_url, min_size=1, max_size=8, timeout=5,
                                              reset=keep_session, server_settings=settings)
        api_pool = await asyncpg.create_pool(self.cfg.api_database_url, min_size=1, max_size=4, timeout=5,
                                             init=init_connection, reset=keep_session, server_settings=settings)
        self.store = Store(api_pool, acquire_timeout_s=5.0)
        consumer = AIOKafkaConsumer(self.cfg.outcomes_topic, bootstrap_servers=self.cfg.kafka_bootstrap,
                                    group_id=self.cfg.dispatcher_group, enable_auto_commit=False,
                                    auto_offset_reset="earliest", max_poll_records=FETCH_RECORDS_MAX,
                                    fetch_min_bytes=FETCH_MIN_BYTES, fetch_max_wait_ms=FETCH_WAIT_MS,
                                    session_timeout_ms=10_000, heartbeat_interval_ms=1_000)
        self.commits = PacedCommits(consumer)
        await consumer.start()
        tasks = [asyncio.create_task(self._consume(consumer)), asyncio.create_task(self._poll()),
                 asyncio.create_task(self._backlog())]
        try:
            stop = asyncio.create_task(self.stopping.wait())
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in done if t is not stop and t.exception() is not None]
            for task in failed:
                log.critical("the dispatcher failed; exiting for a clean restart", exc_info=task.exception())
            return 1 if failed else 0
        finally:
            for task in tasks + [r for e in self.endpoints.values() for r in list(e.runners)]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.commits is not None:  # what was stored since the last commit (a restart would redo it)
                with contextlib.suppress(Exception):
                    await self.commits.commit(force=True)
            with contextlib.suppress(Exception):
                await consumer.stop()
            await self.pool.close()
            await api_pool.close()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        """Decisions in, events and deliveries stored, then the offsets committed; new deliveries go straight
        to their endpoints' queues (their lease is this process's)."""
        assert self.pool is not None and self.commits is not None
        while not self.stopping.is_set():
            fetched = await consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=FETCH_RECORDS_MAX)
            messages = [m for batch in fetched.values() for m in batch]
            if not messages:
                await self.commits.commit()  # what the last batches stored, once the log goes quiet
                continue
            CONSUMED.inc(len(messages))
            async with self.pool.acquire() as conn:
                await self.directory.refresh(conn)  # an endpoint registered since may take some of these
                found: list[tuple[Event, datetime, list[Webhook]]] = []
                wanted: dict[int, int] = {}  # per partition of the log, the last decision an event is of
                for m in messages:
                    if not self.directory.by_tenant:
                        break
                    try:
                        outcome = orjson.loads(m.value or b"")
                    except orjson.JSONDecodeError:
                        log.warning("an outcome that is not JSON at %d-%d", m.partition, m.offset)
                        continue
                    if not isinstance(outcome, dict) or outcome.get("tenant") not in self.directory.by_tenant:
                        continue
                    at = datetime.fromtimestamp(m.timestamp / 1000, UTC)
                    for event in events_of(outcome, self.key):
                        hooks = self.directory.subscribed(event, at)
                        if hooks:
                            found.append((event, at, hooks))
                            partition, _, offset = str(outcome.get("record", "")).partition("-")
                            if partition.isdigit() and offset.isdigit():
                                wanted[int(partition)] = max(wanted.get(int(partition), -1), int(offset))
                if wanted:
                    await self._projected(conn, wanted)
                fresh = await self._store(conn, found) if found else []
            self.commits.done({TopicPartition(m.topic, m.partition): m.offset + 1 for m in messages})
            await self.commits.commit()
            await self._queue(fresh)

    async def _projected(self, conn: asyncpg.Connection, wanted: dict[int, int]) -> None:
        """Wait (a little) until the projection has committed the decisions `wanted` (per partition, the last
        offset): each is published just before its batch commits, and a delivery goes out with its transaction
        as a GET shows it. Past the wait it goes on: a delivery whose data is not there yet is put back."""
        deadline = time.monotonic() + PROJECTED_WAIT_S
        while time.monotonic() < deadline:
            done = {r["log_partition"]: r["next_offset"] for r in await conn.fetch("SELECT * FROM api_offsets()")}
            if all(done.get(p, 0) > offset for p, offset in wanted.items()):
                return
            await asyncio.sleep(PROJECTED_POLL_S)

    async def _store(self, conn: asyncpg.Connection, found: list[tuple[Event, datetime, list[Webhook]]]
                     ) -> list[asyncpg.Record]:
        give_up = datetime.now(UTC) + GIVE_UP_AFTER
        async with conn.transaction():
            await conn.execute(INSERT_EVENTS, [e.id for e, _, _ in found], [e.tenant for e, _, _ in found],
                               [e.type for e, _, _ in found], [e.subject for e, _, _ in found],
                               [e.position for e, _, _ in found], [at for _, at, _ in found],
                               [None if e.crossing is None else orjson.dumps(e.crossing).decode()
                                for e, _, _ in found])
            pairs = [(e, h) for e, _, hooks in found for h in hooks]
            rows: list[asyncpg.Record] = await conn.fetch(
                INSERT_DELIVERIES, [e.id for e, _ in pairs], [h.id for _, h in pairs], [e.tenant for e, _ in pairs],
                float(LEASE_S), [give_up] * len(pairs), self.me)
        for event, _, _ in found:
            EVENTS.labels(event.type).inc()
        return rows

    async def _poll(self) -> None:
        """Claim the deliveries that are due (retries, and those a stopped process left) and queue them."""
        assert self.pool is not None
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):  # a runner that emptied its queue asks for more at once
                await asyncio.wait_for(self.room.wait(), POLL_INTERVAL_S)
            self.room.clear()
            full = [key[1] for key, e in self.endpoints.items() if e.queue.qsize() > QUEUE_MAX - CLAIM_PER_ENDPOINT]
            try:
                async with self.pool.acquire() as conn:
                    await self.directory.refresh(conn)
                    rows = await conn.fetch(CLAIM_DUE, float(LEASE_S), CLAIM_PER_ENDPOINT, self.me, full)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
                log.warning("could not claim due deliveries (%r)", e)
                continue
            await self._queue(rows)

    async def _backlog(self) -> None:
        assert self.pool is not None
        shown: set[str] = set()
        while not self.stopping.is_set():
            try:
                cancelled = await self.pool.execute(CANCEL_DELETED, CANCEL_BATCH)
                DELIVERIES.labels("cancelled").inc(int(cancelled.split()[-1]))
                rows = await self.pool.fetch("SELECT webhook_id, count(*) AS n FROM webhook_deliveries"
                                             " WHERE state = 'pending' GROUP BY webhook_id")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
                log.info("could not count the backlog (%r)", e)
            else:
                now = {r["webhook_id"]: r["n"] for r in rows}
                for gone in shown - now.keys():
                    BACKLOG.remove(gone)
                for webhook, n in now.items():
                    BACKLOG.labels(webhook).set(n)
                shown = set(now)
            await asyncio.sleep(BACKLOG_INTERVAL_S)


async def _main(cfg: Settings, key: bytes) -> int:
    try:
        return await Dispatcher(cfg, key).run()
    except (OSError, KafkaError, asyncpg.PostgresError, TimeoutError):
        log.critical("the dispatcher could not start or lost a dependency; exiting for a restart", exc_info=True)
        return 1


def main() -> None:
    try:
        cfg = settings_mod.load()
        key = settings_mod.require_position_key(cfg, "the dispatcher")
    except settings_mod.SettingsError as e:
        sys.exit(f"dispatcher: {e}")
    logging.config.dictConfig(logs.config("dispatcher", cfg.log_level or "WARNING"))
    if cfg.dispatcher_metrics_port:
        start_http_server(cfg.dispatcher_metrics_port, addr=cfg.metrics_host)
    sys.exit(asyncio.run(_main(cfg, key)))
