"""The network edge of the webhook dispatcher: which URLs it may call, and one bounded HTTP/1.1 POST.

A webhook URL is chosen by a tenant, so it is hostile input: unchecked, it turns the dispatcher into a proxy into
our own network (server-side request forgery: the cloud metadata service at 169.254.169.254, an admin port on
localhost). So `resolve` resolves the host once and refuses it if any address is not public, and `post` connects to
that checked address, never to the name again: a DNS answer that changes in between (rebinding) cannot redirect the
request. The peer is hostile too: what `post` reads is bounded in size and in time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ipaddress
import re
import socket
import ssl
import time
from typing import NamedTuple
from urllib.parse import urlsplit

MAX_URL = 2048
MAX_LINE = 8 * 1024
MAX_HEADERS = 100
CLOSE_WAIT_S = 1.0
USER_AGENT = "wallet-ledger-webhooks/1"
DEFAULT_PORTS = {"http": 80, "https": 443}

_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT: private in practice, not in `is_private`
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible addresses, ::a.b.c.d
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_STATUS = re.compile(rb"HTTP/1\.[0-9] ([1-9][0-9]{2})(?: [^\r\n]*)?\r?\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")
# Framing and identity are post()'s: a caller's Content-Length or Host would make the request ambiguous.
_OWN_HEADERS = frozenset({"host", "content-type", "content-length", "user-agent", "connection", "transfer-encoding"})


# Name lookups block a thread each (getaddrinfo), for as long as the system's resolver takes, whatever our own
# timeout: they get threads of their own, so a host whose name server never answers holds none of the threads
# that others share (asyncio's default executor also decodes large request bodies in the API).
RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="resolve")


class UrlNotAllowed(Exception):
    """A webhook URL, or an address its host resolves to, that the dispatcher refuses to call."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DeliveryError(Exception):
    """A POST that got no usable answer: connect or TLS failure, timeout, an answer that is not HTTP."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Target(NamedTuple):
    """A webhook URL taken apart by `parse_url`; `host` is lower case, an IPv6 literal without its brackets."""

    scheme: str
    host: str
    port: int
    path_and_query: str
    url: str


class Answer(NamedTuple):
    """What the receiver answered; a webhook counts as delivered on a 2xx `status`."""

    status: int
    body: bytes  # at most the cap
    elapsed_s: float  # from the start of the connect to the end of the body


def parse_url(url: str) -> Target:
    """The target of `url`, or UrlNotAllowed saying why not.

    Anything `urlsplit` would quietly drop or that another parser would read differently (spaces, tabs, newlines,
    non-ASCII, a backslash in the host, credentials, zone ids) is refused rather than cleaned: the URL a tenant
    reads must be the one we call. The fragment is never sent, so it is accepted and left out of `path_and_query`."""
    if len(url) > MAX_URL:
        raise UrlNotAllowed(f"the URL is longer than {MAX_URL} characters")
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        raise UrlNotAllowed("the URL must be ASCII without spaces or control characters (percent-encode them)")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UrlNotAllowed(f"the URL does not parse: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise UrlNotAllowed("the URL must start with http:// or https://")
    netloc = parts.netloc
    if "@" in netloc:
        raise UrlNotAllowed("the URL must not carry credentials (user:password@)")
    if netloc.startswith("["):
        host, bracket, after = netloc[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise UrlNotAllowed("a bracketed IPv6 host must be followed by ':port', the path or nothing")
        port_text = after[1:]
        if "%" in host:
            raise UrlNotAllowed("the IPv6 host must not carry a zone id")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UrlNotAllowed(f"[{host}] is not an IPv6 address") from None
    else:
        host, _, port_text = netloc.partition(":")
        name = host.removesuffix(".")  # a fully qualified name may end with a dot
        if host and (len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.lower().split("."))):
            raise UrlNotAllowed(f"{host!r} is not a valid host name")
    if not host:
        raise UrlNotAllowed("the URL has no host")
    port = DEFAULT_PORTS[parts.scheme]
    if port_text:
        if not (port_text.isdigit() and len(port_text) <= 5 and 1 <= int(port_text) <= 65535):
            raise UrlNotAllowed("the port must be a number from 1 to 65535")
        port = int(port_text)
    # Taken from the URL itself rather than rebuilt from `parts`, which drops an empty query ("?").
    rest = url[len(parts.scheme) + 3 + len(netloc):].partition("#")[0]
    return Target(parts.scheme, host.lower(), port, rest if rest.startswith("/") else "/" + rest, url)


def allowed_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether the dispatcher may connect to `ip`: only public unicast addresses.

    An IPv6 address that carries an IPv4 one (mapped, compatible, NAT64, 6to4, Teredo) reaches that IPv4 address
    through a translator or tunnel, so it is refused when the embedded address is."""
    if (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_unspecified
            or ip.is_reserved or not ip.is_global):
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return ip not in _SHARED
    if ip.is_site_local:  # fec0::/10: deprecated, yet `is_global` in Python 3.11
        return False
    embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in _NAT64 or ip in _COMPATIBLE:
        embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return all(allowed_address(v4) for v4 in embedded if v4 is not None)


