"""``lipbench serve``: check the port, start the pools, run uvicorn until Ctrl-C, stop
every replica."""

from __future__ import annotations

import logging
import socket
from typing import Any

from ..errors import LipbenchError
from .app import create_app
from .connection import HeaderDeadlineProtocol
from .middleware import ANY_HOST, normalise_host

log = logging.getLogger("lipbench.server")

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def check_port(host: str, port: int) -> None:
    """Fail before the slow start-up when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise LipbenchError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                "stop whatever uses that port or pass --port N",
            ) from None


def serve(cfg: dict[str, Any], host: str | None = None, port: int | None = None) -> int:
    """Start the pools, then serve until Ctrl-C; the pools are closed however it ends."""
    import uvicorn

    host = host or cfg["server"]["host"]
    port = port or cfg["server"]["port"]
    if host not in LOOPBACK:
        log.warning("listening on %s: anyone who can reach this address can run jobs (no "
                    "authentication)", host)  # fmt: skip
        allowed = {normalise_host(h) for h in cfg["server"]["allowed_hosts"]}
        if ANY_HOST not in allowed and normalise_host(host) not in allowed:
            log.warning("server.allowed_hosts is %s: requests naming this machine otherwise get "
                        "400; add the name clients use", sorted(allowed))  # fmt: skip
    check_port(host, port)
    app = create_app(cfg)
    state = app.state.lipbench
    try:
        state.start()  # here rather than in the lifespan: a bad checkpoint is a clean CLI error
    except BaseException:
        state.close()
        raise
    shown = f"[{host}]" if ":" in host else host
    log.info("open http://%s:%d/parallel_test (API docs: /docs)", shown, port)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5,
                    http=HeaderDeadlineProtocol)  # fmt: skip
    finally:
        state.close()
    return 0
