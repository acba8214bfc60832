"""`make observe`: a real Prometheus, with the ledger's recording and alerting rules, over a running stack.

Scrapes `make run` (the API on :8000, the projectors from :9464, the dispatcher on :9474) or, while one runs,
`make cluster` (its `.data/cluster.json`: the APIs, projectors and dispatchers it lists), with
`infra/prometheus/rules.yml`, and serves it on http://127.0.0.1:9090 in the foreground until Ctrl-C.
Everything it writes is under `.data/observe/` (the configuration, a copy of the rules, the TSDB). Prometheus
is Debian's package, installed with apt-get when it is missing and we are root. The dashboard over these
rules is `infra/grafana/ledger.json` (`docker compose up prometheus grafana`, or import it in any Grafana).

`start()` and `stop()` run one against given targets for the tests (tests/e2e/test_observe.py); `check_rules()`
runs `promtool check rules`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from infra import settings as settings_mod
from tools import processes
from tools.local import DATA, ROOT, ensure_installed, port_open, say

RULES = ROOT / "infra" / "prometheus" / "rules.yml"
DIRECTORY = DATA / "observe"
CLUSTER_STATE = DATA / "cluster.json"
PACKAGE = "prometheus"  # Debian's: /usr/bin/prometheus and /usr/bin/promtool
PORT = 9090
PROJECTOR_METRICS_PORT = 9464  # make run's defaults (tools/run.py)
DISPATCHER_METRICS_PORT = 9474
JOBS = ("api", "projector", "dispatcher")
# What `make observe` scrapes at; the tests use start()'s 1 s, so that a short test sees several samples.
SCRAPE_INTERVAL = "5s"
EVALUATION_INTERVAL = "5s"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

Targets = dict[str, list[str]]


def ensure_prometheus() -> tuple[str, str]:
    """The paths of `prometheus` and `promtool`, Debian's package installed first when either is missing."""
    prometheus, promtool = ensure_installed(PACKAGE, ("prometheus", "promtool"), "make observe")
    return prometheus, promtool


def _promtool(*args: str) -> str:
    _, promtool = ensure_prometheus()
    done = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise RuntimeError(f"promtool {' '.join(args)} failed (status {done.returncode}):\n{output}")
    return output


def check_rules(path: Path = RULES) -> None:
    """`promtool check rules` on the ledger's rules; raises RuntimeError with promtool's words when it fails."""
    _promtool("check", "rules", str(path))


def check_config(config: Path) -> None:
    """`promtool check config` (which checks the rule files the configuration names too)."""
    _promtool("check", "config", str(config))


# --- targets ----------------------------------------------------------------------------------------------

def _host_port(url: str) -> str:
    """`http://127.0.0.1:8000` -> `127.0.0.1:8000` (a wildcard listen address is scraped on loopback)."""
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    return f"{'127.0.0.1' if host in ('', '0.0.0.0', '::', '[::]') else host}:{port}"


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def cluster_targets(state: dict[str, Any]) -> Targets:
    """The scrape targets of a `make cluster` from its state file (tools/cluster.py: `api` lists the APIs'
    URLs; each process entry has a role and the port it serves, its metrics port for projectors and
    dispatchers)."""
    targets: Targets = {job: [] for job in JOBS}
    targets["api"] = sorted({_host_port(url) for url in state.get("api", [])})
    for role in ("projector", "dispatcher"):
        targets[role] = sorted({f"127.0.0.1:{p['port']}" for p in state.get("processes", [])
                                if p.get("role") == role and p.get("port")})
    return targets


def run_targets(cfg: settings_mod.Settings) -> Targets:
    """The scrape targets of `make run` with these settings, as tools/run.py starts them: the n-th projector
    serves on the first one's port + n - 1."""
    first = cfg.projector_metrics_port or PROJECTOR_METRICS_PORT
    return {"api": [_host_port(f"http://{cfg.api_host}:{cfg.api_port}")],
            "projector": [f"127.0.0.1:{first + n}" for n in range(cfg.projectors)],
            "dispatcher": [f"127.0.0.1:{cfg.dispatcher_metrics_port or DISPATCHER_METRICS_PORT}"]}


def running_cluster() -> dict[str, Any] | None:
    """`.data/cluster.json` when a process it lists is alive (a cluster stopped uncleanly leaves it behind)."""
    try:
        state: dict[str, Any] = json.loads(CLUSTER_STATE.read_text())
    except (FileNotFoundError, ValueError):
        return None
    ledger = [p for p in state.get("processes", []) if p.get("role") in ("api", "projector", "dispatcher")]
    return state if any(_alive(p.get("pid")) for p in ledger) else None


