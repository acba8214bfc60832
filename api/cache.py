"""The balance cache: each worker keeps the answers of recent balance reads, in memory, kept current by the
projector's progress notifications, which name every account a batch changed.

It never serves a balance the projection has moved on from, as far as this worker has heard:
- a notification drops the accounts it names before it advances any partition, so a read waiting for a
  position (`min_position`, `wait=true`) is served from the cache only once the cache has applied it;
- an answer read from the database is kept only if no notification named its account while it was read (a
  batch that committed after the read's snapshot would otherwise be forgotten), and only if the listening
  connection was the same, healthy one from the read's start to its end;
- the whole cache is dropped whenever the listening connection is (re)made, since notifications may have been
  missed meanwhile, and on a switch of projection; and it is not used at all while the listener is not healthy.
A read without `min_position` may trail the database by the delivery of a notification (well under a
millisecond here), as any read racing a commit does; the contract's read-your-writes is `min_position`.
"""

from __future__ import annotations

from collections.abc import Callable

from ledger.changes import account_key


class BalanceCache:
    """Response bodies of `GET .../accounts/{address}` by tenant and address, at most `capacity` of them (the
    oldest filled goes first); `healthy` says whether notifications are flowing."""

    def __init__(self, capacity: int, healthy: Callable[[], bool]) -> None:
        self.capacity = capacity
        self.healthy = healthy
        self._bodies: dict[int, tuple[str, str, bytes]] = {}
        self._reading: dict[int, int] = {}  # reads in flight per account
        self._named: set[int] = set()  # accounts named by a notification while being read
        self.epoch = 0  # counts the times the cache was dropped whole
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._bodies)

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def get(self, tenant: str, account: str) -> bytes | None:
        if not self.enabled:
            return None
        found = self._bodies.get(account_key(tenant, account))
        if found is not None and found[0] == tenant and found[1] == account and self.healthy():
            self.hits += 1
            return found[2]
        self.misses += 1
        return None

    def reading(self, tenant: str, account: str) -> tuple[int, int]:
        """Mark the start of a database read of the account; pass what it returns to `fill` or `abandon`."""
        key = account_key(tenant, account)
        self._reading[key] = self._reading.get(key, 0) + 1
        return key, self.epoch

    def fill(self, ticket: tuple[int, int], tenant: str, account: str, body: bytes) -> None:
        """The read marked by `ticket` is done: keep its answer if nothing can have made it stale."""
        key, epoch = ticket
        if self.enabled and epoch == self.epoch and key not in self._named and self.healthy():
            if len(self._bodies) >= self.capacity and key not in self._bodies:
                del self._bodies[next(iter(self._bodies))]
            self._bodies[key] = (tenant, account, body)
        self.abandon(ticket)

    def abandon(self, ticket: tuple[int, int]) -> None:
        key = ticket[0]
        left = self._reading[key] - 1
        if left:
            self._reading[key] = left
        else:
            del self._reading[key]
            self._named.discard(key)

    def changed(self, keys: list[int]) -> None:
        """A batch changed these accounts: drop them, and spoil the reads of them in flight."""
        bodies, reading = self._bodies, self._reading
        for key in keys:
            bodies.pop(key, None)
            if key in reading:
                self._named.add(key)

    def drop_all(self) -> None:
        """Notifications may have been missed, or everything changed: forget every answer and every read in
        flight (their tickets carry the old epoch)."""
        self._bodies.clear()
        self.epoch += 1
