"""An independent model of the ledger's decisions, written apart from `ledger.decisions` and `ledger.fold`
from the contract's rules alone: plain dictionaries and loops. The property tests compare both PostgreSQL and
the projector's own fold with it, so a wrong rule in the fold cannot hide behind itself.

It takes requests already classified by the test that generated them (it knows which ones it broke), so it
models the decisions, not the parsing. Holds never expire here (the histories are shorter than any expiry).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Posting = tuple[str, str, int, str]  # source, destination, amount, asset
Key = tuple[str, str]


@dataclass
class Model:
    """The ledger as a few dictionaries: what each (tenant, id) and (tenant, key) stands for, what is
    recorded as a transaction row, the balances, what is held, the holds and what was moved."""

    balances: dict[tuple[str, str, str], int] = field(default_factory=dict)
    held: dict[tuple[str, str, str], int] = field(default_factory=dict)
    ids: dict[Key, tuple[str, str | None, Any]] = field(default_factory=dict)
    keys: dict[Key, tuple[str, str | None, Any]] = field(default_factory=dict)
    rows: dict[Key, tuple[str, str | None]] = field(default_factory=dict)
    holds: dict[Key, dict[str, Any]] = field(default_factory=dict)
    moved: dict[Key, dict[str, Any]] = field(default_factory=dict)  # what a committed movement moved
    key_owner: dict[Key, str] = field(default_factory=dict)  # (tenant, key) -> the id of the request it binds
    alias: dict[Key, str] = field(default_factory=dict)  # a repeat's id -> the id of the original it stands for
    policies: dict[Key, dict[str, Any]] = field(default_factory=dict)  # (tenant, account) -> limits, frozen

    def malformed(self, tenant: str, id: str, readable: bool) -> None:
        """A record that is not a request; recorded under its id when tenant and id are readable and free."""
        if readable and (tenant, id) not in self.ids:
            self.ids[(tenant, id)] = ("rejected", "invalid", None)
            self.rows[(tenant, id)] = ("rejected", "invalid")
            self.moved[(tenant, id)] = {"kind": "transfer", "status": "rejected", "postings": [], "reversed": 0}

    def request(self, tenant: str, id: str, kind: str, key: str | None, postings: list[Posting] | None = None,
                target: str | None = None, amount: int | None = None, limits: dict[str, int] | None = None,
                frozen: bool = False) -> None:
        body = (kind, tuple(postings or ()), target, amount, tuple(sorted((limits or {}).items())), frozen)
        if (tenant, id) in self.ids:
            return  # the id is taken: a repeat (same body) or a conflict; either way nothing new is recorded
        if key is not None and (tenant, key) in self.keys:
            original = self.keys[(tenant, key)]
            if original[2] == body:
                self.ids[(tenant, id)] = original  # a repeat under a new id: it stands for the original
                self.alias[(tenant, id)] = self.key_owner[(tenant, key)]
            else:
                self.ids[(tenant, id)] = ("rejected", "idempotency_conflict", body)
                self.rows[(tenant, id)] = ("rejected", "idempotency_conflict")
                self.moved[(tenant, id)] = {"kind": kind, "status": "rejected", "postings": [], "reversed": 0}
            return
        decide = {"transfer": self._transfer, "hold": self._hold, "capture": self._capture, "void": self._void,
                  "reverse": self._reverse, "policy": self._policy}[kind]
        status, reason, moved = decide(tenant, id, body)
        self.ids[(tenant, id)] = (status, reason, body)
        self.rows[(tenant, id)] = (status, reason)
        self.moved[(tenant, id)] = {"kind": kind, "status": status, "postings": moved, "reversed": 0}
        if key is not None:
            self.keys[(tenant, key)] = (status, reason, body)
            self.key_owner[(tenant, key)] = id

    def atomic(self, tenant: str, items: list[tuple[str, list[Posting], str | None]]) -> None:
        """Transfers that all commit, or are all rejected with the first failure's reason (a repeat of an
        earlier request stays a repeat)."""
        trial = copy.deepcopy(self)
        reason = None
        for id, postings, key in items:
            trial.request(tenant, id, "transfer", key, postings)
            status, why, _ = trial.ids[(tenant, id)]
            if status == "rejected":
                reason = why
                break
        if reason is None:
            for id, postings, key in items:
                self.request(tenant, id, "transfer", key, postings)
            return
        for id, postings, key in items:
            if (tenant, id) in self.ids or (key is not None and (tenant, key) in self.keys):
                self.request(tenant, id, "transfer", key, postings)
                continue
            body = ("transfer", tuple(postings), None, None, (), False)
            self.ids[(tenant, id)] = ("rejected", reason, body)
            self.rows[(tenant, id)] = ("rejected", reason)
            self.moved[(tenant, id)] = {"kind": "transfer", "status": "rejected", "postings": [], "reversed": 0}
            if key is not None and reason not in ("idempotency_conflict", "unknown_tenant"):
                self.keys[(tenant, key)] = ("rejected", reason, body)
                self.key_owner[(tenant, key)] = id

    # --- one function per kind: (status, reason, postings moved) ---------------------------------------

    def _transfer(self, tenant: str, id: str, body: tuple[Any, ...]) -> tuple[str, str | None, list[Posting]]:
        return self._move(tenant, list(body[1]), check_funds=True)

    def _policy(self, tenant: str, id: str, body: tuple[Any, ...]) -> tuple[str, str | None, list[Posting]]:
        account, limits = body[2], dict(body[4])
        before = self.policies.get((tenant, account), {"limits": {}})["limits"]
        for asset in limits.keys() | before.keys():
            k = (tenant, account, asset)
            if self.balances.get(k, 0) - self.held.get(k, 0) < -limits.get(asset, 0):
                return "rejected", "overdraft_in_use", []
        self.policies[(tenant, account)] = {"limits": limits, "frozen": body[5]}
        return "committed", None, []

    def _frozen(self, tenant: str, postings: list[Posting]) -> bool:
        return any(self.policies.get((tenant, account), {}).get("frozen", False)
                   for source, destination, _, _ in postings for account in (source, destination))

    def _hold(self, tenant: str, id: str, body: tuple[Any, ...]) -> tuple[str, str | None, list[Posting]]:
        if self._frozen(tenant, list(body[1])):
            return "rejected", "account_frozen", []
        held = dict(self.held)
        for source, _, amount, asset in body[1]:
            held[(tenant, source, asset)] = held.get((tenant, source, asset), 0) + amount
        if any(v > INT64_MAX for v in held.values()) or self._unbounded(self.balances, held):
            return "rejected", "overflow", []
        if self._short(held=held):
            return "rejected", "insufficient_funds", []
        self.held = held
        self.holds[(tenant, id)] = {"postings": list(body[1]), "state": "held"}
        return "committed", None, []

    def _open(self, tenant: str, target: str) -> dict[str, Any] | tuple[str, str | None, list[Posting]]:
        hold = self.holds.get((tenant, self.alias.get((tenant, target), target)))
        if hold is None:
            return "rejected", "not_found", []
        if hold["state"] != "held":
            return "rejected", "hold_closed", []
        return hold

    def _release(self, tenant: str, hold: dict[str, Any], state: str) -> None:
        for source, _, amount, asset in hold["postings"]:
            self.held[(tenant, source, asset)] -= amount
        hold["state"] = state

    def _capture(self, tenant: str, id: str, body: tuple[Any, ...]) -> tuple[str, str | None, list[Posting]]:
        hold = self._open(tenant, body[2])
        if isinstance(hold, tuple):
            return hold
        postings = list(hold["postings"])
        amount = body[3]
        if amount is not None:
            if len(postings) != 1:
                return "rejected", "amount_needs_one_posting", []
            if amount > postings[0][2]:
                return "rejected", "amount_exceeds_hold", []
            postings = [(postings[0][0], postings[0][1], amount, postings[0][3])]
        released = dict(self.held)
        for source, _, amount_held, asset in hold["postings"]:
            released[(tenant, source, asset)] -= amount_held
        status, reason, moved = self._move(tenant, postings, check_funds=False, held=released)
        if status == "committed":
            self._release(tenant, hold, "captured")
        return status, reason, moved

    def _void(self, tenant: str, id: str, body: tuple[Any, ...]) -> tuple[str, str | None, list[Posting]]:
        hold = self._open(tenant, body[2])
        if isinstance(hold, tuple):
            return hold
        self._release(tenant, hold, "voided")
        return "committed", None, []

    def _reverse(self, tenant: str, id: str, body: tuple[Any, ...]) -> tuple[str, str | None, list[Posting]]:
        original = self.moved.get((tenant, self.alias.get((tenant, body[2]), body[2])))
        if original is None:
            return "rejected", "not_found", []
        # For one posting, the amount not reversed yet; several are reversed whole, once.
        single = len(original["postings"]) == 1
        remaining = original["postings"][0][2] - original["reversed"] if single else 1 - original["reversed"]
        if original["kind"] not in ("transfer", "capture", "reverse") or original["status"] != "committed" \
                or remaining <= 0:
            return "rejected", "not_reversible", []
        amount = body[3]
        if amount is not None and not single:
            return "rejected", "amount_needs_one_posting", []
        if amount is not None and amount > remaining:
            return "rejected", "amount_exceeds_remaining", []
        amount = remaining if amount is None else amount
        back = [(d, s, amount if single else a, x) for s, d, a, x in original["postings"]]
        status, reason, moved = self._move(tenant, back, check_funds=True)
        if status == "committed":
            original["reversed"] += amount
        return status, reason, moved

    def _unbounded(self, balances: dict[tuple[str, str, str], int], held: dict[tuple[str, str, str], int]) -> bool:
        """An available balance (posted minus held) past int64: what reads show must fit it."""
        return any(not INT64_MIN <= balances.get(k, 0) - held.get(k, 0) <= INT64_MAX
                   for k in balances.keys() | held.keys())

    def _move(self, tenant: str, postings: list[Posting], check_funds: bool,
              held: dict[tuple[str, str, str], int] | None = None) -> tuple[str, str | None, list[Posting]]:
        if self._frozen(tenant, postings):
            return "rejected", "account_frozen", []
        after = dict(self.balances)
        for source, destination, amount, asset in postings:
            for account, change in ((source, -amount), (destination, amount)):
                k = (tenant, account, asset)
                after[k] = after.get(k, 0) + change
                if not INT64_MIN <= after[k] <= INT64_MAX:
                    return "rejected", "overflow", []
        if self._unbounded(after, self.held if held is None else held):
            return "rejected", "overflow", []
        if check_funds and self._short(balances=after):
            return "rejected", "insufficient_funds", []
        self.balances = after
        return "committed", None, postings

    def _short(self, balances: dict[tuple[str, str, str], int] | None = None,
               held: dict[tuple[str, str, str], int] | None = None) -> bool:
        """A customer account whose available balance decreases past minus its limit."""
        balances, held = balances or self.balances, held or self.held
        for k in balances.keys() | held.keys():
            before = self.balances.get(k, 0) - self.held.get(k, 0)
            after = balances.get(k, 0) - held.get(k, 0)
            limit = self.policies.get((k[0], k[1]), {"limits": {}})["limits"].get(k[2], 0)
            if not k[1].startswith("@") and after < before and after < -limit:
                return True
        return False
