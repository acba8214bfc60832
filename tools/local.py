"""Starts and stops the local Kafka broker (KRaft, one node) and PostgreSQL cluster under `.data/`.

A service named by `LEDGER_KAFKA_BOOTSTRAP` / `LEDGER_DATABASE_URL` is used as it is and never started.
Both keep their data across runs. `python -m tools.local up|down|status`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from infra import settings as settings_mod

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
CACHE = ROOT / ".cache"
KAFKA_VERSION = "4.1.1"
KAFKA_PORT = 9092
KAFKA_CONTROLLER_PORT = 9093
PG_PORT = 5433
PG_BIN_CANDIDATES = [Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin"),
                     Path("/usr/lib/postgresql/17/bin")]
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30
LINGER_S = 2.0


def say(message: str) -> None:
    print(f"[infra] {message}", flush=True)


def ensure_installed(package: str, commands: tuple[str, ...], needed_by: str) -> list[str]:
    """The paths of `commands`, Debian's `package` installed with apt-get first when any is missing and we are
    root (`make cluster`'s pg_autoctl, `make observe`'s Prometheus); otherwise how to install it."""
    found = [shutil.which(c) for c in commands]
    if all(found):
        return [f for f in found if f]
    if os.geteuid() != 0:
        raise SystemExit(f"{needed_by} needs {package} ({', '.join(commands)}); install it with:\n"
                         f"  sudo apt-get update && sudo apt-get install -y {package}")
    say(f"installing {package} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, env=env, stdout=subprocess.DEVNULL)
    found = [shutil.which(c) for c in commands]
    if not all(found):
        raise SystemExit(f"{package} is installed but {' or '.join(commands)} is not on the PATH")
    return [f for f in found if f]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not port_open(port):
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode} while starting; see its log")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not open port {port} within {START_TIMEOUT_S} s")
        time.sleep(0.2)


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    # The broker may be our own child: reap it once it exits, or it lingers as a zombie that kill(0) still finds.
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return None
    except ChildProcessError:
        pass
    try:
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return None
    except (FileNotFoundError, IndexError):
        return None
    return pid


def _stop_pid(pid_file: Path, what: str, done_marker: Path | None = None) -> None:
    """SIGTERM, then wait for the process to exit (or, with `done_marker`, for that file to appear: the
    service has finished its own shutdown), and SIGKILL whatever lingers after `STOP_TIMEOUT_S`."""
    pid = _alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return
    asked = time.time()
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid_file) and time.monotonic() < deadline:
        if done_marker is not None and done_marker.exists() and done_marker.stat().st_mtime >= asked - 1:
            # The broker wrote its clean-shutdown marker; its JVM sometimes lingers for half a minute after.
            time.sleep(LINGER_S)
            if _alive(pid_file):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    if _alive(pid_file):
        say(f"{what} did not stop within {STOP_TIMEOUT_S} s; killing it")
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    say(f"{what} stopped")


def kept_secret(name: str) -> str:
    """A random secret (`secrets.token_urlsafe(32)`: 32 bytes in base64url) made once and kept in `.data/<name>`,
    readable by its owner only, so every process of every run on this checkout shares it. Two processes
    making it at once agree: the file appears whole or not at all, and the first one made wins."""
    path = DATA / name
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        draft = DATA / f".{name}.{os.getpid()}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


# --- Kafka ---------------------------------------------------------------------------------------------

def kafka_libs() -> Path:
    """The broker's jars: `$KAFKA_HOME/libs`, or fetched once from Maven Central into `.cache/`."""
    kafka_home = settings_mod.load().kafka_home
    if kafka_home:
        return Path(kafka_home) / "libs"
    pom = ROOT / "infra/kafka/pom.xml"
    # Keyed by the POM's content, so a changed dependency list fetches a fresh set of jars.
    libs = CACHE / f"kafka-{KAFKA_VERSION}-{hashlib.sha256(pom.read_bytes()).hexdigest()[:10]}" / "libs"
    marker = libs.parent / "complete"
    if not marker.exists():
        if shutil.which("mvn") is None:
            raise SystemExit("Maven (mvn) is needed to fetch Kafka's jars; install it or set KAFKA_HOME")
        say(f"fetching Kafka {KAFKA_VERSION} jars from Maven Central")
        subprocess.run(
            ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
             f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
            check=True,
        )
        marker.write_text(KAFKA_VERSION)
    return libs


def kafka_properties(data: Path) -> str:
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.bootstrap.servers=127.0.0.1:{KAFKA_CONTROLLER_PORT}",
        f"listeners=PLAINTEXT://127.0.0.1:{KAFKA_PORT},CONTROLLER://127.0.0.1:{KAFKA_CONTROLLER_PORT}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{KAFKA_PORT}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data / 'log'}",
        "num.network.threads=2",
        "num.io.threads=4",
        "num.partitions=4",
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=8",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "log.retention.hours=-1",
        "",
    ])


def _java(libs: Path, logs: Path, *args: str) -> list[str]:
    heap = settings_mod.load().kafka_heap
    return ["java", f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true", f"-Dkafka.logs.dir={logs}",
            f"-Dlog4j2.configurationFile={ROOT / 'infra/kafka/log4j2.properties'}",
            "-cp", f"{libs}/*", *args]


