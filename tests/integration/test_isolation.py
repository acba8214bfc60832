"""Nothing stops the projector (contract v2, rules 4 to 6), against real PostgreSQL: a record PostgreSQL
refuses is isolated to itself, ids already taken and misplaced records are decided, tenants are on the log,
and a batch folded on one projection is never written into another."""

from __future__ import annotations

import asyncpg
import orjson

from ledger.batch import Record
from ledger.positions import PositionKey
from projections.pipeline import BACKLOG_RECORDS, Pipeline
from projections.writer import committed_offsets
from tests.integration.conftest import PARTITIONS, created, home, raw, record
from tests.stack import unique

Scratch = tuple[asyncpg.Connection, str]


async def decided(conn: asyncpg.Connection, schema: str) -> dict[str, tuple[str, str | None, str | None]]:
    rows = await conn.fetch(f"SELECT id, status, reason, error FROM {schema}.transactions")
    return {r["id"]: (r["status"], r["reason"], r["error"]) for r in rows}


async def balance(conn: asyncpg.Connection, schema: str, account: str = "alice") -> int | None:
    value = await conn.fetchval(f"SELECT balance FROM {schema}.balances WHERE account = $1", account)
    return None if value is None else int(value)


async def test_a_record_the_database_refuses_is_isolated_and_the_rest_of_its_batch_applied(
        scratch: Scratch, line: Pipeline) -> None:
    conn, schema = scratch
    # Stands for any value that passes validation but not PostgreSQL (the net under validation).
    await conn.execute(f"ALTER TABLE {schema}.transactions ADD CHECK (reference IS DISTINCT FROM 'poison')")
    tenant = unique()
    batch = [created(0, tenant)] + [record(i, tenant, 1) for i in range(1, 200)]
    batch[77] = record(77, tenant, 1, reference="poison")
    done = await line.submit(batch)
    done += await line.drain()
    rows = await decided(conn, schema)
    assert len(rows) == 199
    status, reason, error = rows["tx77"]
    assert (status, reason) == ("rejected", "invalid")
    assert error is not None and "check constraint" in error
    assert all(rows[f"tx{i}"][:2] == ("committed", None) for i in range(1, 200) if i != 77)
    assert await balance(conn, schema) == 198
    assert await committed_offsets(conn, schema) == {home(tenant): 200}
    assert sum(r.applied for r in done) == 200
    # It keeps going: the next batch is folded and written as usual.
    await line.submit([record(200, tenant, 5)])
    await line.drain()
    assert await balance(conn, schema) == 203


async def test_a_refused_record_in_a_queued_write_redoes_it_and_every_batch_folded_on_top(
        scratch: Scratch, line: Pipeline) -> None:
    conn, schema = scratch
    await conn.execute(f"ALTER TABLE {schema}.transactions ADD CHECK (reference IS DISTINCT FROM 'poison')")
    tenant = unique()
    n = BACKLOG_RECORDS  # batches this big queue behind the write in flight
    done = await line.submit([created(0, tenant)] + [record(i, tenant, 1) for i in range(1, n + 1)])
    done += await line.submit([record(n + 1, tenant, 5, reference="poison")]
                              + [record(i, tenant, 1) for i in range(n + 2, 2 * n + 2)])
    assert len(line.in_flight) == 2  # the second write queued behind the first
    # Folded on carried state that counts the refused +5, alice would have 2n + 5 and this would commit.
    done += await line.submit([record(2 * n + 2, tenant, 2 * n + 3, source="alice", destination="bob")]
                              + [record(i, tenant, 1, destination="dave") for i in range(2 * n + 3, 3 * n + 3)])
    assert len(line.in_flight) == 2  # the first done, the third queued behind the refused one
    done += await line.drain()
    rows = await decided(conn, schema)
    assert rows[f"tx{n + 1}"][:2] == ("rejected", "invalid")
    assert rows[f"tx{2 * n + 2}"][:2] == ("rejected", "insufficient_funds")
    assert await balance(conn, schema) == 2 * n
    assert await balance(conn, schema, "bob") is None
    assert await balance(conn, schema, "dave") == n
    assert await committed_offsets(conn, schema) == {home(tenant): 3 * n + 3}
    assert sum(r.applied for r in done) == 3 * n + 3


