"""The SQLite journal append as stored: every row holds exactly the documented columns of its
Signal, its chain hash is SHA-256 over the previous hash and the documented encoding (fixed
vectors pin the hashes), a row the table refuses leaves nothing of its batch, the INSERT's
fast binding stores what plain binding stores, and a batch's links are stored once each."""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.signal import ContactIdView, SiaView, Signal, Source, new_signal_id
from receiver.journal_chain import GENESIS as CHAIN_GENESIS
from receiver.journal_chain import chain_rows
from receiver.store.interface import JournalWrite, LinkSeen
from receiver.store.signal_rows import SIGNAL_COLUMNS, signal_row
from receiver.store.sqlite import connect
from receiver.store.sqlite_store import SqliteStore, _insert_sql, bind_values, link_chunks
from tests.receiver.test_journal_chain import reference_encoding
from tests.receiver.test_signal_rows import signals

GENESIS = bytes(32)
_STORED = f"SELECT seq, node, chain_hash, {', '.join(SIGNAL_COLUMNS)} FROM signals"


def reference_row(signal: Signal, key: str | None) -> tuple[Any, ...]:
    """The ``signals`` columns of a Signal as the schema documents them, field by field."""
    cid, sia = signal.cid, signal.sia

    def micros(moment: datetime | None) -> int | None:
        return None if moment is None else int(moment.timestamp() * 1_000_000)

    def pairs(value: tuple[tuple[str, str], ...]) -> str | None:
        return json.dumps([list(pair) for pair in value]) if value else None

    return (
        signal.id,
        micros(signal.received_at),
        signal.source.value,
        signal.peer,
        signal.station,
        signal.receiver_no,
        signal.line,
        signal.account,
        signal.account_id,
        signal.effective_account,
        signal.site_id,
        signal.site_name,
        signal.token,
        signal.sequence,
        micros(signal.device_time),
        *((cid.qualifier, cid.code, cid.group, cid.zone) if cid else (None,) * 4),
        sia.code if sia else None,
        sia.address if sia else None,
        pairs(sia.modifiers) if sia else None,
        sia.text if sia else None,
        signal.name,
        signal.category,
        signal.device,
        signal.channel,
        signal.zone_type,
        pairs(signal.extended),
        ",".join(sorted(signal.flags)),
        signal.raw,
        key,
    )


def stored_rows(store: SqliteStore, after: int = 0) -> list[tuple[Any, ...]]:
    def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
        cursor = conn.cursor()
        cursor.row_factory = None
        return cursor.execute(f"{_STORED} WHERE seq > ? ORDER BY seq", (after,)).fetchall()

    return store._run(read)


def head_of(store: SqliteStore) -> bytes:
    rows = stored_rows(store)
    return bytes(rows[-1][2]) if rows else GENESIS


_KEYS = itertools.count()
_journal = SqliteStore(Path(tempfile.mkdtemp(prefix="append-rows-")) / "journal.sqlite3")


@pytest.mark.slow  # a durable commit per example
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(signals, st.none() | st.text(max_size=12)), min_size=1, max_size=40))
def test_a_stored_row_is_its_signal_s_documented_columns_and_chain_hash(
    batch: list[tuple[Signal, str | None]],
) -> None:
    """Any batch of signals (keyed or not, any field NULL or not, text ASCII or not) is stored
    as the schema documents each column, in batch order, each row chained to the one before
    it by SHA-256 over the documented encoding."""
    written = [(attrs.evolve(s, id=new_signal_id(s.received_at)), k) for s, k in batch]
    # Keys never seen before (a repeated key within the window is a duplicate, not stored).
    keys = [None if k is None else f"{k}-{next(_KEYS)}" for _, k in written]
    head = head_of(_journal)
    after = _journal.last_seq()
    _journal.append([JournalWrite(signals=[s for s, _ in written], keys=keys)])
    rows = stored_rows(_journal, after)
    assert len(rows) == len(written)
    for row, (signal, _), key in zip(rows, written, keys, strict=True):
        expected = reference_row(signal, key)
        assert row[1] == ""  # the single-node chain
        assert tuple(row[3:]) == expected
        head = hashlib.sha256(head + reference_encoding(expected)).digest()
        assert bytes(row[2]) == head


