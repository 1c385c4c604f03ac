"""The receiver on the wire: real loopback TCP and UDP, a real SQLite journal.

Each test plays a panel with the project's own codec (panel role) and checks the replies on the
wire and the rows in the journal.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
import structlog.testing
import trio

from protocols import dc09
from protocols.errors import Reply
from receiver.history import HistoryQuery, query_history
from receiver.store.sqlite_store import SqliteStore
from tests.receiver.conftest import RunningReceiver, registry_setup, start_receiver, write_config

KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")


def history(db: Path, **query: object) -> list:  # type: ignore[type-arg]
    store = SqliteStore(db, create=False)
    try:
        return query_history(store, HistoryQuery(limit=0, **query))  # type: ignore[arg-type]
    finally:
        store.close()


def sia(
    seq: int, account: str = "1234", code: str = "BA", zone: str = "012", **kw: object
) -> bytes:
    return dc09.encode_frame("SIA-DCS", seq, account, f"#{account}|Nri1/{code}{zone}", **kw)  # type: ignore[arg-type]


async def read_replies(stream: trio.SocketStream, count: int, timeout: float = 5.0) -> list[bytes]:
    """Read until ``count`` CR-terminated replies arrived (or the timeout)."""
    buffer = b""
    with trio.move_on_after(timeout):
        while buffer.count(b"\r") < count:
            data = await stream.receive_some(4096)
            if not data:
                break
            buffer += data
    return [part + b"\r" for part in buffer.split(b"\r") if part]


async def connect(receiver: RunningReceiver) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", receiver.ports.dc09)


async def test_sia_frame_is_acked_and_journaled(receiver: RunningReceiver) -> None:
    """A plain SIA-DCS burglary gets an ACK echoing seq/L/account and lands in the journal."""
    stream = await connect(receiver)
    await stream.send_all(sia(17))
    [raw] = await read_replies(stream, 1)
    reply = dc09.decode_reply(raw)
    assert (reply.kind, reply.sequence, reply.line, reply.account) == (
        Reply.ACK,
        "0017",
        "0",
        "1234",
    )
    [signal] = history(receiver.db)
    assert signal.account == "1234"
    assert signal.sia is not None
    assert signal.sia.code == "BA"
    assert signal.site_name == "Main Street"
    await stream.aclose()


async def test_coalesced_frames_with_garbage_between_are_all_acked(
    receiver: RunningReceiver,
) -> None:
    """Three frames and garbage in one write: three ACKs in order, three signals stored."""
    stream = await connect(receiver)
    await stream.send_all(sia(1) + b"garbage\x00\xff" + sia(2) + b"\nnot a frame\r" + sia(3))
    replies = [dc09.decode_reply(r) for r in await read_replies(stream, 3)]
    assert [(r.kind, r.sequence) for r in replies] == [
        (Reply.ACK, "0001"),
        (Reply.ACK, "0002"),
        (Reply.ACK, "0003"),
    ]
    assert len(history(receiver.db)) == 3
    await stream.aclose()


async def test_frame_split_byte_by_byte_is_acked(receiver: RunningReceiver) -> None:
    """A frame trickling in one byte per write is still received whole."""
    stream = await connect(receiver)
    for byte in sia(5):
        await stream.send_all(bytes([byte]))
    [raw] = await read_replies(stream, 1)
    assert dc09.decode_reply(raw).kind is Reply.ACK
    await stream.aclose()


async def test_bad_crc_gets_no_reply_and_the_next_frame_is_acked(
    receiver: RunningReceiver,
) -> None:
    """A frame failing its CRC is never ACKed; the good frame after it is."""
    bad = bytearray(sia(8))
    bad[1:5] = b"0000" if bad[1:5] != b"0000" else b"1111"
    stream = await connect(receiver)
    await stream.send_all(bytes(bad) + sia(9))
    replies = [dc09.decode_reply(r) for r in await read_replies(stream, 1)]
    assert [(r.kind, r.sequence) for r in replies] == [(Reply.ACK, "0009")]
    assert [s.sequence for s in history(receiver.db)] == ["0009"]
    await stream.aclose()


async def test_retry_is_acked_again_but_stored_once(receiver: RunningReceiver) -> None:
    """The same frame sent twice (a lost ACK) gets two ACKs and one journal row."""
    frame = sia(42)
    stream = await connect(receiver)
    await stream.send_all(frame)
    await read_replies(stream, 1)
    await stream.send_all(frame)
    [raw] = await read_replies(stream, 1)
    assert dc09.decode_reply(raw).kind is Reply.ACK
    rows = history(receiver.db)
    assert len(rows) == 1
    assert "duplicate_received" in rows[0].flags
    await stream.aclose()


async def test_encrypted_frame_gets_an_encrypted_ack(receiver: RunningReceiver) -> None:
    """An AES frame for the keyed account gets a *ACK the panel can decrypt."""
    now = datetime.now(UTC)
    frame = dc09.encode_frame("ADM-CID", 3, "5678", "#5678|1130 01 015", key=KEY, timestamp=now)
    stream = await connect(receiver)
    await stream.send_all(frame)
    [raw] = await read_replies(stream, 1)
    reply = dc09.decode_reply(raw, key=KEY)
    assert (reply.kind, reply.encrypted, reply.sequence) == (Reply.ACK, True, "0003")
    [signal] = history(receiver.db)
    assert signal.cid is not None
    assert (signal.cid.qualifier, signal.cid.code, signal.cid.zone) == ("E", "130", "015")
    assert "encrypted" in signal.flags
    await stream.aclose()


async def test_wrong_key_is_naked_and_nothing_is_stored(receiver: RunningReceiver) -> None:
    """A frame encrypted with another key gets a NAK with the receiver's time, no signal."""
    frame = dc09.encode_frame(
        "ADM-CID", 4, "5678", "#5678|1130 01 015", key=b"K" * 16, timestamp=datetime.now(UTC)
    )
    stream = await connect(receiver)
    await stream.send_all(frame)
    [raw] = await read_replies(stream, 1)
    reply = dc09.decode_reply(raw)
    assert reply.kind is Reply.NAK
    assert reply.timestamp is not None
    assert abs(reply.timestamp - datetime.now(UTC)) < timedelta(seconds=5)
    assert history(receiver.db) == []
    await stream.aclose()


