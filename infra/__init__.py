"""Local services, migrations and topics: everything the ledger runs on, none of its logic."""
