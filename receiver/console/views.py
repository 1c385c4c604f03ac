"""How journal rows and registry entries look in the API and on the pages (plain JSON values)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver.journal import from_us
from receiver.logs import raw_text
from receiver.store.signal_rows import signal_from_row


def signal_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the live list."""
    qualifier, code = row["qualifier"], row["code"]
    return {
        "seq": int(row["seq"]),
        "id": row["id"],
        "received_at": from_us(row["received_us"]).isoformat(timespec="milliseconds"),
        "station": row["station"],
        "account": row["effective_account"] or row["account"],
        "event": f"{qualifier}{code}" if code else None,
        "sia": row["sia_code"],
        "zone": row["zone"],
        "name": row["name"],
        "category": row["category"],
        "source": row["source"],
        "site": row["site_name"],
        "flags": [f for f in row["flags"].split(",") if f],
    }


def signal_detail(row: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the journal holds about one signal."""
    signal = signal_from_row(row)
    cid, sia = signal.cid, signal.sia
    return {
        **signal_summary(row),
        "peer": signal.peer,
        "receiver_no": signal.receiver_no,
        "line": signal.line,
        "account_as_received": signal.account,
        "account_id": signal.account_id,
        "effective_account": signal.effective_account,
        "site_id": signal.site_id,
        "token": signal.token,
        "sequence": signal.sequence,
        "device_time": signal.device_time.isoformat() if signal.device_time else None,
        "contact_id": (
            {"qualifier": cid.qualifier, "code": cid.code, "group": cid.group, "zone": cid.zone}
            if cid
            else None
        ),
        "sia_view": (
            {
                "code": sia.code,
                "address": sia.address,
                "modifiers": [list(m) for m in sia.modifiers],
                "text": sia.text,
            }
            if sia
            else None
        ),
        "device": signal.device,
        "channel": signal.channel,
        "zone_type": signal.zone_type,
        "extended": [list(x) for x in signal.extended],
        "raw": raw_text(signal.raw, limit=8192),
        "raw_hex": signal.raw.hex(),
        "repeats": int(row["repeats"]),
        "last_repeat_at": (
            from_us(row["last_repeat_us"]).isoformat() if row["last_repeat_us"] else None
        ),
    }


def moment(micros: int | None) -> str | None:
    return None if micros is None else from_us(micros).isoformat(timespec="seconds")
