"""Three KRaft nodes, each broker and controller, on loopback ports of their own (`make cluster`).

The quorum is static (`controller.quorum.voters`): the three nodes are formatted once with one cluster id
and never change membership, which is what a three-machine deployment of this project looks like.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from tools.local import ROOT

NODES = 3
CLIENT_PORT_BASE = 19091  # kafka-1 on 19092
CONTROLLER_PORT_BASE = 19191  # kafka-1's controller on 19192
# Three JVMs share two cores and the rest of the cluster: 256 MiB each carries the ledger's load at rest and
# under the soak's rates (the single broker of `make run` has 768 MiB for the benchmarks).
HEAP = "256m"
# A node that stops heartbeating is fenced after this, and its partitions' leadership moves: the contract
# wants writes back within 10 s of a node's loss. Kafka's default is 9 s; at 6 s writes came back after 6.0 to
# 10.5 s (an append in flight waits out the API's 3 s timeout, then the next one waits for the new leader).
# Heartbeats every 0.5 s: a node is fenced only after 8 in a row went missing.
BROKER_SESSION_TIMEOUT_MS = 4000
BROKER_HEARTBEAT_INTERVAL_MS = 500
READY_TIMEOUT_S = 120


@dataclass(frozen=True)
class KafkaNode:
    """One simulated machine's Kafka process."""

    number: int
    home: Path  # .data/cluster/kafka-N

    @property
    def name(self) -> str:
        return f"kafka-{self.number}"

    @property
    def port(self) -> int:
        return CLIENT_PORT_BASE + self.number

    @property
    def controller_port(self) -> int:
        return CONTROLLER_PORT_BASE + self.number

    @property
    def config(self) -> Path:
        return self.home / "server.properties"


def nodes(base: Path) -> list[KafkaNode]:
    return [KafkaNode(n, base / f"kafka-{n}") for n in range(1, NODES + 1)]


def bootstrap(all_nodes: list[KafkaNode]) -> str:
    return ",".join(f"127.0.0.1:{node.port}" for node in all_nodes)


def properties(node: KafkaNode, all_nodes: list[KafkaNode]) -> str:
    voters = ",".join(f"{n.number}@127.0.0.1:{n.controller_port}" for n in all_nodes)
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node.number}",
        f"controller.quorum.voters={voters}",
        f"listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{node.port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={node.home / 'log'}",
        "num.network.threads=2",
        "num.io.threads=2",
        "num.partitions=4",
        "auto.create.topics.enable=false",
        # Every topic, the internal ones included, is written to 3 nodes and needs 2 of them for acks=all.
        "default.replication.factor=3",
        "min.insync.replicas=2",
        "unclean.leader.election.enable=false",
        "offsets.topic.replication.factor=3",
        "offsets.topic.num.partitions=8",
        "transaction.state.log.replication.factor=3",
        "transaction.state.log.min.isr=2",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=3",
        "share.coordinator.state.topic.min.isr=2",
        "group.initial.rebalance.delay.ms=0",
        f"broker.session.timeout.ms={BROKER_SESSION_TIMEOUT_MS}",
        f"broker.heartbeat.interval.ms={BROKER_HEARTBEAT_INTERVAL_MS}",
        "log.retention.hours=-1",
        "",
    ])


def java(libs: Path, node: KafkaNode, *args: str) -> list[str]:
    return ["java", f"-Xms{HEAP}", f"-Xmx{HEAP}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true", f"-Dkafka.logs.dir={node.home}",
            f"-Dlog4j2.configurationFile={ROOT / 'infra/kafka/log4j2.properties'}",
            "-cp", f"{libs}/*", *args]


def command(libs: Path, node: KafkaNode) -> list[str]:
    return java(libs, node, "kafka.Kafka", str(node.config))


def cluster_id(base: Path) -> str:
    """The id all three nodes are formatted with, made once and kept in `.data/cluster/kafka-cluster-id`."""
    path = base / "kafka-cluster-id"
    if not path.exists():
        base.mkdir(parents=True, exist_ok=True)
        path.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
    return path.read_text().strip()


def prepare(libs: Path, base: Path, all_nodes: list[KafkaNode]) -> list[str]:
    """Write each node's configuration and format the storage of those never formatted; their names."""
    ident = cluster_id(base)
    formatting = {}
    for node in all_nodes:
        node.home.mkdir(parents=True, exist_ok=True)
        node.config.write_text(properties(node, all_nodes))
        if not (node.home / "log" / "meta.properties").exists():
            # `=` form: a random id may begin with "-", which a separate argument would read as an option.
            formatting[node.name] = subprocess.Popen(
                java(libs, node, "kafka.tools.StorageTool", "format", f"--cluster-id={ident}",
                     f"--config={node.config}"), stdout=subprocess.DEVNULL)
    for name, proc in formatting.items():
        if proc.wait() != 0:
            raise SystemExit(f"formatting {name}'s storage failed (status {proc.returncode})")
    return list(formatting)


async def _brokers(bootstrap_servers: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=3000)
    await admin.start()
    try:
        described = await admin.describe_cluster()
        return len(described["brokers"])
    finally:
        await admin.close()


def wait_for_brokers(bootstrap_servers: str, count: int, alive: Callable[[], None]) -> None:
    """Until the cluster's metadata lists `count` brokers (topics with 3 replicas need all of them); `alive`
    raises if a node died meanwhile."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    # aiokafka logs each refused connection as an error: a screenful while the JVMs start.
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # not up yet: connection refused, timeouts, no controller
                if asyncio.run(_brokers(bootstrap_servers)) >= count:
                    return
            alive()
            time.sleep(1)
    finally:
        aiokafka_log.setLevel(level)
    raise SystemExit(f"Kafka did not list {count} brokers within {READY_TIMEOUT_S} s; see .data/cluster/kafka-*/")
