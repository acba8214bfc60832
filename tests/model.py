"""An independent model of the ledger's decisions, written apart from `ledger.decisions` and `ledger.fold`
from the contract's rules alone: plain dictionaries and one loop. The property tests compare both
PostgreSQL and the projector's own fold with it, so a wrong rule in the fold cannot hide behind itself.

It takes requests already classified by the test that generated them (it knows which ones it broke), so it
models the decisions, not the parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Posting = tuple[str, str, int, str]  # source, destination, amount, asset


@dataclass
class Model:
    """The ledger as a few dictionaries: what each (tenant, id) and (tenant, key) stands for, what is
    recorded as a transaction row, and the balances."""

    balances: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # (tenant, id) -> (status, reason, postings) of the decision that id stands for (a repeat's: the original's)
    ids: dict[tuple[str, str], tuple[str, str | None, tuple[Posting, ...] | None]] = field(default_factory=dict)
    keys: dict[tuple[str, str], tuple[str, str | None, tuple[Posting, ...] | None]] = field(default_factory=dict)
    rows: dict[tuple[str, str], tuple[str, str | None]] = field(default_factory=dict)

    def malformed(self, tenant: str, id: str, readable: bool) -> None:
        """A record that is not a request; recorded under its id when tenant and id are readable and free."""
        if readable and (tenant, id) not in self.ids:
            self.ids[(tenant, id)] = ("rejected", "invalid", None)
            self.rows[(tenant, id)] = ("rejected", "invalid")

    def transfer(self, tenant: str, id: str, postings: list[Posting], key: str | None) -> None:
        body = tuple(postings)
        if (tenant, id) in self.ids:
            return  # the id is taken: a repeat (same body) or a conflict; either way nothing new is recorded
        if key is not None and (tenant, key) in self.keys:
            original = self.keys[(tenant, key)]
            if original[2] == body:
                self.ids[(tenant, id)] = original  # a repeat under a new id: it stands for the original
            else:
                self.ids[(tenant, id)] = ("rejected", "idempotency_conflict", body)
                self.rows[(tenant, id)] = ("rejected", "idempotency_conflict")
            return
        status, reason = self._apply(tenant, body)
        self.ids[(tenant, id)] = (status, reason, body)
        self.rows[(tenant, id)] = (status, reason)
        if key is not None:
            self.keys[(tenant, key)] = (status, reason, body)

    def _apply(self, tenant: str, body: tuple[Posting, ...]) -> tuple[str, str | None]:
        after = dict(self.balances)
        for source, destination, amount, asset in body:
            for account, change in ((source, -amount), (destination, amount)):
                k = (tenant, account, asset)
                after[k] = after.get(k, 0) + change
                if not INT64_MIN <= after[k] <= INT64_MAX:
                    return "rejected", "overflow"
        if any(v < 0 and not k[1].startswith("@") for k, v in after.items()):
            return "rejected", "insufficient_funds"
        self.balances = after
        return "committed", None