async def test_stale_encrypted_frame_is_naked(receiver: RunningReceiver) -> None:
    """An encrypted frame two minutes old fails the timestamp window: NAK, not stored."""
    old = datetime.now(UTC) - timedelta(minutes=2)
    frame = dc09.encode_frame("ADM-CID", 5, "5678", "#5678|1130 01 015", key=KEY, timestamp=old)
    stream = await connect(receiver)
    await stream.send_all(frame)
    [raw] = await read_replies(stream, 1)
    assert dc09.decode_reply(raw).kind is Reply.NAK
    assert history(receiver.db) == []
    await stream.aclose()


async def test_plaintext_for_a_keyed_account_is_refused(receiver: RunningReceiver) -> None:
    """An account with a key refuses plaintext: DUH, and nothing is stored."""
    stream = await connect(receiver)
    await stream.send_all(sia(6, account="5678"))
    [raw] = await read_replies(stream, 1)
    assert dc09.decode_reply(raw).kind is Reply.DUH
    assert history(receiver.db) == []
    await stream.aclose()


async def test_unknown_account_is_accepted_and_flagged(receiver: RunningReceiver) -> None:
    """An alarm from an account not in the registry is stored (flagged), never thrown away."""
    stream = await connect(receiver)
    await stream.send_all(sia(7, account="9999"))
    [raw] = await read_replies(stream, 1)
    assert dc09.decode_reply(raw).kind is Reply.ACK
    [signal] = history(receiver.db)
    assert signal.account_id is None
    assert "unknown_account" in signal.flags
    await stream.aclose()


