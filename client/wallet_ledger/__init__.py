"""The Python SDK of the wallet ledger's HTTP API (contract v3).

    from wallet_ledger import LedgerClient, Posting

    with LedgerClient("http://127.0.0.1:8000", api_key="...", tenant="acme") as ledger:
        tx = ledger.transfer([Posting("@world", "alice", 10_000, "USD/2")])
        print(ledger.get_account("alice").balances)

`AsyncLedgerClient` offers the same methods for asyncio. Webhook receivers verify deliveries with
`verify_signature` / `construct_event`; `wallet_ledger.kafka.KafkaProducer` (the `kafka` extra) appends
transfers straight to the ledger's log.
"""

from wallet_ledger.client import (
    DEFAULT_DEADLINE_S,
    DEFAULT_TIMEOUT_S,
    AsyncLedgerClient,
    LedgerClient,
    __version__,
)
from wallet_ledger.errors import (
    Conflict,
    DeadlineExceeded,
    Forbidden,
    InvalidRequest,
    LedgerError,
    NotFound,
    RateLimited,
    SignatureError,
    Unauthorized,
    Unavailable,
)
from wallet_ledger.inputs import Assertion, BatchItem, Posting, PostingAtMost
from wallet_ledger.kafka import KafkaProducer, ProduceError, Submitted
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
from wallet_ledger.retries import RetryPolicy
from wallet_ledger.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, construct_event, sign, verify_signature

__all__ = [
    "DEFAULT_DEADLINE_S",
    "DEFAULT_TIMEOUT_S",
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "Account",
    "Assertion",
    "AsyncLedgerClient",
    "BalanceSums",
    "BatchItem",
    "Chain",
    "Conflict",
    "DeadlineExceeded",
    "Delivery",
    "Entry",
    "Forbidden",
    "Hold",
    "InvalidRequest",
    "KafkaProducer",
    "LedgerClient",
    "LedgerError",
    "Monitor",
    "NotFound",
    "Page",
    "Pending",
    "Posting",
    "PostingAtMost",
    "ProduceError",
    "RateLimited",
    "RetryPolicy",
    "SignatureError",
    "Snapshot",
    "Statement",
    "Submitted",
    "Transaction",
    "Unauthorized",
    "Unavailable",
    "Webhook",
    "__version__",
    "construct_event",
    "sign",
    "verify_signature",
]
