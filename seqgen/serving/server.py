"""Run the application with uvicorn on a socket bound here, so a port in use is one error
line before anything starts, and port 0 picks a free port that the first line names.

uvicorn owns the signals: on SIGTERM or Ctrl-C it stops accepting connections, lets the
requests in flight finish (up to ``grace`` seconds), then runs the application's shutdown.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence

import uvicorn

from seqgen.errors import SeqgenError
from seqgen.serving.app import create_app
from seqgen.serving.models import ServedModel


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; SeqgenError if it cannot be had."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
    except OSError as error:
        raise SeqgenError(
            f"cannot listen on {host}:{port} ({error.strerror or error}); "
            "choose another --host or --port"
        ) from None
    sock.listen(2048)
    return sock


def serve(models: Sequence[ServedModel], *, host: str, port: int, limits, grace: float) -> None:
    """Serve ``models`` until SIGTERM or Ctrl-C."""

    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    names = ", ".join(f"{m.name} ({m.task.title}, {m.endpoint.path})" for m in models)
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"seqgen: serving {names} on http://{shown}:{bound_port}", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        create_app(models, limits),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=grace,
        lifespan="on",
    )
    uvicorn.Server(config).run(sockets=[sock])