async def test_udp_frame_is_acked_by_datagram(receiver: RunningReceiver) -> None:
    """A frame in one UDP datagram gets its ACK back to the sender's port."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    await sock.sendto(sia(11), ("127.0.0.1", receiver.ports.dc09))
    with trio.fail_after(5):
        data, _ = await sock.recvfrom(4096)
    assert dc09.decode_reply(data).kind is Reply.ACK
    assert [s.sequence for s in history(receiver.db)] == ["0011"]
    sock.close()


async def _udp_socket() -> trio.socket.SocketType:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    return sock


async def _udp_replies(
    sock: trio.socket.SocketType, count: int, quiet: float = 0.5
) -> list[dc09.Dc09Reply]:
    """``count`` replies, then ``quiet`` seconds of silence (no extra reply may follow)."""
    replies: list[dc09.Dc09Reply] = []
    with trio.fail_after(5):
        while len(replies) < count:
            data, _ = await sock.recvfrom(4096)
            replies.append(dc09.decode_reply(data))
    with trio.move_on_after(quiet):
        data, _ = await sock.recvfrom(4096)
        raise AssertionError(f"unexpected extra reply {data!r}")
    return replies


async def test_udp_burst_from_many_panels_is_never_crossed(receiver: RunningReceiver) -> None:
    """Twenty panels on their own ports fire five datagrams each at once: datagrams that arrive
    together are committed together, yet every panel gets exactly its own five ACKs (its
    sequences) at its own port, and all 100 signals are stored once."""
    target = ("127.0.0.1", receiver.ports.dc09)
    panels = [await _udp_socket() for _ in range(20)]
    for round_ in range(5):
        for index, sock in enumerate(panels):
            await sock.sendto(sia(index * 10 + round_ + 1, zone=f"{index:03d}"), target)
    for index, sock in enumerate(panels):
        replies = await _udp_replies(sock, 5, quiet=0.05 if index else 0.5)
        assert {r.kind for r in replies} == {Reply.ACK}
        assert sorted(r.sequence for r in replies) == [f"{index * 10 + n:04d}" for n in range(1, 6)]
        sock.close()
    stored = history(receiver.db)
    assert len(stored) == 100
    assert {s.zone for s in stored} == {f"{i:03d}" for i in range(20)}


async def test_udp_bad_datagrams_do_not_cost_good_ones(receiver: RunningReceiver) -> None:
    """In one burst: a good frame, a bad CRC (no reply, the panel retries), an oversized
    datagram (dropped and logged), a good frame padded with NULs, a wrong AES key (NAK with the
    receiver's time) and a retry of the first (ACKed again, stored once)."""
    target = ("127.0.0.1", receiver.ports.dc09)
    sock = await _udp_socket()
    good = sia(1)
    bad_crc = bytearray(sia(2))
    bad_crc[3] ^= 0x01
    wrong_key = dc09.encode_frame(
        "SIA-DCS",
        4,
        "5678",
        "#5678|Nri1/BA001",
        key=bytes(16),
        timestamp=datetime.now(UTC),
    )
    burst = [good, bytes(bad_crc), b"\n" + b"9" * 5000 + b"\r", sia(3) + b"\x00" * 7, wrong_key]
    with structlog.testing.capture_logs() as logs:
        for datagram in [*burst, good]:
            await sock.sendto(datagram, target)
        replies = await _udp_replies(sock, 4)
    assert sorted((r.kind.value, r.sequence) for r in replies) == [
        ("ACK", "0001"),
        ("ACK", "0001"),
        ("ACK", "0003"),
        ("NAK", "0000"),
    ]
    assert {e["event"] for e in logs} >= {"frame_rejected", "datagram_oversized"}
    stored = history(receiver.db)
    assert sorted(s.sequence for s in stored) == ["0001", "0003"]
    sock.close()


async def test_null_poll_is_acked_and_not_stored(receiver: RunningReceiver) -> None:
    """A NULL link test is ACKed and leaves no signal in the history."""
    stream = await connect(receiver)
    await stream.send_all(dc09.encode_frame("NULL", 0, "1234"))
    [raw] = await read_replies(stream, 1)
    assert dc09.decode_reply(raw).kind is Reply.ACK
    assert history(receiver.db) == []
    await stream.aclose()


async def test_shutdown_closes_connections_after_acking_committed_frames(
    receiver: RunningReceiver,
) -> None:
    """After shutdown is requested, open connections are closed and new ones refused."""
    stream = await connect(receiver)
    await stream.send_all(sia(21))
    assert len(await read_replies(stream, 1)) == 1
    receiver.service.request_shutdown()
    with trio.fail_after(5):
        assert await stream.receive_some(10) == b""
    assert len(history(receiver.db)) == 1


async def test_idle_and_slow_connections_are_closed(tmp_path: Path) -> None:
    """An idle connection and a frame trickling too slowly are both closed by the receiver."""
    config = write_config(tmp_path, "idle_timeout = 0.5\nframe_timeout = 1.0\n")
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        idle = await connect(running)
        slow = await connect(running)
        closed = False
        with trio.fail_after(5):
            assert await idle.receive_some(10) == b""
            # One byte every 0.2 s never completes the frame within the 1 s frame timeout.
            for byte in sia(30):
                try:
                    await slow.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    closed = True
                    break
                await trio.sleep(0.2)
        assert closed or await slow.receive_some(10) == b""
        running.service.request_shutdown()


async def test_connections_per_peer_are_limited(tmp_path: Path) -> None:
    """Past the per-peer limit a new connection is closed at once; the earlier ones still work."""
    config = write_config(tmp_path, "max_connections_per_peer = 2\n")
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        first, second = await connect(running), await connect(running)
        await trio.sleep(0.1)
        third = await connect(running)
        with trio.fail_after(5):
            assert await third.receive_some(10) == b""
        await first.send_all(sia(1, account="1111"))
        [raw] = await read_replies(first, 1)
        assert dc09.decode_reply(raw).kind is Reply.ACK
        await second.aclose()
        running.service.request_shutdown()


async def test_unsupported_token_gets_duh_echoing_the_header(receiver: RunningReceiver) -> None:
    """A well-formed frame with a token the receiver cannot process is answered DUH."""
    frame = dc09.encode_frame("ACR-SF", 12, "1234", "#1234|X")
    stream = await connect(receiver)
    await stream.send_all(frame)
    [raw] = await read_replies(stream, 1)
    reply = dc09.decode_reply(raw)
    assert (reply.kind, reply.sequence, reply.account) == (Reply.DUH, "0012", "1234")
    await stream.aclose()


async def test_silent_account_gets_one_trouble_and_traffic_restores_it(tmp_path: Path) -> None:
    """A supervised account that stops polling gets E356 once; its next NULL poll writes R356."""
    config = write_config(tmp_path, "")
    registry_setup(
        config,
        ["stations", "add", "S1"],
        ["accounts", "add", "--station", "S1", "4321", "--supervision", "1"],
    )
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        stream = await connect(running)
        await stream.send_all(dc09.encode_frame("NULL", 0, "4321"))
        await read_replies(stream, 1)
        await trio.sleep(2.5)  # interval 1 s x grace 1.5, then some
        troubles = [s for s in history(running.db) if s.cid and s.cid.code == "356"]
        assert [(s.cid.qualifier, s.account, s.source.value) for s in troubles] == [
            ("E", "4321", "supervision")
        ]
        await stream.send_all(dc09.encode_frame("NULL", 0, "4321"))
        await read_replies(stream, 1)
        with trio.fail_after(5):
            while len([s for s in history(running.db) if s.cid and s.cid.code == "356"]) < 2:
                await trio.sleep(0.05)
        newest = history(running.db)[0]
        assert newest.cid is not None
        assert (newest.cid.qualifier, newest.cid.code) == ("R", "356")
        running.service.request_shutdown()


async def test_policies_bad_crc_nak_and_unknown_account_duh(tmp_path: Path) -> None:
    """Configured to, the receiver NAKs a bad CRC and answers DUH to an unknown account."""
    config = write_config(tmp_path, 'bad_crc_reply = "nak"\nunknown_account = "duh"\n')
    registry_setup(config, ["stations", "add", "S1"])
    bad = bytearray(sia(8, account="7777"))
    bad[1:5] = b"0000" if bad[1:5] != b"0000" else b"1111"
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        stream = await connect(running)
        await stream.send_all(bytes(bad) + sia(9, account="7777"))
        replies = [dc09.decode_reply(r) for r in await read_replies(stream, 2)]
        assert [r.kind for r in replies] == [Reply.NAK, Reply.DUH]
        assert replies[1].account == "7777"
        assert history(running.db) == []
        running.service.request_shutdown()


async def test_a_rejected_frame_is_logged_with_its_raw_bytes(receiver: RunningReceiver) -> None:
    """The log line for a rejected frame carries the reason and the raw bytes, escaped."""
    bad = bytearray(sia(8))
    bad[1:5] = b"0000" if bad[1:5] != b"0000" else b"1111"
    with structlog.testing.capture_logs() as logs:
        stream = await connect(receiver)
        await stream.send_all(bytes(bad) + sia(9))
        await read_replies(stream, 1)
        await stream.aclose()
    [entry] = [e for e in logs if e["event"] == "frame_rejected"]
    assert entry["reason"] == "bad_crc"
    assert entry["raw"].startswith("\\n0000") or entry["raw"].startswith("\\n1111")


async def test_each_stored_signal_is_logged(receiver: RunningReceiver) -> None:
    """With log_signals on (the default), every stored signal is in the commit's 'signals'
    log line."""
    with structlog.testing.capture_logs() as logs:
        stream = await connect(receiver)
        await stream.send_all(sia(31))
        await read_replies(stream, 1)
        await stream.aclose()
    [line] = [e for e in logs if e["event"] == "signals"]
    [entry] = line["signals"]
    assert (entry["account"], entry["sia"], entry["zone"]) == ("1234", "BA", "012")
