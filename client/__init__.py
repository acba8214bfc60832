"""A small producer client for services that append to the ledger straight through Kafka.

    async with LedgerProducer("127.0.0.1:9092") as ledger:
        sent = await ledger.submit("acme", [Posting("@world", "alice", 1000, "USD/2")], idempotency_key="dep-1")
        outcome = await ledger.outcome(sent, timeout_s=5)   # {"status": "committed", ...}
"""

from client.producer import LedgerProducer, OutcomeTimeout, Submitted
from ledger.errors import AppendUnconfirmed

__all__ = ["AppendUnconfirmed", "LedgerProducer", "OutcomeTimeout", "Submitted"]
