"""What both nemeses (tests/faults over `make run`'s services, tests/cluster over `make cluster`) share: the
fixed accounts money moves among once funded (so their total never changes), and the checks on them."""

from __future__ import annotations

from typing import Any

ACCOUNTS = [f"acct-{n}" for n in range(8)]
FUND = 10**12

# Balances whose `held` is not the sum of their open holds.
HELD_MISMATCH = """
WITH open AS (
    SELECT h.tenant, p->>'source' AS account, p->>'asset' AS asset, sum((p->>'amount')::bigint) AS amount
    FROM holds h, jsonb_array_elements(h.postings::jsonb) AS p
    WHERE h.state = 'held' AND h.tenant = ANY($1) GROUP BY 1, 2, 3)
SELECT b.tenant, b.account, b.held, coalesce(o.amount, 0) AS open
FROM balances b LEFT JOIN open o ON o.tenant = b.tenant AND o.account = b.account AND o.asset = b.asset
WHERE b.tenant = ANY($1) AND b.held <> coalesce(o.amount, 0)
"""


def posting(source: str, destination: str, amount: int) -> dict[str, Any]:
    return {"source": source, "destination": destination, "amount": amount, "asset": "USD/2"}
