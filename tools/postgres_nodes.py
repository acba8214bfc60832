"""PostgreSQL with automatic failover by pg_auto_failover (`pg_autoctl`): a monitor and two data nodes.

pg_auto_failover is the HA manager, not code of ours: its monitor decides which node is primary, and each
node's keeper (`pg_autoctl run`) starts PostgreSQL, follows the monitor's orders, and brings a former primary
back as a standby (pg_rewind). With one standby in the write quorum and the formation's default
`number_sync_standbys = 0`, a commit waits for the standby while it is up; when it is lost the monitor drops
the primary to `wait_primary` (asynchronous), so the primary keeps committing (docs/cluster.md says what that
costs).

Every file lives under `.data/cluster/pg/`, owned by `postgres` when we run as root: the data folders, and
pg_autoctl's own configuration and state (XDG_CONFIG_HOME, XDG_DATA_HOME, XDG_RUNTIME_DIR pointed there), so
removing `.data/cluster` forgets the whole cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from tools.local import ensure_installed, pg_bin, say

MONITOR_PORT = 15430
NODE_PORTS = {"pg1": 15431, "pg2": 15432}
DATABASE = "ledger"
OWNER = "postgres"
READY_TIMEOUT_S = 180
# The monitor's failure detection, tuned down from pg_auto_failover's defaults (a 5 s health check, 20 s
# before a node is unhealthy, then 30 s for the old primary to demote itself) so that `wait=true` writes
# commit again within the contract's 30 s of losing the primary. The cost: a primary cut off from the monitor
# (not killed) for over 5 s is replaced while it may still run; it cannot acknowledge a commit meanwhile,
# since its synchronous standby has stopped replicating from it, and it is rewound when it rejoins.
MONITOR_SETTINGS = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "1000",
    "pgautofailover.health_check_retry_delay": "500",
    "pgautofailover.health_check_max_retries": "2",
    "pgautofailover.node_considered_unhealthy_timeout": "5000",
    "pgautofailover.primary_demote_timeout": "5000",
}
# pg_autoctl sizes shared_buffers at a quarter of the machine's memory, for each instance; three instances
# and three JVMs share this one. postgresql.auto.conf is read last, so these win over pg_autoctl's
# postgresql-auto-failover.conf, and a standby inherits them with its base backup.
# checkpoint_timeout: a former primary that pg_rewind cannot rewind (make soak-cluster saw pg_rewind's own crash
# recovery refused, "lock file postmaster.pid already exists", as pg_autoctl had started PostgreSQL for it) is
# rebuilt by pg_basebackup, which waits for a spread checkpoint on the primary: up to 0.9 x checkpoint_timeout,
# 266 s measured with the default 5 min, during which the primary has no standby. 30 s bounds that wait at
# about 27 s, for more frequent checkpoints (full-page writes after each) on this write-heavy workload.
OVERRIDES = {
    "monitor": {"listen_addresses": "'127.0.0.1'", "shared_buffers": "'64MB'", "max_connections": "50"},
    "data": {"listen_addresses": "'127.0.0.1'", "shared_buffers": "'256MB'", "max_connections": "200",
             "max_wal_size": "'2GB'", "wal_compression": "on", "checkpoint_timeout": "'30s'"},
}


def package() -> str:
    """The Debian package of pg_autoctl for the installed PostgreSQL (`/usr/lib/postgresql/15/bin` -> 15)."""
    return f"postgresql-{Path(pg_bin('pg_ctl')).parent.parent.name}-auto-failover"


def ensure_pg_autoctl() -> str:
    """pg_autoctl's path, installed with apt-get first when it is missing and we are root."""
    (found,) = ensure_installed(package(), ("pg_autoctl",), "make cluster")
    return found


@dataclass(frozen=True)
class PgNode:
    """The monitor or one data node: a PostgreSQL instance and its pg_autoctl."""

    name: str  # monitor, pg1, pg2
    port: int
    home: Path  # .data/cluster/pg

    @property
    def pgdata(self) -> Path:
        return self.home / self.name

    @property
    def is_monitor(self) -> bool:
        return self.name == "monitor"

    @property
    def created(self) -> bool:
        """pg_autoctl keeps a node's configuration under XDG_CONFIG_HOME, by the absolute path of its PGDATA."""
        return (self.home / "config" / "pg_autoctl" / str(self.pgdata).lstrip("/") / "pg_autoctl.cfg").exists()

    def postmaster_pid(self) -> int | None:
        """The running PostgreSQL's pid, from its postmaster.pid (None when none runs)."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None
        return pid


def monitor(home: Path) -> PgNode:
    return PgNode("monitor", MONITOR_PORT, home)


def data_nodes(home: Path) -> list[PgNode]:
    return [PgNode(name, port, home) for name, port in NODE_PORTS.items()]


def monitor_url() -> str:
    return f"postgres://autoctl_node@127.0.0.1:{MONITOR_PORT}/pg_auto_failover?sslmode=disable"


def database_url(user: str = OWNER) -> str:
    """Every data node in one URL: libpq and asyncpg try them in turn and keep the one that takes writes."""
    hosts = ",".join(f"127.0.0.1:{port}" for port in NODE_PORTS.values())
    return f"postgresql://{user}@{hosts}/{DATABASE}?target_session_attrs=read-write"


def run_as() -> str | None:
    """initdb and PostgreSQL refuse to run as root: root runs them as `postgres`."""
    return "postgres" if os.geteuid() == 0 else None


def env(home: Path) -> dict[str, str]:
    """pg_autoctl's environment: its configuration, state and pid files under `home`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "XDG_"))}
    if run_as():
        base["HOME"] = str(home)
        base["USER"] = base["LOGNAME"] = "postgres"
    return base | {"XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "share"),
                   "XDG_RUNTIME_DIR": str(home / "run")}