def discover(stack: str) -> tuple[str, Targets]:
    """`auto`: the cluster when one runs, else `make run`'s ports."""
    if stack in ("auto", "cluster"):
        state = running_cluster()
        if state is not None:
            return "make cluster", cluster_targets(state)
        if stack == "cluster":
            raise SystemExit(f"no running make cluster ({CLUSTER_STATE} is missing or lists no live process)")
    return "make run", run_targets(settings_mod.load())


# --- configuration and process ----------------------------------------------------------------------------

def config_text(targets: Targets, rules: list[Path], scrape_interval: str, evaluation_interval: str) -> str:
    """A Prometheus configuration (JSON is YAML) with one job per entry of `targets` that has any."""
    config = {
        "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                   "evaluation_interval": evaluation_interval},
        "rule_files": [str(path) for path in rules],
        "scrape_configs": [{"job_name": job, "metrics_path": "/metrics",
                            "static_configs": [{"targets": hosts}]}
                           for job, hosts in targets.items() if hosts],
    }
    return json.dumps(config, indent=2) + "\n"


def write_config(targets: Targets, directory: Path, scrape_interval: str = SCRAPE_INTERVAL,
                 evaluation_interval: str = EVALUATION_INTERVAL) -> Path:
    """`directory/prometheus.yml` over a copy of the rules beside it, checked by promtool."""
    directory.mkdir(parents=True, exist_ok=True)
    rules = directory / RULES.name
    shutil.copyfile(RULES, rules)
    config = directory / "prometheus.yml"
    config.write_text(config_text(targets, [rules.resolve()], scrape_interval, evaluation_interval))
    check_rules(rules)
    check_config(config)
    return config


def command(config: Path, directory: Path, port: int) -> list[str]:
    prometheus, _ = ensure_prometheus()
    return [prometheus, f"--config.file={config}", f"--storage.tsdb.path={directory / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}"]


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path | None = None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"Prometheus exited with status {proc.returncode} while starting"
                               + (f"; see {log}" if log else ""))
        with contextlib.suppress(OSError), \
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as answer:
            if answer.status == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Prometheus was not ready on port {port} within {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def start(targets: Targets, port: int, directory: Path) -> subprocess.Popen[bytes]:
    """A real Prometheus on 127.0.0.1:`port` scraping `targets` (job name -> `host:port`s) every second and
    evaluating the ledger's rules every second, its files under `directory`; returned once it is ready."""
    config = write_config(targets, directory, "1s", "1s")
    log = directory / "prometheus.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(command(config, directory, port), cwd=directory, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(proc, port, log)
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Prometheus closes its TSDB), SIGKILL past `STOP_TIMEOUT_S`."""
    processes.stop(proc, "Prometheus", STOP_TIMEOUT_S)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.observe", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stack", choices=("auto", "run", "cluster"), default="auto",
                        help="what to scrape: a running make cluster when there is one (auto), or make run's ports")
    parser.add_argument("--port", type=int, default=PORT, help="Prometheus's port on 127.0.0.1 (9090)")
    args = parser.parse_args(argv)
    ensure_prometheus()
    if port_open(args.port):
        raise SystemExit(f"port {args.port} is taken (another Prometheus?); choose another with --port")
    what, targets = discover(args.stack)
    config = write_config(targets, DIRECTORY)
    say(f"scraping {what}: " + "; ".join(f"{job} {', '.join(hosts)}" for job, hosts in targets.items() if hosts))
    for job, hosts in targets.items():
        if hosts and not any(port_open(int(h.rsplit(':', 1)[1]), h.rsplit(':', 1)[0]) for h in hosts):
            say(f"nothing answers yet for {job} ({', '.join(hosts)}): up{{job=\"{job}\"}} is 0 until it does")
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    log = DIRECTORY / "prometheus.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(command(config, DIRECTORY, args.port), cwd=DIRECTORY, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(proc, args.port, log)
        say(f"Prometheus at http://127.0.0.1:{args.port} (rules: /rules, alerts: /alerts); config {config}; "
            f"log {log}; press Ctrl-C to stop")
        say("the Grafana dashboard is infra/grafana/ledger.json (datasource uid `prometheus`)")
        while not stopping and proc.poll() is None:
            time.sleep(0.2)
        if proc.poll() is not None and not stopping:
            raise SystemExit(f"Prometheus exited with status {proc.returncode}; see {log}")
    except RuntimeError as e:
        raise SystemExit(str(e)) from None
    finally:
        say("stopping Prometheus")
        stop(proc)
    sys.exit(0)


if __name__ == "__main__":
    main()
