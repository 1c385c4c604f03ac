"""`receiver serve`: run the receiver until SIGINT/SIGTERM.

Before anything listens it reads and checks the configuration (every mistake, exit 2), takes
the store's lock (one receiver per store: a second one is refused, naming the holder's pid)
and opens the store; any of these failing, or a listener address that cannot be bound, is one
line on stderr and exit 1, never a traceback. So is a store lost while the service starts (a
PostgreSQL server stopped after the first check): the first failure, in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import sys
from typing import Any

import trio

from protocols.errors import StartupError
from receiver.cli.config import config_source
from receiver.config import load_config
from receiver.logs import configure
from receiver.service import first_in_group, serve_until_signalled
from receiver.store.faults import fault_line
from receiver.store.lock import StoreLock
from receiver.store.sqlite import connect


def _serve(args: argparse.Namespace) -> int:
    source = config_source(args)
    config = load_config(source)
    json_logs = True if args.json_logs else None
    configure(json=json_logs, level=logging.getLevelNamesMapping()[config.log.level.upper()])
    if config.store.url:  # PostgreSQL: several nodes share it, no file lock
        from receiver.store.postgres.schema import connect as pg_connect  # noqa: PLC0415

        pg_connect(config.store.url).close()  # reachable and migrated, or one line now
        lock: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    else:
        lock = StoreLock.acquire(config.store.path)
    with lock:
        if not config.store.url:
            connect(config.store.path).close()  # migrated and writable, or one line now
        config_file = str(source.resolve()) if source else None
        sys.setswitchinterval(config.ingest.switch_interval)  # the workers set theirs
        try:
            trio.run(
                functools.partial(serve_until_signalled, config, config_file, json_logs=json_logs)
            )
        except BaseExceptionGroup as group:
            found = first_in_group(group, StartupError)
            if found is not None:
                raise found from None
            lost = _store_fault(group)
            if lost is None:
                raise
            raise StartupError(lost) from None
    return 0


def _store_fault(exc: BaseException) -> str | None:
    """The line for the first store fault in ``exc`` or its (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _store_fault(inner)
            if found is not None:
                return found
        return None
    return fault_line(exc)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the receiver",
        description="Run the receiver: DC-09 on TCP and UDP, bridges, supervision, outputs. "
        "With no --config (and no RECEIVER_CONFIG) it runs on the embedded default (SQLite "
        "under ./var/, loopback only).",
    )
    parser.add_argument("--json-logs", action="store_true", help="JSON logs even on a terminal")
    parser.set_defaults(handler=_serve)
