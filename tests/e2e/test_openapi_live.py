"""The OpenAPI document against the running API, so that the two cannot drift: a scenario reaches every
operation the document lists, and every answer it gets (success and error alike) must be a status the document
gives for that operation and match that status's schema, field by field (the response schemas refuse fields
they do not list). schemathesis (tests/e2e/test_isolation.py) fuzzes the same document; this one walks the
paths a real client takes, where fuzzing mostly meets 404s."""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import Tenant
from tests.e2e.helpers import posting
from tests.e2e.receiver import Receiver
from tests.stack import Stack, unique


class Checked:
    """Every answer checked against the document as it arrives; which operations and statuses were seen."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.seen: dict[tuple[str, str], set[int]] = {}
        self.problems: list[str] = []
        self.routes = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
                       for path in sorted(document["paths"], key=lambda p: (p.count("{"), -len(p)))]

    def __call__(self, response: httpx.Response) -> httpx.Response:
        method, path = response.request.method.lower(), response.request.url.path
        template = next((t for pattern, t in self.routes if pattern.match(path)), None)
        if template is None or method not in self.document["paths"][template]:
            self.problems.append(f"{method.upper()} {path}: not in the document")
            return response
        self.seen.setdefault((template, method), set()).add(response.status_code)
        answers = self.document["paths"][template][method]["responses"]
        answer = answers.get(str(response.status_code))
        if answer is None:
            self.problems.append(f"{method.upper()} {template}: {response.status_code} is not a documented status")
            return response
        schema = answer.get("content", {}).get("application/json", {}).get("schema")
        if schema is not None and response.headers.get("content-type", "").startswith("application/json"):
            wrapped = {**schema, "components": self.document["components"]}
            try:
                jsonschema.validate(response.json(), wrapped, cls=jsonschema.Draft202012Validator)
            except jsonschema.ValidationError as e:
                self.problems.append(f"{method.upper()} {template} {response.status_code}: {e.message} at "
                                     f"{list(e.absolute_path)}")
        return response


@pytest.fixture
async def checked(stack: Stack) -> Checked:
    async with httpx.AsyncClient(base_url=stack.api_url) as client:
        return Checked((await client.get("/openapi.json")).json())


async def test_every_operation_answers_as_the_document_says(stack: Stack, tenant: Tenant,
                                                            checked: Checked) -> None:
    admin_headers = {"Authorization": f"Bearer {stack.admin_token}"}
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30, headers=admin_headers) as admin, \
            Receiver() as receiver:
        c, t = tenant.client, tenant.path

        async def call(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
            return checked(await client.request(method, path, **kwargs))

        wait = {"wait": "true"}
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            await call(admin, "GET", path)
        other = unique()
        await call(admin, "POST", "/v1/tenants", json={"id": other, "name": other})
        await call(admin, "POST", "/v1/tenants", json={"id": other})  # 409
        await call(admin, "POST", "/v1/tenants", json={"id": "bad id!"})  # 422
        key = (await call(admin, "POST", f"/v1/tenants/{other}/keys", json={"scopes": ["read"]})).json()
        await call(admin, "DELETE", f"/v1/tenants/{other}/keys/{key['id']}")
        await call(admin, "GET", f"/v1/tenants/{other}/limits")
        await call(admin, "PUT", f"/v1/tenants/{other}/limits", json={"reads_per_s": 100})
        await call(c, "GET", t("/limits"))  # 403: an operator's route

        funded = await call(c, "POST", t("/transactions"), params=wait,
                            json={"postings": [posting("@world", "alice", 1000)]})
        await call(c, "POST", t("/transactions"), params=wait, json={"postings": [posting("alice", "bob", 10**6)]})
        await call(c, "POST", t("/transactions"), json={"postings": [posting("alice", "bob", 1)]})  # 202
        await call(c, "POST", t("/transactions"), params=wait, json={"postings": []})  # 422
        await call(c, "POST", t("/transactions"), params=wait, content=b"{")  # 400
        keyed = {"Idempotency-Key": unique("k")}
        await call(c, "POST", t("/transactions"), params=wait, headers=keyed,
                   json={"postings": [posting("alice", "bob", 5)], "metadata": {"order": "1"}, "reference": "r1"})
        await call(c, "POST", t("/transactions"), params=wait, headers=keyed,
                   json={"postings": [posting("alice", "bob", 5)], "metadata": {"order": "1"}, "reference": "r1"})
        # `amount_max` from an empty account moves 0 (committed, its posting shows the 0 moved); rejected, its
        # posting shows `amount_max` as given; a hold reserves the 0. Each read back as the document says.
        at_most = {"source": "empty", "destination": "bob", "amount_max": 5, "asset": "USD/2"}
        swept = await call(c, "POST", t("/transactions"), params=wait, json={"postings": [at_most]})
        refused = (await call(c, "POST", t("/transactions"),
                              json={"postings": [at_most], "if_version": {"empty": 7}})).json()  # 202
        assert swept.json()["status"] == "committed" and swept.json()["postings"][0]["amount"] == 0
        await call(c, "GET", t(f"/transactions/{swept.json()['id']}"))
        refused_read = await call(c, "GET", t(f"/transactions/{refused['id']}"),
                                  params={"min_position": refused["position"]})
        assert refused_read.json()["status"] == "rejected", refused_read.text
        reserved = await call(c, "POST", t("/holds"), params=wait, json={"postings": [at_most]})
        await call(c, "GET", t(f"/holds/{reserved.json()['id']}"))
        await call(c, "GET", t("/transactions"), params={"account": "empty"})
        tx = funded.json()["id"]
        await call(c, "GET", t(f"/transactions/{tx}"))
        await call(c, "GET", t("/transactions/nope"))  # 404
        await call(c, "GET", t("/transactions"), params={"account": "alice", "limit": "1"})
        await call(c, "POST", t("/transactions/batch"), params=wait,
                   json={"transactions": [{"postings": [posting("@world", "carol", 3)]}]})
        await call(c, "POST", t(f"/transactions/{tx}/reverse"), params=wait, json={"amount": 1})
        hold = (await call(c, "POST", t("/holds"), params=wait,
                           json={"postings": [posting("alice", "shop", 7)]})).json()["id"]
        await call(c, "GET", t(f"/holds/{hold}"))
        await call(c, "POST", t(f"/holds/{hold}/capture"), params=wait, json={"amount": 3})
        voided = (await call(c, "POST", t("/holds"), params=wait,
                             json={"postings": [posting("alice", "shop", 2)]})).json()["id"]
        await call(c, "POST", t(f"/holds/{voided}/void"), params=wait)
        await call(c, "POST", t(f"/holds/{voided}/void"), params=wait)  # 409 hold_closed
        await call(c, "PUT", t("/accounts/alice"), params=wait, json={"metadata": {"tier": "gold"}})
        await call(c, "GET", t("/accounts/alice"))
        await call(c, "GET", t("/accounts/alice"), params={"at": "2026-01-01T00:00:00Z"})
        await call(c, "GET", t("/accounts"), params={"prefix": "a"})
        await call(c, "GET", t("/accounts"), params={"address": ["alice", "bob"]})
        await call(c, "GET", t("/balances"), params={"prefix": ""})
        await call(c, "GET", t("/accounts/alice/entries"), params={"limit": "2"})
        await call(c, "GET", t("/accounts/alice/statement"), params={"asset": "USD/2"})
        await call(c, "GET", t("/chain"))
        hook = await call(c, "POST", t("/webhooks"), json={"url": receiver.url(), "events": ["*"]})
        await call(c, "POST", t("/webhooks"), json={"url": "http://10.0.0.1/x", "events": ["*"]})  # 422
        hook_id = hook.json()["id"]
        await call(c, "GET", t("/webhooks"))
        await call(c, "GET", t(f"/webhooks/{hook_id}"))
        await receiver.wait_for(1, timeout_s=10)
        await call(c, "POST", t("/transactions"), params=wait, json={"postings": [posting("@world", "dave", 1)]})
        await receiver.wait_for(1, timeout_s=10)
        await call(c, "GET", t(f"/webhooks/{hook_id}/deliveries"), params={"limit": "5"})
        await call(c, "DELETE", t(f"/webhooks/{hook_id}"))
        monitor = (await call(c, "POST", t("/monitors"), params=wait,
                              json={"account": "alice", "asset": "USD/2", "below": 1})).json()["id"]
        await call(c, "GET", t(f"/monitors/{monitor}"))
        await call(c, "GET", t("/monitors"), params={"removed": "true"})
        await call(c, "DELETE", t(f"/monitors/{monitor}"), params=wait)
        await call(c, "DELETE", t(f"/monitors/{monitor}"), params=wait)  # 404
        async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
            await call(anonymous, "GET", t("/chain"))  # 401
    assert not checked.problems, "\n".join(checked.problems)
    every = {(path, method) for path, ops in checked.document["paths"].items() for method in ops}
    missed = sorted(every - set(checked.seen))
    assert not missed, f"operations the scenario never reached: {missed}"
