"""What a batch needs loaded before it is folded, step by step: pure, so the projector's writer only runs the
SQL each step names and puts the rows it reads into the `Ledger`.

The steps depend on one another, so each is asked once the one before is loaded: ids first (a request may
name a repeat's id, which stands for its original), then the holds, monitors and transactions the requests
name, then the accounts' policies and versions, then the balances (a policy's include those of the limits it
replaces, known once its account's policy is loaded), then idempotency keys and tenants. Each step leaves out
what the ledger (carried from batch to batch) already holds: comprehensions over the batch, never
`set - dict.keys()`, which would walk the whole carried dict every batch.
"""

from __future__ import annotations

from ledger.batch import Decoded, Invalid
from ledger.decisions import touched
from ledger.memory import Ledger
from ledger.requests import (
    BatchRequest,
    CaptureRequest,
    HoldRequest,
    PolicyRequest,
    ReverseRequest,
    TenantRequest,
    TransactionRequest,
    TransferRequest,
    UnmonitorRequest,
    VoidRequest,
    target_of,
)
from ledger.state import BalanceKey, resolved

Named = set[tuple[str, str]]  # (tenant, id or account)


class Needs:
    """What the decoded records of one batch need, asked step by step against the ledger being loaded."""

    __slots__ = ("ids", "keyed", "policies", "requests", "tenants")

    def __init__(self, decoded: list[Decoded]) -> None:
        # A batch record's items are decided like requests of their own.
        self.requests: list[TransactionRequest] = [d for d in decoded if isinstance(d, TransactionRequest)]
        self.requests += [item for d in decoded if isinstance(d, BatchRequest) for item in d.items]
        self.policies = [r for r in self.requests if isinstance(r, PolicyRequest)]
        self.ids: Named = {(r.tenant, r.id) for r in self.requests}
        self.ids |= {d.identity for d in decoded if isinstance(d, Invalid) and d.identity is not None}
        self.tenants = {d.tenant for d in decoded if isinstance(d, TransactionRequest | TenantRequest | BatchRequest)}
        # Keyed batch records (tenant, id, key): whether the id is taken, and what the key binds.
        self.keyed = {(d.tenant, d.id, d.idempotency_key) for d in decoded
                      if isinstance(d, BatchRequest) and d.idempotency_key is not None}

    def batch_ids(self, ledger: Ledger) -> Named:
        return {(t, i) for t, i, _ in self.keyed if (t, i) not in ledger.batches}

    def decided_ids(self, ledger: Ledger) -> Named:
        """The ids whose decisions are read: the requests' own, and those they name."""
        targets = {(r.tenant, target) for r in self.requests if (target := target_of(r)) is not None}
        return {i for i in self.ids | targets if i not in ledger.by_id}

    def holds(self, ledger: Ledger) -> Named:
        """The holds captures and voids name (with the ids loaded: a repeat's id stands for its original)."""
        named = {(r.tenant, resolved(ledger, r.tenant, r.hold)) for r in self.requests
                 if isinstance(r, CaptureRequest | VoidRequest)}
        return {k for k in named if k not in ledger.holds}

    def monitors(self, ledger: Ledger) -> Named:
        """The monitors removals name."""
        named = {(r.tenant, resolved(ledger, r.tenant, r.monitor)) for r in self.requests
                 if isinstance(r, UnmonitorRequest)}
        return {k for k in named if k not in ledger.monitors}

    def originals(self, ledger: Ledger) -> Named:
        """The transactions reversals name."""
        named = {(r.tenant, resolved(ledger, r.tenant, r.transaction)) for r in self.requests
                 if isinstance(r, ReverseRequest)}
        return {k for k in named if k not in ledger.originals}

    def moved(self, ledger: Ledger, held: set[BalanceKey]) -> set[BalanceKey]:
        """Every balance the batch may read or write (the holds, monitors and originals loaded), and `held`:
        those of the holds that expire in it."""
        return touched(self.requests, ledger) | held

    def accounts(self, ledger: Ledger, moved: set[BalanceKey]) -> Named:
        """The accounts whose policy and version are read: every one a balance in `moved` belongs to, those
        a policy is set for, and those `if_version` names (it may name an account nothing moves)."""
        accounts = {(k[0], k[1]) for k in moved}
        accounts |= {(r.tenant, r.account) for r in self.policies}
        accounts |= {(r.tenant, account) for r in self.requests if isinstance(r, TransferRequest | HoldRequest)
                     for account, _ in r.if_version}
        return {a for a in accounts if a not in ledger.policies}

    def balances(self, ledger: Ledger, moved: set[BalanceKey]) -> set[BalanceKey]:
        """The balances to read (the policies loaded): `moved`, and the rows that carry the limits a policy
        replaces."""
        return {k for k in moved | touched(self.policies, ledger) if k not in ledger.balances}

    def keys(self, ledger: Ledger) -> Named:
        """The idempotency keys whose bindings are read: the requests' and the keyed batches'."""
        keys = {(r.tenant, r.idempotency_key) for r in self.requests if r.idempotency_key is not None}
        return {k for k in keys | {(t, k) for t, _, k in self.keyed} if k not in ledger.by_key}

    def unchained(self, ledger: Ledger) -> list[str]:
        return [t for t in self.tenants if t not in ledger.chains]

    def unknown_tenants(self, ledger: Ledger) -> list[str]:
        return [t for t in self.tenants if t not in ledger.tenants]
