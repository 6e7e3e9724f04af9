"""Raw ASGI middleware that runs before any route: the Host allow-list (outermost), the
headers every response carries (no framing), and the request body limit (size and time)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from .errors import send_error

ANY_HOST = "*"
BODY_TIMEOUT_S = 10.0  # a request body that has not all arrived by then is refused (408)
# no page may frame this one (clickjacking): the modern header and the old one
FRAME_HEADERS = [
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
]


def normalise_host(name: str) -> str:
    """A configured name as it appears in a Host header: lower case, IPv6 in brackets."""
    name = name.strip().lower()
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    return name


def host_name(value: str) -> str | None:
    """The name in a Host header without its port (``[::1]:3000`` → ``[::1]``), or None when
    the header is malformed."""
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        name, rest = (v[: end + 1], v[end + 1 :]) if end > 0 else ("", "")
    else:
        name, sep, port = v.partition(":")
        rest = sep + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return name or None


class HostAllowList:
    """Answer only requests whose Host names this server (default: the loopback names, any
    port). A DNS-rebinding page reaches the server under its own domain name, so its
    requests carry that name and get 400 before any route runs."""

    def __init__(self, app: Any, allowed: Iterable[str]):
        self.app = app
        self.allowed = {normalise_host(h) for h in allowed}

    def allows(self, header: str | None) -> bool:
        if ANY_HOST in self.allowed:
            return True
        name = host_name(header) if header else None
        return name is not None and name in self.allowed

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        hosts = [v.decode("latin-1") for k, v in scope.get("headers") or [] if k == b"host"]
        header = hosts[0] if len(hosts) == 1 else None
        if not self.allows(header) and scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # refused before accept
            return
        if not self.allows(header):
            shown = "no Host header" if not hosts else f"Host {', '.join(hosts)!r}"
            await send_error(
                send,
                400,
                f"{shown} is not allowed here",
                "open the page as http://127.0.0.1:PORT/ or http://localhost:PORT/, or add the "
                "name to server.allowed_hosts in the config (a deployment behind a proxy)",
            )
            return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Every response says it may not be framed (``FRAME_HEADERS``), errors from the other
    middleware included (this one is outermost)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                names = {k.lower() for k, _ in msg.get("headers") or []}
                extra = [(k, v) for k, v in FRAME_HEADERS if k not in names]
                msg = {**msg, "headers": [*(msg.get("headers") or []), *extra]}
            await send(msg)

        await self.app(scope, receive, with_headers)


class BodyLimit:
    """Refuse a request body over ``max_bytes`` with 413, judged by Content-Length and by
    the bytes that actually arrive (a chunked body has no Content-Length), and one that has
    not all arrived within ``timeout_s`` with 408 (a client that sends half a request does
    not hold a connection and a task for ever). The body is buffered (it is small by
    construction) and replayed to the app."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = BODY_TIMEOUT_S if timeout_s is None else timeout_s

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await send_error(send, 400, "invalid Content-Length header", "send a number")
                return
            if too_big:
                await self._refuse(send)
                return
        parts: list[bytes] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while True:
            try:
                msg = await asyncio.wait_for(
                    receive(), deadline - asyncio.get_running_loop().time()
                )
            except TimeoutError:
                await send_error(send, 408, f"the request body did not arrive within "
                                 f"{self.timeout_s:g} s", "send the whole body at once")  # fmt: skip
                return
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            parts.append(body)
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()  # later calls: wait for the client to disconnect

        await self.app(scope, replay, send)

    async def _refuse(self, send: Callable) -> None:
        await send_error(
            send,
            413,
            f"request body over the limit of {self.max_bytes} bytes",
            "send less text (or raise server.max_body_bytes in the config)",
        )