async def test_a_record_refused_even_as_a_rejection_goes_to_the_operators_table(scratch: Scratch,
                                                                                 line: Pipeline) -> None:
    conn, schema = scratch
    await conn.execute(f"ALTER TABLE {schema}.transactions ADD CHECK (id <> 'tx2')")
    tenant = unique()
    await line.submit([created(0, tenant), record(1, tenant, 1), record(2, tenant, 1), record(3, tenant, 1)])
    await line.drain()
    assert set(await decided(conn, schema)) == {"tx1", "tx3"}
    events = await conn.fetch(f"SELECT log_offset, error FROM {schema}.invalid_events")
    assert [(e["log_offset"], "check constraint" in e["error"]) for e in events] == [(2, True)]
    assert await balance(conn, schema) == 2


async def test_an_invalid_record_reusing_a_taken_id_in_a_later_batch_is_decided(scratch: Scratch,
                                                                                line: Pipeline) -> None:
    conn, schema = scratch
    tenant = unique()
    await line.submit([created(0, tenant), record(1, tenant, 10)])
    await line.drain()
    line.reset_wanted = True  # nothing carried: whether tx1 is taken must come from PostgreSQL
    malformed = raw(2, tenant, {"v": 1, "id": "tx1", "tenant": tenant, "postings": "not a list"})
    await line.submit([malformed, record(3, tenant, 5)])
    await line.drain()
    rows = await decided(conn, schema)
    assert rows["tx1"][:2] == ("committed", None)  # the original keeps its id
    assert rows["tx3"][:2] == ("committed", None)
    events = await conn.fetch(f"SELECT log_offset FROM {schema}.invalid_events")
    assert [e["log_offset"] for e in events] == [2]
    assert await balance(conn, schema) == 15


async def test_a_record_off_its_tenants_partition_is_rejected_and_changes_nothing(scratch: Scratch,
                                                                                  line: Pipeline) -> None:
    conn, schema = scratch
    tenant = unique()
    elsewhere = (home(tenant) + 1) % PARTITIONS
    outcomes: list[dict[str, object]] = []

    async def publish(batch: list[tuple[int, bytes, bytes]]) -> None:
        outcomes.extend(orjson.loads(value) for _, _, value in batch)

    line.publish = publish
    line.positions = PositionKey(bytes(32))  # a pipeline that publishes seals the outcomes' positions
    await line.submit([created(0, tenant), record(1, tenant, 10),
                       record(0, tenant, 99, partition=elsewhere)])
    await line.drain()
    assert await balance(conn, schema) == 10
    assert set(await decided(conn, schema)) == {"tx1"}
    events = await conn.fetch(f"SELECT log_partition, log_offset FROM {schema}.invalid_events")
    assert [tuple(e) for e in events] == [(elsewhere, 0)]
    misplaced = [o for o in outcomes if o["record"] == f"{elsewhere}-0"]
    assert [(o["status"], o["reason"], o["id"]) for o in misplaced] == [("rejected", "wrong_partition", "tx0")]


async def test_requests_before_their_tenants_creation_are_unknown_tenant(scratch: Scratch,
                                                                         line: Pipeline) -> None:
    conn, schema = scratch
    tenant = unique()
    await line.submit([record(0, tenant, 10), created(1, tenant), record(2, tenant, 10), created(3, tenant)])
    await line.drain()
    rows = await decided(conn, schema)
    assert rows["tx0"][:2] == ("rejected", "unknown_tenant")
    assert rows["tx2"][:2] == ("committed", None)
    assert await balance(conn, schema) == 10
    tenants = await conn.fetch(f"SELECT id, log_offset FROM {schema}.tenants WHERE id = $1", tenant)
    assert [tuple(t) for t in tenants] == [(tenant, 1)]  # the second creation changed nothing


