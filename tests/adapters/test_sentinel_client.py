"""Sentinel client against the sink over real loopback TCP: ACK, NAK, silence, failover, passkey."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from adapters.output import DeliveryError, Output, UnreachableError, build_output
from adapters.sentinel import transport
from adapters.sentinel.client import SentinelOutput
from adapters.sentinel.package import Package, validate
from protocols.errors import InvalidInputError
from receiver.config import OutputConfig
from simulators.sink import SentinelSink
from tests.adapters.test_sentinel_package import make_signal

LOCAL = "127.0.0.1"


@asynccontextmanager
async def running_sink(
    out: Path, *, mode: str = "ack", passkey: str | None = None
) -> AsyncIterator[tuple[SentinelSink, int]]:
    sink = SentinelSink(out, passkey=passkey, mode=mode)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sink.serve, LOCAL, 0)
        yield sink, port
        nursery.cancel_scope.cancel()


def closed_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return int(s.getsockname()[1])


def files(out: Path) -> list[str]:
    names = sorted(p.name for p in out.glob("*.xml"))
    for name in names:
        validate((out / name).read_bytes())
    return names


async def test_ack_files_the_package_at_the_sink(tmp_path: Path) -> None:
    """An ACKed delivery leaves exactly the package the receiver built at the sink."""
    async with running_sink(tmp_path, passkey="k1") as (sink, port):
        output = SentinelOutput("sentinel", (LOCAL, port), passkey="k1", timeout=5)
        await output.deliver(make_signal(), "pkg-1")
        assert output.connected
        assert output.last_error is None
        await output.aclose()
    assert files(tmp_path) == ["pkg-1.xml"]
    assert (tmp_path / "pkg-1.xml").read_bytes() == Package.from_signal(
        make_signal(), "pkg-1"
    ).to_xml()
    assert sink.packages == 1
    # No link_template configured: no VideoLink at the automation, never a placeholder.
    assert b"VideoLink" not in (tmp_path / "pkg-1.xml").read_bytes()


async def test_a_redelivery_is_dropped_by_package_id(tmp_path: Path) -> None:
    """Sending the same package id twice (at-least-once) leaves one file and counts a duplicate."""
    async with running_sink(tmp_path) as (sink, port):
        output = SentinelOutput("sentinel", (LOCAL, port))
        await output.deliver(make_signal(), "pkg-1")
        await output.deliver(make_signal(), "pkg-1")
        await output.deliver(make_signal(account="2222"), "pkg-2")
        await output.aclose()
    assert files(tmp_path) == ["pkg-1.xml", "pkg-2.xml"]
    assert (sink.packages, sink.duplicates) == (2, 1)


async def test_nak_is_a_delivery_error_and_the_link_stays_up(tmp_path: Path) -> None:
    """A NAK raises DeliveryError naming the package and reason; the connection is kept."""
    async with running_sink(tmp_path, mode="nak") as (_, port):
        output = SentinelOutput("sentinel", (LOCAL, port))
        with pytest.raises(DeliveryError, match="NAK pkg-1: refused by sink"):
            await output.deliver(make_signal(), "pkg-1")
        assert output.connected
        assert output.last_error == "NAK pkg-1: refused by sink (nak mode)"
        await output.aclose()


async def test_silence_is_a_timeout_and_drops_the_link(tmp_path: Path) -> None:
    """No answer within the per-package timeout raises DeliveryError and disconnects."""
    async with running_sink(tmp_path, mode="silent") as (_, port):
        output = SentinelOutput("sentinel", (LOCAL, port), timeout=0.2)
        with pytest.raises(DeliveryError, match=r"no answer to package pkg-1 within 0\.2 s"):
            await output.deliver(make_signal(), "pkg-1")
        assert not output.connected
        await output.aclose()


async def test_sink_closing_on_a_package_is_a_delivery_error(tmp_path: Path) -> None:
    """A far side that hangs up instead of answering does not count as an ACK."""
    async with running_sink(tmp_path, mode="drop") as (_, port):
        output = SentinelOutput("sentinel", (LOCAL, port))
        with pytest.raises(DeliveryError, match="closed by the far side"):
            await output.deliver(make_signal(), "pkg-1")
        assert not output.connected


async def test_failover_to_the_alternate_when_the_primary_is_closed(tmp_path: Path) -> None:
    """With nothing on the primary port, the package goes to the alternate address."""
    async with running_sink(tmp_path) as (sink, port):
        output = SentinelOutput(
            "sentinel", (LOCAL, closed_port()), alternate=(LOCAL, port), timeout=2
        )
        await output.deliver(make_signal(), "pkg-1")
        assert output.peer == (LOCAL, port)
        await output.aclose()
    assert files(tmp_path) == ["pkg-1.xml"]
    assert sink.packages == 1


async def test_both_addresses_down_names_both(tmp_path: Path) -> None:
    """When neither address answers, the error says so for each, and nothing is connected."""
    first, second = closed_port(), closed_port()
    output = SentinelOutput("sentinel", (LOCAL, first), alternate=(LOCAL, second), timeout=2)
    with pytest.raises(DeliveryError, match=f"{first}.*{second}"):
        await output.deliver(make_signal(), "pkg-1")
    assert not output.connected
    assert output.last_error is not None
    assert output.last_error.startswith("cannot connect")


async def test_wrong_passkey_is_refused(tmp_path: Path) -> None:
    """A sink expecting another passkey refuses the connection; no package is filed."""
    async with running_sink(tmp_path, passkey="right") as (sink, port):
        output = SentinelOutput("sentinel", (LOCAL, port), passkey="wrong")
        with pytest.raises(DeliveryError, match="passkey refused: wrong passkey"):
            await output.deliver(make_signal(), "pkg-1")
        assert not output.connected
    assert files(tmp_path) == []
    assert sink.refused == 1


async def test_heartbeats_flow_when_idle(tmp_path: Path) -> None:
    """An idle output connects and sends HB each interval; the sink answers each one."""
    async with running_sink(tmp_path) as (sink, port):
        output = SentinelOutput("sentinel", (LOCAL, port), heartbeat=0.02)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(output.run_heartbeats)
                while sink.heartbeats < 3:
                    await trio.sleep(0.01)
                assert output.connected
                assert output.last_error is None
                nursery.cancel_scope.cancel()
        await output.aclose()


async def test_heartbeat_failure_marks_the_output_down(tmp_path: Path) -> None:
    """A heartbeat nobody answers leaves the output disconnected with the reason recorded."""
    output = SentinelOutput("sentinel", (LOCAL, closed_port()), heartbeat=0.01, timeout=1)
    with trio.move_on_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(output.run_heartbeats)
            while output.last_error is None:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert not output.connected
    assert (output.last_error or "").startswith("cannot connect")


def test_build_output_reads_the_settings_table() -> None:
    """A [[outputs]] table becomes a Sentinel output with its primary, alternate and options."""
    output = build_output(
        OutputConfig(
            name="monitor",
            kind="sentinel",
            settings={
                "address": "10.0.0.1:2000",
                "alternate": "10.0.0.2:2000",
                "passkey": "k",
                "timeout": 3,
                "heartbeat": 20,
                "station": "CS",
            },
        )
    )
    assert isinstance(output, SentinelOutput)
    assert isinstance(output, Output)
    assert output.addresses == (("10.0.0.1", 2000), ("10.0.0.2", 2000))
    assert (output.timeout, output.heartbeat, output.station) == (3.0, 20.0, "CS")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "needs address"),
        ({"address": "nohost"}, "HOST:PORT"),
        ({"address": "h:1", "adress": "x"}, "unknown settings: adress"),
        ({"address": "h:1", "timeout": "5"}, "timeout must be"),
        ({"address": "h:1", "passkey": "has space"}, "passkey"),
        ({"address": "h:1", "link_template": "{nope}"}, "unknown fields"),
    ],
)
def test_bad_settings_are_refused_at_start(settings: dict[str, object], message: str) -> None:
    """Each mistake in the table is an InvalidInputError naming it."""
    build: Callable[[OutputConfig], Output] = build_output
    with pytest.raises(InvalidInputError, match=message):
        build(OutputConfig(name="s", kind="sentinel", settings=settings))


async def test_an_ack_for_another_package_is_not_a_delivery() -> None:
    """A far side that ACKs the wrong package id gets a delivery error and a fresh connection."""

    async def crossed(stream: trio.SocketStream) -> None:
        reader = transport.FrameReader()
        while data := await stream.receive_some(65536):
            reader.receive_data(data)
            while (event := reader.next_event()) is not transport.NEED_DATA:
                if isinstance(event, transport.Auth):
                    await stream.send_all(transport.encode(transport.AuthAccepted()))
                elif isinstance(event, transport.PackageFrame):
                    await stream.send_all(transport.encode(transport.Ack("someone-else")))

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, crossed, 0, host=LOCAL))
        port = listeners[0].socket.getsockname()[1]
        output = SentinelOutput("sentinel", (LOCAL, port))
        with pytest.raises(DeliveryError, match="does not match package pkg-1"):
            await output.deliver(make_signal(), "pkg-1")
        assert not output.connected
        nursery.cancel_scope.cancel()


async def test_pipelined_batch_is_filed_in_order_with_one_round_trip(tmp_path: Path) -> None:
    """deliver_batch sends many packages at once; all are ACKed and filed."""
    async with running_sink(tmp_path) as (sink, port):
        output = SentinelOutput("sentinel", (LOCAL, port), timeout=5)
        items = [(make_signal(), f"pkg-{i:02d}") for i in range(20)]
        assert await output.deliver_batch(items) == 20
        await output.aclose()
    assert files(tmp_path) == [f"pkg-{i:02d}.xml" for i in range(20)]
    assert sink.packages == 20


async def test_pipelined_batch_counts_only_the_prefix_before_a_nak(tmp_path: Path) -> None:
    """When the far side refuses one package, only the packages before it count as delivered."""

    class RefuseFifth(SentinelSink):
        def _file(self, xml: bytes) -> transport.Ack | transport.Nak:
            answer = super()._file(xml)
            if isinstance(answer, transport.Ack) and answer.package_id == "pkg-04":
                return transport.Nak(answer.package_id, "busy")
            return answer

    sink = RefuseFifth(tmp_path)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(sink.serve, LOCAL, 0)
        output = SentinelOutput("sentinel", (LOCAL, port), timeout=5)
        items = [(make_signal(), f"pkg-{i:02d}") for i in range(8)]
        assert await output.deliver_batch(items) == 4
        assert output.last_error is not None
        assert "pkg-04" in output.last_error
        assert output.connected, "a clean refusal keeps the link up"
        with pytest.raises(DeliveryError):
            await output.deliver_batch(items[4:])
        await output.aclose()
        nursery.cancel_scope.cancel()


async def test_nothing_listening_is_unreachable_but_a_refusal_is_not(tmp_path: Path) -> None:
    """Connection refused is an UnreachableError (the dispatcher probes again within a second);
    a NAK or a refused passkey comes from a live far side and is an ordinary DeliveryError."""
    output = SentinelOutput("sentinel", (LOCAL, closed_port()), timeout=2)
    with pytest.raises(UnreachableError):
        await output.deliver(make_signal(), "pkg-1")
    async with running_sink(tmp_path, mode="nak") as (_, port):
        output = SentinelOutput("sentinel", (LOCAL, port))
        with pytest.raises(DeliveryError) as refused:
            await output.deliver(make_signal(), "pkg-1")
        assert not isinstance(refused.value, UnreachableError)
        await output.aclose()
    async with running_sink(tmp_path, passkey="right") as (_, port):
        output = SentinelOutput("sentinel", (LOCAL, port), passkey="wrong")
        with pytest.raises(DeliveryError) as refused:
            await output.deliver(make_signal(), "pkg-1")
        assert not isinstance(refused.value, UnreachableError)
