"""The webhook dispatcher's network edge against a local server: signatures, what a URL may reach, bounded POSTs."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from dispatch.net import (
    Answer,
    DeliveryError,
    Target,
    UrlNotAllowed,
    allowed_address,
    parse_url,
    post,
    resolve,
)
from dispatch.signing import new_secret, sign, verify

SECRET = "whsec_test"
BODY = b'{"type":"transfer.committed","id":"tx1"}'
AT = 1_700_000_000
LOCAL = frozenset({"127.0.0.1", "localhost"})

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# --- signing ---------------------------------------------------------------------------------------------------


def test_sign_verify_round_trip() -> None:
    header = sign(SECRET, BODY, AT)
    assert re.fullmatch(r"t=1700000000,v1=[0-9a-f]{64}", header)
    assert verify(SECRET, BODY, header, now=AT)
    assert verify(SECRET, BODY, header, now=AT + 300)
    assert verify(SECRET, BODY, header, now=AT - 300)


def test_verify_refuses_tampering_and_wrong_secret() -> None:
    header = sign(SECRET, BODY, AT)
    assert not verify(SECRET, BODY + b" ", header, now=AT)
    assert not verify("whsec_other", BODY, header, now=AT)
    moved = header.replace(f"t={AT}", f"t={AT + 1}")  # a timestamp moved without the MAC
    assert not verify(SECRET, BODY, moved, now=AT)


def test_verify_refuses_stale_and_future_timestamps() -> None:
    header = sign(SECRET, BODY, AT)
    assert not verify(SECRET, BODY, header, now=AT + 301)
    assert not verify(SECRET, BODY, header, now=AT - 301)
    assert verify(SECRET, BODY, header, tolerance_s=1000, now=AT + 999)


def test_verify_accepts_any_v1_and_ignores_unknown_parts() -> None:
    good = sign(SECRET, BODY, AT).split(",")[1]
    assert verify(SECRET, BODY, f"t={AT},v0=abc,v1={'0' * 64},{good},extra", now=AT)
    assert verify(SECRET, BODY, f" t={AT} , {good} ", now=AT)


@pytest.mark.parametrize(
    "header",
    [
        "",
        ",,,",
        "garbage",
        f"v1={'0' * 64}",  # no t
        f"t={AT}",  # no v1
        f"t={AT},v1=",
        f"t=abc,v1={'0' * 64}",
        f"t=1e9,v1={'0' * 64}",
        f"t=-{AT},v1={'0' * 64}",
        f"t={'9' * 5000},v1={'0' * 64}",
        f"t={AT},t={AT},v1={'0' * 64}",
        f"t={AT},v1=\u00e9\u00e9",
        "t=\u0661\u0662,v1=ab",  # non-ASCII digits
    ],
)
def test_verify_is_false_on_malformed_headers(header: str) -> None:
    assert verify(SECRET, BODY, header, now=AT) is False


def test_verify_never_raises_on_a_non_string() -> None:
    assert verify(SECRET, BODY, None, now=AT) is False  # type: ignore[arg-type]


def test_new_secret() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and len(first) >= 6 + 43
    assert first != second


# --- URLs and addresses ----------------------------------------------------------------------------------------


def test_parse_url() -> None:
    url = "https://Hooks.Example.COM/in/hook?a=1&b=%20#frag"
    assert parse_url(url) == Target("https", "hooks.example.com", 443, "/in/hook?a=1&b=%20", url)
    assert parse_url("http://example.com") == Target("http", "example.com", 80, "/", "http://example.com")
    assert parse_url("http://example.com:8080?x").path_and_query == "/?x"
    assert parse_url("http://example.com/p?").path_and_query == "/p?"
    assert parse_url("HTTP://example.com./").host == "example.com."
    v6 = parse_url("http://[2606:4700:4700::1111]:8443/x")
    assert (v6.host, v6.port, v6.path_and_query) == ("2606:4700:4700::1111", 8443, "/x")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "example.com/hook",
        "http:example.com",
        "http://",
        "http:///hook",
        "http://:80/",
        "http://user:pass@example.com/",
        "http://user@example.com/",
        "http://example.com@169.254.169.254/",
        "http://example.com/" + "a" * 2048,
        "http://exa mple.com/",
        "http://example.com/\t",
        "http://example.com/\r\nHost: evil",
        "http://bücher.de/",
        "http://evil.com\\.example.com/",
        "http://example.com:0/",
        "http://example.com:65536/",
        "http://example.com:+80/",
        "http://example.com:8o/",
        "http://[::1/",
        "http://[::1]x/",
        "http://[::1%25eth0]/",
        "http://[v1.x]/",
        "http://[127.0.0.1]/",
        "http://a..b/",
        "http://./",
        "http://.example.com/",
        "http://" + "a" * 64 + ".com/",
    ],
)
def test_parse_url_refuses(url: str) -> None:
    with pytest.raises(UrlNotAllowed) as refused:
        parse_url(url)
    assert refused.value.message


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",
        "::",
        "127.0.0.1",
        "127.255.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:8.8.8.8",  # every IPv4-mapped address lies in ::/8, which ipaddress counts reserved
        "169.254.169.254",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "fd00:ec2::254",  # the AWS metadata service over IPv6
        "fec0::1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "224.0.0.1",
        "ff02::1",
        "255.255.255.255",
        "240.0.0.1",
        "100.64.0.1",
        "100.127.255.254",
        "198.18.0.1",
        "192.0.2.1",
        "2001:db8::1",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "2001:0:7f00:1:0:0:0:0",  # Teredo with server 127.0.0.1
    ],
)
def test_allowed_address_refuses(address: str) -> None:
    assert allowed_address(ipaddress.ip_address(address)) is False


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2002:808:808::1"])
def test_allowed_address_allows_public(address: str) -> None:
    assert allowed_address(ipaddress.ip_address(address)) is True


LOCAL_SPELLINGS = [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://LOCALHOST:8080/",
    "http://127.1/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://0.0.0.0/",
    "http://0/",
]


@pytest.mark.parametrize("url", LOCAL_SPELLINGS)
async def test_resolve_refuses_local_spellings(url: str) -> None:
    with pytest.raises(UrlNotAllowed, match=r"resolves to .*, which is not a public address"):
        await resolve(parse_url(url), frozenset())


@pytest.mark.parametrize("url", LOCAL_SPELLINGS)
async def test_resolve_accepts_allowed_hosts(url: str) -> None:
    target = parse_url(url)
    allow = LOCAL | {"127.1", "2130706433", "0177.0.0.1", "0x7f.1", "::1", "::ffff:127.0.0.1", "0.0.0.0", "0"}
    addresses = await resolve(target, allow)
    assert addresses and all(not allowed_address(ipaddress.ip_address(a)) for a in addresses)
    assert len(addresses) == len(set(addresses))


async def test_resolve_names_the_refused_address() -> None:
    with pytest.raises(UrlNotAllowed) as refused:
        await resolve(parse_url("http://127.1/"), frozenset())
    assert "127.0.0.1" in refused.value.message


async def test_resolve_public_literal() -> None:
    assert await resolve(parse_url("https://8.8.8.8/"), frozenset()) == ["8.8.8.8"]
    assert await resolve(parse_url("https://[2606:4700:4700::1111]/"), frozenset()) == ["2606:4700:4700::1111"]


async def test_resolve_refuses_a_host_that_does_not_resolve() -> None:
    unresolvable = Target("http", "a" * 64 + ".example", 80, "/", "")  # too long a label for IDNA: fails locally
    with pytest.raises(UrlNotAllowed, match="does not resolve"):
        await resolve(unresolvable, frozenset())


# --- post against a local server -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[int]:
    """A server on 127.0.0.1 running `handler` per connection; yields its port. Every handler ends once its client
    hangs up; one still running a moment after the exit is cancelled."""
    tasks: set[asyncio.Task[None]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client hung up: what several tests do on purpose
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        if tasks:
            _, running = await asyncio.wait(tasks, timeout=2)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)


async def read_request(reader: asyncio.StreamReader) -> tuple[list[str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")[:-2]
    length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:"))
    return lines, await reader.readexactly(length)


def answering(raw: bytes, keep_open: bool = False) -> Handler:
    """A handler that reads the request, writes `raw`, and (with keep_open) waits for the client to hang up."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()
        if keep_open:
            await reader.read()

    return handler