async def resolve(target: Target, allow_hosts: frozenset[str], timeout_s: float = 5.0) -> list[str]:
    """The distinct addresses of `target.host`, in resolver order, all of them allowed.

    Every address is checked, not just the first: a name can resolve to a public and a private address and a
    connect may fall through to the other. Hosts in `allow_hosts` (lower case) skip the check, for tests and local
    receivers. Numeric spellings such as `127.1`, `2130706433` or `0177.0.0.1` resolve to what they mean, so they are
    caught here too."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.run_in_executor(RESOLVER, functools.partial(
                socket.getaddrinfo, target.host, target.port, type=socket.SOCK_STREAM))
    except TimeoutError:
        raise UrlNotAllowed(f"{target.host} did not resolve within {timeout_s:g} s") from None
    except (OSError, UnicodeError):
        raise UrlNotAllowed(f"{target.host} does not resolve") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UrlNotAllowed(f"{target.host} does not resolve")
    if target.host.lower() in allow_hosts:
        return addresses
    for address in addresses:
        try:
            allowed = allowed_address(ipaddress.ip_address(address))
        except ValueError:
            allowed = False
        if not allowed:
            raise UrlNotAllowed(f"{target.host} resolves to {address}, which is not a public address")
    return addresses


async def post(target: Target, addresses: list[str], body: bytes, headers: dict[str, str],
               connect_timeout_s: float = 5.0, answer_timeout_s: float = 10.0, answer_cap: int = 64 * 1024) -> Answer:
    """POST `body` to `target` at `addresses[0]` (the address `resolve` checked) and read the answer.

    Redirects are not followed: a 3xx is returned as it is (following one would skip `resolve`). The request write
    and the whole answer share one deadline, `answer_timeout_s`. Once the status line and headers have arrived the
    answer counts: a body cut short by the peer (closed, reset, bad chunking) is returned as far as it got, and
    reading stops at `answer_cap` bytes. Raises ValueError for a header with CR or LF (before connecting)."""
    if not addresses:
        raise ValueError("post() needs the addresses resolve() returned")
    request = _request(target, body, headers)
    address = addresses[0]
    tls = _tls_context() if target.scheme == "https" else None
    started = time.monotonic()
    try:
        async with asyncio.timeout(connect_timeout_s):
            reader, writer = await asyncio.open_connection(
                address, target.port, ssl=tls, server_hostname=target.host if tls else None, limit=MAX_LINE)
    except TimeoutError:
        raise DeliveryError(f"connecting to {address} port {target.port} timed out") from None
    except ssl.SSLError as exc:
        raise DeliveryError(f"TLS with {target.host} failed: {_tls_reason(exc)}") from None
    except OSError as exc:
        raise DeliveryError(f"connecting to {address} port {target.port} failed: {exc.strerror or exc}") from None
    try:
        async with asyncio.timeout(answer_timeout_s):
            writer.write(request)
            await writer.drain()
            head = await _read_head(reader)
            answer = bytearray()
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                await _read_body(reader, head, answer, answer_cap)
        return Answer(head[0], bytes(answer[:answer_cap]), time.monotonic() - started)
    except TimeoutError:
        raise DeliveryError(f"no complete answer within {answer_timeout_s:g} s") from None
    except ssl.SSLError as exc:
        raise DeliveryError(f"TLS with {target.host} failed: {_tls_reason(exc)}") from None
    except OSError as exc:
        raise DeliveryError(f"connection lost: {exc.strerror or exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_WAIT_S):
                await writer.wait_closed()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's trusted CAs, certificates checked against the host name. Built once: loading the CAs costs
    milliseconds, and a context serves any number of connections."""
    return ssl.create_default_context()


