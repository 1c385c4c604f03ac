"""Sur-Gard output over a real pty pair, pyserial's loop:// and socket:// against the sink."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from adapters.output import DeliveryError, UnreachableError, build_output
from adapters.surgard.output import SurGardOutput
from protocols import surgard
from protocols.errors import InvalidInputError
from protocols.signal import SiaView
from receiver.config import OutputConfig
from simulators.sink import SurGardSink
from tests.adapters.test_sentinel_package import make_signal

CID_LINE = b"501001 181234E13001003"


class PtyAutomation:
    """An automation computer on the master side of a pty: records messages, answers each one."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.answer = surgard.ACK
        self.messages: list[bytes] = []

    async def run(self) -> None:
        reader = surgard.MessageReader()
        while True:
            await trio.lowlevel.wait_readable(self.master)
            try:
                data = os.read(self.master, 4096)
            except BlockingIOError:
                continue
            reader.receive_data(data)
            while (event := reader.next_event()) is not surgard.NEED_DATA:
                assert not isinstance(event, type | Exception)
                self.messages.append(event.encode())
                if self.answer:
                    os.write(self.master, self.answer)


@asynccontextmanager
async def pty_automation() -> AsyncIterator[tuple[PtyAutomation, str]]:
    master, slave = os.openpty()
    os.set_blocking(master, False)
    automation = PtyAutomation(master)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(automation.run)
            yield automation, os.ttyname(slave)
            nursery.cancel_scope.cancel()
    finally:
        os.close(master)
        os.close(slave)


@asynccontextmanager
async def running_sink(out: Path, mode: str = "ack") -> AsyncIterator[tuple[SurGardSink, int]]:
    sink = SurGardSink(out, mode=mode)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sink.serve, "127.0.0.1", 0)
        yield sink, port
        nursery.cancel_scope.cancel()


async def test_contact_id_over_a_serial_line(tmp_path: Path) -> None:
    """Over a pty the automation gets the exact SG Contact ID bytes, and its ACK completes it."""
    async with pty_automation() as (automation, device):
        output = SurGardOutput("sg", device, baudrate=9600, ack_timeout=2)
        await output.deliver(make_signal(), "pkg-1")
        assert automation.messages == [CID_LINE + b"\x14"]
        assert output.connected
        await output.aclose()


async def test_nak_is_retried_then_the_output_goes_down_and_recovers() -> None:
    """Each NAK gets a resend; after the retries the output is down until a heartbeat is ACKed."""
    async with pty_automation() as (automation, device):
        output = SurGardOutput("sg", device, ack_timeout=2, retries=3)
        automation.answer = surgard.NAK
        with pytest.raises(DeliveryError, match="NAK after 4 attempt"):
            await output.deliver(make_signal(), "pkg-1")
        assert automation.messages == [CID_LINE + b"\x14"] * 4
        assert not output.connected
        assert "output down" in (output.last_error or "")

        automation.answer = surgard.ACK
        automation.messages.clear()
        await output.deliver(make_signal(), "pkg-1")
        heartbeat = surgard.Heartbeat(surgard.Header(1, 0)).encode()
        assert automation.messages == [heartbeat, CID_LINE + b"\x14"]
        assert output.connected
        assert output.last_error is None
        await output.aclose()


async def test_loopback_without_an_automation_times_out() -> None:
    """On loop:// only our own echo comes back: that is no ACK, so the delivery fails."""
    output = SurGardOutput("sg", "loop://", ack_timeout=0.1, retries=1)
    with pytest.raises(DeliveryError, match=r"no answer within 0\.1 s after 2 attempt"):
        await output.deliver(make_signal(), "pkg-1")
    assert not output.connected
    await output.aclose()


async def test_tcp_to_the_sink_writes_one_line_per_message(tmp_path: Path) -> None:
    """Through socket://, Contact ID, 10-digit and SIA signals arrive at the sink as lines."""
    out = tmp_path / "sg.txt"
    async with running_sink(out) as (sink, port):
        output = SurGardOutput(
            "sg", f"socket://127.0.0.1:{port}", receiver_number=2, line_number=7, ack_timeout=2
        )
        await output.deliver(make_signal(), "pkg-1")
        await output.deliver(make_signal(account="0123456789"), "pkg-2")
        sia = make_signal(cid=None, sia=SiaView("BA", "012", (("ri", "1"),)))
        await output.deliver(sia, "pkg-3")
        await output.aclose()
    assert out.read_text().splitlines() == [
        "502007 181234E13001003",
        "Q02007 580123456789E13001003",
        "S02007[#1234|Nri1/BA012]",
    ]
    assert sink.messages == 3


async def test_tcp_nak_from_the_sink_is_retried(tmp_path: Path) -> None:
    """A sink that NAKs everything sees the message 1 + retries times; the delivery fails."""
    out = tmp_path / "sg.txt"
    async with running_sink(out, mode="nak") as (_, port):
        output = SurGardOutput("sg", f"socket://127.0.0.1:{port}", ack_timeout=2, retries=2)
        with pytest.raises(DeliveryError, match="NAK after 3 attempt"):
            await output.deliver(make_signal(), "pkg-1")
        await output.aclose()
    assert out.read_text().splitlines() == [CID_LINE.decode()] * 3


