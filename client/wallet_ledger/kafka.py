"""Producing transfers straight to the ledger's log (the `kafka` extra: `pip install 'wallet-ledger-client[kafka]'`).

A trusted producer service may skip HTTP and append to `ledger.transactions` itself (docs/wire-format.md):
key = the tenant id (UTF-8), value = `{"v": 1, "id", "tenant", "postings", "idempotency_key", "metadata",
"reference"}`, on the partition Kafka's default partitioner gives the key (librdkafka: `murmur2_random`),
with an idempotent producer (`acks=all`). The projector decides each record and publishes the outcome on
`ledger.outcomes`; look a transfer up by its id with `LedgerClient.get_transaction` once it is decided.

    with KafkaProducer("127.0.0.1:9092") as producer:
        sent = producer.submit("acme", [Posting("@world", "alice", 1000, "USD/2")], idempotency_key="dep-1")
        sent.id, sent.partition, sent.offset
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from wallet_ledger.inputs import PostingLike, transfer_body

TRANSACTIONS_TOPIC = "ledger.transactions"
DEFAULT_DELIVERY_TIMEOUT_S = 30.0
WIRE_VERSION = 1

_MISSING = ("wallet_ledger.kafka needs confluent-kafka, which is not installed: "
            "pip install 'wallet-ledger-client[kafka]' (or pip install 'confluent-kafka>=2.4')")


def _confluent() -> Any:
    try:
        import confluent_kafka  # lazily: the SDK works without the extra
    except ImportError as e:
        raise ImportError(_MISSING) from e
    return confluent_kafka


class ProduceError(Exception):
    """Kafka did not acknowledge the record. It may still be on the log (the producer retried): its `id`
    resolves (`GET .../transactions/{id}`) if and only if it is; submit it again with the same
    `idempotency_key` to be sure it is applied once."""

    def __init__(self, message: str, id: str) -> None:
        super().__init__(message)
        self.id = id


@dataclass(frozen=True, slots=True)
class Submitted:
    """A record Kafka acknowledged: its transaction `id`, and where it is (`offset` None when the broker
    acknowledged a retry of a record it already had without saying where)."""

    id: str
    tenant: str
    partition: int
    offset: int | None


class KafkaProducer:
    """Appends transfer records to `ledger.transactions` with an idempotent librdkafka producer.

    `config` adds to or overrides librdkafka settings (`security.protocol`, `sasl.*`, ...); the contract's
    placement and durability settings (`partitioner=murmur2_random`, `acks=all`, `enable.idempotence=true`)
    are the defaults. `submit` may be called from several threads at once."""

    def __init__(self, bootstrap: str, *, topic: str = TRANSACTIONS_TOPIC,
                 delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S, client_id: str = "wallet-ledger-sdk",
                 config: Mapping[str, Any] | None = None) -> None:
        kafka = _confluent()
        self.topic = topic
        self.delivery_timeout_s = delivery_timeout_s
        settings: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 1,
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            **(config or {}),
        }
        self._producer = kafka.Producer(settings)  # thread-safe: submit from any thread
        self._closed = False

    @staticmethod
    def record(tenant: str, postings: Sequence[PostingLike] | PostingLike, *, id: str | None = None,
               idempotency_key: str | None = None, metadata: Mapping[str, str] | None = None,
               reference: str | None = None) -> tuple[bytes, dict[str, Any]]:
        """The key and value of a transfer's record, as docs/wire-format.md gives them."""
        body = transfer_body(postings, metadata=metadata, reference=reference)
        value: dict[str, Any] = {"v": WIRE_VERSION, "id": id or uuid.uuid4().hex, "tenant": tenant,
                                 "postings": body["postings"], "idempotency_key": idempotency_key,
                                 "metadata": body.get("metadata", {}), "reference": reference}
        return tenant.encode("utf-8"), value

    def submit(self, tenant: str, postings: Sequence[PostingLike] | PostingLike, id: str | None = None,
               idempotency_key: str | None = None, metadata: Mapping[str, str] | None = None,
               reference: str | None = None) -> Submitted:
        """Append a transfer and wait until Kafka acknowledges it (every in-sync replica has it). `id` is the
        transaction's id (a new one unless given, 1-64 of `[A-Za-z0-9_.:-]`); `idempotency_key` makes a
        repeat of the request decided once. Raises `ProduceError` if Kafka does not acknowledge it in time."""
        if self._closed:
            raise RuntimeError("this producer is closed")
        key, value = self.record(tenant, postings, id=id, idempotency_key=idempotency_key, metadata=metadata,
                                 reference=reference)
        done = threading.Event()
        report: dict[str, Any] = {}

        def delivered(err: Any, msg: Any) -> None:
            report["error"], report["message"] = err, msg
            done.set()

        payload = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        self._produce(key, payload, delivered, value["id"])
        deadline = time.monotonic() + self.delivery_timeout_s + 5
        while not done.is_set():
            if time.monotonic() > deadline:
                raise ProduceError(f"no acknowledgement of {value['id']!r} in time; it may be on the log",
                                   value["id"])
            self._producer.poll(0.05)  # serves delivery reports (this record's, or another thread's)
        if report["error"] is not None:
            raise ProduceError(f"Kafka refused {value['id']!r}: {report['error']}", value["id"])
        message = report["message"]
        offset = message.offset()
        return Submitted(value["id"], tenant, message.partition(),
                         offset if isinstance(offset, int) and offset >= 0 else None)

    def _produce(self, key: bytes, payload: bytes, on_delivery: Any, id: str) -> None:
        for _ in range(100):
            try:
                self._producer.produce(self.topic, value=payload, key=key, on_delivery=on_delivery)
                return
            except BufferError:  # librdkafka's queue is full: serve delivery reports, then try again
                self._producer.poll(0.1)
        raise ProduceError(f"the producer's queue stayed full; {id!r} was not appended", id)

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait for every record handed over to be acknowledged; returns how many are still waiting."""
        remaining: int = self._producer.flush(-1 if timeout_s is None else timeout_s)
        return remaining

    def close(self, timeout_s: float | None = None) -> None:
        if not self._closed:
            self._closed = True
            self.flush(self.delivery_timeout_s if timeout_s is None else timeout_s)

    def __enter__(self) -> KafkaProducer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["TRANSACTIONS_TOPIC", "KafkaProducer", "ProduceError", "Submitted"]