def start_kafka(configured_elsewhere: bool | None = None) -> bool:
    """Start the broker unless one is configured or already running; True when this call started it."""
    cfg = settings_mod.load()
    if configured_elsewhere is None:
        configured_elsewhere = cfg.kafka_external
    if configured_elsewhere:
        say(f"using Kafka at {cfg.kafka_bootstrap}")
        return False
    data = DATA / "kafka"
    pid_file = data / "kafka.pid"
    if port_open(KAFKA_PORT):
        say(f"Kafka already listening on 127.0.0.1:{KAFKA_PORT}; reusing it")
        return False
    libs = kafka_libs()
    data.mkdir(parents=True, exist_ok=True)
    config = data / "server.properties"
    config.write_text(kafka_properties(data))
    if not (data / "log" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # `=` form: a random id may begin with "-", which a separate argument would read as an option.
        subprocess.run(_java(libs, data, "kafka.tools.StorageTool", "format", "--standalone",
                             f"--cluster-id={cluster_id}", f"--config={config}"),
                       check=True, stdout=subprocess.DEVNULL)
        say(f"formatted Kafka storage (cluster {cluster_id})")
    started = time.monotonic()
    with open(data / "kafka.out", "ab") as out:
        proc = subprocess.Popen(_java(libs, data, "kafka.Kafka", str(config)), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    wait_for_port(KAFKA_PORT, "Kafka", proc)
    # The broker outlives this process and is stopped through its pid file; tell Popen it is not ours to
    # reap, or it warns "still running" when collected.
    proc.returncode = 0
    say(f"Kafka {KAFKA_VERSION} up on 127.0.0.1:{KAFKA_PORT} in {time.monotonic() - started:.1f} s "
        f"(logs: {data / 'server.log'})")
    return True


def stop_kafka() -> None:
    _stop_pid(DATA / "kafka" / "kafka.pid", "Kafka", done_marker=DATA / "kafka" / "log" / ".kafka_cleanshutdown")


# --- PostgreSQL ----------------------------------------------------------------------------------------

def pg_bin(name: str) -> str:
    for directory in PG_BIN_CANDIDATES:
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"PostgreSQL's {name} was not found; install postgresql-15 (or set LEDGER_DATABASE_URL)")
    return found


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb refuses to run as root, so root runs the cluster as the `postgres` user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _pg_data() -> Path:
    data = DATA / "pg"
    if not (data / "PG_VERSION").exists():
        DATA.mkdir(parents=True, exist_ok=True)
        data.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        subprocess.run(_as_postgres([pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                     "-E", "UTF8", "--locale=C.UTF-8"]), check=True, stdout=subprocess.DEVNULL)
        with open(data / "postgresql.conf", "a") as conf:
            conf.write("\n# wallet ledger, local cluster\n"
                       f"port = {PG_PORT}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{data}'\n"
                       "max_connections = 300\nshared_buffers = 512MB\n"
                       "shared_preload_libraries = 'pg_stat_statements'\n"
                       "wal_compression = on\nmax_wal_size = 4GB\n"
                       "logging_collector = on\nlog_directory = 'log'\n")
        say("initialized PostgreSQL cluster")
    return data


def start_postgres(configured_elsewhere: bool | None = None) -> bool:
    """Start the cluster unless one is configured or already running; True when this call started it."""
    if configured_elsewhere is None:
        configured_elsewhere = settings_mod.load().database_external
    if configured_elsewhere:
        say("using PostgreSQL at LEDGER_DATABASE_URL")
        return False
    if port_open(PG_PORT):
        say(f"PostgreSQL already listening on 127.0.0.1:{PG_PORT}; reusing it")
        return False
    data = _pg_data()
    subprocess.run(_as_postgres([pg_bin("pg_ctl"), "-D", str(data), "-l", str(data / "startup.log"),
                                 "-w", "-t", str(START_TIMEOUT_S), "start"]),
                   check=True, stdout=subprocess.DEVNULL)
    wait_for_port(PG_PORT, "PostgreSQL")
    say(f"PostgreSQL up on 127.0.0.1:{PG_PORT}")
    return True


def stop_postgres() -> None:
    data = DATA / "pg"
    if not (data / "postmaster.pid").exists():
        return
    subprocess.run(_as_postgres([pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                   check=False, stdout=subprocess.DEVNULL)
    say("PostgreSQL stopped")


def up() -> tuple[bool, bool]:
    """Start both services as needed; (started PostgreSQL, started Kafka). Leaves nothing behind on failure."""
    started_pg = start_postgres()
    try:
        return started_pg, start_kafka()
    except BaseException:
        if started_pg:
            stop_postgres()
        raise


def stop_started(started_pg: bool, started_kafka: bool) -> None:
    """Stop what `up()` started (and nothing it merely reused), broker first."""
    if started_kafka:
        stop_kafka()
    if started_pg:
        stop_postgres()


def down() -> None:
    stop_kafka()
    stop_postgres()


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else "status"
    if command == "up":
        up()
    elif command == "down":
        down()
    elif command == "kafka-jars":
        print(kafka_libs())
    elif command == "status":
        print(f"kafka: {'up' if port_open(KAFKA_PORT) else 'down'}; postgres: {'up' if port_open(PG_PORT) else 'down'}")
    else:
        raise SystemExit("usage: python -m tools.local up|down|status|kafka-jars")


if __name__ == "__main__":
    main()
