"""`min_position` through the real routes, with the database and Kafka stood in for: a tenant's own token
waits or passes, and anything else (another tenant's, a raw position, beyond the log) is 422 at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from api import routes
from api.app import create_app
from api.auth import ApiKey, KeyStore, new_secret_key
from api.log_ends import LogEnds
from api.progress import Progress
from infra.settings import load
from ledger.positions import Position, PositionKey

KEY = PositionKey(bytes(range(32)))
KEY_TEXT = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"  # LEDGER_POSITION_KEY for bytes 0..31, as KEY
WRITTEN = Position(2, 41)


class Store:
    """The balance rows of every account: one change, at `WRITTEN`."""

    async def balances(self, tenant: str, address: str) -> list[dict[str, Any]]:
        return [{"asset": "USD/2", "balance": 5, "held": 0, "overdraft_limit": 0, "metadata": None, "frozen": False,
                 "log_partition": WRITTEN.partition, "log_offset": WRITTEN.offset}]


class Appender:
    def __init__(self) -> None:
        async def end() -> dict[int, int]:
            return {p: 100 for p in range(4)}

        self.ends = LogEnds(end)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    cfg = load({"LEDGER_ADMIN_TOKEN": "admin", "LEDGER_POSITION_KEY": KEY_TEXT})
    app = create_app(cfg)  # its lifespan (PostgreSQL, Kafka) is not run: the context is built here
    keys = KeyStore("admin")
    key_id, secret, digest = new_secret_key()
    keys.keys[key_id] = ApiKey(key_id, "acme", digest, frozenset({"read"}), revoked=False)
    keys.tenants = {"acme": "Acme", "other": "Other"}
    progress = Progress()
    progress.applied = {2: 42}  # WRITTEN is applied
    starlette = app.app.app  # type: ignore[attr-defined]
    starlette.state.ctx = routes.Context(cfg, keys, Store(), Appender(), progress,  # type: ignore[arg-type]
                                         starlette.state.positions)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ledger",
                                 headers={"Authorization": f"Bearer {secret}"}) as http:
        yield http


async def test_a_balance_shows_the_tenants_token_and_reads_with_it(client: httpx.AsyncClient) -> None:
    shown = (await client.get("/v1/tenants/acme/accounts/alice")).json()  # the hot route
    assert KEY.parse("acme", shown["position"]) == WRITTEN
    again = await client.get("/v1/tenants/acme/accounts/alice", params={"min_position": shown["position"]})
    assert again.status_code == 200, again.text
    assert again.json()["position"] == shown["position"]


@pytest.mark.parametrize("token", [KEY.token("other", WRITTEN), WRITTEN.raw(), "2-41", "",
                                   PositionKey(bytes(32)).token("acme", WRITTEN), KEY.token("acme", WRITTEN)[:-1]])
async def test_a_token_not_issued_to_the_tenant_is_422(client: httpx.AsyncClient, token: str) -> None:
    response = await client.get("/v1/tenants/acme/accounts/alice", params={"min_position": token})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"


async def test_a_position_beyond_the_log_is_422_without_showing_it(client: httpx.AsyncClient) -> None:
    beyond = Position(2, 123_456)
    response = await client.get("/v1/tenants/acme/accounts/alice", params={"min_position": KEY.token("acme", beyond)})
    assert response.status_code == 422, response.text
    assert "123456" not in response.text and "beyond the end of the log" in response.text


async def test_a_position_not_yet_applied_is_503_after_the_timeout_without_showing_it(
        client: httpx.AsyncClient) -> None:
    pending = Position(2, 77)  # in the log (its end is 100), not applied (42)
    response = await client.get("/v1/tenants/acme/accounts/alice",
                                params={"min_position": KEY.token("acme", pending), "timeout_ms": 1})
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "unavailable" and "77" not in response.text
