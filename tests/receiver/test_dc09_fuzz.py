"""Fuzzing the running receiver: `receiver serve` in its own process, real loopback TCP and UDP.

Streams of good frames with garbage and mutated frames between them (the mutations of
``tests/protocols/test_fuzz.py``, and the frame that once ended the process): every good frame
is ACKed, nothing whose CRC fails is ever ACKed, and the process is still serving at the end.
"""

from __future__ import annotations

import functools
import itertools
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import dc09
from protocols.crc import crc16_arc
from protocols.errors import ReceiverError
from tests.protocols.test_fuzz import KEY, crc_ok, dc09_inputs, project_errors_only
from tests.receiver.conftest import registry_setup

# The frame that once ended the process: 30 hex digits and two spaces for a keyed account.
EVIL_SPAN = b'"*SIA-DCS"0001L0#5678[' + b"00" * 15 + b"  "
EVIL = b"\n%04X%04X%s\r" % (crc16_arc(EVIL_SPAN), len(EVIL_SPAN), EVIL_SPAN)
TIMEOUT = 5.0


@attrs.define
class ServedReceiver:
    process: subprocess.Popen[bytes]
    port: int
    next_sequence: int = 9000

    def sequences(self, count: int) -> list[int]:
        """Sequences no other example used (9000-9999 wraps to 1000 up)."""
        out = []
        for _ in range(count):
            out.append(self.next_sequence)
            self.next_sequence = self.next_sequence + 1 if self.next_sequence < 9999 else 1000
        return out


def _port_from_log(log: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(encoding="utf-8", errors="replace")
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"dc09_listening"' in line:
                return int(json.loads(line)["port"])
        time.sleep(0.05)
    raise AssertionError("receiver did not start listening")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedReceiver]:
    """`receiver serve` with accounts 1234 (plain) and 5678 (AES), logging to a file."""
    tmp = tmp_path_factory.mktemp("fuzz")
    config = tmp / "receiver.toml"
    config.write_text(
        f'log_signals = false\noutputs = []\n[store]\npath = "{tmp / "receiver.sqlite3"}"\n'
        '[dc09]\nlisten = "127.0.0.1:0"\n[bridge]\nlisten = "127.0.0.1:0"\n',
        encoding="utf-8",
    )
    registry_setup(
        config,
        ["stations", "add", "S1"],
        ["dealers", "add", "D1"],
        ["sites", "add", "Main Street", "--dealer", "D1"],
        ["accounts", "add", "--station", "S1", "1234", "--site", "Main Street"],
        [
            "accounts",
            "add",
            "--station",
            "S1",
            "5678",
            "--site",
            "Main Street",
            "--key",
            KEY.hex(),
            "--key-format",
            "hex",
        ],
    )
    log = tmp / "receiver.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "receiver.cli", "--config", str(config), "serve"],
            stdout=sink,
            stderr=sink,
        )
    try:
        yield ServedReceiver(process, _port_from_log(log, process))
    finally:
        process.terminate()
        process.wait(20)


def _good(sequence: int, encrypted: bool) -> bytes:
    if encrypted:
        data = f"#5678|Nri1/BA{sequence % 1000:03d}"
        return dc09.encode_frame(
            "SIA-DCS", sequence, "5678", data, key=KEY, timestamp=datetime.now(UTC)
        )
    return dc09.encode_frame("SIA-DCS", sequence, "1234", f"#1234|Nri1/FA{sequence % 1000:03d}")


def _wanted(sequences: list[int], plan: list[tuple[bool, list[bytes]]]) -> set[tuple[str, str]]:
    return {
        (f"{seq:04d}", "5678" if encrypted else "1234")
        for seq, (encrypted, _) in zip(sequences, plan, strict=True)
    }


junk = st.one_of(
    dc09_inputs().map(lambda case: case[0]),
    st.binary(max_size=2).map(lambda b: b"\n" + b),
    st.binary(max_size=60),
    st.just(EVIL),
)


def _acceptable(stream_frames: list[bytes]) -> set[tuple[str, str]]:
    """(sequence, account) of every frame in what was sent whose CRC holds: the only frames
    the receiver may ACK."""
    out = set()
    for raw in stream_frames:
        header = project_errors_only(functools.partial(dc09.read_header, raw))
        if not isinstance(header, ReceiverError) and crc_ok(raw):
            out.add((header.sequence, header.account))
    return out


def _frames_of(stream: bytes) -> list[bytes]:
    splitter = dc09.FrameSplitter()
    splitter.receive_data(stream)
    out = []
    while (event := splitter.next_event()) is not dc09.NEED_DATA:
        if isinstance(event, bytes):
            out.append(event)
    return out


def _acks(replies: list[bytes]) -> set[tuple[str, str]]:
    out = set()
    for raw in replies:
        reply = dc09.decode_reply(raw, key=KEY)
        if reply.kind.value == "ACK":
            out.add((reply.sequence, reply.account or ""))
    return out


def _read_until(sock: socket.socket, wanted: set[tuple[str, str]]) -> list[bytes]:
    """Replies on a TCP connection until every (sequence, account) in ``wanted`` is ACKed."""
    buffer = b""
    replies: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    while not wanted <= _acks(replies) and time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        if not data:
            break
        buffer += data
        *done, buffer = buffer.split(b"\r")
        replies += [part + b"\r" for part in done]
    return replies


@pytest.mark.slow
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plan=st.lists(st.tuples(st.booleans(), st.lists(junk, max_size=3)), min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 3000), max_size=4),
)
def test_good_frames_among_garbage_are_acked_over_tcp(
    served: ServedReceiver, plan: list[tuple[bool, list[bytes]]], cuts: list[int]
) -> None:
    """One connection, one stream: each good frame (plain or AES) is ACKed whatever garbage or
    mutated frames sit between them, and every ACK is for a frame whose CRC holds."""
    sequences = served.sequences(len(plan))
    good = [_good(seq, encrypted) for seq, (encrypted, _) in zip(sequences, plan, strict=True)]
    stream = b"".join(
        frame + b"".join(pieces) for frame, (_, pieces) in zip(good, plan, strict=True)
    )
    wanted = _wanted(sequences, plan)
    with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
        points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
        for start, end in itertools.pairwise(points):
            sock.sendall(stream[start:end])
        replies = _read_until(sock, wanted)
    acked = _acks(replies)
    assert wanted <= acked, (stream, replies)
    assert acked <= _acceptable(_frames_of(stream)), (stream, replies)
    assert served.process.poll() is None


@pytest.mark.slow
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=st.lists(st.tuples(st.booleans(), st.lists(junk, max_size=2)), min_size=1, max_size=4))
def test_good_datagrams_among_garbage_are_acked_over_udp(
    served: ServedReceiver, plan: list[tuple[bool, list[bytes]]]
) -> None:
    """Good datagrams and garbage or mutated datagrams in one burst: each good one is ACKed,
    and nothing whose CRC fails is."""
    sequences = served.sequences(len(plan))
    datagrams = []
    for seq, (encrypted, pieces) in zip(sequences, plan, strict=True):
        datagrams.append(_good(seq, encrypted))
        datagrams += [p for p in pieces if p]
    wanted = _wanted(sequences, plan)
    replies: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", served.port))
        deadline = time.monotonic() + TIMEOUT
        while not wanted <= _acks(replies) and time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                replies.append(sock.recv(65536))
            except TimeoutError:
                break
    acked = _acks(replies)
    assert wanted <= acked, (datagrams, replies)
    assert acked <= _acceptable([d.rstrip(b"\x00") for d in datagrams]), (datagrams, replies)
    assert served.process.poll() is None
