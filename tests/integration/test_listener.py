"""The API's notification listener against a real PostgreSQL: it recovers from a dropped connection while
the projector's notifications keep coming (found by `make soak-cluster`: an API stayed unready for minutes)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import asyncpg

from api.progress import Listener, Progress, application_name
from infra.settings import PROGRESS_CHANNEL
from ledger import changes

RECOVER_S = 10.0


async def _no_keys(payload: str | None) -> None:
    return None


async def test_a_reconnected_listener_is_healthy_again_while_notifications_stream() -> None:
    url = os.environ["LEDGER_DATABASE_URL"]
    listener = Listener(url, Progress(), _no_keys)
    await listener.start()
    admin = await asyncpg.connect(url)
    notifier = await asyncpg.connect(url)  # its own connection: one connection runs one statement at a time
    stop = asyncio.Event()
    # An empty advance: heard (and harmless) for every API listening in this test session.
    payload = changes.payloads({}, [])[-1]

    async def stream() -> None:  # notifications more often than the listener's heartbeat interval
        while not stop.is_set():
            await notifier.execute("SELECT pg_notify($1, $2)", PROGRESS_CHANNEL, payload)
            await asyncio.sleep(0.02)

    streaming = asyncio.create_task(stream())
    try:
        await asyncio.sleep(0.5)
        assert listener.healthy, listener.status()
        first = listener.conn
        killed = await admin.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = $1) t", application_name())
        assert killed == 1
        deadline = time.monotonic() + RECOVER_S
        while time.monotonic() < deadline and (listener.conn is first or not listener.healthy):
            await asyncio.sleep(0.05)
        assert listener.conn is not first, "the listener did not notice its connection was gone"
        assert listener.healthy, f"still unhealthy {RECOVER_S} s after the drop: {listener.status()}"
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await streaming
        await listener.stop()
        await admin.close()
        await notifier.close()


async def test_a_key_change_that_hangs_is_given_up_and_the_connection_dropped(monkeypatch: object) -> None:
    import api.progress as progress_module

    monkeypatch.setattr(progress_module, "RECONNECT_TIMEOUT_S", 0.2)  # type: ignore[attr-defined]
    hung = asyncio.Event()

    async def hangs(payload: str | None) -> None:
        if payload is not None:  # the reload at (re)connection answers; a single change never does
            hung.set()
            await asyncio.Event().wait()

    listener = Listener(os.environ["LEDGER_DATABASE_URL"], Progress(), hangs)
    await listener.start()
    try:
        first = listener.conn
        assert first is not None
        await asyncio.wait_for(listener._key_changed("key:nothing"), 5)
        assert hung.is_set()
        assert first.is_closed(), "a key change not applied must force a reload through a new connection"
        deadline = time.monotonic() + RECOVER_S
        while time.monotonic() < deadline and (listener.conn is first or not listener.healthy):
            await asyncio.sleep(0.05)
        assert listener.healthy, listener.status()
    finally:
        await listener.stop()


async def test_an_unexpected_error_of_a_ping_does_not_end_the_watch() -> None:
    listener = Listener(os.environ["LEDGER_DATABASE_URL"], Progress(), _no_keys)
    await listener.start()
    try:
        first = listener.conn
        assert first is not None

        pinged = listener._ping

        async def broken(conn: asyncpg.Connection) -> None:  # the next ping meets what a failover left
            listener._ping = pinged  # type: ignore[method-assign]
            raise asyncpg.InternalClientError("cannot switch to state 11; another operation is in progress")

        listener._ping = broken  # type: ignore[method-assign]
        listener._confirmed = False
        deadline = time.monotonic() + RECOVER_S
        while time.monotonic() < deadline and (listener.conn is first or not listener.healthy):
            await asyncio.sleep(0.05)
        assert listener.conn is not first and listener.healthy, listener.status()
    finally:
        await listener.stop()
