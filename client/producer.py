"""`LedgerProducer`: append requests to `ledger.transactions` and await their outcomes on `ledger.outcomes`."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from infra.kafka import topic_partitions
from infra.producer import LogProducer, ProduceFailed, producer_config
from infra.settings import OUTCOMES_TOPIC, TRANSACTIONS_TOPIC
from ledger.bodies import parse_body, parse_items
from ledger.codec import encode_request
from ledger.errors import AppendUnconfirmed, InvalidRequest
from ledger.positions import Position, PositionKey
from ledger.requests import (
    CAPTURE,
    HOLD,
    POLICY,
    REVERSE,
    TRANSFER,
    VOID,
    BatchRequest,
    Posting,
    Request,
    TenantRequest,
    TransferRequest,
)
from ledger.validation import (
    check_id,
    check_tenant,
    check_tenant_name,
    parse_idempotency_key,
    parse_metadata,
    parse_postings,
    parse_reference,
)

PENDING_MAX = 100_000
# Outcomes read before their append was acknowledged here, kept aside for it (the oldest dropped first).
EARLY_MAX = 10_000


class OutcomeTimeout(TimeoutError):
    """The outcome did not arrive in time; the request may still be decided later."""


def _postings(postings: list[Posting], amount_max: Iterable[int]) -> list[dict[str, object]]:
    """Postings as a body gives them: those at `amount_max`'s indexes move at most their amount."""
    out = [p.as_json() for p in postings]
    for index in set(amount_max):
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(out):
            raise InvalidRequest(f"{index!r} is not the index of one of the {len(out)} postings", "amount_max")
        out[index]["amount_max"] = out[index].pop("amount")
    return out


@dataclass(frozen=True, slots=True)
class Submitted:
    """An appended request. `position` is where Kafka put it, in the clear (this producer may read the log);
    `token` is what the tenant's API clients may be handed for it (`min_position`), made only by a producer
    given the ledger's position key."""

    tenant: str
    id: str
    position: Position
    token: str | None = None


