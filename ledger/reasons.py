"""Why a request is rejected (the `reason` of its outcome, as the contract names it), and the bounds that
decide some of them."""

INSUFFICIENT_FUNDS = "insufficient_funds"
OVERFLOW = "overflow"
IDEMPOTENCY_CONFLICT = "idempotency_conflict"
INVALID = "invalid"
UNKNOWN_TENANT = "unknown_tenant"
WRONG_PARTITION = "wrong_partition"
TENANT_EXISTS = "already_exists"
NOT_FOUND = "not_found"
HOLD_CLOSED = "hold_closed"
HOLD_EXPIRED = "hold_expired"
AMOUNT_EXCEEDS_HOLD = "amount_exceeds_hold"
NOT_REVERSIBLE = "not_reversible"
AMOUNT_EXCEEDS_REMAINING = "amount_exceeds_remaining"
ACCOUNT_FROZEN = "account_frozen"
OVERDRAFT_IN_USE = "overdraft_in_use"
VERSION_CONFLICT = "version_conflict"
ASSERTION_FAILED = "assertion_failed"
TOO_MANY_MONITORS = "too_many_monitors"
# Each transaction on an account reads every monitor of it, and its outcome carries every crossing: bounded per
# account and per tenant, so no tenant slows the fold or makes an outcome too large for Kafka (1,000 crossings
# of ~450 bytes at most).
MONITORS_PER_ACCOUNT_MAX = 16
MONITORS_PER_TENANT_MAX = 1000
# `amount` names the one posting a partial capture or reversal moves: with several, the request is at fault
# (the API answers 422, not 409, for it).
AMOUNT_NEEDS_ONE_POSTING = "amount_needs_one_posting"
# A key binds the first request that used it, whatever its outcome, except these: a conflict is the key's
# misuse, a tenant that does not exist has no keys to bind, and a malformed request binds nothing (the API
# refuses a partial amount on several postings with 422 before the log whenever it knows the target).
KEY_UNBOUND = frozenset({IDEMPOTENCY_CONFLICT, UNKNOWN_TENANT, AMOUNT_NEEDS_ONE_POSTING})
