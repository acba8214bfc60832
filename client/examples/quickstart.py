"""Quickstart: fund an account, pay, hold and capture, then read the account and its statement.

Run with LEDGER_URL, LEDGER_API_KEY and LEDGER_TENANT set, for example:
    LEDGER_URL=http://127.0.0.1:8000 LEDGER_API_KEY=... LEDGER_TENANT=acme python examples/quickstart.py
"""

import os
import uuid

from wallet_ledger import Conflict, LedgerClient, Posting

ASSET = "USD/2"  # US dollars, in cents


def main() -> None:
    run = uuid.uuid4().hex[:8]  # fresh accounts on every run
    alice, bob, shop = f"customers:{run}:alice", f"customers:{run}:bob", f"merchants:{run}:coffee"

    with LedgerClient(os.environ["LEDGER_URL"], api_key=os.environ["LEDGER_API_KEY"],
                      tenant=os.environ["LEDGER_TENANT"], read_your_writes=True) as ledger:
        # Money enters the ledger from @world, the outside world.
        deposit = ledger.transfer([Posting("@world", alice, 10_000, ASSET)], reference=f"deposit-{run}")
        print(f"deposit {deposit.id}: {deposit.status}")

        # Alice pays Bob; retrying this call (the SDK does it for you) never pays twice.
        payment = ledger.transfer([Posting(alice, bob, 2_500, ASSET)], metadata={"note": "dinner"})
        print(f"payment {payment.id}: {payment.status}")

        # Paying more than Alice has is rejected: a Conflict whose code is the reason.
        try:
            ledger.transfer([Posting(alice, bob, 1_000_000, ASSET)])
        except Conflict as e:
            print(f"overspend refused: {e.code}")

        # Reserve 7.00 at the coffee shop, then capture 4.50 of it (the rest is released).
        hold = ledger.hold([Posting(alice, shop, 700, ASSET)], expires_in_s=3600)
        print(f"hold {hold.id}: {hold.status}")
        capture = ledger.capture(hold.id, amount=450)
        print(f"capture {capture.id}: {capture.status}")

        account = ledger.get_account(alice)
        print(f"{alice}: balance {account.balance(ASSET)}, available {account.available.get(ASSET, 0)}, "
              f"version {account.version}")

        statement = ledger.statement(alice, ASSET)
        print(f"statement: opening {statement.opening} + credits {statement.credits} - debits {statement.debits} "
              f"= closing {statement.closing} ({statement.count} entries)")
        assert statement.opening + statement.credits - statement.debits == statement.closing


if __name__ == "__main__":
    main()
