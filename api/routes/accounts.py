"""Account reads: balances (one, a page, a snapshot), sums, history pages, the CSV export and statements."""


from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api import views
from api.auth import Principal
from api.inputs import (
    LEG_MAX,
    account_cursor_param,
    cursor_param,
    encode_account_cursor,
    encode_cursor,
    int_param,
    prefix_param,
    time_param,
)
from api.responses import JSON
from api.routes.common import (
    ENTRIES_LIMIT_DEFAULT,
    ENTRIES_LIMIT_MAX,
    READ_PARAMS,
    Context,
    SumOutOfRange,
    account,
    authorized,
    caught_up,
    params,
)
from ledger.errors import InvalidRequest
from ledger.positions import OFFSET_MAX, Position
from ledger.validation import (
    BALANCE_MAX,
    BALANCE_MIN,
    check_address,
    check_asset,
)

SNAPSHOT_ADDRESSES_MAX = 100


@params("prefix", "limit", "cursor", "address", *READ_PARAMS, repeatable=frozenset({"address"}))
async def list_accounts(request: Request) -> Response:
    context, principal, tenant = authorized(request, "read")
    assert tenant is not None
    if "address" in request.query_params:
        return await _snapshot(request, context, principal, tenant)
    low, high = prefix_param(request)
    limit = int_param(request, "limit", ENTRIES_LIMIT_DEFAULT, 1, ENTRIES_LIMIT_MAX)
    after = account_cursor_param(request, context.positions, tenant)
    await caught_up(request, context, principal, tenant)
    rows = await context.store.accounts(tenant, low, high, after, limit + 1)
    by_account: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        by_account.setdefault(row["account"], []).append(row)
    names = list(by_account)[:limit]
    next_cursor = encode_account_cursor(context.positions, tenant, names[-1]) if len(by_account) > limit else None
    return JSON({"accounts": [views.account(name, by_account[name], context.positions, tenant) for name in names],
                 "next_cursor": next_cursor})


async def _snapshot(request: Request, context: Context, principal: Principal, tenant: str) -> Response:
    """Contract v3's snapshot read: the accounts asked, in their order, all as of one position of the log
    (one statement: one snapshot of rows the projector commits with their offsets)."""
    mixed = sorted({"prefix", "limit", "cursor"} & set(request.query_params))
    if mixed:
        raise InvalidRequest(f"{mixed[0]!r} does not go with address (a snapshot read is not paged)", "query")
    raw = request.query_params.getlist("address")
    if not 1 <= len(raw) <= SNAPSHOT_ADDRESSES_MAX:
        raise InvalidRequest(f"give 1 to {SNAPSHOT_ADDRESSES_MAX} addresses", "address")
    addresses = [check_address(a, "address") for a in raw]
    await caught_up(request, context, principal, tenant)
    rows = await context.store.snapshot(tenant, list(dict.fromkeys(addresses)))
    by_account: dict[str, list[asyncpg.Record]] = {}
    position = None
    for row in rows:
        if row["account"] is not None:
            by_account.setdefault(row["account"], []).append(row)
        elif row["log_offset"] >= 0:
            position = context.positions.token(tenant, Position(row["log_partition"], row["log_offset"]))
    return JSON({"accounts": [views.account(a, by_account.get(a, []), context.positions, tenant) for a in addresses],
                 "position": position})


@params("prefix", *READ_PARAMS)
async def balance_sums(request: Request) -> Response:
    """Per asset, the sum of the matching accounts' balances: an int64, like every amount the API shows, or
    422 `sum_out_of_range` naming the asset (a narrower prefix sums fewer accounts)."""
    context, principal, tenant = authorized(request, "read")
    assert tenant is not None
    low, high = prefix_param(request)
    await caught_up(request, context, principal, tenant)
    rows = await context.store.balance_sums(tenant, low, high)
    sums = {r["asset"]: int(r["balance"]) for r in rows if r["asset"] is not None}
    for asset, total in sums.items():
        if not BALANCE_MIN <= total <= BALANCE_MAX:
            raise SumOutOfRange(f"the balances of {asset} sum past the 64-bit range; ask for a narrower prefix",
                                "prefix")
    return JSON({"prefix": low, "balances": sums,
                 "accounts": next((r["accounts"] for r in rows if r["asset"] is None), 0)})


# --- accounts ------------------------------------------------------------------------------------------

@params("at", *READ_PARAMS)
async def get_account(request: Request) -> Response:
    context, principal, tenant = authorized(request, "read")
    assert tenant is not None
    address = check_address(request.path_params["address"])
    at = time_param(request, "at")
    await caught_up(request, context, principal, tenant)
    if at is not None:
        rows = await context.store.balances_at(tenant, address, at)
        return JSON({"address": address, "balances": {r["asset"]: r["balance"] for r in rows}, "position": None,
                     "at": views.timestamp(at)})
    return Response(await account(context, tenant, address), media_type=JSON.media_type)



