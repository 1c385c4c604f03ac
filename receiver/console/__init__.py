"""The operator console: the HTTP API, the operator's pages, ``/metrics`` and ``/healthz``,
served by hypercorn's trio worker from the receiver's own trio process.

One entry point, :func:`serve_console`, started as one task in the service's nursery. The
console is a reader of the store (SQLite or PostgreSQL, ``[store]``) and of the running
service; the few writes it makes go through the journal's writer on SQLite and commit on the
console's own connection on PostgreSQL (``ConsoleState.write``). A console that cannot bind
its port is logged and left off: alarms keep flowing without it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import structlog
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from receiver.config import Config

from .app import build_app
from .state import ConsoleState

if TYPE_CHECKING:
    from receiver.service import Service

__all__ = ["serve_console"]


def _hypercorn_config(host: str, port: int) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    # Server-sent events stay open; keep-alive for them is the stream's own comment lines.
    config.keep_alive_timeout = 30.0
    return config


def _bind_error(exc: BaseException) -> OSError | None:
    """The OSError that kept hypercorn from binding (it arrives inside exception groups)."""
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc if isinstance(exc, OSError) else None


async def serve_console(
    config: Config,
    service: Service,
    task_status: trio.TaskStatus[int | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the console until cancelled; ``started`` with its port (None: it is off)."""
    log = structlog.get_logger("receiver.console")
    address = config.console.address
    if address is None:
        task_status.started(None)
        return
    host, port = address
    state = ConsoleState(config, service)
    app = build_app(state)
    try:
        async with trio.open_nursery() as nursery:
            try:
                binds = await nursery.start(serve, app, _hypercorn_config(host, port))
            except (OSError, BaseExceptionGroup) as exc:
                error = _bind_error(exc)
                if error is None:
                    raise
                log.error("console_unavailable", listen=config.console.listen, error=str(error))
                task_status.started(None)
                return
            bound = int(binds[0].rsplit(":", 1)[1])
            nursery.start_soon(state.watch)
            log.info(
                "console_listening",
                url=f"http://{config.console.listen.rsplit(':', 1)[0]}:{bound}/",
            )
            task_status.started(bound)
    finally:
        state.reader.close()
