"""`make cluster`: on this one machine, the deployment a user runs on several (contract v3, docs/cluster.md).

Three Kafka nodes, PostgreSQL as a primary and a synchronous standby under pg_auto_failover (its monitor
included), two projectors in one consumer group and two API processes on :8000 and :8001. It stays in the
foreground, restarts whatever exits, keeps `.data/cluster.json` current, and on Ctrl-C (SIGINT) or SIGTERM
stops everything it started. A second run reuses `.data/cluster/`.

`python -m tools.cluster down` (`make cluster-down`) stops a running cluster from another terminal, or, when
its supervisor was killed, the processes `.data/cluster.json` still lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from infra import settings as settings_mod
from tools import kafka_nodes, local, postgres_nodes, processes
from tools.local import DATA, say
from tools.postgres_nodes import PgNode
from tools.run import admin_token, wait_ready
from tools.supervisor import STOP_TIMEOUT_S, Child, command_line, stop_all

BASE = DATA / "cluster"
STATE_FILE = DATA / "cluster.json"
PID_FILE = BASE / "supervisor.pid"
API_PORTS = (8000, 8001)
PROJECTOR_METRICS_PORTS = (19464, 19465)
DISPATCHER_METRICS_PORTS = (19474, 19475)
STATE_EVERY_S = 1.0


class Stop(Exception):
    """SIGINT or SIGTERM arrived while the cluster was starting."""


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Cluster:
    """The processes of `make cluster` and their state file."""

    def __init__(self, pg_autoctl: str, libs: Path) -> None:
        self.pg_autoctl = pg_autoctl
        self.libs = libs
        self.logs = BASE / "logs"
        self.kafka = kafka_nodes.nodes(BASE)
        self.pg_home = BASE / "pg"
        self.monitor = postgres_nodes.monitor(self.pg_home)
        self.data_nodes = postgres_nodes.data_nodes(self.pg_home)
        self.children: list[Child] = []
        self.pg_children: dict[str, tuple[Child, PgNode]] = {}
        self.env: dict[str, str] = {}
        self.written = ""
        self.stopping = False
        self.starting = True

    # --- starting ---------------------------------------------------------------------------------------

    def ports(self) -> list[int]:
        return [*(n.port for n in self.kafka), *(n.controller_port for n in self.kafka), self.monitor.port,
                *(n.port for n in self.data_nodes), *API_PORTS, *PROJECTOR_METRICS_PORTS]

    def alive(self) -> None:
        """Raise if starting should end: a signal came, or a process died while we waited for it."""
        if self.stopping:
            raise Stop
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                raise SystemExit(f"{child.name} exited with status {child.proc.returncode} while the cluster was "
                                 f"starting; see {child.log}")

    def add(self, child: Child) -> Child:
        self.children.append(child)
        child.start()
        return child

    def start_kafka(self) -> str:
        formatted = kafka_nodes.prepare(self.libs, BASE, self.kafka)
        if formatted:
            say(f"formatted the storage of {', '.join(formatted)}")
        for node in self.kafka:
            self.add(Child(node.name, "kafka", node.port, kafka_nodes.command(self.libs, node),
                           self.logs / f"{node.name}.log"))
        return kafka_nodes.bootstrap(self.kafka)

    def pg_child(self, node: PgNode) -> Child:
        child = Child(node.name, "ha", node.port, postgres_nodes.run_command(node, self.pg_autoctl),
                      self.logs / f"{node.name}.log", env=postgres_nodes.env(self.pg_home), cwd=self.pg_home,
                      user=postgres_nodes.run_as())
        self.pg_children[node.name] = (child, node)
        return self.add(child)

    def start_postgres(self) -> None:
        postgres_nodes.prepare_home(self.pg_home)
        if not self.monitor.created:
            postgres_nodes.create_monitor(self.monitor, self.pg_autoctl)
        self.pg_child(self.monitor)
        local.wait_for_port(self.monitor.port, "the pg_auto_failover monitor")
        postgres_nodes.tune_monitor(self.monitor, self.alive)
        for number, node in enumerate(self.data_nodes):
            if not node.created:
                if number > 0:  # cloned from the primary, which must be up and registered first
                    wanted = {"single", "primary", "wait_primary"}
                    postgres_nodes.wait_for_state(self.monitor, self.pg_autoctl, self.data_nodes[0].name,
                                                  wanted, self.alive)
                postgres_nodes.create_data_node(node, self.pg_autoctl, first=number == 0)
            self.pg_child(node)
        for node in self.data_nodes:
            postgres_nodes.wait_for_state(self.monitor, self.pg_autoctl, node.name, {"primary", "secondary"},
                                          self.alive)

    def ledger_env(self, bootstrap: str) -> dict[str, str]:
        base = settings_mod.load()
        env = processes.child_env(LEDGER_KAFKA_BOOTSTRAP=bootstrap,
                                  LEDGER_DATABASE_URL=postgres_nodes.database_url(),
                                  LEDGER_TOPIC_REPLICATION="3",
                                  LEDGER_ADMIN_TOKEN=admin_token(base.admin_token),
                                  LEDGER_POSITION_KEY=processes.position_key(base),
                                  # Reads wait out a failover (about 10 s here) rather than answer 503.
                                  LEDGER_DB_FAILOVER_WAIT_MS="20000")
        for inherited in ("LEDGER_API_DATABASE_URL", "LEDGER_PROJECTOR_DATABASE_URL", "LEDGER_API_PORT"):
            env.pop(inherited, None)  # derived from the cluster's URL and ports, never from the caller's shell
        return env

    def start_ledger(self, env: dict[str, str]) -> None:
        for n, port in enumerate(PROJECTOR_METRICS_PORTS, start=1):
            self.add(Child(f"projector-{n}", "projector", port, [sys.executable, "-m", "projections.app"],
                           self.logs / f"projector-{n}.log", env=env | {"LEDGER_PROJECTOR_METRICS_PORT": str(port)}))
        for n, port in enumerate(DISPATCHER_METRICS_PORTS, start=1):  # one consumer group: they share the work
            self.add(Child(f"dispatcher-{n}", "dispatcher", port, [sys.executable, "-m", "dispatch"],
                           self.logs / f"dispatcher-{n}.log", env=env | {"LEDGER_DISPATCHER_METRICS_PORT": str(port)}))
        apis = [self.add(Child(f"api-{n}", "api", port, [sys.executable, "-m", "api"], self.logs / f"api-{n}.log",
                               env=env | {"LEDGER_API_PORT": str(port)}))
                for n, port in enumerate(API_PORTS, start=1)]
        for api in apis:
            assert api.proc is not None
            wait_ready(f"http://127.0.0.1:{api.port}", api.proc)

    # --- running ----------------------------------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        """One entry per process, with the machine (`name`) it belongs to."""
        primaries = asyncio.run(self._primaries())
        found: list[dict[str, Any]] = []
        for child in self.children:
            if child.pid is None:
                continue
            found.append({"role": child.role, "name": child.name, "pid": child.pid, "port": child.port})
            found.extend({"role": "ha", "name": child.name, "pid": pid, "port": child.port}
                         for pid in sorted(child.seen))
            if child.name in self.pg_children:
                node = self.pg_children[child.name][1]
                postmaster = node.postmaster_pid()
                if postmaster is not None:
                    entry: dict[str, Any] = {"role": "ha" if node.is_monitor else "postgres", "name": node.name,
                                             "pid": postmaster, "port": node.port}
                    if not node.is_monitor:
                        entry["primary"] = primaries.get(node.name) is True
                    found.append(entry)
        return found

    async def _primaries(self) -> dict[str, bool | None]:
        answers = await asyncio.gather(*(postgres_nodes.is_primary(node.port) for node in self.data_nodes))
        return {node.name: answer for node, answer in zip(self.data_nodes, answers, strict=True)}

    def write_state(self) -> None:
        state = {
            "api": [f"http://127.0.0.1:{port}" for port in API_PORTS],
            "kafka_bootstrap": self.env.get("LEDGER_KAFKA_BOOTSTRAP", ""),
            "database_url": postgres_nodes.database_url(),
            "admin_token_file": str(DATA / "admin_token"),
            "processes": self.entries(),
        }
        text = json.dumps(state, indent=2) + "\n"
        if text != self.written:
            draft = STATE_FILE.with_suffix(".json.tmp")
            draft.write_text(text)
            os.replace(draft, STATE_FILE)
            self.written = text

    def supervise(self) -> None:
        last_state = 0.0
        while not self.stopping:
            now = time.monotonic()
            for child in self.children:
                child.check(now)
                child.watch()
            if now - last_state >= STATE_EVERY_S:
                self.write_state()
                last_state = now
            time.sleep(0.2)

    # --- stopping ---------------------------------------------------------------------------------------

    def stop(self) -> None:
        """The ledger's processes first, then the standby, the primary and the monitor, then Kafka."""
        say("stopping the cluster")
        by_role = {role: [c for c in self.children if c.role == role]
                   for role in ("api", "dispatcher", "projector", "kafka")}
        stop_all(by_role["api"])
        stop_all(by_role["dispatcher"])
        stop_all(by_role["projector"])
        primaries = asyncio.run(self._primaries())
        nodes = sorted(self.data_nodes, key=lambda node: primaries.get(node.name) is True)  # standbys first
        for node in nodes:
            if node.name in self.pg_children:
                stop_all([self.pg_children[node.name][0]])
        if self.monitor.name in self.pg_children:
            stop_all([self.pg_children[self.monitor.name][0]])
        stop_all(by_role["kafka"])
        STATE_FILE.unlink(missing_ok=True)
        say("cluster stopped")


