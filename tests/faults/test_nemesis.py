"""The nemesis (tests/faults/nemesis.py) in short: a minute of random faults under load, then every check.

`make soak` runs the same for 30 minutes (LEDGER_SOAK_SECONDS) and prints the report; a failing run is replayed
with its seed (LEDGER_SOAK_SEED). Kafka and PostgreSQL restarts are among the faults only when this run
started those services itself.
"""

from __future__ import annotations

import json
import os

import httpx

from tests.faults.nemesis import Nemesis, seed_and_seconds
from tests.stack import Stack
from tools.local import DATA

SHORT_S = 60.0


async def test_random_faults_under_load_lose_double_and_contradict_nothing(stack: Stack,
                                                                            admin: httpx.AsyncClient) -> None:
    seed, seconds = seed_and_seconds(SHORT_S)
    nemesis = Nemesis(stack, seed, seconds, services=os.environ.get("LEDGER_TEST_LOCAL_SERVICES") == "1")
    try:
        await nemesis.setup(admin)
        report = await nemesis.run()
    finally:
        nemesis.close()
    summary = report.summary()
    out = DATA / "logs" / f"nemesis-{seed}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"\nnemesis report ({out}):\n{json.dumps(summary, indent=2)}")
    assert sum(report.faults.values()) >= 5, report.faults
    assert sum(report.requests.values()) > 1000, report.requests
    assert not report.anomalies, f"seed {seed}: {len(report.anomalies)} anomalies: {report.anomalies[:20]}"
