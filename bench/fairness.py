"""Fair shares between tenants, measured (`make bench`, step `fairness`): a victim tenant's `wait=true` p99 alone
and while another tenant floods, over HTTP (64 connections, unwaited transfers, as fast as they are answered)
and straight to Kafka on the victim's own partition, without and with a Kafka client quota on the flooding
producer; each as the ratio to the victim alone in the same run, with the flood's status mix; and what a refusal costs
the API against serving the same write, the flood alone.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench import data, tools
from bench.stack import OUT_OF_REACH, Bench, set_limits
from infra.producer import LogProducer, producer_config
from ledger.placement import partition_for
from tools import local
from tools.local import say

VICTIM_RATE = 20  # the victim's waited transfers a second, as the fair-shares issue measured it
FLOOD_CONNECTIONS = 64
FLOOD_CLIENT_ID = "ledger-bench-flood"
QUOTA_BYTES_PER_S = 64 * 1024
KAFKA_IN_FLIGHT_MAX = 5_000


def _victim_targets(url: str, tenant: str, key: str, bodies: Path) -> str:
    bodies.mkdir(exist_ok=True)
    body = bodies / "victim.json"
    body.write_text('{"postings":[{"source":"@world","destination":"victim","amount":1,"asset":"USD/2"}]}')
    return (f"POST {url}/v1/tenants/{tenant}/transactions?wait=true\nAuthorization: Bearer {key}\n"
            f"Content-Type: application/json\n@{body}\n")


def _victim(targets: str, duration_s: int) -> dict[str, Any]:
    # Connections enough for every request to wait its 5 s: latency is the server's, never a client's queue.
    return tools.attack(targets, VICTIM_RATE, duration_s, connections=VICTIM_RATE * 6)


def _with_http_flood(url: str, targets: str, flood_tenant: str, flood_key: str, directory: Path,
                     duration_s: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The victim's run while wrk floods; (victim, flood, CPU by role)."""
    script = tools.post_script(directory, "flood", flood_key, "flood")
    flood: dict[str, Any] = {}

    def run_flood() -> None:
        flood.update(tools.saturate(f"{url}/v1/tenants/{flood_tenant}/transactions", duration_s + 2,
                                    FLOOD_CONNECTIONS, script))

    meter = tools.CpuMeter().start()
    thread = threading.Thread(target=run_flood)
    thread.start()
    time.sleep(1)  # the flood is on before the victim starts
    victim = _victim(targets, duration_s)
    thread.join()
    return victim, flood, meter.stop()


async def _kafka_flood(bootstrap: str, topic: str, tenant: str, duration_s: float) -> dict[str, Any]:
    """Transfers for `tenant` straight to the topic, as fast as the broker takes them, for `duration_s`."""
    producer = LogProducer(producer_config(bootstrap, delivery_timeout_ms=30_000, linger_ms=5,
                                           client_id=FLOOD_CLIENT_ID))
    sent = acknowledged = 0
    in_flight: set[asyncio.Future[tuple[int, int]]] = set()
    deadline = time.monotonic() + duration_s
    try:
        while time.monotonic() < deadline:
            if len(in_flight) >= KAFKA_IN_FLIGHT_MAX:
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                acknowledged += sum(1 for f in done if not f.exception())
                continue
            value = orjson.dumps({"v": 1, "id": f"flood-{time.monotonic_ns()}-{sent}", "tenant": tenant, "postings": [
                {"source": "@world", "destination": "flood", "amount": 1, "asset": "USD/2"}]})
            in_flight.add(producer.send(topic, value, tenant.encode()))
            sent += 1
            if sent % 500 == 0:
                await asyncio.sleep(0)
        if in_flight:
            done, _ = await asyncio.wait(in_flight, timeout=30)
            acknowledged += sum(1 for f in done if not f.exception())
    finally:
        await producer.stop(5)
    return {"sent": sent, "acknowledged": acknowledged, "rps": round(acknowledged / duration_s)}


