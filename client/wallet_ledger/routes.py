"""Every route of the contract, described once: `_Api` builds the `Call` of each method of the clients."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from wallet_ledger.calls import (
    Call,
    Json,
    Metadata,
    Time,
    _batch,
    _decided,
    _fields,
    _last_position,
    _page,
    _params,
    _plain,
    _policy_position,
    _position,
    _quote,
    _text,
    _time,
    _webhooks,
)
from wallet_ledger.inputs import AssertionLike, BatchItem, PostingLike, batch_item_json, transfer_body
from wallet_ledger.models import (
    Account,
    BalanceSums,
    Chain,
    Delivery,
    Entry,
    Hold,
    Monitor,
    Page,
    Pending,
    Snapshot,
    Statement,
    Transaction,
    Webhook,
)

T = TypeVar("T")

SERVER_WAIT_MS = 5000  # the server's default `timeout_ms` for a decision (`wait=true`) or a `min_position`


class _Api:
    """Builds the `Call` of every method of the clients (their docstrings are these)."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.root = f"/v1/tenants/{_quote(tenant)}"

    @staticmethod
    def _key(idempotency_key: str | None) -> str:
        return idempotency_key if idempotency_key is not None else str(uuid.uuid4())

    def _write(self, method: str, path: str, body: Json | None, parse: Callable[[httpx.Response], T], *,
               idempotency_key: str | None, wait: bool, timeout_ms: int | None,
               position: Callable[[T], str | None] = _position) -> Call[T]:
        return Call(method, self.root + path, parse, _params(wait=True if wait else None, timeout_ms=timeout_ms),
                    body=body, idempotency_key=self._key(idempotency_key),
                    server_wait_s=(timeout_ms or SERVER_WAIT_MS) / 1000 if wait else None, position=position)

    def _read(self, path: str, parse: Callable[[httpx.Response], T], *, min_position: str | None,
              timeout_ms: int | None, query: tuple[tuple[str, str], ...] = (),
              accept: str = "application/json") -> Call[T]:
        return Call("GET", self.root + path, parse, query + _params(timeout_ms=timeout_ms), reads=True,
                    min_position=min_position, server_wait_s=(timeout_ms or SERVER_WAIT_MS) / 1000, accept=accept)

    # --- transactions ---

    def transfer(self, postings: Sequence[PostingLike] | PostingLike, *, metadata: Metadata | None = None,
                 reference: str | None = None, idempotency_key: str | None = None, wait: bool = True,
                 timeout_ms: int | None = None, if_version: Mapping[str, int] | None = None,
                 assert_: Sequence[AssertionLike] | None = None) -> Call[Transaction | Pending]:
        """Move money: `postings` (1 to 128 `Posting`s, or `Posting.at_most(...)`) applied all or none.

        With `wait` (the default) the answer is the committed `Transaction` (a `Conflict` whose `code` is the
        reason if the ledger rejects it: `insufficient_funds`, `version_conflict`, `assertion_failed`, ...), or
        `Pending` if it was not decided within `timeout_ms` (server default 5000). `if_version` ({address:
        version}) and `assert_` (`Assertion`s) are conditions decided with it. The `idempotency_key` (a new
        UUID unless given) makes retries safe: a repeat answers with the original decision."""
        body = transfer_body(postings, metadata=metadata, reference=reference, if_version=if_version,
                             assert_=assert_)
        return self._write("POST", "/transactions", body, _decided(Transaction.parse),
                           idempotency_key=idempotency_key, wait=wait, timeout_ms=timeout_ms)

    def batch(self, transactions: Sequence[BatchItem | Mapping[str, Any]], *, atomic: bool = True,
              idempotency_key: str | None = None, wait: bool = True,
              timeout_ms: int | None = None) -> Call[list[Transaction | Pending]]:
        """Append up to 1,000 transfers (`BatchItem`s, or mappings with `postings`, `metadata`, `reference`,
        `idempotency_key`, `if_version`, `assert`) in order. `atomic` (the default here): one record, all
        committed or all rejected (each then carries the reason of the first that failed); otherwise each is
        decided on its own. The answer lists every item's `Transaction` (rejected ones included, with their
        `reason`) or `Pending`. The batch's `idempotency_key` binds the whole batch."""
        body: Json = {"transactions": [batch_item_json(t) for t in transactions], "atomic": atomic}
        return self._write("POST", "/transactions/batch", body, _batch, idempotency_key=idempotency_key,
                           wait=wait, timeout_ms=timeout_ms, position=_last_position)

    def get_transaction(self, id: str, *, min_position: str | None = None,
                        timeout_ms: int | None = None) -> Call[Transaction]:
        """A transaction and its outcome (a repeat of an idempotency key shows `replay_of`)."""
        return self._read(f"/transactions/{_quote(id)}", _plain(Transaction.parse), min_position=min_position,
                          timeout_ms=timeout_ms)

    def list_transactions(self, *, account: str | None = None, reference: str | None = None,
                          status: str | None = None, since: Time | None = None, until: Time | None = None,
                          metadata: Metadata | None = None, limit: int | None = None, cursor: str | None = None,
                          min_position: str | None = None, timeout_ms: int | None = None) -> Call[Page[Transaction]]:
        """One page of transactions, newest first, by filters: `account` (moved money on it), `reference`,
        `status` (committed, rejected), `since`/`until` (creation time, inclusive), `metadata` (every
        KEY=VALUE). `limit` ≤ 500 (default 50); pass the page's `next_cursor` as `cursor` for the next one."""
        return self._read("/transactions", _page("transactions", Transaction.parse), min_position=min_position,
                          timeout_ms=timeout_ms, query=_params(
                              account=account, reference=reference, status=status,
                              since=None if since is None else _time(since, "since"),
                              until=None if until is None else _time(until, "until"), limit=limit, cursor=cursor,
                          ) + tuple((f"metadata.{k}", v) for k, v in (metadata or {}).items()))

    def reverse(self, transaction_id: str, amount: int | None = None, *, metadata: Metadata | None = None,
                reference: str | None = None, idempotency_key: str | None = None, wait: bool = True,
                timeout_ms: int | None = None) -> Call[Transaction | Pending]:
        """Reverse a transaction: a new one with every posting's source and destination swapped (all of it,
        or `amount` of a one-posting transaction). `Conflict` codes: `not_reversible`,
        `amount_exceeds_remaining`, `insufficient_funds`."""
        body = _fields(amount=amount, metadata=metadata, reference=reference)
        return self._write("POST", f"/transactions/{_quote(transaction_id)}/reverse", body,
                           _decided(Transaction.parse), idempotency_key=idempotency_key, wait=wait,
                           timeout_ms=timeout_ms)

    # --- holds ---

    def hold(self, postings: Sequence[PostingLike] | PostingLike, *, expires_in_s: int | None = None,
             metadata: Metadata | None = None, reference: str | None = None, idempotency_key: str | None = None,
             wait: bool = True, timeout_ms: int | None = None, if_version: Mapping[str, int] | None = None,
             assert_: Sequence[AssertionLike] | None = None) -> Call[Hold | Pending]:
        """Place a hold: reserve the postings' amounts on their sources (their `available` balance) until it
        is captured, voided, or expires (`expires_in_s`, server default 7 days)."""
        body = transfer_body(postings, metadata=metadata, reference=reference, if_version=if_version,
                             assert_=assert_, expires_in_s=expires_in_s)
        return self._write("POST", "/holds", body, _decided(Hold.parse), idempotency_key=idempotency_key,
                           wait=wait, timeout_ms=timeout_ms)

    def capture(self, hold_id: str, amount: int | None = None, *, metadata: Metadata | None = None,
                reference: str | None = None, idempotency_key: str | None = None, wait: bool = True,
                timeout_ms: int | None = None) -> Call[Transaction | Pending]:
        """Capture a hold: move the money as a new committed transaction (all of it, or `amount` of a
        one-posting hold, the rest released). `Conflict` codes: `hold_closed`, `hold_expired`."""
        body = _fields(amount=amount, metadata=metadata, reference=reference)
        return self._write("POST", f"/holds/{_quote(hold_id)}/capture", body, _decided(Transaction.parse),
                           idempotency_key=idempotency_key, wait=wait, timeout_ms=timeout_ms)

    def void(self, hold_id: str, *, metadata: Metadata | None = None, reference: str | None = None,
             idempotency_key: str | None = None, wait: bool = True,
             timeout_ms: int | None = None) -> Call[Hold | Pending]:
        """Void a hold: release what it reserved (`Conflict` `hold_closed` if it is closed already)."""
        body = _fields(metadata=metadata, reference=reference)
        return self._write("POST", f"/holds/{_quote(hold_id)}/void", body, _decided(Hold.parse),
                           idempotency_key=idempotency_key, wait=wait, timeout_ms=timeout_ms)

    def get_hold(self, id: str, *, min_position: str | None = None, timeout_ms: int | None = None) -> Call[Hold]:
        """A hold and its state: held, captured, voided, expired or rejected."""
        return self._read(f"/holds/{_quote(id)}", _plain(Hold.parse), min_position=min_position,
                          timeout_ms=timeout_ms)

    # --- accounts ---

    def get_account(self, address: str, at: Time | None = None, *, min_position: str | None = None,
                    timeout_ms: int | None = None) -> Call[Account]:
        """An account's balances, held and available amounts, version and policy; `at` gives the posted
        balances as of that time."""
        return self._read(f"/accounts/{_quote(address)}", _plain(Account.parse), min_position=min_position,
                          timeout_ms=timeout_ms, query=_params(at=None if at is None else _time(at, "at")))

    def snapshot(self, addresses: Sequence[str], *, min_position: str | None = None,
                 timeout_ms: int | None = None) -> Call[Snapshot]:
        """1 to 100 accounts, in the order asked, all read as of one position of the log."""
        if isinstance(addresses, str):
            addresses = [addresses]
        return self._read("/accounts", _plain(Snapshot.parse), min_position=min_position, timeout_ms=timeout_ms,
                          query=tuple(("address", a) for a in addresses))

    def list_accounts(self, prefix: str | None = None, *, limit: int | None = None, cursor: str | None = None,
                      min_position: str | None = None, timeout_ms: int | None = None) -> Call[Page[Account]]:
        """One page of accounts whose address starts with `prefix`, by address."""
        return self._read("/accounts", _page("accounts", Account.parse), min_position=min_position,
                          timeout_ms=timeout_ms, query=_params(prefix=prefix, limit=limit, cursor=cursor))

    def balances(self, prefix: str | None = None, *, min_position: str | None = None,
                 timeout_ms: int | None = None) -> Call[BalanceSums]:
        """Per asset, the sum of the balances of the accounts whose address starts with `prefix` (all of the
        tenant's, `@world` included, sum to zero)."""
        return self._read("/balances", _plain(BalanceSums.parse), min_position=min_position, timeout_ms=timeout_ms,
                          query=_params(prefix=prefix))

    def entries(self, address: str, asset: str | None = None, *, limit: int | None = None,
                cursor: str | None = None, min_position: str | None = None,
                timeout_ms: int | None = None) -> Call[Page[Entry]]:
        """One page of an account's history, newest first (`amount` signed: negative = debit)."""
        return self._read(f"/accounts/{_quote(address)}/entries", _page("entries", Entry.parse),
                          min_position=min_position, timeout_ms=timeout_ms,
                          query=_params(asset=asset, limit=limit, cursor=cursor))

    def export_csv(self, address: str, asset: str | None = None, *, min_position: str | None = None,
                   timeout_ms: int | None = None) -> Call[str]:
        """Every entry of the account (of `asset`, if given) as CSV text, newest first, with the header row
        `transaction_id,asset,amount,balance_after,committed_at`."""
        return self._read(f"/accounts/{_quote(address)}/entries", _text, min_position=min_position,
                          timeout_ms=timeout_ms, accept="text/csv", query=_params(asset=asset))

    def statement(self, address: str, asset: str, from_: Time | None = None, until: Time | None = None, *,
                  min_position: str | None = None, timeout_ms: int | None = None) -> Call[Statement]:
        """The statement of a period (`until` exclusive; by default the account's first entry to now):
        opening + credits - debits = closing."""
        return self._read(f"/accounts/{_quote(address)}/statement", _plain(Statement.parse),
                          min_position=min_position, timeout_ms=timeout_ms, query=_params(**{
                              "asset": asset, "from": None if from_ is None else _time(from_, "from_"),
                              "until": None if until is None else _time(until, "until")}))

    def set_policy(self, address: str, *, overdraft_limit: Mapping[str, int] | None = None,
                   frozen: bool | None = None, metadata: Metadata | None = None, idempotency_key: str | None = None,
                   wait: bool = True, timeout_ms: int | None = None) -> Call[Account | Pending]:
        """Replace the account's whole policy: `overdraft_limit` ({asset: limit}; an asset not named gets 0),
        `frozen` (takes part in no new transfer, hold or capture) and `metadata`."""
        body = _fields(overdraft_limit=overdraft_limit, frozen=frozen, metadata=metadata)
        return self._write("PUT", f"/accounts/{_quote(address)}", body, _decided(Account.parse),
                           idempotency_key=idempotency_key, wait=wait, timeout_ms=timeout_ms,
                           position=_policy_position)

    def chain(self, *, min_position: str | None = None, timeout_ms: int | None = None) -> Call[Chain]:
        """The tenant's tamper-evident chain: `count` committed movements, `head` the last one's hash."""
        return self._read("/chain", _plain(Chain.parse), min_position=min_position, timeout_ms=timeout_ms)

    # --- webhooks ---

    def create_webhook(self, url: str, events: Sequence[str] = ("*",)) -> Call[Webhook]:
        """Register an endpoint for `events` (`transaction.committed`, `transaction.rejected`, `hold.created`,
        `hold.captured`, `hold.voided`, `hold.expired`, `balance.crossed`, or "*"). The answer's `secret`
        verifies the deliveries' signatures (`wallet_ledger.verify_signature`) and is shown only here.
        `InvalidRequest` `url_not_allowed` for a URL whose host is or resolves to a non-public address."""
        if isinstance(events, str):
            events = [events]
        return Call("POST", self.root + "/webhooks", _plain(Webhook.parse), body={"url": url, "events": list(events)},
                    resendable=False)

    def list_webhooks(self) -> Call[list[Webhook]]:
        """The tenant's endpoints (without their secrets)."""
        return Call("GET", self.root + "/webhooks", _webhooks)

    def get_webhook(self, id: str) -> Call[Webhook]:
        """An endpoint."""
        return Call("GET", f"{self.root}/webhooks/{_quote(id)}", _plain(Webhook.parse))

    def delete_webhook(self, id: str) -> Call[Webhook]:
        """Delete an endpoint (what it still had to receive is cancelled); the answer shows `deleted_at`."""
        return Call("DELETE", f"{self.root}/webhooks/{_quote(id)}", _plain(Webhook.parse), resendable=False)

    def deliveries(self, webhook_id: str, *, limit: int | None = None,
                   cursor: str | None = None) -> Call[Page[Delivery]]:
        """One page of an endpoint's delivery attempts, newest first (`limit` ≤ 1000, default 100)."""
        return Call("GET", f"{self.root}/webhooks/{_quote(webhook_id)}/deliveries", _page("deliveries", Delivery.parse),
                    _params(limit=limit, cursor=cursor))

    # --- monitors ---

    def create_monitor(self, account: str, asset: str, below: int | None = None, above: int | None = None, *,
                       metadata: Metadata | None = None, reference: str | None = None,
                       idempotency_key: str | None = None, wait: bool = True,
                       timeout_ms: int | None = None) -> Call[Monitor | Pending]:
        """Watch an account's posted balance in `asset`: `balance.crossed` fires when a committed transaction
        takes it from >= `below` to < `below`, or from <= `above` to > `above` (at least one bound)."""
        body = {"account": account, "asset": asset,
                **_fields(below=below, above=above, metadata=metadata, reference=reference)}
        return self._write("POST", "/monitors", body, _decided(Monitor.parse), idempotency_key=idempotency_key,
                           wait=wait, timeout_ms=timeout_ms)

    def get_monitor(self, id: str, *, min_position: str | None = None,
                    timeout_ms: int | None = None) -> Call[Monitor]:
        """A monitor (active or removed)."""
        return self._read(f"/monitors/{_quote(id)}", _plain(Monitor.parse), min_position=min_position,
                          timeout_ms=timeout_ms)

    def list_monitors(self, *, removed: bool = False, limit: int | None = None, cursor: str | None = None,
                      min_position: str | None = None, timeout_ms: int | None = None) -> Call[Page[Monitor]]:
        """One page of the tenant's monitors by id: the active ones (`removed=True`: all)."""
        return self._read("/monitors", _page("monitors", Monitor.parse), min_position=min_position,
                          timeout_ms=timeout_ms,
                          query=_params(limit=limit, cursor=cursor, removed=True if removed else None))

    def delete_monitor(self, id: str, *, idempotency_key: str | None = None, wait: bool = True,
                       timeout_ms: int | None = None) -> Call[Monitor | Pending]:
        """Remove a monitor (`NotFound` if it is not active)."""
        return self._write("DELETE", f"/monitors/{_quote(id)}", None, _decided(Monitor.parse),
                           idempotency_key=idempotency_key, wait=wait, timeout_ms=timeout_ms)
