"""The state rows every backend writes beside the journal, as their statements' parameters.

Both backends' ``SAVE_CURSOR`` and ``UPSERT_BRIDGE_STATE`` take their parameters in this order
(each backend keeps its own SQL; only the order is shared).
"""

from __future__ import annotations

from typing import Any

from receiver.store.interface import BridgeStateRow, CursorUpdate


def cursor_params(update: CursorUpdate) -> tuple[Any, ...]:
    """``SAVE_CURSOR``'s parameters: the delivery state first, the output's name last."""
    return (
        update.cursor,
        update.delivered,
        update.undeliverable,
        int(update.connected),
        update.last_error,
        update.last_success_us,
        update.updated_us,
        update.output,
    )


def state_params(row: BridgeStateRow) -> tuple[Any, ...]:
    """``UPSERT_BRIDGE_STATE``'s parameters, in the table's column order."""
    return (
        row.serial,
        row.model,
        row.channels,
        row.firmware,
        row.armed,
        row.armed_us,
        row.peer,
        row.connected_us,
        row.updated_us,
    )
