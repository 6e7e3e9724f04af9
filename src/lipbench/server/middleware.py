"""Raw ASGI middleware that runs before any route: the Host allow-list (outermost) and the
request body limit."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .errors import send_error

ANY_HOST = "*"


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


class BodyLimit:
    """Refuse a request body over ``max_bytes`` with 413, judged by Content-Length and by
    the bytes that actually arrive (a chunked body has no Content-Length). The body is
    buffered (it is small by construction) and replayed to the app."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

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
        while True:
            msg = await receive()
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
