"""A waited transfer's answer built by the projector from the rows it folded (`ledger.shown.answers`), sent
with its batch's notification and handed to the one request that waits for it (`Progress.decided`). The
end-to-end test that it is the very answer PostgreSQL's rows give is `tests/e2e/test_sent_answers.py`. Answers
travel sealed to their position (any role that can connect may LISTEN and NOTIFY); a request takes only its own."""

from __future__ import annotations

import asyncio

import orjson

from api.progress import Progress
from ledger import changes
from ledger.batch import BatchRows, Record, decode_all
from ledger.changes import PAYLOAD_MAX, parse, payloads
from ledger.fold import fold_batch
from ledger.memory import Ledger
from ledger.placement import partition_for
from ledger.positions import Position, PositionKey
from ledger.shown import ANSWER_BYTES_MAX, BATCH_ANSWERS_BYTES_MAX, answers, jsonb_ordered

PARTITIONS = 4
TENANT = "acme"
HOME = partition_for(TENANT.encode(), PARTITIONS)
KEY = PositionKey(bytes(range(32)))
AT_MS = 1_700_000_000_000


def record(offset: int, source: str, destination: str, amount: int, answer: bool = True,
           **fields: object) -> Record:
    value = {"v": 1, "id": f"tx{offset}", "tenant": TENANT, "postings": [
        {"source": source, "destination": destination, "amount": amount, "asset": "USD/2"}], **fields}
    return Record(HOME, offset, TENANT.encode(), orjson.dumps(value), AT_MS, answer)


def folded(records: list[Record]) -> dict[int, dict[str, object]]:
    """The answers of a batch of `records`, by offset, with their keys in the order they were written."""
    ledger = Ledger(tenants={TENANT: True})
    rows = fold_batch(ledger, records, decode_all(records, PARTITIONS), BatchRows(positions=KEY))
    marked = [r for r in records if r.answer]
    asked = [(TENANT, orjson.loads(r.value or b"")["id"]) for r in marked]
    shown = {}
    for partition, offset, sealed in answers(rows, marked, asked, KEY):
        opened = KEY.open_answer(Position(partition, offset), sealed)
        assert opened is not None and partition == HOME
        shown[offset] = orjson.loads(opened)
    return shown


def test_jsonb_keeps_shorter_keys_first_then_bytewise() -> None:
    ordered = jsonb_ordered({"bb": 1, "a": [{"zz": 1, "y": 2}], "é": 3, "ab": 4})
    assert list(ordered) == ["a", "ab", "bb", "é"]  # "é" is two bytes, 0xc3 0xa9: after "ab" and "bb"
    assert list(ordered["a"][0]) == ["y", "zz"]


def test_each_marked_transfer_is_answered_as_its_row_shows_it() -> None:
    shown = folded([
        record(0, "@world", "alice", 5),
        record(1, "alice", "bob", 3, metadata={"zz": "1", "a": "2"}, reference="r-1"),
        record(2, "alice", "bob", 100),  # more than alice holds
        record(3, "alice", "bob", 1, answer=False),
    ])
    assert sorted(shown) == [0, 1, 2]
    first = shown[0]
    assert list(first) == ["id", "status", "postings", "metadata", "reference", "idempotency_key", "position",
                           "created_at", "committed_at", "reversed", "balances_after", "hash", "previous_hash"]
    assert list(first["postings"][0]) == ["asset", "amount", "source", "destination"]  # jsonb's order
    assert first["balances_after"] == {"alice": {"USD/2": 5}, "@world": {"USD/2": -5}}
    assert list(first["balances_after"]) == ["alice", "@world"]  # type: ignore[call-overload]
    assert first["position"] == KEY.token(TENANT, Position(HOME, 0))
    assert first["created_at"] == first["committed_at"] == "2023-11-14T22:13:20.000Z"
    second = shown[1]
    assert list(second["metadata"]) == ["a", "zz"]  # type: ignore[call-overload]
    assert second["balances_after"] == {"bob": {"USD/2": 3}, "alice": {"USD/2": 2}}
    assert second["previous_hash"] == first["hash"] and second["reference"] == "r-1"
    refused = shown[2]
    assert (refused["status"], refused["reason"], refused["committed_at"]) == ("rejected", "insufficient_funds", None)
    assert not {"balances_after", "hash", "reversed"} & refused.keys()


def test_a_repeated_id_is_not_answered_from_another_records_row() -> None:
    shown = folded([record(0, "@world", "alice", 5), record(1, "@world", "alice", 5) ._replace(
        value=orjson.dumps({"v": 1, "id": "tx0", "tenant": TENANT, "postings": [
            {"source": "@world", "destination": "alice", "amount": 5, "asset": "USD/2"}]}))])
    assert sorted(shown) == [0]  # the second record's row is the first's: the API reads its answer


