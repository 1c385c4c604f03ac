"""The tamper-evident trail: `receiver journal verify` over a real SQLite journal written by a
running receiver (DC-09 and bridge traffic), then edited behind its back with sqlite3."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from protocols import dc09
from receiver.cli import main as receiver_cli
from receiver.journal_chain import GENESIS, _shape_encoder, chain_rows, encode_row
from tests.receiver.conftest import RunningReceiver, start_receiver
from tests.receiver.test_bridge_listener import send, setup_site, write_bridge_config


async def send_sia(receiver: RunningReceiver, *sequences: int, account: str = "1234") -> None:
    """One DC-09 SIA burglary per sequence number, each waiting for its ACK."""
    stream = await trio.open_tcp_stream("127.0.0.1", receiver.ports.dc09)
    async with stream:
        for seq in sequences:
            frame = dc09.encode_frame("SIA-DCS", seq, account, f"#{account}|Nri1/BA{seq:03d}")
            await stream.send_all(frame)
            reply = b""
            with trio.fail_after(5):
                while not reply.endswith(b"\r"):
                    reply += await stream.receive_some(4096)
            assert b"ACK" in reply


def verify(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    capsys.readouterr()  # what came before (registry setup, the service's logs) is not ours
    code = receiver_cli(["--config", str(config), "journal", "verify", *extra])
    return code, capsys.readouterr().out


def edit(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(sql)
    conn.close()


@pytest.fixture
async def traffic(tmp_path: Path) -> RunningReceiver:
    """A receiver that journaled 3 DC-09 signals then 2 bridge signals (seq 1..5), stopped."""
    config_path = write_bridge_config(tmp_path)
    setup_site(config_path)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config_path)
        await send_sia(running, 11, 12, 13)
        summary = await send(running, "alarm:2", "restore:2")
        assert summary.ok, summary.as_dict()
        running.service.request_shutdown()
    return running


async def test_verify_counts_an_intact_chain_and_names_the_edited_row(
    traffic: RunningReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """Untouched, verify exits 0 with the count; one column changed with sqlite3, it exits 1
    naming that row's seq and signal id."""
    code, out = verify(traffic.config_path, capsys)
    assert code == 0, out
    assert "verified 5 journal rows (seq 1..5): the chain is intact" in out

    conn = sqlite3.connect(traffic.db)
    signal_id = conn.execute("SELECT id FROM signals WHERE seq = 2").fetchone()[0]
    conn.close()
    edit(traffic.db, "UPDATE signals SET zone = '099' WHERE seq = 2")
    code, out = verify(traffic.config_path, capsys)
    assert code == 1
    assert out.startswith(f"journal row seq 2 (signal {signal_id}, received ")
    assert "1 rows before it verified" in out


