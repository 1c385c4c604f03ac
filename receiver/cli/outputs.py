"""`receiver outputs`: each configured output's delivery state.

It reads the configuration the running receiver uses (``--config`` or ``RECEIVER_CONFIG``:
give it the same file) and says on stderr which one it read, so an answer from the embedded
default's outputs is never mistaken for the running receiver's.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from receiver.cli.config import config_source, describe_source
from receiver.cli.output import add_format_option, emit
from receiver.config import load_config
from receiver.dispatcher import output_status
from receiver.store import describe, open_store

COLUMNS = (
    "name",
    "kind",
    "connected",
    "backlog",
    "oldest_age_s",
    "delivered",
    "undeliverable",
    "trouble",
    "failover",
    "last_error",
)


def _outputs(args: argparse.Namespace) -> int:
    source = config_source(args)
    config = load_config(source)
    print(
        f"receiver: outputs of {describe_source(source)}, store {describe(config.store)}",
        file=sys.stderr,
    )
    store = open_store(config.store, create=False)
    try:
        rows = output_status(store, [o.name for o in config.outputs])
    finally:
        store.close()
    kinds = {o.name: o.kind for o in config.outputs}
    for row in rows:
        row["kind"] = kinds[row["name"]]
    emit(rows, COLUMNS, args.format)
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "outputs",
        help="show each output: connected, backlog, oldest undelivered, trouble, last error",
    )
    add_format_option(parser)
    parser.set_defaults(handler=_outputs)