class LedgerProducer:
    """An idempotent Kafka producer for ledger requests (librdkafka: `infra.producer`), with an outcomes listener
    started on demand.

    Outcomes are followed from the moment `start()` runs: submit after starting, then await. They are matched
    by the record they answer (`record`, in the clear), so no key is needed for that; with `position_key`
    (the 32 bytes of `LEDGER_POSITION_KEY`), each `Submitted` also carries the tenant's opaque `token`.
    """

    def __init__(self, bootstrap: str, *, follow_outcomes: bool = True, topic: str = TRANSACTIONS_TOPIC,
                 outcomes_topic: str = OUTCOMES_TOPIC, request_timeout_ms: int = 40_000,
                 position_key: bytes | None = None, client_id: str = "ledger-client") -> None:
        self.topic = topic
        self.outcomes_topic = outcomes_topic
        self.positions = None if position_key is None else PositionKey(position_key)
        # An append not acknowledged within `request_timeout_ms` raises `AppendUnconfirmed`.
        self._config = producer_config(bootstrap, delivery_timeout_ms=request_timeout_ms, linger_ms=2,
                                       client_id=client_id)  # what Kafka's client quotas name
        self._producer: LogProducer | None = None  # made in start(): it serves the running event loop
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False) \
            if follow_outcomes else None
        # By the record an outcome answers and the id it decides (an atomic batch's record decides several).
        self._waiters: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self._sending: dict[str, int] = {}  # appends not yet acknowledged, per tenant
        self._early: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LedgerProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | Any) -> None:
        await self.stop()

    async def start(self) -> None:
        self._producer = LogProducer(self._config)
        if self._consumer is None:
            return
        await self._consumer.start()
        tps = await topic_partitions(self._consumer, self.outcomes_topic)
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        self._reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def submit(self, tenant: str, postings: list[Posting], *, idempotency_key: str | None = None,
                     metadata: dict[str, str] | None = None, reference: str | None = None,
                     id: str | None = None, if_version: dict[str, int] | None = None,
                     asserts: list[dict[str, Any]] | None = None, amount_max: Iterable[int] = ()) -> Submitted:
        """Validate locally, append, and return the request's id and position once Kafka acknowledged it.
        Conditions (contract v3): `if_version` ({address: version}), `asserts` ([{"account", "asset", "min"?,
        "max"?}]), and `amount_max`, the indexes of the postings whose amount is a maximum."""
        if not (if_version or asserts or amount_max):
            request = TransferRequest(
                id=check_id(id or uuid.uuid4().hex), tenant=check_tenant(tenant),
                postings=parse_postings([p.as_json() for p in postings]),
                idempotency_key=parse_idempotency_key(idempotency_key), metadata=parse_metadata(metadata),
                reference=parse_reference(reference),
            )
            return await self._append(request)
        body = {"postings": _postings(postings, amount_max), "metadata": metadata, "reference": reference,
                "if_version": if_version, "assert": asserts}
        return await self._operation(TRANSFER, tenant, body, None, idempotency_key, id)

    async def hold(self, tenant: str, postings: list[Posting], *, expires_in_s: int | None = None,
                   idempotency_key: str | None = None, metadata: dict[str, str] | None = None,
                   reference: str | None = None, id: str | None = None, if_version: dict[str, int] | None = None,
                   asserts: list[dict[str, Any]] | None = None, amount_max: Iterable[int] = ()) -> Submitted:
        """Reserve `postings` on their sources; the outcome is `committed` (held) or `rejected`. Conditions as
        `submit`'s."""
        body = {"postings": _postings(postings, amount_max), "expires_in_s": expires_in_s, "metadata": metadata,
                "reference": reference, "if_version": if_version, "assert": asserts}
        return await self._operation(HOLD, tenant, body, None, idempotency_key, id)

    async def capture(self, tenant: str, hold_id: str, *, amount: int | None = None,
                      idempotency_key: str | None = None, metadata: dict[str, str] | None = None,
                      id: str | None = None) -> Submitted:
        """Move what the hold reserved (or `amount` of a one-posting hold) and release the rest."""
        body = {"amount": amount, "metadata": metadata}
        return await self._operation(CAPTURE, tenant, body, hold_id, idempotency_key, id)

    async def void(self, tenant: str, hold_id: str, *, idempotency_key: str | None = None,
                   id: str | None = None) -> Submitted:
        """Release the hold."""
        return await self._operation(VOID, tenant, {}, hold_id, idempotency_key, id)

    async def reverse(self, tenant: str, transaction_id: str, *, amount: int | None = None,
                      idempotency_key: str | None = None, metadata: dict[str, str] | None = None,
                      id: str | None = None) -> Submitted:
        """Move the transaction's postings back (or `amount` of a one-posting transaction)."""
        body = {"amount": amount, "metadata": metadata}
        return await self._operation(REVERSE, tenant, body, transaction_id, idempotency_key, id)

    async def set_policy(self, tenant: str, account: str, *, metadata: dict[str, str] | None = None,
                         overdraft_limit: dict[str, int] | None = None, frozen: bool = False,
                         idempotency_key: str | None = None, id: str | None = None) -> Submitted:
        """Replace the account's policy (metadata, per-asset overdraft limits, frozen), in log order."""
        body = {"metadata": metadata, "overdraft_limit": overdraft_limit, "frozen": frozen}
        return await self._operation(POLICY, tenant, body, account, idempotency_key, id)

    async def _operation(self, kind: str, tenant: str, body: dict[str, object], target: str | None,
                         idempotency_key: str | None, id: str | None) -> Submitted:
        """Validate with the API's own rules for `kind`, then append."""
        request = parse_body({k: v for k, v in body.items() if v is not None}, id=id or uuid.uuid4().hex,
                             tenant=tenant, idempotency_key=idempotency_key, kind=kind, target=target)
        return await self._append(request)

    async def submit_batch(self, tenant: str, transfers: list[list[Posting]], *, atomic: bool = False,
                           idempotency_keys: list[str | None] | None = None,
                           idempotency_key: str | None = None,
                           conditions: list[dict[str, Any] | None] | None = None) -> list[Submitted]:
        """Transfers appended in order; with `atomic`, as one record: all committed or all rejected. The
        batch's own `idempotency_key` binds it whole (one record too): a repeat replays every item. Each
        transfer may have `conditions`: `{"if_version"?, "assert"?}` as an HTTP batch member's, and
        `"amount_max"`, the indexes of its postings whose amount is a maximum."""
        keys = idempotency_keys or [None] * len(transfers)
        extra = conditions or [None] * len(transfers)
        raw = [{"postings": _postings(postings, (c or {}).get("amount_max", ())),
                **({"idempotency_key": k} if k else {}),
                **{name: value for name, value in (c or {}).items() if name != "amount_max"}}
               for postings, k, c in zip(transfers, keys, extra, strict=True)]
        batch_key = parse_idempotency_key(idempotency_key)
        items = parse_items(raw, check_tenant(tenant), [uuid.uuid4().hex for _ in raw], batch_key)
        if atomic or batch_key is not None:
            first = await self._append(BatchRequest(uuid.uuid4().hex, items[0].tenant, items, batch_key, atomic))
            return [Submitted(first.tenant, item.id, first.position, first.token) for item in items]
        return [await self._append(item) for item in items]

    async def create_tenant(self, tenant: str, name: str | None = None) -> Submitted:
        """Append the creation of `tenant`; its outcome is `committed`, or `rejected`/`already_exists`."""
        return await self._append(TenantRequest(uuid.uuid4().hex, check_tenant(tenant),
                                                check_tenant_name(name or tenant)))

    async def _append(self, request: Request) -> Submitted:
        if self._consumer is not None and len(self._waiters) >= PENDING_MAX:
            raise RuntimeError(f"over {PENDING_MAX} outcomes not collected; await outcome() for them")
        assert self._producer is not None, "start() the producer first"
        self._sending[request.tenant] = self._sending.get(request.tenant, 0) + 1
        try:
            # murmur2 of the key (`murmur2_random`), Kafka's default, as the contract's placement rule requires.
            partition, offset = await self._producer.send(self.topic, encode_request(request),
                                                          request.tenant.encode())
        except ProduceFailed as e:
            raise AppendUnconfirmed(request.tenant, request.id, repr(e)) from e
        finally:
            self._sending[request.tenant] -= 1
            if not self._sending[request.tenant]:
                del self._sending[request.tenant]
        if offset is None:  # acknowledged, but not where (a retry Kafka already had): outcomes are matched by
            # their record's position, so this one is unconfirmed; submitting the same id again is safe
            raise AppendUnconfirmed(request.tenant, request.id,
                                    "acknowledged without an offset (a retry Kafka already had)")
        position = Position(partition, offset)
        ids = [i.id for i in request.items] if isinstance(request, BatchRequest) else [request.id]
        for id in ids:
            self._expect(position, id)
        return Submitted(request.tenant, ids[0], position, self.token(request.tenant, position))

    def token(self, tenant: str, position: Position) -> str | None:
        """The opaque token `tenant`'s API clients may pass as `min_position` for `position` (None without the
        position key)."""
        return None if self.positions is None else self.positions.token(tenant, position)

    def _expect(self, position: Position, id: str) -> None:
        """Outcomes are matched by the record they answer, known once Kafka acknowledged the append, and the
        id they decide; one that came first was kept aside."""
        if self._consumer is None:
            return
        key = (position.raw(), id)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        early = self._early.pop(key, None)
        if early is not None:
            future.set_result(early)
        self._waiters[key] = future

    async def outcome(self, submitted: Submitted, timeout_s: float = 10.0) -> dict[str, Any]:
        """`{"tenant", "id", "status", "reason", "position", "record"}` of a submitted request: `position` is the
        tenant's opaque token (of the original, for a repeated idempotency key), `record` the raw position of
        the record it answers."""
        assert self._consumer is not None, "created with follow_outcomes=False"
        key = (submitted.position.raw(), submitted.id)
        future = self._waiters.get(key)
        if future is None:
            raise KeyError(f"{submitted.id} was not submitted by this producer, or its outcome was collected")
        try:
            outcome = await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            raise OutcomeTimeout(f"no outcome for {submitted.id} within {timeout_s} s") from None
        del self._waiters[key]
        return outcome

    async def _read(self) -> None:
        assert self._consumer is not None
        async for record in self._consumer:
            try:
                outcome = orjson.loads(record.value or b"")
                key = (outcome["record"], outcome["id"])
            except (orjson.JSONDecodeError, TypeError, KeyError):
                continue  # not an outcome this ledger publishes: nothing waits for it
            if not all(isinstance(k, str) for k in key):
                continue
            future = self._waiters.get(key)
            if future is not None:
                if not future.done():
                    future.set_result(outcome)
            elif outcome.get("tenant") in self._sending:
                self._early.setdefault(key, outcome)  # the first answer: a hold's expiry comes after it
                if len(self._early) > EARLY_MAX:
                    self._early.popitem(last=False)