def _running(pid: int, marker: str) -> bool:
    """Whether `pid` is still the process we started (its command line names `marker`), not a reused pid."""
    return marker in command_line(pid)


def down() -> None:
    """SIGTERM to the supervisor, which stops the rest; with none, to what `.data/cluster.json` lists, in the
    order the supervisor would stop them (a pg node through its pg_autoctl), then SIGKILL to what lingers."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = int(PID_FILE.read_text())
        if _running(pid, "tools.cluster"):
            say(f"stopping make cluster (pid {pid})")
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 4 * STOP_TIMEOUT_S
            while _running(pid, "tools.cluster") and time.monotonic() < deadline:
                time.sleep(0.2)
            return
    if not STATE_FILE.exists():
        say("no cluster is running")
        return
    listed = json.loads(STATE_FILE.read_text())["processes"]
    # What each role's command line names, so that a pid the system has since given to another is left alone.
    markers = {"api": "-m api", "projector": "-m projections.app", "dispatcher": "-m dispatch", "ha": str(BASE),
               "postgres": str(BASE), "kafka": str(BASE)}
    for roles in (("api", "dispatcher", "projector"), ("ha", "postgres"), ("kafka",)):
        alive = [p["pid"] for p in listed if p["role"] in roles and _running(p["pid"], markers[p["role"]])]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(command_line(pid) for pid in alive) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in alive:
            if command_line(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    STATE_FILE.unlink(missing_ok=True)
    PID_FILE.unlink(missing_ok=True)
    say("cluster stopped")


def main() -> None:
    if sys.argv[1:] == ["down"]:
        down()
        return
    started = time.monotonic()
    BASE.mkdir(parents=True, exist_ok=True)
    (BASE / "logs").mkdir(exist_ok=True)
    pg_autoctl = postgres_nodes.ensure_pg_autoctl()
    cluster = Cluster(pg_autoctl, local.kafka_libs())
    taken = [port for port in cluster.ports() if port_taken(port)]
    if taken:
        raise SystemExit(f"ports {taken} are in use on 127.0.0.1: is another `make cluster` running? "
                         f"(see {STATE_FILE}; `make cluster-down` stops it)")

    def on_signal(signum: int, frame: object) -> None:
        cluster.stopping = True
        if cluster.starting:
            cluster.starting = False  # raise once; the cleanup that follows must not be interrupted
            raise Stop

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    PID_FILE.write_text(str(os.getpid()))
    try:
        bootstrap = cluster.start_kafka()
        cluster.start_postgres()
        kafka_nodes.wait_for_brokers(bootstrap, len(cluster.kafka), cluster.alive)
        cluster.env = cluster.ledger_env(bootstrap)
        processes.prepare(cluster.env)
        cluster.start_ledger(cluster.env)
        cluster.starting = False
        cluster.write_state()
        say(f"cluster up in {time.monotonic() - started:.1f} s: API on "
            + ", ".join(f"http://127.0.0.1:{port}" for port in API_PORTS))
        say(f"Kafka {bootstrap}; PostgreSQL {postgres_nodes.database_url()}")
        say(f"admin token in {DATA / 'admin_token'}; processes in {STATE_FILE}; logs in {BASE / 'logs'}/")
        say("press Ctrl-C to stop")
        cluster.supervise()
    except Stop:
        pass
    finally:
        cluster.starting = False
        cluster.stop()
        PID_FILE.unlink(missing_ok=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
