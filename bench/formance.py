"""Issue 24's peer (`make bench-formance`, step `formance`): the same write matrix against Formance Ledger v2,
built from source and served on its own PostgreSQL by `bench/formance.sh`, in the same run as ours.

Formance answers a write once it is committed, as ours does with `wait=true`, so its cells stand beside our
waited ones. Its CPU is its server's (`formance`) and its PostgreSQL's (`formance_pg`: the cluster is started
with `cluster_name=formance`, so its processes are told from ours). Its ledger `bench` is created with the
default features (the log hashed synchronously, moves history on) and the server's pool at 20 connections
(`--postgres-max-idle-conns 20`, which v2.4.12 needs not to stall).
"""

from __future__ import annotations

import subprocess

from bench import matrix
from bench.stack import Bench
from tools.local import ROOT, say

SCRIPT = ROOT / "bench" / "formance.sh"
URL = "http://127.0.0.1:3068"
ROLES = ("formance", "formance_pg")


def _script(command: str) -> None:
    subprocess.run(["bash", str(SCRIPT), command], check=True)


async def formance(bench: Bench) -> None:
    _script("build")
    _script("reset")  # a fresh database each run, as ours
    try:
        target = matrix.Target("formance", URL, "/v2/bench/transactions", "world", {"waited": ""}, ROLES)
        cells = await matrix.run_matrix(target, bench.logs, matrix.duration(bench))
    finally:
        _script("stop")
    bench.results["matrix_formance"] = cells
    if "matrix" in bench.results:
        say("\n".join(matrix.table(bench.results["matrix"], cells)))