def _with_kafka_flood(bootstrap: str, topic: str, targets: str, flood_tenant: str,
                      duration_s: int) -> tuple[dict[str, Any], dict[str, Any]]:
    flood: dict[str, Any] = {}

    def run_flood() -> None:
        flood.update(asyncio.run(_kafka_flood(bootstrap, topic, flood_tenant, duration_s + 2)))

    thread = threading.Thread(target=run_flood)
    thread.start()
    time.sleep(1)
    victim = _victim(targets, duration_s)
    thread.join()
    return victim, flood


def set_quota(bootstrap: str, client_id: str, bytes_per_s: int | None) -> None:
    """Kafka's own client quota (`producer_byte_rate`) on `client_id`, or none: what an operator runs."""
    config = (["--add-config", f"producer_byte_rate={bytes_per_s}"] if bytes_per_s is not None
              else ["--delete-config", "producer_byte_rate"])
    libs = local.kafka_libs()
    subprocess.run(["java", "-Xmx256m", "-cp", f"{libs}/*", "kafka.admin.ConfigCommand", "--bootstrap-server",
                    bootstrap.split(",")[0], "--alter", *config, "--entity-type", "clients",
                    "--entity-name", client_id], check=True, capture_output=True, timeout=60)


def _refusal_cost(url: str, flood: tuple[str, str], directory: Path, duration_s: int,
                  set_writes: Callable[[int], None]) -> dict[str, Any]:
    """What a refusal costs the API against serving the same write: the flood alone (nobody else writes, so
    fair admission throttles nothing), refused by a limit of 1 a second and then served under a limit it never
    reaches; the API's CPU over the flood's requests, less what the API uses idle."""
    script = tools.post_script(directory, "flood", flood[1], "flood")
    meter = tools.CpuMeter().start()
    time.sleep(3)
    idle = meter.stop(digits=4).get("api", 0.0)
    runs = {}
    for name, writes_per_s in (("refused", 1), ("served", OUT_OF_REACH)):
        set_writes(writes_per_s)
        meter = tools.CpuMeter().start()
        run = tools.saturate(f"{url}/v1/tenants/{flood[0]}/transactions", duration_s, FLOOD_CONNECTIONS, script)
        cpu = meter.stop(digits=4)
        runs[name] = {"rps": run["rps"], "non_2xx": run["errors"], "api_cores": cpu.get("api", 0.0),
                      "api_cpu_us": round(max(0.0, cpu.get("api", 0.0) - idle) / run["rps"] * 1e6, 1)}
    set_writes(1000)
    return {"api_idle_cores": idle, **runs}


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("p50_ms", "p99_ms", "achieved_rps", "errors", "status_codes")}


