"""What keeps a web server on one's own machine safe from its peers.

`UploadGuard` bounds a request body in bytes and in time, `SameOriginOnly` refuses requests
for another host name (DNS rebinding) and state changes from another origin, and
`server_config` gives uvicorn a header timeout and a connection cap. serve.py wires them in.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

# A body must arrive at this rate on average (after the header timeout's grace): a 200 MB
# upload at the floor takes 3.5 hours, a slow-loris trickle of a few bytes a second is cut.
MIN_UPLOAD_BYTES_PER_S = 16_000
HEADER_TIMEOUT_S = 10.0
# 200 MB in 30 minutes is about 0.9 Mbit/s: a slow link still gets a whole upload through.
UPLOAD_TIMEOUT_S = 1800.0
MAX_CONNECTIONS = 32
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::", ""})


class UploadGuard:
    """ASGI middleware bounding what a request body may cost, in bytes and in time.

    Over `max_bytes`: 413 saying the limit, at once when Content-Length is over, else as soon
    as the streamed bytes pass it. Too slow: 408 (and the connection closed) when the body has
    not ended `timeout_s` after the request began, or falls behind MIN_UPLOAD_BYTES_PER_S
    after a grace of `grace_s`. (Starlette's RequestBodyLimitMiddleware answers a bare
    "Content Too Large" and bounds no time.)
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, message: str, timeout_s: float, grace_s: float
    ) -> None:
        self.app, self.max_bytes, self.message = app, max_bytes, message
        self.timeout_s, self.grace_s = timeout_s, grace_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            refusal = JSONResponse({"detail": self.message}, status_code=413)
            return await refusal(scope, receive, send)
        clock = asyncio.get_running_loop().time
        start, received, ended = clock(), 0, False

        async def guarded_receive() -> Message:
            nonlocal received, ended
            if ended:  # after the body, receive only waits for a disconnect: no deadline
                return await receive()
            floor = self.grace_s + received / MIN_UPLOAD_BYTES_PER_S
            deadline = start + min(self.timeout_s, floor)
            try:
                message = await asyncio.wait_for(receive(), max(deadline - clock(), 0))
            except TimeoutError:
                raise HTTPException(
                    408, too_slow(self.timeout_s), headers={"Connection": "close"}
                ) from None
            received += len(message.get("body", b""))
            ended = not message.get("more_body", False)
            if received > self.max_bytes:
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, guarded_receive, send)


def too_slow(timeout_s: float) -> str:
    return (
        f"the upload was too slow: it must arrive at {MIN_UPLOAD_BYTES_PER_S // 1000} kB/s or "
        f"more and end within {timeout_s:g} s"
    )


class SameOriginOnly:
    """ASGI middleware for a server on one's own machine: a request whose `Host` does not name
    this server is refused (400; a DNS-rebinding page reaches it under its own name), and so
    is a request that may change state and comes from another origin (403; a form on another
    site posting here).

    Args:
        app: the wrapped app.
        is_allowed_host: says whether a host name (no port) names this server.
    """

    def __init__(self, app: ASGIApp, is_allowed_host: Callable[[str], bool]) -> None:
        self.app, self.is_allowed_host = app, is_allowed_host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        own = _origin_parts(f"{scope['scheme']}://{host}")
        if own is None or not self.is_allowed_host(own[1]):
            refusal = JSONResponse(
                {
                    "detail": f"Host {host!r} does not name this server; "
                    "start it with --allowed-host NAME to answer to NAME"
                },
                status_code=400,
            )
            return await refusal(scope, receive, send)
        origin = headers.get("origin")
        if scope["method"] not in SAFE_METHODS and origin and _origin_parts(origin) != own:
            refusal = JSONResponse(
                {"detail": f"cross-origin request from {origin!r} refused"}, status_code=403
            )
            return await refusal(scope, receive, send)
        await self.app(scope, receive, send)


def _origin_parts(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin such as http://127.0.0.1:8000; None when malformed."""
    try:
        parts = urlsplit(origin)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    except ValueError:
        return None
    return (parts.scheme, parts.hostname, port) if parts.hostname else None


def host_names(listen_host: str, allowed_hosts: Sequence[str] = ()) -> Callable[[str], bool]:
    """Which `Host` names this server answers to: the address it listens on, `localhost` and
    the loopback addresses when that is loopback or every interface, any IP address when it
    listens on every interface, and `allowed_hosts`."""
    listen = listen_host.strip("[]").lower()
    names = {listen, *(name.strip("[]").lower() for name in allowed_hosts)}
    everywhere = listen in WILDCARD_ADDRESSES
    if everywhere or is_loopback(listen):
        names |= {"localhost", "127.0.0.1", "::1"}

    def allowed(host: str) -> bool:
        return host in names or (everywhere and _is_ip_address(host))

    return allowed


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol that also drops a connection which has not sent a whole
    request head `header_timeout_s` after connecting or after its last response (a client
    sending its headers a byte at a time would otherwise hold the connection forever)."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request head arrived
            self._stop_waiting()

    def on_response_complete(self) -> None:
        self._await_head()  # before: a pipelined request handled inside stops the clock again
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._stop_waiting()
        self.head_timer = self.loop.call_later(self.header_timeout_s, self.transport.close)

    def _stop_waiting(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None


def server_config(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    max_connections: int = MAX_CONNECTIONS,
    header_timeout_s: float = HEADER_TIMEOUT_S,
    log_level: str = "info",
) -> uvicorn.Config:
    """uvicorn's settings for `app`: request heads within `header_timeout_s`, and at most
    `max_connections` open connections (requests beyond get 503)."""
    protocol = functools.partial(HeaderTimeoutProtocol, header_timeout_s=header_timeout_s)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        limit_concurrency=max_connections,
        log_level=log_level,
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
