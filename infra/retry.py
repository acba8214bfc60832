"""The one retry policy: exponential backoff with a cap (and, for a crowd, jitter), bounded by a deadline,
never retrying a call whose task is being cancelled.

Every place that waits before trying again takes its delays from a `Backoff`: the projector's calls to
PostgreSQL and Kafka (`retrying`, in process), the dispatcher's webhook deliveries (`Backoff.delay`, the
schedule stored with each delivery) and the local supervisor's restarts. The periodic loops (the API's
listener heartbeat, the projector's clock) are not retries: they run on their interval whatever the last
round met.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
LOG = logging.getLogger("ledger.retry")
EXPONENT_MAX = 30  # 2**30 times the first delay is past any cap here; bounds the float


class RetriesExhausted(RuntimeError):
    """A call still failed with a transient fault when its deadline came."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays of `first_s` doubling up to `cap_s`. With `jitter`, each is drawn uniformly from the upper half
    of its value (so a crowd of callers that failed together spreads out, and none waits less than half)."""

    first_s: float
    cap_s: float
    jitter: bool = False

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay after the `attempt`-th failure (the first is 1)."""
        base: float = min(self.first_s * float(2 ** min(max(attempt - 1, 0), EXPONENT_MAX)), self.cap_s)
        if not self.jitter:
            return base
        draw: float = rng.random() if rng is not None else random.random()
        return base / 2 + draw * base / 2


async def retrying(call: Callable[[], Awaitable[T]], *, transient: Callable[[BaseException], bool],
                   backoff: Backoff, deadline_s: float, what: str,
                   on_retry: Callable[[BaseException], None] | None = None,
                   log: logging.Logger = LOG) -> T:
    """`call()`, again after each transient fault (as `transient` says) until `deadline_s` from now; then
    `RetriesExhausted`. Any other fault is raised at once, and so is every fault met while this task is
    being cancelled (a cancelled call's connection fails too; it is not retried). `on_retry` is called
    before each wait (to drop a broken connection, say); the last wait ends at the deadline."""
    deadline = time.monotonic() + deadline_s
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as e:
            current = asyncio.current_task()
            if not transient(e) or (current is not None and current.cancelling()):
                raise
            if time.monotonic() >= deadline:
                raise RetriesExhausted(f"{what} still failing after {deadline_s} s") from e
            attempt += 1
            delay = min(backoff.delay(attempt), max(0.0, deadline - time.monotonic()))
            log.warning("%s unavailable (%r); retrying in %.2f s", what, e, delay)
            if on_retry is not None:
                on_retry(e)
            await asyncio.sleep(delay)
