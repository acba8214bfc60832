"""The contract's routes, one module per resource: `operators` (tenants, keys, limits), `transactions` (every
write, and reads of transactions and holds), `accounts` (balances, snapshots, sums, history, CSV, statements);
`common` holds what they share. Each handler authenticates from memory, validates, then does one thing."""

from api.routes.accounts import balance_sums, get_account, get_entries, get_statement, list_accounts
from api.routes.common import ENTRIES_LIMIT_DEFAULT, ENTRIES_LIMIT_MAX, Context, account, authorize, params
from api.routes.operators import create_key, create_tenant, get_limits, put_limits, revoke_key
from api.routes.transactions import (
    capture_hold,
    get_chain,
    get_hold,
    get_transaction,
    list_transactions,
    post_batch,
    post_hold,
    post_transaction,
    put_account,
    reverse_transaction,
    void_hold,
)

__all__ = [
    "ENTRIES_LIMIT_DEFAULT",
    "ENTRIES_LIMIT_MAX",
    "Context",
    "account",
    "authorize",
    "balance_sums",
    "capture_hold",
    "create_key",
    "create_tenant",
    "get_account",
    "get_chain",
    "get_entries",
    "get_hold",
    "get_limits",
    "get_statement",
    "get_transaction",
    "list_accounts",
    "list_transactions",
    "params",
    "post_batch",
    "post_hold",
    "post_transaction",
    "put_account",
    "put_limits",
    "reverse_transaction",
    "revoke_key",
    "void_hold",
]