def wants_csv(accept: str | None) -> bool:
    """Whether `Accept` asks for CSV: a `text/csv` range with a quality above 0."""
    for item in (accept or "").split(","):
        media, *options = (part.strip() for part in item.split(";"))
        if media.lower() == "text/csv":
            quality = next((o.split("=", 1)[1] for o in options if o.replace(" ", "").startswith("q=")), "1")
            try:
                return float(quality) > 0
            except ValueError:
                return False
    return False


def _cell(text: str) -> str:
    """A text cell a spreadsheet will not read as a formula (an id a producer chose may start with `-`)."""
    return f"'{text}" if text[:1] in FORMULA_STARTS else text


FORMULA_STARTS = frozenset("=+-@\t\r")
CSV_PAGE = 500
CSV_HEADER = b"transaction_id,asset,amount,balance_after,committed_at\r\n"


async def _entries_csv(request: Request, context: Context, principal: Principal, tenant: str, address: str,
                       asset: str | None) -> Response:
    """Contract v3's export: every entry of the filters as CSV, newest first, streamed in keyset pages of
    `CSV_PAGE` (no page limit, and never the whole history in memory). Fields need no quoting: ids, assets,
    integers and times hold no comma, quote or line break."""
    paged = sorted({"limit", "cursor"} & set(request.query_params))
    if paged:
        raise InvalidRequest(f"{paged[0]!r} does not go with a CSV export, which has every entry", "query")
    await caught_up(request, context, principal, tenant)

    async def lines() -> AsyncIterator[bytes]:
        yield CSV_HEADER
        before = (OFFSET_MAX, LEG_MAX)
        while True:
            rows = await context.store.entries(tenant, address, asset, before, CSV_PAGE)
            yield "".join(f"{_cell(r['transaction_id'])},{r['asset']},{r['amount']},{r['balance_after']},"
                          f"{views.timestamp(r['committed_at'])}\r\n" for r in rows).encode()
            if len(rows) < CSV_PAGE:
                return
            before = (rows[-1]["log_offset"], rows[-1]["leg"])

    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{address}.csv"'})


@params("asset", "from", "until", *READ_PARAMS)
async def get_statement(request: Request) -> Response:
    """Contract v3's statement of a period (`until` exclusive; by default the account's first entry to now):
    opening and closing balances, debits (positive), credits, and the count of entries, from two lookups a side
    of the entries' running totals, whatever the period's length."""
    context, principal, tenant = authorized(request, "read")
    assert tenant is not None
    address = check_address(request.path_params["address"])
    raw_asset = request.query_params.get("asset")
    if raw_asset is None:
        raise InvalidRequest("is required: a statement is of one asset", "asset")
    asset = check_asset(raw_asset)
    since, until = time_param(request, "from"), time_param(request, "until")
    if since is not None and until is not None and until < since:
        raise InvalidRequest("must not be before from", "until")
    await caught_up(request, context, principal, tenant)
    asked_at = datetime.now(UTC)
    rows = {r["side"]: r for r in await context.store.statement(tenant, address, asset, since, until)}
    opening_row, closing_row = rows["from"], rows["until"]
    # The defaults never cross the bound given: `until` in the past, or `from` in the future.
    shown_until = until if until is not None else max(asked_at, since or asked_at)
    shown_from = since if since is not None else min(opening_row["first_at"] or shown_until, shown_until)
    opening, closing = opening_row["balance_after"] or 0, closing_row["balance_after"] or 0
    credits = int(closing_row["credits_total"] or 0) - int(opening_row["credits_total"] or 0)
    count = (closing_row["entry_number"] or 0) - (opening_row["entry_number"] or 0)
    return JSON({"address": address, "asset": asset,
                 "from": views.timestamp(shown_from), "until": views.timestamp(shown_until),
                 "opening": opening, "closing": closing, "debits": views.amount(credits - (closing - opening)),
                 "credits": views.amount(credits), "count": count})


@params("asset", "limit", "cursor", *READ_PARAMS)
async def get_entries(request: Request) -> Response:
    context, principal, tenant = authorized(request, "read")
    assert tenant is not None
    address = check_address(request.path_params["address"])
    raw_asset = request.query_params.get("asset")
    asset = None if raw_asset is None else check_asset(raw_asset)
    if wants_csv(request.headers.get("accept")):
        return await _entries_csv(request, context, principal, tenant, address, asset)
    limit = int_param(request, "limit", ENTRIES_LIMIT_DEFAULT, 1, ENTRIES_LIMIT_MAX)
    before = cursor_param(request, context.positions, tenant)
    await caught_up(request, context, principal, tenant)
    rows = await context.store.entries(tenant, address, asset, before, limit + 1)
    page = rows[:limit]
    next_cursor = (encode_cursor(context.positions, tenant, page[-1]["log_offset"], page[-1]["leg"])
                   if len(rows) > limit else None)
    return JSON({"entries": [views.entry(r) for r in page], "next_cursor": next_cursor})