async def test_a_repeated_key_under_a_new_id_resolves_to_the_original(scratch: Scratch, line: Pipeline) -> None:
    conn, schema = scratch
    tenant = unique()
    await line.submit([created(0, tenant), record(1, tenant, 10, idempotency_key="k")])
    await line.submit([record(2, tenant, 10, idempotency_key="k"), record(3, tenant, 10, idempotency_key="k")])
    await line.drain()
    line.reset_wanted = True
    # The id of a repeat is taken: a request reusing it is a repeat too, and writes nothing new.
    await line.submit([raw(4, tenant, {"v": 1, "id": "tx2", "tenant": tenant, "postings": [
        {"source": "@world", "destination": "alice", "amount": 10, "asset": "USD/2"}], "idempotency_key": "k"})])
    await line.drain()
    replays = await conn.fetch(f"SELECT id, original_id FROM {schema}.replays ORDER BY id")
    assert [tuple(r) for r in replays] == [("tx2", "tx1"), ("tx3", "tx1")]
    assert await balance(conn, schema) == 10
    assert await committed_offsets(conn, schema) == {home(tenant): 5}


async def test_carried_state_does_not_survive_a_switch_of_the_live_projection(own_database: str) -> None:
    tenant = unique()
    p = home(tenant)
    conn = await asyncpg.connect(own_database)
    line = Pipeline(lambda: asyncpg.connect(own_database), None, PARTITIONS)
    try:
        await line.submit([created(0, tenant), record(1, tenant, 10)])
        await line.drain()  # alice holds 10 in the carried state
        # An operator switches to a rebuilt projection standing at the same offsets, in which alice holds
        # 3 (whatever the rebuild corrected).
        await conn.execute("SELECT ledger_create_projection('proj_rebuilt')")
        await conn.execute("INSERT INTO proj_rebuilt.tenants VALUES ($1, $1, $2, 0, now())", tenant, p)
        await conn.execute("INSERT INTO proj_rebuilt.balances VALUES ($1, 'alice', 'USD/2', 3, $2, 1),"
                           " ($1, '@world', 'USD/2', -3, $2, 1)", tenant, p)
        await conn.execute("INSERT INTO proj_rebuilt.projection_offsets (topic, log_partition, next_offset)"
                           " VALUES ('ledger.transactions', $1, 2)", p)
        await conn.execute("SELECT ledger_activate_projection('proj_rebuilt')")
        await line.submit([record(2, tenant, 6, source="alice", destination="bob")])
        await line.drain()
        row = await conn.fetchrow("SELECT status, reason FROM proj_rebuilt.transactions WHERE id = 'tx2'")
        assert tuple(row) == ("rejected", "insufficient_funds")
        assert await conn.fetchval("SELECT balance FROM proj_rebuilt.balances WHERE account = 'alice'") == 3
    finally:
        await line.close()
        await conn.close()


async def test_a_hold_expiring_after_a_reset_keeps_its_accounts_overdraft_limit(scratch: Scratch,
                                                                                 line: Pipeline) -> None:
    conn, schema = scratch
    tenant = unique()

    def at(offset: int, value: dict[str, object], ms: int) -> Record:
        return raw(offset, tenant, value)._replace(timestamp_ms=ms)

    base = 1_700_000_000_000
    await line.submit([
        created(0, tenant),
        at(1, {"v": 1, "kind": "policy", "id": "p1", "tenant": tenant, "account": "alice",
               "overdraft_limit": {"USD/2": 1000}}, base),
        record(2, tenant, 500, source="alice", destination="bob"),
        at(3, {"v": 1, "kind": "hold", "id": "h1", "tenant": tenant, "expires_in_s": 1, "postings": [
            {"source": "alice", "destination": "shop", "amount": 100, "asset": "USD/2"}]}, base),
    ])
    await line.drain()
    line.reset_wanted = True  # as after a restart: the hold and the policy come from PostgreSQL
    await line.submit([at(4, {"v": 1, "kind": "tick"}, base + 2_000)])
    await line.drain()
    row = await conn.fetchrow(f"SELECT balance, held, overdraft_limit FROM {schema}.balances WHERE account = 'alice'")
    assert tuple(row) == (-500, 0, 1000)
    assert await conn.fetchval(f"SELECT state FROM {schema}.holds WHERE id = 'h1'") == "expired"
