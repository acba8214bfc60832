"""The ledger in memory: the pure fold of a log, and the projector's working set for a batch (`Ledger`); and
`Scratch`, a throwaway layer over it on which an atomic batch is tried."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import assert_never

from ledger.chain import GENESIS, link
from ledger.positions import Position
from ledger.reasons import (
    INVALID,
    KEY_UNBOUND,
)
from ledger.requests import (
    TRANSFER,
    BatchRequest,
    CaptureRequest,
    HoldRequest,
    MonitorRequest,
    PolicyRequest,
    ReverseRequest,
    TenantRequest,
    TransactionRequest,
    TransferRequest,
    UnmonitorRequest,
    VoidRequest,
)
from ledger.state import (
    CAPTURED,
    EXPIRED,
    HELD,
    NO_POLICY,
    VOIDED,
    BalanceKey,
    Decided,
    Hold,
    Monitor,
    Original,
    Outcome,
    Policy,
    Status,
    changed_accounts,
    hold_accounts,
)


def _restricts(policy: Policy) -> int:
    """1 if the policy limits an overdraft or freezes the account (what decisions read of it), else 0."""
    return int(bool(policy.limits) or policy.frozen)


@dataclass(slots=True)
class Ledger:
    """An in-memory ledger state: the pure fold of a log, and the projector's working set for a batch.

    A key absent from `balances` or `held` holds zero; `decided_*` absent means never decided. The projector
    preloads every key a batch touches, so the same fold runs over a partial view of PostgreSQL.
    """

    balances: dict[BalanceKey, int] = field(default_factory=dict)
    held: dict[BalanceKey, int] = field(default_factory=dict)
    by_key: dict[tuple[str, str], Decided] = field(default_factory=dict)
    by_id: dict[tuple[str, str], Decided] = field(default_factory=dict)
    # Whether each tenant exists (False: looked up, absent), for the tenants a batch names.
    tenants: dict[str, bool] = field(default_factory=dict)
    holds: dict[tuple[str, str], Hold] = field(default_factory=dict)
    originals: dict[tuple[str, str], Original] = field(default_factory=dict)
    policies: dict[tuple[str, str], Policy] = field(default_factory=dict)  # set through `learn_policy`
    restricting: int = 0  # how many of them limit or freeze
    # Per partition, the open holds by expiry: (expires_at_ms, tenant, id); closed ones are skipped on pop.
    expiring: dict[int, list[tuple[int, str, str]]] = field(default_factory=dict)
    # Per tenant, its chain so far: (how many transactions it links, the last one's hash); absent: none yet.
    chains: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Per balance, for statements: (the sum of its credit entries, how many entries it has), so far.
    turnover: dict[BalanceKey, tuple[int, int]] = field(default_factory=dict)
    # Batches that bound an idempotency key: (tenant, batch id) -> their items' ids, in order.
    batches: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    # Per account: how many committed records changed it (contract v3's `version`); absent: 0, or not loaded.
    versions: dict[tuple[str, str], int] = field(default_factory=dict)
    # Balance monitors known by (tenant, id): created here, loaded with their account, or named by a removal.
    monitors: dict[tuple[str, str], Monitor] = field(default_factory=dict)
    # Per account, its active monitors in the order they were created. Loaded with the account's policy, so
    # absent means none for every account the batch moves (those are all loaded).
    watched: dict[tuple[str, str], tuple[Monitor, ...]] = field(default_factory=dict)
    # Per tenant, how many monitors are active (loaded with whether the tenant exists).
    monitor_counts: dict[str, int] = field(default_factory=dict)

    def balance(self, key: BalanceKey) -> int:
        return self.balances.get(key, 0)

    def held_of(self, key: BalanceKey) -> int:
        return self.held.get(key, 0)

    def decided_key(self, tenant: str, idempotency_key: str) -> Decided | None:
        return self.by_key.get((tenant, idempotency_key))

    def decided_id(self, tenant: str, transaction_id: str) -> Decided | None:
        return self.by_id.get((tenant, transaction_id))

    def tenant_exists(self, tenant: str) -> bool:
        return self.tenants.get(tenant, False)

    def hold(self, tenant: str, hold_id: str) -> Hold | None:
        return self.holds.get((tenant, hold_id))

    def original(self, tenant: str, transaction_id: str) -> Original | None:
        return self.originals.get((tenant, transaction_id))

    def policy(self, tenant: str, account: str) -> Policy:
        if not self.restricting:  # a transfer asks up to eight times; most ledgers limit and freeze nothing
            return NO_POLICY
        return self.policies.get((tenant, account), NO_POLICY)

    def restricted(self) -> bool:
        """Whether any policy known limits or freezes an account (else `policy` is NO_POLICY for all)."""
        return self.restricting > 0

    def version(self, tenant: str, account: str) -> int:
        return self.versions.get((tenant, account), 0)

    def monitor(self, tenant: str, monitor_id: str) -> Monitor | None:
        return self.monitors.get((tenant, monitor_id))

    def watching(self, tenant: str, account: str) -> tuple[Monitor, ...]:
        return self.watched.get((tenant, account), ())

    def monitor_count(self, tenant: str) -> int:
        return self.monitor_counts.get(tenant, 0)

    def learn_monitor(self, monitor: Monitor) -> Monitor:
        """Know a monitor loaded from PostgreSQL (one this process knows already is newer: it is kept); an
        active one joins its account's list. Returns the one known."""
        known = self.monitors.get((monitor.tenant, monitor.id))
        if known is not None:
            return known
        self.monitors[(monitor.tenant, monitor.id)] = monitor
        if monitor.active:
            key = (monitor.tenant, monitor.watch.account)
            self.watched[key] = (*self.watched.get(key, ()), monitor)
        return monitor

    def bump(self, tenant: str, accounts: Iterable[str]) -> None:
        """One more change of each of `accounts` (each once per record)."""
        for account in accounts:
            key = (tenant, account)
            self.versions[key] = self.versions.get(key, 0) + 1

    def learn_policy(self, key: tuple[str, str], policy: Policy) -> None:
        """Know an account's policy (set by a request, or loaded from PostgreSQL)."""
        old = self.policies.get(key)
        self.restricting += _restricts(policy) - (_restricts(old) if old is not None else 0)
        self.policies[key] = policy

    def apply(self, request: TransactionRequest, outcome: Outcome, position: Position, now_ms: int = 0) -> bool:
        """Fold a decided request in (not a repeat: those change nothing); True when it binds its key."""
        assert outcome.replay_of is None
        decided = Decided(request.id, outcome.status, outcome.reason, request.fingerprint(), position)
        self.by_id[(request.tenant, request.id)] = decided
        for entry in outcome.entries:
            self.balances[(request.tenant, entry.account, entry.asset)] = entry.balance_after
        for key, held in outcome.held:
            assert held >= 0
            self.held[key] = held
        self.originals[(request.tenant, request.id)] = Original(request.kind, outcome.status, outcome.moved)
        if outcome.status == "committed":
            self.bump(request.tenant, changed_accounts(self, request, outcome))
            self._effect(request, outcome, position, now_ms)
        if request.idempotency_key is None or outcome.reason in KEY_UNBOUND:
            return False
        assert (request.tenant, request.idempotency_key) not in self.by_key
        self.by_key[(request.tenant, request.idempotency_key)] = decided
        return True

    def _effect(self, request: TransactionRequest, outcome: Outcome, position: Position, now_ms: int) -> None:
        match request:
            case TransferRequest():
                pass  # its entries are all it does
            case HoldRequest():
                # What it reserves: its postings, with any `amount_max` resolved.
                self.track(Hold(request.tenant, request.id, outcome.moved or request.postings,
                                now_ms + request.expires_in_s * 1000, position))
            case CaptureRequest() | VoidRequest():
                hold = self.holds[(request.tenant, outcome.target or "")]
                assert hold.state == HELD
                hold.state, hold.closed_by, hold.closed_at_ms = (
                    CAPTURED if isinstance(request, CaptureRequest) else VOIDED, request.id, now_ms)
            case ReverseRequest():
                self.originals[(request.tenant, outcome.target or "")].reversed += outcome.reversed
            case PolicyRequest():
                self.learn_policy((request.tenant, request.account),
                                  Policy(dict(request.limits), request.frozen, request.metadata))
            case MonitorRequest():
                self.learn_monitor(Monitor(request.tenant, request.id, request.watch))
                self.monitor_counts[request.tenant] = self.monitor_count(request.tenant) + 1
            case UnmonitorRequest():
                monitor = self.monitors[(request.tenant, outcome.target or "")]
                monitor.active = False
                self.monitor_counts[request.tenant] = self.monitor_count(request.tenant) - 1
                key = (request.tenant, monitor.watch.account)
                left = tuple(m for m in self.watched.get(key, ()) if m.id != monitor.id)
                if left:
                    self.watched[key] = left
                else:
                    self.watched.pop(key, None)
            case _:
                assert_never(request)

    def track(self, hold: Hold) -> None:
        """Know `hold` (created, or loaded from PostgreSQL), and when it expires if it is open."""
        self.holds[(hold.tenant, hold.id)] = hold
        if hold.state == HELD:
            heapq.heappush(self.expiring.setdefault(hold.position.partition, []),
                           (hold.expires_at_ms, hold.tenant, hold.id))

    def expire(self, partition: int, now_ms: int) -> list[Hold]:
        """Close, as expired, every open hold of `partition` whose time has come by `now_ms`; release what
        they held. Returns them, in the order they expired."""
        heap = self.expiring.get(partition)
        expired: list[Hold] = []
        while heap and heap[0][0] <= now_ms:
            _, tenant, hold_id = heapq.heappop(heap)
            hold = self.holds.get((tenant, hold_id))
            if hold is None or hold.state != HELD:
                continue
            hold.state, hold.closed_at_ms = EXPIRED, hold.expires_at_ms
            self.bump(tenant, hold_accounts(hold.postings))
            for p in hold.postings:
                key = (tenant, p.source, p.asset)
                self.held[key] = self.held_of(key) - p.amount
                assert self.held[key] >= 0
            expired.append(hold)
        return expired

    def extend_chain(self, tenant: str, body: bytes) -> tuple[int, str, str]:
        """Link one more committed transaction of `tenant`: (its index from 1, its hash, the previous hash)."""
        count, head = self.chains.get(tenant, (0, GENESIS))
        hashed = link(head, body)
        self.chains[tenant] = (count + 1, hashed)
        return count + 1, hashed, head

    def count_entry(self, key: BalanceKey, amount: int) -> tuple[int, int]:
        """One more entry on `key`: its running credit total and number after it (what a statement reads)."""
        credits, count = self.turnover.get(key, (0, 0))
        after = (credits + amount if amount > 0 else credits, count + 1)
        self.turnover[key] = after
        return after

    def bind_batch(self, batch: BatchRequest, status: Status, reason: str | None, position: Position) -> Decided:
        """A decided batch takes its idempotency key: a later request with the key repeats the whole batch."""
        assert batch.idempotency_key is not None
        assert (batch.tenant, batch.idempotency_key) not in self.by_key
        decided = Decided(batch.id, status, reason, batch.fingerprint(), position)
        self.by_key[(batch.tenant, batch.idempotency_key)] = decided
        self.batches[(batch.tenant, batch.id)] = tuple(i.id for i in batch.items)
        return decided

    def repeated_items(self, batch: BatchRequest, prior: Decided) -> tuple[str, ...] | None:
        """The ids of the items of the batch that `prior` (what the batch's key bound) decided, when `batch`
        repeats it exactly; None when the key was bound to another body (or to a single request)."""
        originals = self.batches.get((batch.tenant, prior.transaction_id))
        if originals is None or len(originals) != len(batch.items) or prior.fingerprint != batch.fingerprint():
            return None
        return originals


    def remember_replay(self, request: TransactionRequest, original: Decided) -> bool:
        """A repeat under an id of its own: from now on that id resolves to the original and is taken.
        False when the id was already known (the repeat of a repeat)."""
        key = (request.tenant, request.id)
        if key in self.by_id:
            return False
        self.by_id[key] = original
        return True

    def apply_tenant(self, request: TenantRequest, outcome: Outcome) -> None:
        if outcome.status == "committed":
            assert not self.tenant_exists(request.tenant)
            self.tenants[request.tenant] = True

    def record_invalid(self, tenant: str, transaction_id: str, position: Position) -> None:
        """Remember a malformed request under its id so a later request cannot reuse that id (nor reverse it:
        the ledger knows it exactly as it knows the row stored for it)."""
        self.by_id[(tenant, transaction_id)] = Decided(transaction_id, "rejected", INVALID, b"", position)
        self.originals[(tenant, transaction_id)] = Original(TRANSFER, "rejected", ())


