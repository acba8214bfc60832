"""A local webhook receiver for the tests: a real HTTP server on 127.0.0.1 that records every request and
answers as the test says (a status per request, or a delay, or never)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, object]:
        value: dict[str, object] = orjson.loads(self.body)
        return value


@dataclass
class Receiver:
    """`answer(n)` gives the status for the n-th request (from 0), or None to never answer; `delay_s` waits
    before answering."""

    answer: Callable[[int], int | None] = lambda n: 200
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0
    # Connections still open: closing the server leaves them (Python 3.11), and one left for the garbage
    # collector raised an unclosed-socket warning in whichever test ran next. Each is known from the moment it
    # is accepted (`_accepted` runs in the protocol's connection_made), not only once its task first runs: one
    # accepted as the test ended, its task never started, was left so.
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        for writer in list(self.writers):
            writer.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def url(self, host: str = "localhost", path: str = "/hook") -> str:
        return f"http://{host}:{self.port}{path}"

    def types(self) -> list[str]:
        return [str(r.json["type"]) for r in self.received]

    async def wait_for(self, count: int, timeout_s: float = 20.0, what: Callable[[Received], bool] | None = None
                       ) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = [r for r in self.received if what is None or what(r)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.05)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            n = len(self.received)
            self.received.append(Received(headers, body, time.monotonic()))
            status = self.answer(n)
            if status is None:
                await asyncio.sleep(3600)
                return
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()
