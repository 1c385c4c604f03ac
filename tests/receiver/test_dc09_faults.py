"""Frames that once ended the receiver, on the wire: real loopback TCP and UDP, a real Service.

A frame that trips the codec (or a bug in it) costs that frame only: it gets its reply, the
good frames around it are ACKed, its connection stays open and the process keeps serving.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import structlog.testing
import trio

from protocols import dc09
from protocols.crc import crc16_arc
from protocols.errors import Reply
from protocols.payload import Event, parse_events
from receiver.cli import main as receiver_cli
from tests.receiver.conftest import RunningReceiver
from tests.receiver.test_dc09_service import (
    KEY,
    _udp_replies,
    _udp_socket,
    connect,
    history,
    read_replies,
    sia,
)

RECEIVER = [sys.executable, "-c", "import sys; from receiver.cli import main; sys.exit(main())"]


def spaced_ciphertext(account: str = "5678") -> bytes:
    """An encrypted frame whose ciphertext is 30 hex digits and two spaces, CRC and length right
    (``bytes.fromhex`` skips the spaces: AES then got 15 bytes and raised ValueError)."""
    span = f'"*SIA-DCS"0001L0#{account}['.encode() + b"00" * 15 + b"  "
    return b"\n%04X%04X%s\r" % (crc16_arc(span), len(span), span)


def kinds(replies: list[bytes]) -> list[tuple[str, str]]:
    return [(r.kind.value, r.sequence) for r in map(dc09.decode_reply, replies)]


@pytest.fixture
def buggy_payload(monkeypatch: pytest.MonkeyPatch) -> None:
    """A codec bug on demand: decoding a data block that holds ``BOOM`` raises RuntimeError."""
    real: Callable[[str, str], tuple[Event, ...]] = parse_events

    def parse(token: str, data: str) -> tuple[Event, ...]:
        if "BOOM" in data:
            raise RuntimeError("a bug in the codec")
        return real(token, data)

    monkeypatch.setattr("protocols.dc09_engine.parse_events", parse)


def boom(seq: int) -> bytes:
    return dc09.encode_frame("SIA-DCS", seq, "1234", "#1234|Nri1/BA001^BOOM^")


async def test_spaced_ciphertext_is_naked_and_the_connection_goes_on(
    receiver: RunningReceiver,
) -> None:
    """The frame that ended the process over TCP: NAK; the good frame in the same write, the
    next frame on that connection and a frame on another connection are all ACKed."""
    first, other = await connect(receiver), await connect(receiver)
    await first.send_all(spaced_ciphertext() + sia(2))
    assert kinds(await read_replies(first, 2)) == [("NAK", "0000"), ("ACK", "0002")]
    await first.send_all(sia(3))
    assert kinds(await read_replies(first, 1)) == [("ACK", "0003")]
    await other.send_all(sia(4))
    assert kinds(await read_replies(other, 1)) == [("ACK", "0004")]
    assert sorted(s.sequence for s in history(receiver.db)) == ["0002", "0003", "0004"]
    assert receiver.service.counters.values["frames_bad_ciphertext"] == 1
    await first.aclose()
    await other.aclose()


async def test_spaced_ciphertext_over_udp_is_naked(receiver: RunningReceiver) -> None:
    """The same frame in a datagram: NAK to the sender; the next datagram is ACKed."""
    sock = await _udp_socket()
    target = ("127.0.0.1", receiver.ports.dc09)
    await sock.sendto(spaced_ciphertext(), target)
    await sock.sendto(sia(5), target)
    replies = await _udp_replies(sock, 2, quiet=0.1)
    assert sorted((r.kind.value, r.sequence) for r in replies) == [
        ("ACK", "0005"),
        ("NAK", "0000"),
    ]
    sock.close()


@pytest.mark.usefixtures("buggy_payload")
async def test_a_codec_bug_costs_one_frame_over_tcp(receiver: RunningReceiver) -> None:
    """A frame that makes the codec raise is answered DUH, logged as ``frame_crashed`` with its
    raw bytes and counted; the frames before and after it in the same write are ACKed."""
    stream = await connect(receiver)
    with structlog.testing.capture_logs() as logs:
        await stream.send_all(sia(1) + boom(2) + sia(3))
        replies = await read_replies(stream, 3)
    assert kinds(replies) == [("ACK", "0001"), ("DUH", "0002"), ("ACK", "0003")]
    [crash] = [e for e in logs if e["event"] == "frame_crashed"]
    assert crash["error_type"] == "RuntimeError"
    assert "BOOM" in crash["raw"]
    assert crash["log_level"] == "error"
    assert receiver.service.counters.values["frames_internal_error"] == 1
    await stream.send_all(sia(4))
    assert kinds(await read_replies(stream, 1)) == [("ACK", "0004")]
    assert sorted(s.sequence for s in history(receiver.db)) == ["0001", "0003", "0004"]
    await stream.aclose()


@pytest.mark.usefixtures("buggy_payload")
async def test_a_codec_bug_costs_one_datagram(receiver: RunningReceiver) -> None:
    """Over UDP, datagrams decoded in one batch: the crashing one gets DUH, the others ACK."""
    sock = await _udp_socket()
    target = ("127.0.0.1", receiver.ports.dc09)
    for frame in (sia(6), boom(7), sia(8)):
        await sock.sendto(frame, target)
    replies = await _udp_replies(sock, 3, quiet=0.1)
    assert sorted((r.kind.value, r.sequence) for r in replies) == [
        ("ACK", "0006"),
        ("ACK", "0008"),
        ("DUH", "0007"),
    ]
    assert receiver.service.counters.values["frames_internal_error"] == 1
    sock.close()


async def test_a_splitter_bug_costs_its_connection_only(
    receiver: RunningReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug below the frame guard (in the splitter) closes that connection, logged and
    counted; another connection open at the time is still served."""
    real = dc09.FrameSplitter.next_event

    def next_event(self: dc09.FrameSplitter) -> object:
        if b"BOOM" in self._buffer:
            raise RuntimeError("a bug in the splitter")
        return real(self)

    monkeypatch.setattr(dc09.FrameSplitter, "next_event", next_event)
    doomed, other = await connect(receiver), await connect(receiver)
    with structlog.testing.capture_logs() as logs:
        await doomed.send_all(boom(9))
        assert await read_replies(doomed, 1) == []  # closed without a reply
    assert [e["error_type"] for e in logs if e["event"] == "connection_crashed"] == ["RuntimeError"]
    assert receiver.service.counters.values["connections_crashed"] == 1
    await other.send_all(sia(10))
    assert kinds(await read_replies(other, 1)) == [("ACK", "0010")]
    await other.aclose()