async def test_a_removed_row_or_a_removed_hash_is_named(
    traffic: RunningReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deleting a row breaks the next one's link; blanking a hash is named too."""
    edit(traffic.db, "DELETE FROM signals WHERE seq = 3")
    code, out = verify(traffic.config_path, capsys)
    assert code == 1
    assert "journal row seq 4 " in out
    assert "rows 3..3 before it were removed" in out

    edit(traffic.db, "UPDATE signals SET chain_hash = NULL WHERE seq = 2")
    code, out = verify(traffic.config_path, capsys)
    assert code == 1
    assert "journal row seq 2 " in out
    assert "chain hash was removed" in out


async def test_the_hash_covers_the_raw_frame(
    traffic: RunningReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """An edited raw frame (a blob) is found as surely as an edited text column."""
    edit(traffic.db, "UPDATE signals SET raw = CAST('forged' AS BLOB) WHERE seq = 5")
    code, out = verify(traffic.config_path, capsys)
    assert code == 1
    assert "journal row seq 5 " in out


async def test_since_starts_at_a_time_and_the_chain_continues_across_restarts(
    traffic: RunningReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """A restarted receiver continues the chain; --since skips an edit made before T."""
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, traffic.config_path)
        await send_sia(running, 21, 22)
        running.service.request_shutdown()
    code, out = verify(traffic.config_path, capsys)
    assert code == 0, out
    assert "verified 7 journal rows (seq 1..7)" in out

    conn = sqlite3.connect(traffic.db)
    received_us = conn.execute("SELECT received_us FROM signals WHERE seq = 6").fetchone()[0]
    conn.close()
    edit(traffic.db, "UPDATE signals SET account = '9999' WHERE seq = 1")
    moment = datetime.fromtimestamp(received_us / 1e6, UTC).isoformat()
    code, out = verify(traffic.config_path, capsys, "--since", moment)
    assert code == 0, out
    assert "verified 2 journal rows (seq 6..7)" in out
    assert verify(traffic.config_path, capsys)[0] == 1


def reference_encoding(row: tuple[object, ...]) -> bytes:
    """The module's rules, field by field, as a court expert's script would write them."""
    out = b""
    for value in row:
        if value is None:
            out += b"n"
        elif isinstance(value, str):
            data = value.encode("utf-8")
            out += b"s" + str(len(data)).encode() + b":" + data
        elif isinstance(value, int):
            out += b"i" + str(value).encode() + b";"
        else:
            assert isinstance(value, bytes | memoryview)
            data = bytes(value)
            out += b"b" + str(len(data)).encode() + b":" + data
    return out


fields = st.none() | st.text() | st.integers(-(2**63), 2**63 - 1) | st.binary(max_size=20)


@given(st.lists(fields, max_size=40).map(tuple))
def test_the_chain_encoding_is_the_documented_one_for_any_row(row: tuple[object, ...]) -> None:
    """Any row of NULLs, text (ASCII or not), integers and blobs encodes exactly as the module's
    rules say, so a hash the journal stored can be recomputed by anyone's script."""
    try:
        expected = reference_encoding(row)
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 form, refused as before
        with pytest.raises(UnicodeEncodeError):
            encode_row(row)
        return
    assert encode_row(row) == expected
    as_read = tuple(memoryview(v) if isinstance(v, bytes) else v for v in row)
    assert encode_row(as_read) == expected  # blobs as SQLite may hand them back


# Fields around the shape encoder's edges: text and blobs on either side of its prefix tables'
# 1,024 lengths, non-ASCII text (its UTF-8 length is not its length), integers of any size.
_EDGE = st.sampled_from([1023, 1024, 1025])
edge_fields = (
    st.none()
    | st.text(max_size=8)
    | _EDGE.flatmap(lambda n: st.text(alphabet="ab", min_size=n, max_size=n))
    | _EDGE.flatmap(lambda n: st.text(alphabet="a\u00e9\U0001f600", min_size=n, max_size=n))
    | st.integers()
    | st.binary(max_size=8)
    | _EDGE.flatmap(lambda n: st.binary(min_size=n, max_size=n))
)


@given(st.lists(st.lists(edge_fields, max_size=12).map(tuple), min_size=1, max_size=6))
def test_the_shape_encoders_hash_exactly_what_the_definition_hashes(
    rows: list[tuple[object, ...]],
) -> None:
    """The fast per-shape encoder (prefix tables, one f-string per run of fields) gives the
    documented bytes for any row, so the chain the journal stores is the one any script
    recomputes, and journals chained before it still verify."""
    try:
        expected = [reference_encoding(row) for row in rows]
    except UnicodeEncodeError:
        return  # a lone surrogate: no UTF-8 form (the test above checks it is refused)
    for row, encoding in zip(rows, expected, strict=True):
        assert _shape_encoder(tuple(map(type, row)))(row) == encoding
    head = GENESIS
    hashes = []
    for encoding in expected:
        head = hashlib.sha256(head + encoding).digest()
        hashes.append(head)
    chained, last = chain_rows(rows, GENESIS)
    assert chained == [(*row, h) for row, h in zip(rows, hashes, strict=True)]
    assert last == head
