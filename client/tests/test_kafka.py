"""`KafkaProducer` against a fake `confluent_kafka`: the record's key, value and the producer's settings (the
live log is exercised by the server's own tests of the wire format)."""

from __future__ import annotations

import json
import sys
import types
from typing import Any, ClassVar

import pytest

from wallet_ledger import Posting
from wallet_ledger.kafka import KafkaProducer, ProduceError


class FakeMessage:
    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class FakeProducer:
    instances: ClassVar[list[FakeProducer]] = []
    fail: ClassVar[str | None] = None

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.produced: list[dict[str, Any]] = []
        self.reports: list[Any] = []
        self.flushed = False
        FakeProducer.instances.append(self)

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.produced.append({"topic": topic, "value": value, "key": key})
        self.reports.append((on_delivery, FakeMessage(3, len(self.produced) + 16)))

    def poll(self, timeout: float) -> int:
        served = 0
        while self.reports:
            callback, message = self.reports.pop(0)
            callback(FakeProducer.fail, message)
            served += 1
        return served

    def flush(self, timeout: float) -> int:
        self.poll(0)
        self.flushed = True
        return 0


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    module = types.ModuleType("confluent_kafka")
    module.Producer = FakeProducer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "confluent_kafka", module)
    FakeProducer.instances, FakeProducer.fail = [], None
    return FakeProducer


def test_submit_appends_the_wire_format(fake_kafka: type[FakeProducer]) -> None:
    with KafkaProducer("broker:9092", config={"client.id": "svc"}) as producer:
        sent = producer.submit("acme", [Posting("@world", "alice", 1000, "USD/2")], idempotency_key="dep-1",
                               metadata={"order": "42"})
    fake = fake_kafka.instances[0]
    assert fake.config["bootstrap.servers"] == "broker:9092"
    assert fake.config["acks"] == "all" and fake.config["enable.idempotence"] is True
    assert fake.config["partitioner"] == "murmur2_random" and fake.config["client.id"] == "svc"
    record = fake.produced[0]
    assert record["topic"] == "ledger.transactions" and record["key"] == b"acme"
    value = json.loads(record["value"])
    assert value == {"v": 1, "id": sent.id, "tenant": "acme", "idempotency_key": "dep-1", "metadata": {"order": "42"},
                     "reference": None,
                     "postings": [{"source": "@world", "destination": "alice", "amount": 1000, "asset": "USD/2"}]}
    assert 1 <= len(sent.id) <= 64
    assert (sent.tenant, sent.partition, sent.offset) == ("acme", 3, 17)
    assert fake.flushed


def test_given_id_and_refusal(fake_kafka: type[FakeProducer]) -> None:
    producer = KafkaProducer("broker:9092")
    assert producer.submit("acme", Posting("@world", "a", 1, "PTS"), id="my-id").id == "my-id"
    fake_kafka.fail = "broker down"
    with pytest.raises(ProduceError) as caught:
        producer.submit("acme", Posting("@world", "a", 1, "PTS"), id="other")
    assert caught.value.id == "other"
    producer.close()
    with pytest.raises(RuntimeError):
        producer.submit("acme", Posting("@world", "a", 1, "PTS"))


def test_a_clear_error_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # import confluent_kafka raises ImportError
    with pytest.raises(ImportError, match=r"wallet-ledger-client\[kafka\]"):
        KafkaProducer("broker:9092")