def local(port: int, path: str = "/hook") -> Target:
    return parse_url(f"http://127.0.0.1:{port}{path}")


async def test_post_returns_status_and_body() -> None:
    # The server keeps the connection open: Content-Length, not the close, ends the body.
    async with serving(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", keep_open=True)) as port:
        answer = await post(local(port), ["127.0.0.1"], BODY, {})
    assert isinstance(answer, Answer)
    assert (answer.status, answer.body) == (200, b"hello")
    assert 0 < answer.elapsed_s < 5


async def test_post_sends_the_exact_request() -> None:
    received: list[tuple[list[str], bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await read_request(reader))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        await reader.read()  # a 204 has no body: post() must not wait for the close

    signature = sign(SECRET, BODY, AT)
    async with serving(handler) as port:
        answer = await post(local(port, "/in/hook?a=1"), ["127.0.0.1"], BODY,
                            {"Webhook-Signature": signature, "Webhook-Id": "ev_1"}, answer_timeout_s=2)
    assert (answer.status, answer.body) == (204, b"")
    [(lines, body)] = received
    assert lines == [
        "POST /in/hook?a=1 HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(BODY)}",
        "User-Agent: wallet-ledger-webhooks/1",
        "Connection: close",
        f"Webhook-Signature: {signature}",
        "Webhook-Id: ev_1",
    ]
    assert body == BODY


async def test_post_connects_to_the_checked_address_not_the_host() -> None:
    """The host names the Host header (IPv6 in brackets) and TLS; the connection goes to the given address."""
    hosts: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines, _ = await read_request(reader)
        hosts.append(lines[1])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async with serving(handler) as port:
        for url in (f"http://[2606:4700:4700::1111]:{port}/", f"http://rebinding.example:{port}/"):
            assert (await post(parse_url(url), ["127.0.0.1", "10.0.0.1"], BODY, {})).status == 200
    assert hosts == [f"Host: [2606:4700:4700::1111]:{port}", f"Host: rebinding.example:{port}"]


async def test_post_does_not_follow_redirects() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\n"
                     b"Content-Length: 0\r\n\r\n")

    async with serving(handler) as port:
        answer = await post(local(port), ["127.0.0.1"], BODY, {})
    assert (answer.status, answer.body, connections) == (302, b"", 1)


async def test_post_skips_interim_answers() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok"
    async with serving(answering(raw)) as port:
        answer = await post(local(port), ["127.0.0.1"], BODY, {})
    assert (answer.status, answer.body) == (202, b"ok")


async def test_post_reads_a_body_until_close() -> None:
    async with serving(answering(b"HTTP/1.0 500 Oops\r\n\r\nsomething broke")) as port:
        answer = await post(local(port), ["127.0.0.1"], BODY, {})
    assert (answer.status, answer.body) == (500, b"something broke")


async def test_post_reads_a_chunked_answer() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
    async with serving(answering(raw, keep_open=True)) as port:
        answer = await post(local(port), ["127.0.0.1"], BODY, {}, answer_timeout_s=2)
    assert (answer.status, answer.body) == (200, b"hello world")


async def test_post_returns_a_body_cut_short() -> None:
    async with serving(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")) as port:
        answer = await post(local(port), ["127.0.0.1"], BODY, {})
    assert (answer.status, answer.body) == (200, b"partial")


def endless(head: bytes, piece: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head)
        while True:  # until the client hangs up (OSError, handled by serving)
            writer.write(piece)
            await writer.drain()

    return handler


async def test_post_cuts_an_endless_body_at_the_cap() -> None:
    async with serving(endless(b"HTTP/1.1 200 OK\r\n\r\n", b"x" * 16384)) as port:
        started = time.monotonic()
        answer = await post(local(port), ["127.0.0.1"], BODY, {}, answer_timeout_s=5)
        assert len(answer.body) == 64 * 1024 and answer.status == 200
        answer = await post(local(port), ["127.0.0.1"], BODY, {}, answer_timeout_s=5, answer_cap=1000)
        assert answer.body == b"x" * 1000
    assert time.monotonic() - started < 2


async def test_post_cuts_an_endless_chunked_body_at_the_cap() -> None:
    chunk = b"4000\r\n" + b"y" * 0x4000 + b"\r\n"
    async with serving(endless(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", chunk)) as port:
        answer = await post(local(port), ["127.0.0.1"], BODY, {}, answer_timeout_s=5, answer_cap=50_000)
    assert answer.body == b"y" * 50_000


async def test_post_cuts_a_huge_content_length_at_the_cap() -> None:
    async with serving(endless(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n", b"z" * 4096)) as port:
        answer = await post(local(port), ["127.0.0.1"], BODY, {}, answer_timeout_s=5, answer_cap=10_000)
    assert answer.body == b"z" * 10_000


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # reads the request and never answers


async def test_post_times_out_on_a_silent_server() -> None:
    async with serving(silent) as port:
        started = time.monotonic()
        with pytest.raises(DeliveryError, match=r"no complete answer within 0\.3 s"):
            await post(local(port), ["127.0.0.1"], BODY, {}, answer_timeout_s=0.3)
    assert 0.25 < time.monotonic() - started < 1.5


async def test_post_times_out_on_a_trickling_answer() -> None:
    """The deadline covers the whole answer, not each read: a byte a tick never ends it."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        while True:
            writer.write(b"X-A: b\r\n"[:1])
            await writer.drain()
            await asyncio.sleep(0.02)

    async with serving(trickle) as port:
        started = time.monotonic()
        with pytest.raises(DeliveryError, match="no complete answer"):
            await post(local(port), ["127.0.0.1"], BODY, {}, answer_timeout_s=0.3)
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n", "malformed status line"),
        (b"HTTP/1.1 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 099 Low\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 " + b"x" * 9000 + b"\r\n\r\n", "longer than 8192 bytes"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"x" * 9000 + b"\r\n\r\n", "longer than 8192 bytes"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", "more than 100 header lines"),
        (b"", "closed before"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", "closed before"),
    ],
)
async def test_post_refuses_a_malformed_answer(raw: bytes, message: str) -> None:
    async with serving(answering(raw)) as port:
        with pytest.raises(DeliveryError, match=message):
            await post(local(port), ["127.0.0.1"], BODY, {}, answer_timeout_s=2)


async def test_post_accepts_exactly_100_header_lines() -> None:
    raw = b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 99 + b"Content-Length: 0\r\n\r\n"
    async with serving(answering(raw)) as port:
        assert (await post(local(port), ["127.0.0.1"], BODY, {})).status == 200


async def test_post_to_a_closed_port_fails() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DeliveryError, match=r"connecting to 127\.0\.0\.1 port \d+ failed"):
        await post(local(port), ["127.0.0.1"], BODY, {})


async def test_post_reports_a_tls_failure() -> None:
    """A peer that does not speak TLS fails the handshake, and the delivery with it."""
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # what a plain HTTP server says to a ClientHello
        await writer.drain()

    async with serving(plain) as port:
        with pytest.raises(DeliveryError, match="TLS with localhost failed"):
            await post(parse_url(f"https://localhost:{port}/"), ["127.0.0.1"], BODY, {}, connect_timeout_s=2)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Evil": "a\r\nHost: evil"},
        {"X-Evil": "a\nb"},
        {"X-Evil\r\nHost": "a"},
        {"X Evil": "a"},
        {"": "a"},
        {"X-Evil": "a\0b"},
        {"Content-Length": "0"},
        {"host": "evil"},
        {"Transfer-Encoding": "chunked"},
        {"X-Evil": "\u2028"},
    ],
)
async def test_post_refuses_header_injection_before_connecting(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        await post(parse_url("http://192.0.2.1/"), ["192.0.2.1"], BODY, headers, connect_timeout_s=0.01)


async def test_post_needs_an_address() -> None:
    with pytest.raises(ValueError):
        await post(parse_url("http://192.0.2.1/"), [], BODY, {})
