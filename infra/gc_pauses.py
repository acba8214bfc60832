"""How long Python's cyclic garbage collector stops a process, by generation (`ledger_gc_pause_seconds`): a
collection of the oldest generation scans every live object, and with the projector's carried state (up to
500,000 balances, ids and keys) or the API's caches that is a pause every request in flight waits through."""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Histogram

PAUSES = Histogram("ledger_gc_pause_seconds", "Pauses of Python's cyclic garbage collector, by generation",
                   ["generation"], buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
_started = [0.0]


def _callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        PAUSES.labels(str(info.get("generation", "?"))).observe(time.perf_counter() - _started[0])


def watch() -> None:
    """Observe every collection of this process from now on (once per process)."""
    if _callback not in gc.callbacks:
        gc.callbacks.append(_callback)
