"""The load tools: vegeta (open loop, fixed rate) and wrk (closed loop, saturation), installed on demand."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.local import CACHE, say

VEGETA_VERSION = "v12.13.0"


def vegeta() -> str:
    """vegeta from the Go module proxy, built once into `.cache/bin`."""
    binary = CACHE / "bin" / "vegeta"
    if not binary.exists():
        if shutil.which("go") is None:
            raise SystemExit("the benchmarks need Go (to build vegeta) or vegeta on PATH")
        say(f"building vegeta {VEGETA_VERSION}")
        env = {**os.environ, "GOBIN": str(binary.parent)}
        subprocess.run(["go", "install", f"github.com/tsenart/vegeta/v12@{VEGETA_VERSION}"], check=True, env=env)
    return str(binary)


def wrk() -> str:
    found = shutil.which("wrk")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        say("installing wrk from Debian")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    if found is None:
        raise SystemExit("the benchmarks need wrk (apt-get install wrk)")
    return found


def attack(targets: str, rate: int, duration_s: int, connections: int = 64, timeout_s: int = 10) -> dict[str, Any]:
    """Open loop: `rate` requests/s whatever the answers; latency counts from the scheduled send."""
    with tempfile.NamedTemporaryFile("w", suffix=".targets", delete=False) as f:
        f.write(targets)
    try:
        attack_run = subprocess.run(
            [vegeta(), "attack", f"-targets={f.name}", f"-rate={rate}/s", f"-duration={duration_s}s",
             f"-connections={connections}", f"-max-connections={connections}", f"-timeout={timeout_s}s"],
            capture_output=True, check=True)
        report = subprocess.run([vegeta(), "report", "-type=json"], input=attack_run.stdout,
                                capture_output=True, check=True)
    finally:
        Path(f.name).unlink()
    raw = json.loads(report.stdout)
    ms = {k: v / 1e6 for k, v in raw["latencies"].items()}
    errors = sum(n for code, n in raw["status_codes"].items() if not code.startswith("2"))
    return {"rate": rate, "achieved_rps": round(raw["throughput"], 1), "requests": raw["requests"],
            "mean_ms": ms["mean"], "p50_ms": ms["50th"], "p95_ms": ms["95th"], "p99_ms": ms["99th"],
            "max_ms": ms["max"],
            "errors": errors, "status_codes": raw["status_codes"]}


def post_script(directory: Path, name: str, key: str, destination: str) -> str:
    """A wrk script POSTing one deposit of 1 into `destination` with bearer `key`: written as `name`.lua in
    `directory`; its path."""
    script = directory / f"{name}.lua"
    body = f'{{"postings":[{{"source":"@world","destination":"{destination}","amount":1,"asset":"USD/2"}}]}}'
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{body}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n')
    return str(script)


def saturate(url: str, duration_s: int, connections: int = 64, script: str | None = None,
             env: dict[str, str] | None = None, timeout_s: int = 2) -> dict[str, Any]:
    """Closed loop: as many requests as `connections` keep in flight; an answer later than `timeout_s` counts
    as a socket error (wrk's timeout), not in the latencies."""
    argv = [wrk(), f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration_s}s", f"--timeout={timeout_s}s",
            "--latency", url]
    if script:
        argv[1:1] = ["-s", script]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    pct = {m[0]: _ms(m[1]) for m in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "requests": requests, "p50_ms": pct.get("50"), "p99_ms": pct.get("99"),
            "errors": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else None}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


CLK_TCK = os.sysconf("SC_CLK_TCK")
# What each process on the machine counts as, by its command line (the first rule that matches).
CPU_ROLES = (("projector", "projections.app"), ("dispatcher", "-m dispatch"), ("api", "-m api"), ("api", "uvicorn"),
             ("api", "multiprocessing.spawn"),  # the API's workers (LEDGER_API_WORKERS), the only ones spawned so
             # A peer's (bench/formance.sh), before ours: its server, and its PostgreSQL (cluster_name formance).
             ("formance", "/bin/ledger serve"), ("formance_pg", "postgres: formance:"),
             ("formance_pg", "cluster_name=formance"),
             ("postgres", "postgres"),
             ("kafka", "kafka.Kafka"), ("load", "vegeta"), ("load", "wrk"), ("bench", "bench.run"))

# A PostgreSQL cluster's postmaster reaps its backends, so its children's times (cutime, cstime) hold the CPU of
# the connections that closed. Formance's pool closes and opens connections during a run: without them, a cell
# missed most of its PostgreSQL's CPU.
REAPING_ROLES = frozenset({"postgres", "formance_pg"})


def _cpu_by_role() -> tuple[dict[str, float], float]:
    """CPU seconds each role's live processes have used, and the machine's busy seconds (all cores)."""
    used: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone in between
            continue
        role = next((r for r, needle in CPU_ROLES if needle in command), "other")
        ticks = int(fields[11]) + int(fields[12])
        if role in REAPING_ROLES:  # and the backends it has reaped: a pool that reconnects spends CPU there too
            ticks += int(fields[13]) + int(fields[14])
        used[role] = used.get(role, 0.0) + ticks / CLK_TCK
    cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    busy = sum(int(v) for v in cpu[:8]) - int(cpu[3]) - int(cpu[4])  # all but idle and iowait
    return used, busy / CLK_TCK


class CpuMeter:
    """Where the machine's CPU went between `start` and `stop`: cores used by each role (1.0 = a whole core)
    and by the machine as a whole, out of `os.cpu_count()`. Of the processes that end in between, only the
    bench's own children (the load tools) are counted."""

    def __init__(self) -> None:
        self.before: tuple[dict[str, float], float] | None = None
        self.started = 0.0
        self.children = 0.0

    def start(self) -> CpuMeter:
        self.before, self.started = _cpu_by_role(), time.monotonic()
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children = reaped.ru_utime + reaped.ru_stime
        return self

    def stop(self, digits: int = 2) -> dict[str, Any]:
        assert self.before is not None
        (after, busy), elapsed = _cpu_by_role(), time.monotonic() - self.started
        roles = {r: round((s - self.before[0].get(r, 0.0)) / elapsed, digits) for r, s in after.items()}
        # The load tools run and end in between: counted as the bench's children once reaped.
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        roles["load"] = round((reaped.ru_utime + reaped.ru_stime - self.children) / elapsed, digits)
        return {"machine": round((busy - self.before[1]) / elapsed, digits), "cores": os.cpu_count(),
                **{r: v for r, v in sorted(roles.items(), key=lambda kv: -kv[1]) if v >= 10 ** -digits}}


def per_request_us(cpu: dict[str, Any], rps: float, digits: int | None = None) -> dict[str, float]:
    """CPU-µs per request by role, from a `CpuMeter` reading over a run of `rps` requests a second."""
    if not rps:
        return {}
    return {role: round(cores / rps * 1e6, digits) for role, cores in cpu.items() if role not in ("machine", "cores")}


def cpu_text(cpu: dict[str, Any]) -> str:
    parts = ", ".join(f"{role} {cores:.2f}" for role, cores in cpu.items() if role not in ("machine", "cores"))
    return f"CPU {cpu['machine']:.2f} of {cpu['cores']} cores busy ({parts})"