async def measure(url: str, admin_token: str, bootstrap: str, topic: str, victim: tuple[str, str],
                  neighbour: tuple[str, str], flood: tuple[str, str], duration_s: int, logs: Path,
                  settle: Callable[[], Awaitable[float]]) -> dict[str, Any]:
    """Every figure of the step; each party is (tenant, key): `victim` on a partition of its own, `neighbour` on
    the flood's (the topic's floods delay that partition: the log is ordered). `settle` waits for the projector
    to apply the whole log, so each scenario starts with no backlog."""
    directory = Path(tempfile.mkdtemp(dir=logs))
    targets = _victim_targets(url, victim[0], victim[1], directory)
    beside = _victim_targets(url, neighbour[0], neighbour[1], directory / "beside")
    await settle()
    await asyncio.to_thread(_victim, targets, 2)  # warm: projectors joined their group, connections open
    alone = await asyncio.to_thread(_victim, targets, duration_s)
    await settle()
    http_victim, http_flood, http_cpu = await asyncio.to_thread(
        _with_http_flood, url, targets, flood[0], flood[1], directory, duration_s)
    # What a refusal costs against serving: the same flood with a limit it never reaches.
    await asyncio.to_thread(set_limits, url, admin_token, flood[0], {"writes_per_s": OUT_OF_REACH})
    await settle()
    served_victim, served_flood, served_cpu = await asyncio.to_thread(
        _with_http_flood, url, targets, flood[0], flood[1], directory, duration_s)
    await settle()
    refusal = await asyncio.to_thread(
        _refusal_cost, url, flood, directory, duration_s,
        lambda writes: set_limits(url, admin_token, flood[0], {"writes_per_s": writes}))
    await asyncio.to_thread(set_quota, bootstrap, FLOOD_CLIENT_ID, QUOTA_BYTES_PER_S)
    try:
        await settle()
        quota_victim, quota_flood = await asyncio.to_thread(_with_kafka_flood, bootstrap, topic, beside, flood[0],
                                                            duration_s)
    finally:
        await asyncio.to_thread(set_quota, bootstrap, FLOOD_CLIENT_ID, None)
    await settle()  # last: the unquoted flood leaves the largest backlog
    kafka_victim, kafka_flood = await asyncio.to_thread(_with_kafka_flood, bootstrap, topic, beside, flood[0],
                                                        duration_s)

    def per_request_us(cpu: dict[str, Any], run: dict[str, Any]) -> float | None:
        total = run["rps"] * duration_s
        return round(cpu.get("api", 0.0) * duration_s / total * 1e6, 1) if total else None

    base = alone["p99_ms"]
    return {
        "victim_rate": VICTIM_RATE, "flood_connections": FLOOD_CONNECTIONS,
        "alone": _summary(alone),
        "http_flood": {"victim": _summary(http_victim), "ratio_p99": round(http_victim["p99_ms"] / base, 2),
                       "flood_rps": http_flood.get("rps"), "flood_refused": http_flood.get("errors"),
                       "cpu": http_cpu, "api_cpu_us_per_request": per_request_us(http_cpu, http_flood)},
        "http_flood_unlimited": {"victim": _summary(served_victim),
                                 "ratio_p99": round(served_victim["p99_ms"] / base, 2),
                                 "flood_rps": served_flood.get("rps"), "flood_refused": served_flood.get("errors"),
                                 "cpu": served_cpu, "api_cpu_us_per_request": per_request_us(served_cpu, served_flood)},
        "refusal_cost": refusal,
        "kafka_flood": {"victim": _summary(kafka_victim), "ratio_p99": round(kafka_victim["p99_ms"] / base, 2),
                        **kafka_flood},
        "kafka_flood_quota": {"victim": _summary(quota_victim), "ratio_p99": round(quota_victim["p99_ms"] / base, 2),
                              "quota_bytes_per_s": QUOTA_BYTES_PER_S, **quota_flood},
    }


async def fairness(bench: Bench) -> None:
    """A victim's waited writes alone and during another tenant's flood on the victim's own partition."""
    by_partition: dict[int, list[str]] = {}
    for tenant in data.TENANTS:
        by_partition.setdefault(partition_for(tenant.encode(), bench.cfg.topic_partitions), []).append(tenant)
    neighbour, flood = next(ts for ts in by_partition.values() if len(ts) >= 2)[:2]
    victim = next(t for t in data.TENANTS if partition_for(t.encode(), bench.cfg.topic_partitions)
                  != partition_for(flood.encode(), bench.cfg.topic_partitions))
    # Fresh projectors: the loads before may have stalled one past its watchdog (it exits to be restarted).
    bench.restart(("projector",))
    conn = await asyncpg.connect(bench.db_url)
    try:
        await conn.execute("SELECT ledger_use_live()")
        result = await measure(bench.url, bench.env["LEDGER_ADMIN_TOKEN"], bench.bootstrap, bench.topic,
                               (victim, bench.keys[victim]), (neighbour, bench.keys[neighbour]),
                               (flood, bench.keys[flood]),
                               bench.duration_s, bench.logs, lambda: bench.caught_up(conn))
        bench.results["fairness"] = result
        await bench.caught_up(conn)  # the floods' backlog is not the next step's
    finally:
        await conn.close()
    say(f"fairness: victim p99 alone {result['alone']['p99_ms']:.1f} ms; HTTP flood "
        f"{result['http_flood']['ratio_p99']}x; Kafka flood {result['kafka_flood']['ratio_p99']}x, with a quota "
        f"{result['kafka_flood_quota']['ratio_p99']}x")
