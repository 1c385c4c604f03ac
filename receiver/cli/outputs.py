"""`receiver outputs`: each configured output's delivery state."""

from __future__ import annotations

import argparse
from typing import Any

from receiver.cli.output import add_format_option, emit
from receiver.config import load_config
from receiver.dispatcher import output_status
from receiver.store.sqlite import connect

COLUMNS = (
    "name",
    "kind",
    "connected",
    "backlog",
    "oldest_age_s",
    "delivered",
    "undeliverable",
    "last_error",
)


def _outputs(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    conn = connect(config.store.path)
    try:
        rows = output_status(conn, [o.name for o in config.outputs])
    finally:
        conn.close()
    kinds = {o.name: o.kind for o in config.outputs}
    for row in rows:
        row["kind"] = kinds[row["name"]]
    emit(rows, COLUMNS, args.format)
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "outputs",
        help="show each output: connected, backlog, oldest undelivered, last error",
    )
    add_format_option(parser)
    parser.set_defaults(handler=_outputs)
