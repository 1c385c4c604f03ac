"""`receiver nodes`: every receiver node on the store, its last heartbeat, and its leases.

It reads through the store the configuration names (``[store] url`` for PostgreSQL, else the
SQLite file, which must exist) and says on stderr which one. A node's age is how long ago its
last heartbeat was (by this machine's clock); a node that stopped heartbeating is shown until
it is removed, so a dead node is visible. Leases are shown while unexpired, with their holder.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

from receiver.cli.config import config_source, describe_source
from receiver.cli.output import add_format_option, emit
from receiver.config import load_config
from receiver.nodes import open_lease_store
from receiver.store import describe
from receiver.store.interface import Lease, NodeBeat

COLUMNS = ("node", "heartbeat", "age_s", "holds", "pid", "version", "listeners")


def _time(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="milliseconds")


def node_rows(nodes: list[NodeBeat], leases: list[Lease], now_us: int) -> list[dict[str, Any]]:
    """One row per node (and per lease holder that never heartbeat), by name."""
    held: dict[str, list[Lease]] = {}
    for lease in leases:
        held.setdefault(lease.holder, []).append(lease)
    beats = {beat.name: beat for beat in nodes}
    rows = []
    for name in sorted(set(beats) | set(held)):
        beat = beats.get(name)
        info = dict(beat.info) if beat is not None else {}
        listeners = info.get("listeners") or {}
        rows.append(
            {
                "node": name,
                "heartbeat": _time(beat.heartbeat_us) if beat is not None else None,
                "age_s": round((now_us - beat.heartbeat_us) / 1e6, 1) if beat else None,
                "holds": [
                    f"{lease.name} until {_time(lease.expires_us)}"
                    for lease in sorted(held.get(name, []), key=lambda lease: lease.name)
                ],
                "pid": info.get("pid"),
                "version": info.get("version"),
                "listeners": [f"{k}={v}" for k, v in sorted(dict(listeners).items())],
            }
        )
    return rows


def _nodes(args: argparse.Namespace) -> int:
    source = config_source(args)
    config = load_config(source)
    print(
        f"receiver: nodes of {describe_source(source)}, store {describe(config.store)}",
        file=sys.stderr,
    )
    store = open_lease_store(config.store, create=False)
    try:
        nodes, leases = store.nodes(), store.leases()
    finally:
        store.close()
    emit(node_rows(nodes, leases, int(time.time() * 1e6)), COLUMNS, args.format)
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "nodes",
        help="list the receiver nodes on the store: heartbeat, age, leases held and until when",
    )
    add_format_option(parser)
    parser.set_defaults(handler=_nodes)