_T0 = datetime(2026, 12, 1, 18, 0, 0, 123456, tzinfo=UTC)
# Fixed signals and the chain hashes the journal stored for them (from GENESIS) when the
# encoding was written down: a faster encoder must give these same bytes.
_VECTORS = [
    (
        Signal(
            id="00001764612000123456-0001-000001",
            received_at=_T0,
            source=Source.DC09,
            peer="127.0.0.1:40000",
            account="1234",
            receiver_no="R1",
            line="L2",
            account_id=7,
            effective_account="1234",
            site_id=3,
            site_name="Main street 1",
            token="ADM-CID",
            sequence="0042",
            device_time=_T0 - timedelta(seconds=2),
            cid=ContactIdView("E", "130", "01", "005"),
            name="Burglary",
            category="burglary",
            flags=frozenset({"encrypted"}),
            raw=b'\n"ADM-CID"0042L2#1234[#1234|1130 01 005]\r',
        ),
        "1234|0042|ADM-CID|E130",
    ),
    (
        Signal(
            id="00001764612000123457-0001-000002",
            received_at=_T0 + timedelta(microseconds=1),
            source=Source.DC09,
            account="1234",
            effective_account="1234",
            token="SIA-DCS",
            sequence="0043",
            sia=SiaView("BA", "005", (("ri", "1"), ("id", "7")), "Küche"),
            extended=(("V", "https://video/1"),),
            flags=frozenset({"unknown_account", "quirk:no_timestamp"}),
            raw=b"\nraw\r",
        ),
        None,
    ),
    (
        Signal(
            id="00001764612000123458-0001-000003",
            received_at=_T0 + timedelta(seconds=1),
            source=Source.BRIDGE,
            account="Ågård",
            device="SER-1",
            channel=4,
            zone_type="smoke",
            cid=ContactIdView("R", "110", "00", "004"),
        ),
        "bridge:SER-1:4",
    ),
]
_VECTOR_HASHES = [
    "eb8854d7436085326e60e3397c53346757135acba5d33f3ec6638840a66614a2",
    "a70b935ac40982ba2dffbf6c7c22e230f8d2b8826c47cdc664fcf8dcec177942",
    "89a709074f96b870730c813490a23d93875f6f463aeadb6f477f91b5ba023a78",
]


def test_the_chain_hashes_of_fixed_signals_are_the_ones_written_down(tmp_path: Path) -> None:
    """Three fixed signals (Contact ID with every field, SIA with non-ASCII text, a bridge
    signal with NULLs) stored from GENESIS carry the hashes computed when this was written."""
    store = SqliteStore(tmp_path / "j.sqlite3")
    store.append([JournalWrite(signals=[s for s, _ in _VECTORS], keys=[k for _, k in _VECTORS])])
    hashes = [bytes(row[2]).hex() for row in stored_rows(store)]
    store.close()
    assert hashes == _VECTOR_HASHES


def _signal(n: int, when: datetime) -> Signal:
    return Signal(
        id=new_signal_id(when),
        received_at=when,
        source=Source.DC09,
        account=f"A{n:03d}",
        effective_account=f"A{n:03d}",
        token="ADM-CID",
        sequence=f"{n:04d}",
        cid=ContactIdView("E", "130", "01", "005"),
        raw=b"\nraw\r",
    )


@pytest.mark.parametrize("refused_at", [0, 40, 299])
def test_a_row_the_table_refuses_leaves_nothing_of_its_batch(
    tmp_path: Path, refused_at: int
) -> None:
    """A batch of 300 (three INSERT statements) whose row ``refused_at`` repeats a stored id:
    the append fails and stores nothing of it (not the rows before the refused one, not the
    statements before its own); the store keeps working and its chain stays whole."""
    store = SqliteStore(tmp_path / "j.sqlite3")
    now = datetime.now(UTC)
    first = [_signal(n, now) for n in range(3)]
    store.append([JournalWrite(signals=first, keys=[f"k{n}" for n in range(3)])])
    batch = [_signal(n, now + timedelta(seconds=1)) for n in range(300)]
    batch[refused_at] = attrs.evolve(batch[refused_at], id=first[1].id)
    with pytest.raises(sqlite3.IntegrityError):
        store.append([JournalWrite(signals=batch, keys=[f"b{n}" for n in range(300)])])
    assert [row[3] for row in stored_rows(store)] == [s.id for s in first]
    retry = [_signal(n, now + timedelta(seconds=2)) for n in range(300)]
    (outcome,) = store.append([JournalWrite(signals=retry, keys=[f"b{n}" for n in range(300)])])
    assert [seq for seq, _ in outcome.stored] == list(range(4, 304))
    verification = store.verify_journal()
    store.close()
    assert verification.mismatch is None
    assert verification.verified == 303