def _tls_reason(exc: ssl.SSLError) -> str:
    return str(getattr(exc, "verify_message", None) or exc.reason or exc)


def _checked(text: str, what: str) -> str:
    if "\r" in text or "\n" in text or "\0" in text:
        raise ValueError(f"{what} {text!r} contains CR, LF or NUL")
    return text


def _request(target: Target, body: bytes, headers: dict[str, str]) -> bytes:
    """The request head and body; refuses anything that would let a value end its line and start another."""
    if target.scheme not in DEFAULT_PORTS:
        raise ValueError(f"scheme {target.scheme!r} is not http or https")
    path = _checked(target.path_and_query, "path")
    if not path.startswith("/") or " " in path:
        raise ValueError(f"path {path!r} must start with / and contain no space")
    host = _checked(target.host, "host")
    host = f"[{host}]" if ":" in host else host
    if target.port != DEFAULT_PORTS[target.scheme]:
        host = f"{host}:{target.port}"
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", f"User-Agent: {USER_AGENT}", "Connection: close"]
    for name, value in headers.items():
        _checked(name, "header name")
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in _OWN_HEADERS:
            raise ValueError(f"header {name} is set by post() itself")
        lines.append(f"{name}: {_checked(value, f'header {name} value')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _line(reader: asyncio.StreamReader) -> bytes:
    """One line of the answer's head; the stream's limit (MAX_LINE) bounds it."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise DeliveryError(f"the answer has a line longer than {MAX_LINE} bytes") from None
    except asyncio.IncompleteReadError:
        raise DeliveryError("the connection closed before the answer's headers ended") from None


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The final status and the header fields (lower-case names, repeats joined by ", "), skipping interim 1xx."""
    while True:
        line = await _line(reader)
        match = _STATUS.fullmatch(line)
        if match is None:
            raise DeliveryError(f"malformed status line {line[:80]!r}")
        status = int(match[1])
        fields: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = await _line(reader)
            if line in (b"\r\n", b"\n"):
                break
            name, colon, value = line.partition(b":")
            if colon:  # a line without one carries nothing post() uses
                key, text = name.strip().lower().decode("latin-1"), value.strip().decode("latin-1")
                fields[key] = f"{fields[key]}, {text}" if key in fields else text
        else:
            raise DeliveryError(f"the answer has more than {MAX_HEADERS} header lines")
        if status >= 200 or status == 101:
            return status, fields


async def _read_body(reader: asyncio.StreamReader, head: tuple[int, dict[str, str]], into: bytearray,
                     cap: int) -> None:
    """Reads the body into `into`, at most `cap` bytes, framed as RFC 9112 section 6.3 says."""
    status, fields = head
    if status < 200 or status in (204, 304):
        return
    encoding = fields.get("transfer-encoding")
    if encoding is not None:
        if encoding.lower().rsplit(",", 1)[-1].strip() == "chunked":
            await _read_chunked(reader, into, cap)
        else:
            await _read_upto(reader, into, cap)
        return
    length = fields.get("content-length", "")
    if length.isdigit() and length.isascii() and len(length) <= 18:
        await _read_upto(reader, into, min(cap, int(length)))
    else:
        await _read_upto(reader, into, cap)  # no (usable) length: the body ends when the peer closes


async def _read_upto(reader: asyncio.StreamReader, into: bytearray, until: int) -> None:
    """Reads until `into` holds `until` bytes or the peer closes."""
    while len(into) < until:
        data = await reader.read(until - len(into))
        if not data:
            return
        into += data


async def _read_chunked(reader: asyncio.StreamReader, into: bytearray, cap: int) -> None:
    while len(into) < cap:
        match = _CHUNK_SIZE.fullmatch(await reader.readuntil(b"\n"))
        if match is None:
            return
        size = int(match[1], 16)
        if size == 0:
            return
        end = len(into) + size
        await _read_upto(reader, into, min(cap, end))
        if len(into) < end:  # capped, or the peer closed
            return
        await reader.readuntil(b"\n")  # the CRLF that ends the chunk