def _owned(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if run_as():
        shutil.chown(path, "postgres", "postgres")


def prepare_home(home: Path) -> None:
    for path in (home, home / "config", home / "share", home / "run"):
        _owned(path)


def run(home: Path, cmd: list[str], what: str) -> None:
    """A one-shot command as `postgres`, its output kept in `.data/cluster/logs/setup.log`."""
    log = home.parent / "logs" / "setup.log"
    with open(log, "ab") as out:
        status = subprocess.run(cmd, env=env(home), cwd=home, stdout=out, stderr=subprocess.STDOUT,
                                user=run_as(), group=run_as(), extra_groups=[] if run_as() else None).returncode
    if status != 0:
        raise SystemExit(f"{what} failed (status {status}); see {log}")


def _initdb(node: PgNode) -> None:
    """An empty instance carrying our overrides, which pg_autoctl then takes over as it is."""
    _owned(node.pgdata)
    run(node.home, [pg_bin("initdb"), "-D", str(node.pgdata), "-U", OWNER, "--auth=trust", "-E", "UTF8",
                    "--locale=C.UTF-8"], f"initdb of {node.name}")
    overrides = OVERRIDES["monitor" if node.is_monitor else "data"]
    with open(node.pgdata / "postgresql.auto.conf", "a") as conf:
        conf.write("".join(f"{key} = {value}\n" for key, value in overrides.items()))


def _common(node: PgNode) -> list[str]:
    return ["--pgdata", str(node.pgdata), "--pgport", str(node.port), "--hostname", "127.0.0.1",
            "--auth", "trust", "--no-ssl", "--pgctl", pg_bin("pg_ctl")]


def create_monitor(node: PgNode, pg_autoctl: str) -> None:
    _initdb(node)
    run(node.home, [pg_autoctl, "create", "monitor", *_common(node)], "pg_autoctl create monitor")
    # The monitor has no --listen; without this its PostgreSQL is started with -h '*'.
    run(node.home, [pg_autoctl, "config", "set", "--pgdata", str(node.pgdata), "postgresql.listen_addresses",
                    "127.0.0.1"], "pg_autoctl config set")
    say("created the pg_auto_failover monitor")


def create_data_node(node: PgNode, pg_autoctl: str, first: bool) -> None:
    """The first node registers its own fresh instance; a later one is cloned from the primary."""
    if first:
        _initdb(node)
    run(node.home, [pg_autoctl, "create", "postgres", *_common(node), "--listen", "127.0.0.1", "--name",
                    node.name, "--dbname", DATABASE, "--monitor", monitor_url()], f"pg_autoctl create {node.name}")
    say(f"created PostgreSQL node {node.name}")


def run_command(node: PgNode, pg_autoctl: str) -> list[str]:
    return [pg_autoctl, "run", "--pgdata", str(node.pgdata)]


async def _tune(port: int) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user=OWNER, database="pg_auto_failover", timeout=5)
    try:
        for key, value in MONITOR_SETTINGS.items():
            statement = await conn.fetchval("SELECT format('ALTER SYSTEM SET %s = %L', $1::text, $2::text)",
                                            key, value)
            await conn.execute(statement)
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def tune_monitor(node: PgNode, alive: Callable[[], None]) -> None:
    """Apply MONITOR_SETTINGS, once the monitor takes connections (its port opens while it is still starting
    up, and a restarted one may be recovering); `alive` raises if a process of the cluster died meanwhile."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            asyncio.run(_tune(node.port))
            return
        except (OSError, TimeoutError, asyncpg.CannotConnectNowError):
            if time.monotonic() > deadline:
                raise
        alive()
        time.sleep(0.5)


def states(node: PgNode, pg_autoctl: str) -> dict[str, tuple[str, str]]:
    """Each data node's (reported, assigned) state as the monitor sees it; {} when it cannot say."""
    found = subprocess.run([pg_autoctl, "show", "state", "--pgdata", str(node.pgdata), "--json"], env=env(node.home),
                           cwd=node.home, capture_output=True, user=run_as(), group=run_as(),
                           extra_groups=[] if run_as() else None)
    if found.returncode != 0:
        return {}
    with contextlib.suppress(ValueError):
        rows: list[dict[str, Any]] = json.loads(found.stdout)
        return {row["nodename"]: (row["current_group_state"], row["assigned_group_state"]) for row in rows}
    return {}


def wait_for_state(node: PgNode, pg_autoctl: str, name: str, wanted: set[str],
                   alive: Callable[[], None]) -> None:
    """Until the monitor reports data node `name` in one of the `wanted` states; `alive` raises if a process
    of the cluster died meanwhile."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        reported, assigned = states(node, pg_autoctl).get(name, ("", ""))
        if reported in wanted and reported == assigned:
            return
        alive()
        time.sleep(1)
    raise SystemExit(f"{name} did not reach {sorted(wanted)} within {READY_TIMEOUT_S} s; see .data/cluster/logs/")


async def is_primary(port: int) -> bool | None:
    """True for a node that takes writes, False for a standby, None when it does not answer."""
    try:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user=OWNER, database="postgres", timeout=1)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return None
    try:
        return not await conn.fetchval("SELECT pg_is_in_recovery()", timeout=1)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return None
    finally:
        conn.terminate()