async def test_empty_sia_block_is_a_link_test(receiver: RunningReceiver) -> None:
    """``"SIA-DCS"…[]`` with a good CRC is ACKed like NULL, counted, and stores nothing; an
    encrypted one gets an encrypted ACK."""
    stream = await connect(receiver)
    plain = dc09.encode_frame("SIA-DCS", 11, "1234", "")
    encrypted = dc09.encode_frame("SIA-DCS", 12, "5678", "", key=KEY, timestamp=datetime.now(UTC))
    await stream.send_all(plain + encrypted)
    first, second = await read_replies(stream, 2)
    assert kinds([first]) == [("ACK", "0011")]
    reply = dc09.decode_reply(second, key=KEY)
    assert (reply.kind, reply.encrypted, reply.sequence) == (Reply.ACK, True, "0012")
    assert history(receiver.db) == []
    assert receiver.service.counters.values["frames_link_test"] == 2
    await stream.aclose()


def test_decode_of_the_spaced_ciphertext_is_one_line() -> None:
    """``receiver decode`` on that frame: exit 2, one line on stderr, no traceback."""
    text = spaced_ciphertext().decode("ascii").replace("\n", "\\n").replace("\r", "\\r")
    done = subprocess.run(
        [*RECEIVER, "decode", "--key", KEY.hex(), text], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stderr == "receiver: ciphertext is not hex\n"
    assert '"reason": "bad_ciphertext"' in done.stdout


def test_decode_of_a_frame_that_trips_a_codec_bug_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug in the codec shows as one line naming the exception, exit 2, not a traceback."""

    def parse(token: str, data: str) -> tuple[Event, ...]:
        raise RuntimeError("a bug in the codec")

    monkeypatch.setattr("receiver.cli.decode.parse_events", parse)
    text = sia(1).decode("ascii").replace("\n", "\\n").replace("\r", "\\r")
    assert receiver_cli(["decode", text]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("receiver: internal error decoding the frame: RuntimeError: a bug")


async def test_the_receiver_outlives_all_of_it(receiver: RunningReceiver) -> None:
    """After every frame above on one connection, the receiver still ACKs a new panel."""
    stream = await connect(receiver)
    await stream.send_all(spaced_ciphertext() + spaced_ciphertext("1234") + sia(13))
    assert kinds(await read_replies(stream, 3))[-1] == ("ACK", "0013")
    await stream.aclose()
    with trio.fail_after(5):
        fresh = await connect(receiver)
    await fresh.send_all(sia(14))
    assert kinds(await read_replies(fresh, 1)) == [("ACK", "0014")]
    await fresh.aclose()