async def test_tcp_silence_from_the_sink_is_a_timeout(tmp_path: Path) -> None:
    """A silent sink is no ACK: the output reports itself down."""
    async with running_sink(tmp_path / "sg.txt", mode="silent") as (_, port):
        output = SurGardOutput("sg", f"socket://127.0.0.1:{port}", ack_timeout=0.1, retries=0)
        with pytest.raises(DeliveryError, match="no answer"):
            await output.deliver(make_signal(), "pkg-1")
        assert not output.connected
        await output.aclose()


async def test_heartbeats_appear_at_the_sink(tmp_path: Path) -> None:
    """An idle output sends the 1RR000 heartbeat each interval and the sink ACKs each one."""
    out = tmp_path / "sg.txt"
    async with running_sink(out) as (sink, port):
        output = SurGardOutput("sg", f"socket://127.0.0.1:{port}", heartbeat=0.02, ack_timeout=2)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(output.run_heartbeats)
                while sink.heartbeats < 3:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        assert output.connected
        await output.aclose()
    assert set(out.read_text().splitlines()) == {"101000           @    "}


async def test_refused_tcp_connection_is_a_delivery_error() -> None:
    """Nobody on the automation port: a delivery error, the output down, no crash."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    output = SurGardOutput("sg", f"socket://127.0.0.1:{port}", ack_timeout=0.5)
    with pytest.raises(DeliveryError, match="socket://"):
        await output.deliver(make_signal(), "pkg-1")
    assert not output.connected
    # Down now: the next try sends only a heartbeat, a probe the dispatcher repeats each second.
    with pytest.raises(UnreachableError, match="heartbeat"):
        await output.deliver(make_signal(), "pkg-1")
    await output.aclose()


def test_message_choice() -> None:
    """Accounts outside Contact ID go as SIA when they can, and are refused when they cannot."""
    output = SurGardOutput("sg", "loop://", header_digits=3)
    assert output.message_for(make_signal()).encode() == b"5011 181234E13001003\x14"
    both = make_signal(account="12A4", sia=SiaView("BA", "3"))
    assert output.message_for(both).encode() == b"S011[#12A4|NBA3]\x14"
    with pytest.raises(DeliveryError, match="does not fit"):
        output.message_for(make_signal(account="12A4"))
    with pytest.raises(DeliveryError, match="no Contact ID or SIA"):
        output.message_for(make_signal(cid=None))


def test_numbers_from_the_signal() -> None:
    """With numbers = "signal", the DC-09 receiver and line numbers head the message."""
    output = SurGardOutput("sg", "loop://", numbers="signal")
    signal = attrs.evolve(make_signal(), receiver_no="3", line="12")
    assert output.message_for(signal).encode().startswith(b"503012 ")
    wide = attrs.evolve(make_signal(), receiver_no="3A", line="12")
    assert output.message_for(wide).encode().startswith(b"501001 ")


def test_heartbeat_forms() -> None:
    """RRL units send 1011 (the line itself); RRLLL units send 1RR000 unless told otherwise."""
    assert SurGardOutput("sg", "loop://", header_digits=3).heartbeat_message.encode() == (
        b"1011           @    \x14"
    )
    assert SurGardOutput("sg", "loop://").heartbeat_message.encode().startswith(b"101000 ")
    told = SurGardOutput("sg", "loop://", heartbeat_line=5)
    assert told.heartbeat_message.encode().startswith(b"101005 ")


def test_build_output_reads_the_settings_table() -> None:
    """A [[outputs]] table with serial settings becomes a Sur-Gard output."""
    output = build_output(
        OutputConfig(
            name="sg",
            kind="surgard",
            settings={
                "url": "/dev/ttyUSB0",
                "baudrate": 19200,
                "bytesize": 7,
                "parity": "e",
                "stopbits": 1,
                "receiver_number": 3,
                "line_number": 2,
                "ack_timeout": 4,
                "retries": 3,
                "heartbeat": 30,
            },
        )
    )
    assert isinstance(output, SurGardOutput)
    assert output.serial_settings == {
        "baudrate": 19200,
        "bytesize": 7,
        "parity": "E",
        "stopbits": 1,
    }
    assert output.message_for(make_signal()).encode().startswith(b"503002 ")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "needs url"),
        ({"url": "loop://", "parity": "X"}, "parity"),
        ({"url": "loop://", "line_number": 1000}, "does not fit"),
        ({"url": "loop://", "receiver_number": 100}, "receiver_number"),
        ({"url": "loop://", "retry": 3}, "unknown settings: retry"),
        ({"url": "loop://", "numbers": "dnis"}, "numbers"),
    ],
)
def test_bad_settings_are_refused_at_start(settings: dict[str, object], message: str) -> None:
    """Each mistake in the table is an InvalidInputError naming it."""
    with pytest.raises(InvalidInputError, match=message):
        build_output(OutputConfig(name="sg", kind="surgard", settings=settings))


def test_an_account_with_a_trailing_newline_does_not_fit_sg_contact_id() -> None:
    """``1234\\n`` is no SG Contact ID account: the output says the signal does not fit (a
    delivery error the dispatcher handles), not a bare ValueError from building the message."""
    output = SurGardOutput("sg", "loop://", header_digits=3)
    with pytest.raises(DeliveryError, match="does not fit SG Contact ID"):
        output.message_for(make_signal(account="1234\n"))
