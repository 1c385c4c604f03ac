"""Counting the None values sqlite3 sends through its adapter lookup (about 1 us each): the
store's hot statements bind their missing values as NaN (``bind_values``), never None."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_NONE: tuple[type[Any], type[Any]] = (type(None), sqlite3.PrepareProtocol)


@contextmanager
def none_adapter_calls() -> Iterator[list[None]]:
    """Every None bound through sqlite3's adapters while the block runs (what binding None
    stores is unchanged: the adapter returns it)."""
    adapted: list[None] = []

    def adapter(value: None) -> None:
        adapted.append(value)
        return value

    previous = sqlite3.adapters.get(_NONE)
    sqlite3.adapters[_NONE] = adapter
    try:
        yield adapted
    finally:
        if previous is None:
            del sqlite3.adapters[_NONE]
        else:
            sqlite3.adapters[_NONE] = previous