class Scratch:
    """A ledger to decide an atomic batch of transfers on: reads fall through to `base`, writes stay here,
    and the whole is dropped afterwards. Transfers change balances, ids, keys and what is reversible; never
    what is held, a hold, a policy or a tenant."""

    def __init__(self, base: Ledger) -> None:
        self.base = base
        self.balances: dict[BalanceKey, int] = {}
        self.by_id: dict[tuple[str, str], Decided] = {}
        self.by_key: dict[tuple[str, str], Decided] = {}
        self.versions: dict[tuple[str, str], int] = {}

    def balance(self, key: BalanceKey) -> int:
        return self.balances[key] if key in self.balances else self.base.balance(key)

    def version(self, tenant: str, account: str) -> int:
        key = (tenant, account)
        return self.versions[key] if key in self.versions else self.base.version(tenant, account)

    def held_of(self, key: BalanceKey) -> int:
        return self.base.held_of(key)

    def decided_key(self, tenant: str, idempotency_key: str) -> Decided | None:
        return self.by_key.get((tenant, idempotency_key)) or self.base.decided_key(tenant, idempotency_key)

    def decided_id(self, tenant: str, transaction_id: str) -> Decided | None:
        return self.by_id.get((tenant, transaction_id)) or self.base.decided_id(tenant, transaction_id)

    def tenant_exists(self, tenant: str) -> bool:
        return self.base.tenant_exists(tenant)

    def hold(self, tenant: str, hold_id: str) -> Hold | None:
        return self.base.hold(tenant, hold_id)

    def original(self, tenant: str, transaction_id: str) -> Original | None:
        return self.base.original(tenant, transaction_id)

    def policy(self, tenant: str, account: str) -> Policy:
        return self.base.policy(tenant, account)

    def restricted(self) -> bool:
        return self.base.restricted()

    def monitor(self, tenant: str, monitor_id: str) -> Monitor | None:
        return self.base.monitor(tenant, monitor_id)

    def watching(self, tenant: str, account: str) -> tuple[Monitor, ...]:
        return self.base.watching(tenant, account)

    def monitor_count(self, tenant: str) -> int:
        return self.base.monitor_count(tenant)

    def apply(self, request: TransactionRequest, outcome: Outcome, position: Position) -> None:
        decided = Decided(request.id, outcome.status, outcome.reason, request.fingerprint(), position)
        self.by_id[(request.tenant, request.id)] = decided
        for entry in outcome.entries:
            self.balances[(request.tenant, entry.account, entry.asset)] = entry.balance_after
        for account in changed_accounts(self, request, outcome):
            self.versions[(request.tenant, account)] = self.version(request.tenant, account) + 1
        if request.idempotency_key is not None and outcome.reason not in KEY_UNBOUND:
            self.by_key[(request.tenant, request.idempotency_key)] = decided