_TYPED = ", ".join(f"typeof({c}), quote({c})" for c in (*SIGNAL_COLUMNS, "chain_hash"))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(signals, st.none() | st.text(max_size=12)), min_size=1, max_size=20))
def test_the_fast_binding_stores_what_binding_the_row_s_own_values_stores(
    batch: list[tuple[Signal, str | None]],
) -> None:
    """The INSERT binds a NULL column as a NaN and a blob as a bytearray (the sqlite3 module's
    adapter detour skipped): for any rows, every stored column has the same SQL type and value
    as the same INSERT binding the row's own values (None, bytes) stores."""
    signals_ = [attrs.evolve(s, id=f"{n:06d}") for n, (s, _) in enumerate(batch)]
    rows, _ = chain_rows(
        [signal_row(s, k) for s, (_, k) in zip(signals_, batch, strict=True)], CHAIN_GENESIS
    )
    stored = []
    for values in (bind_values(rows), list(itertools.chain.from_iterable(rows))):
        conn = connect(":memory:")
        conn.execute(_insert_sql(len(rows)), values)
        stored.append(conn.execute(f"SELECT {_TYPED} FROM signals ORDER BY seq").fetchall())
        conn.close()
    fast, plain = stored
    assert [tuple(r) for r in fast] == [tuple(r) for r in plain]
    assert len(fast) == len(rows)


def test_bound_values_are_null_for_none_and_a_blob_for_bytes() -> None:
    """What a NaN and a bytearray become in SQLite: NULL (not a REAL), and a BLOB (empty too)."""
    conn = sqlite3.connect(":memory:")
    values = bind_values([(None, b"", b"\x00raw", "text", 7)])
    got = conn.execute("SELECT typeof(?), typeof(?), quote(?), ?, ?", values).fetchone()
    assert got == ("null", "blob", "X'00726177'", "text", 7)


@given(st.integers(min_value=0, max_value=2_000))
def test_link_chunks_are_powers_of_two_covering_the_links(count: int) -> None:
    """Any number of links goes in chunks of at most 256, powers of two, largest first: at
    most 9 SQL strings for every batch."""
    sizes = link_chunks(count)
    assert sum(sizes) == count
    assert all(size & (size - 1) == 0 and 0 < size <= 256 for size in sizes)
    assert sizes == sorted(sizes, reverse=True)
    assert len(sizes) - sizes.count(256) <= 8


def test_a_batch_s_links_are_stored_once_each_with_their_latest_traffic(tmp_path: Path) -> None:
    """300 links in one append (several upsert statements) are all stored; a link seen several
    times in one batch, across its writes, keeps the latest time; an older sighting in a later
    batch does not move it back."""
    store = SqliteStore(tmp_path / "j.sqlite3")
    store.append([JournalWrite(links=[LinkSeen(f"account:{n}", 1_000 + n) for n in range(300)])])
    store.append(
        [
            JournalWrite(links=[LinkSeen("account:1", 5_000), LinkSeen("account:1", 4_000)]),
            JournalWrite(links=[LinkSeen("account:1", 4_500), LinkSeen("account:2", 10)]),
            JournalWrite(links=[LinkSeen("account:300", 7)]),
        ]
    )
    links = store.links()
    store.close()
    assert len(links) == 301
    assert links["account:1"] == (5_000, False)
    assert links["account:2"] == (1_002, False)
    assert links["account:299"] == (1_299, False)
    assert links["account:300"] == (7, False)
