"""The journal's row reader: the trusted factory gives the Signal the validated constructor
gives, for any signal written to a real SQLite journal and read back."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.signal import ContactIdView, Flag, SiaView, Signal, Source, new_signal_id
from receiver.store import signal_rows
from receiver.store.interface import JournalWrite
from receiver.store.signal_rows import (
    READ_COLUMNS,
    SIGNAL_COLUMNS,
    from_us,
    signal_from_values,
    signal_row,
)
from receiver.store.sqlite_store import SqliteStore


def validated_from_row(row: Mapping[str, Any] | sqlite3.Row) -> Signal:
    """The reader as it was before the trusted factory: every field through the validators."""
    cid = (
        ContactIdView(row["qualifier"], row["code"], row["grp"], row["zone"])
        if row["code"] is not None
        else None
    )
    sia = (
        SiaView(
            row["sia_code"],
            row["sia_address"] or "",
            tuple(tuple(m) for m in json.loads(row["sia_modifiers"]))
            if row["sia_modifiers"]
            else (),
            row["sia_text"],
        )
        if row["sia_code"] is not None
        else None
    )
    flags = frozenset(f for f in row["flags"].split(",") if f)
    if row["repeats"]:
        flags |= {"duplicate_received"}
    return Signal(
        id=row["id"],
        received_at=from_us(row["received_us"]),
        source=Source(row["source"]),
        peer=row["peer"] or "",
        account=row["account"],
        station=row["station"],
        receiver_no=row["receiver_no"],
        line=row["line"],
        account_id=row["account_id"],
        effective_account=row["effective_account"],
        site_id=row["site_id"],
        site_name=row["site_name"],
        token=row["token"],
        sequence=row["sequence"],
        device_time=from_us(row["device_us"]) if row["device_us"] is not None else None,
        cid=cid,
        sia=sia,
        name=row["name"],
        category=row["category"],
        device=row["device"],
        channel=row["channel"],
        zone_type=row["zone_type"],
        extended=tuple(tuple(x) for x in json.loads(row["extended"])) if row["extended"] else (),
        flags=flags,
        raw=bytes(row["raw"] or b""),
    )


text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=8)
maybe = st.none() | text
pairs = st.lists(st.tuples(text, text), max_size=3).map(tuple)
moments = st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC))
hex3 = st.from_regex(r"\A[0-9A-F]{3}\Z")
views_cid = st.builds(
    ContactIdView, st.sampled_from("ERP"), hex3, st.from_regex(r"\A[0-9A-F]{2}\Z"), hex3
)
views_sia = st.builds(SiaView, st.from_regex(r"\A[A-Z]{2}\Z"), text, pairs, maybe)
flag_sets = st.frozensets(
    st.sampled_from([*Flag, "quirk:no_timestamp", "quirk:late", "duplicate_received"])
)
signals = st.builds(
    Signal,
    id=st.just("-"),
    received_at=moments,
    source=st.sampled_from(Source),
    peer=text,
    account=text,
    station=maybe,
    receiver_no=maybe,
    line=maybe,
    account_id=st.none() | st.integers(1, 2**62),
    effective_account=maybe,
    site_id=st.none() | st.integers(1, 2**62),
    site_name=maybe,
    token=maybe,
    sequence=maybe,
    device_time=st.none() | moments,
    cid=st.none() | views_cid,
    sia=st.none() | views_sia,
    name=maybe,
    category=maybe,
    device=maybe,
    channel=st.none() | st.integers(0, 64),
    zone_type=maybe,
    extended=pairs,
    flags=flag_sets,
    raw=st.binary(max_size=24),
)

_journal = SqliteStore(Path(tempfile.mkdtemp(prefix="signal-rows-")) / "journal.sqlite3")


@pytest.mark.slow  # a durable commit per example
@settings(max_examples=60)
@given(st.lists(signals, min_size=1, max_size=4), st.booleans())
def test_a_signal_read_back_is_the_one_the_validated_constructor_builds(
    written: list[Signal], repeated: bool
) -> None:
    """Any signal written to the journal and read back (by the dispatcher's ``read_after``, and
    by history) is the Signal the validated constructor builds from its row, passes the
    validators, and carries every field it was written with (times to the microsecond)."""
    written = [attrs.evolve(s, id=new_signal_id(s.received_at)) for s in written]
    after = _journal.last_seq()
    (outcome,) = _journal.append([JournalWrite(signals=written, keys=())])
    if repeated:  # a retry counted on the original row: read back flagged duplicate_received
        _journal._run(lambda c: c.execute("UPDATE signals SET repeats = 1 WHERE seq > ?", (after,)))
    read = _journal.read_after(after, len(written))
    rows = _journal._run(
        lambda c: c.execute("SELECT * FROM signals WHERE seq > ? ORDER BY seq", (after,)).fetchall()
    )
    assert [seq for seq, _ in read] == [seq for seq, _ in outcome.stored]
    for (_, signal), row, original in zip(read, rows, written, strict=True):
        attrs.validate(signal)
        assert signal == validated_from_row(row)
        flags = original.flags | ({"duplicate_received"} if repeated else set())
        same_times = attrs.evolve(
            signal, received_at=original.received_at, device_time=original.device_time
        )
        assert same_times == attrs.evolve(original, flags=flags)
        assert abs(signal.received_at - original.received_at).total_seconds() <= 1e-6


# Views that differ in one field only, so rows share some and not others: a cache keyed on too
# little would hand a row its neighbour's view.
NEAR_CID = [
    *(ContactIdView(q, c, "01", z) for q in "ER" for c in ("130", "401") for z in ("003", "004")),
    ContactIdView("E", "130", "02", "003"),
]
NEAR_SIA = [
    SiaView("BA", "3"),
    SiaView("BA", "4"),
    SiaView("BA", ""),
    SiaView("BA", "3", (("ri", "1"),)),
    SiaView("BA", "3", (("ri", "2"),)),
    SiaView("BA", "3", (), "text"),
    SiaView("BA", "3", (), ""),
    SiaView("BR", "3"),
]
BASE = Signal(
    id="0005f1a2b3c4d5e-a1b2c3-000001",
    received_at=datetime(2026, 3, 1, 22, 15, 7, 250000, tzinfo=UTC),
    source=Source.DC09,
    account="1234",
)
near_signals = st.builds(
    attrs.evolve,
    signals,
    cid=st.none() | st.sampled_from(NEAR_CID),
    sia=st.none() | st.sampled_from(NEAR_SIA),
)


@settings(max_examples=200)
@given(
    st.lists(near_signals, min_size=1, max_size=6)
    | st.lists(signals, min_size=1, max_size=6)
    | st.permutations(
        [
            *(attrs.evolve(BASE, cid=v, sia=None) for v in NEAR_CID),
            *(attrs.evolve(BASE, cid=None, sia=v) for v in NEAR_SIA),
        ]
    ),
    st.booleans(),
    st.sampled_from([1, 3, 4096]),
)
def test_the_trusted_reader_equals_the_validated_constructor_through_its_view_cache(
    written: list[Signal], repeated: bool, cache_size: int
) -> None:
    """The reader fills the Signal as a draft and shares the Contact ID and SIA views of equal
    rows from a bounded cache: for any rows (as ``signal_row`` writes them), read once, again
    (the cache's hits) and after the cache was cleared for being full, each Signal equals the
    validated constructor's, passes the validators, is a frozen ``Signal`` and hashes as it."""
    rows = [
        dict(zip(SIGNAL_COLUMNS, signal_row(s, None), strict=True)) | {"repeats": int(repeated)}
        for s in written
    ]
    expected = [validated_from_row(row) for row in rows]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(signal_rows, "_VIEWS_MAX", cache_size)
        patch.setattr(signal_rows, "_CID_VIEWS", {})
        patch.setattr(signal_rows, "_SIA_VIEWS", {})
        for _ in range(2):
            read = [signal_from_values([row[name] for name in READ_COLUMNS]) for row in rows]
            assert read == expected
            assert len(signal_rows._CID_VIEWS) <= cache_size >= len(signal_rows._SIA_VIEWS)
    for signal, validated in zip(read, expected, strict=True):
        assert type(signal) is Signal
        attrs.validate(signal)
        assert hash(signal) == hash(validated)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            signal.account = "changed"  # type: ignore[misc]