def test_answers_go_between_the_changes_and_the_offsets_each_notification_under_the_limit() -> None:
    body = orjson.dumps({"id": "x" * 50, "status": "committed"})
    many = [(1, n, KEY.seal_answer(Position(1, n), body)) for n in range(400)]
    too_long = (1, 400, KEY.seal_answer(Position(1, 400), b"y" * PAYLOAD_MAX))
    out = payloads({1: 401}, [7], [*many, too_long])
    assert all(len(p.encode()) < PAYLOAD_MAX for p in out)
    notes = [parse(p) for p in out]
    assert notes[0].changed == [7] and notes[-1].offsets == {1: 401}
    sent = [a for n in notes[1:-1] for a in n.answers]
    assert len(notes) > 3 and [(p, o) for p, o, _ in sent] == [(1, n) for n in range(400)]  # the long one left out
    assert KEY.open_answer(Position(1, 0), sent[0][2]) == body
    assert KEY.open_answer(Position(1, 1), sent[0][2]) is None  # sealed to its own position only


def test_the_largest_answer_sealed_fits_a_notification() -> None:
    sealed = KEY.seal_answer(Position(1023, 2**63 - 1), b"z" * ANSWER_BYTES_MAX)
    (note,) = [p for p in payloads({}, [], [(1023, 2**63 - 1, sealed)]) if "answers" in p]
    assert len(note.encode()) < PAYLOAD_MAX


def test_a_batchs_answers_are_bounded_in_all() -> None:
    records = [record(n, "@world", f"a{n}", 1, metadata={"m": "x" * 2_000}) for n in range(300)]
    shown = folded(records)
    assert 0 < len(shown) < 300  # past the batch's share, the API reads them
    assert sum(len(orjson.dumps(a)) for a in shown.values()) <= BATCH_ANSWERS_BYTES_MAX


def test_an_answer_not_sealed_is_not_understood() -> None:
    for payload in ('{"answers":[[1,2,3]]}', '{"answers":[[1,2]]}', '{"answers":7}', '{"answers":[[1,2,{}]]}'):
        try:
            changes.parse(payload)
        except ValueError:
            continue
        raise AssertionError(f"{payload} was understood")


def sealed(partition: int, offset: int, id: str, key: PositionKey = KEY) -> tuple[int, int, str]:
    return partition, offset, key.seal_answer(Position(partition, offset), orjson.dumps({"id": id}))


async def turns() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_an_answer_reaches_the_request_that_waits_for_it_and_no_other() -> None:
    progress = Progress(positions=KEY)
    mine, other = Position(1, 10), Position(1, 11)
    waiting = asyncio.ensure_future(progress.decided(mine, 5, "t", "k", "a"))
    plain = asyncio.ensure_future(progress.wait(other, 5, "t", "k"))
    await turns()
    progress.deliver([sealed(1, 10, "a"), sealed(1, 11, "b"), sealed(2, 10, "c")])
    progress.advance({1: 12})
    assert await waiting == (True, {"id": "a"})
    assert await plain is True
    assert progress._answering == {} and progress.waiting == 0


async def test_a_request_whose_answer_was_not_sent_is_told_so() -> None:
    progress = Progress(positions=KEY)
    waiting = asyncio.ensure_future(progress.decided(Position(0, 3), 5, "t", "k", "a"))
    await asyncio.sleep(0)
    progress.advance({0: 4})
    assert await waiting == (True, None)  # the route then reads it from PostgreSQL
    assert await progress.decided(Position(0, 3), 5, "t", "k", "a") == (True, None)  # applied before it waited


async def test_only_the_projectors_answer_for_this_very_request_is_taken() -> None:
    progress = Progress(positions=KEY)
    waiting = asyncio.ensure_future(progress.decided(Position(0, 3), 5, "t", "k", "mine"))
    await turns()
    forged = (0, 3, PositionKey(bytes(32)).seal_answer(Position(0, 3), orjson.dumps({"id": "mine"})))
    moved = (0, 3, sealed(0, 4, "mine")[2])  # another position's, replayed here
    other = sealed(0, 3, "another request")  # a position guessed after a retried append: another's record
    progress.deliver([(0, 3, "not sealed"), forged, moved, other])  # none taken, and none blocks the real one
    progress.deliver([sealed(0, 3, "mine")])
    progress.deliver([(0, 3, KEY.seal_answer(Position(0, 3), b'{"id":"mine","x":1}'))])
    progress.advance({0: 4})
    progress.deliver([sealed(0, 3, "mine")])
    assert await waiting == (True, {"id": "mine"})  # the first this request's, not the later ones


async def test_without_the_key_no_answer_is_taken() -> None:
    progress = Progress()
    waiting = asyncio.ensure_future(progress.decided(Position(0, 3), 5, "t", "k", "mine"))
    await turns()
    progress.deliver([sealed(0, 3, "mine")])
    progress.advance({0: 4})
    assert await waiting == (True, None)
