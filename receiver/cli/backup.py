"""`receiver backup FILE` and `receiver restore FILE`: the SQLite store, copied safely.

``backup`` runs beside a running receiver (ingest goes on) and writes FILE with mode 0600;
``restore`` refuses while a receiver uses the store (exit 1), otherwise replaces the store
with FILE. For a PostgreSQL store use ``pg_dump`` / ``pg_restore`` (README).
"""

from __future__ import annotations

import argparse
from typing import Any

from receiver.cli.config import configured
from receiver.store.backup import backup, restore


def _backup(args: argparse.Namespace) -> int:
    config = configured(args)
    rows = backup(config.store.path, args.file)
    print(f"backed up {config.store.path} to {args.file} ({rows} journal rows)")
    return 0


def _restore(args: argparse.Namespace) -> int:
    config = configured(args)
    rows = restore(config.store.path, args.file)
    print(f"restored {config.store.path} from {args.file} ({rows} journal rows)")
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("backup", help="copy the store while the receiver runs (SQLite)")
    p.add_argument("file", metavar="FILE", help="the new backup file (not overwritten)")
    p.set_defaults(handler=_backup)
    p = sub.add_parser("restore", help="replace the store with a backup (receiver stopped)")
    p.add_argument("file", metavar="FILE", help="a file made by `receiver backup`")
    p.set_defaults(handler=_restore)
