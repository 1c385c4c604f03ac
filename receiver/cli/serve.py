"""`receiver serve`: run the receiver until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import functools
from typing import Any

import trio

from receiver.config import load_config
from receiver.logs import configure
from receiver.service import serve_until_signalled


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    json_logs = True if args.json_logs else None
    configure(json=json_logs)
    trio.run(functools.partial(serve_until_signalled, config, json_logs=json_logs))
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the receiver",
        description="Run the receiver: DC-09 on TCP and UDP, bridges, supervision, outputs. "
        "With no --config it runs on the embedded default (SQLite under ./var/, loopback only).",
    )
    parser.add_argument("--json-logs", action="store_true", help="JSON logs even on a terminal")
    parser.set_defaults(handler=_serve)
