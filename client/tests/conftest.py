"""The SDK's tests import `wallet_ledger` from this checkout (client/), installed or not."""

import sys
from pathlib import Path

CLIENT_DIR = Path(__file__).resolve().parent.parent

if str(CLIENT_DIR) not in sys.path:
    sys.path.insert(0, str(CLIENT_DIR))
