"""Sentinel delivery client (trio): packages over TCP with a passkey, ACK/NAK per package id.

Rules:
- One connection, used by one exchange at a time (a lock): a package and its answer, or a
  heartbeat and its answer. Nothing else is in flight, so an answer belongs to the exchange.
- A package counts as delivered only on ``ACK <its package id>``. ``NAK`` is a
  :class:`DeliveryError` (the dispatcher resends later). Silence past ``timeout``, a closed
  connection, an ACK naming another package or any framing error also raise it and drop the
  connection: after those nobody knows what the far side has, so the next try starts clean.
- Each (re)connection tries the primary first, then the alternate, and opens with the passkey.
  A refused passkey is a delivery error naming the address. When no address can be reached
  (refused, timed out, no answer to AUTH) the error is an :class:`UnreachableError`: nothing
  was sent, and the dispatcher probes again within about a second, so an automation that
  comes back is served at once.
- ``on_alternate`` says the link is on the alternate address (the dispatcher journals it).
- When idle for ``heartbeat`` seconds, ``run_heartbeats`` sends ``HB`` (connecting first if the
  link is down), so ``connected`` tells the truth even when no alarms flow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import trio

from adapters.output import DeliveryError, Settings, UnreachableError
from adapters.sentinel.package import Package, check_link_template
from adapters.sentinel.transport import (
    NEED_DATA,
    Ack,
    Auth,
    AuthAccepted,
    AuthRefused,
    FrameReader,
    Heartbeat,
    Message,
    Nak,
    PackageFrame,
    encode,
)
from protocols.errors import InvalidInputError, RemoteProtocolError
from protocols.signal import Signal

Address = tuple[str, int]


def _where(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


class SentinelOutput:
    """Delivers XML packages to a Sentinel XML receiver (or anything speaking the same frames)."""

    def __init__(
        self,
        name: str,
        address: Address,
        *,
        alternate: Address | None = None,
        passkey: str = "",
        timeout: float = 5.0,
        heartbeat: float = 30.0,
        link_template: str | None = None,
        station: str | None = None,
    ) -> None:
        try:
            Auth(passkey)
        except ValueError:
            raise InvalidInputError(
                f"output {name!r}: passkey must be up to 128 printable ASCII characters, no spaces"
            ) from None
        self.name = name
        self.addresses: tuple[Address, ...] = (address,) + ((alternate,) if alternate else ())
        self.passkey = passkey
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.link_template = check_link_template(link_template)
        self.station = station
        self.peer: Address | None = None
        self._stream: trio.SocketStream | None = None
        self._reader = FrameReader()
        self._lock = trio.Lock()
        self._last_error: str | None = None
        self._last_exchange = -math.inf

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any]) -> SentinelOutput:
        read = Settings(name, settings)
        address = read.address("address")
        if address is None:
            raise InvalidInputError(f"output {name!r}: a sentinel output needs address")
        output = cls(
            name,
            address,
            alternate=read.address("alternate"),
            passkey=read.text("passkey", "") or "",
            timeout=read.number("timeout", 5.0, minimum=0.001),
            heartbeat=read.number("heartbeat", 30.0),
            link_template=read.text("link_template"),
            station=read.text("station"),
        )
        read.finish()
        return output

    @property
    def connected(self) -> bool:
        return self._stream is not None

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def on_alternate(self) -> bool:
        """Connected to the alternate address (the primary could not be reached)."""
        return len(self.addresses) > 1 and self.peer == self.addresses[1]

    async def deliver(self, signal: Signal, package_id: str) -> None:
        xml = Package.from_signal(
            signal, package_id, link_template=self.link_template, station=self.station
        ).to_xml()
        async with self._lock:
            answer = await self._exchange(PackageFrame(xml), f"package {package_id}")
            if answer == Ack(package_id):
                self._last_error = None
                return
            if isinstance(answer, Nak) and answer.package_id == package_id:
                # A clean refusal: the link is fine, the package waits for the next try.
                self._last_error = f"NAK {package_id}: {answer.reason}"
                raise DeliveryError(self._last_error)
            await self._fail(f"answer {answer!r} does not match package {package_id}")

    async def deliver_batch(self, items: Sequence[tuple[Signal, str]]) -> int:
        """Pipelined delivery: send the packages back to back, then read the answers in order.

        Returns how many leading packages were ACKed (all of them when everything went
        well). Anything after the first package not ACKed is delivered again later: the far
        side drops repeats by package id. Raises DeliveryError when not even the first one was
        ACKed. One round trip for many packages is what lets one link keep up with an alarm
        storm.
        """
        frames = b"".join(
            encode(
                PackageFrame(
                    Package.from_signal(
                        signal, package_id, link_template=self.link_template, station=self.station
                    ).to_xml()
                )
            )
            for signal, package_id in items
        )
        acked = 0
        refusal: str | None = None
        async with self._lock:
            try:
                stream = await self._connect()
                with trio.fail_after(self.timeout):
                    await stream.send_all(frames)
                for _, package_id in items:
                    with trio.fail_after(self.timeout):
                        answer = await self._receive(stream)
                    if answer == Ack(package_id):
                        if refusal is None:
                            acked += 1
                    elif isinstance(answer, Nak) and answer.package_id == package_id:
                        refusal = refusal or f"NAK {package_id}: {answer.reason}"
                    else:
                        refusal = f"answer {answer!r} does not match package {package_id}"
                        await self._drop()
                        break
            except DeliveryError:
                if not acked:
                    raise
            except trio.TooSlowError:
                refusal = f"no answer within {self.timeout:g} s from {self._peer()}"
                await self._drop()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                refusal = f"connection to {self._peer()} failed: {exc}"
                await self._drop()
            except RemoteProtocolError as exc:
                refusal = f"{exc.message} from {self._peer()}"
                await self._drop()
            except BaseException:
                await self._drop()
                raise
            self._last_exchange = trio.current_time()
            self._last_error = refusal
            if refusal is not None and not acked:
                raise DeliveryError(refusal)
            return acked

    async def run_heartbeats(self) -> NoReturn:
        """Send ``HB`` whenever the link has been idle for ``heartbeat`` seconds; never returns."""
        if self.heartbeat <= 0:
            await trio.sleep_forever()
        while True:
            idle = trio.current_time() - self._last_exchange
            if idle < self.heartbeat:
                await trio.sleep(self.heartbeat - idle)
                continue
            async with self._lock:
                try:
                    answer = await self._exchange(Heartbeat(), "heartbeat")
                    if answer != Heartbeat():
                        await self._fail(f"answer {answer!r} to a heartbeat")
                except DeliveryError:
                    # Already recorded; try again after another interval, not in a hot loop.
                    self._last_exchange = trio.current_time()

    async def aclose(self) -> None:
        await self._drop()

    async def _exchange(self, message: Message, what: str) -> Message:
        """Send one message and return the far side's answer, or raise DeliveryError."""
        try:
            stream = await self._connect()
            with trio.fail_after(self.timeout):
                await stream.send_all(encode(message))
                answer = await self._receive(stream)
        except DeliveryError:
            raise  # from _connect, already recorded
        except trio.TooSlowError:
            await self._fail(f"no answer to {what} within {self.timeout:g} s from {self._peer()}")
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await self._fail(f"{what}: connection to {self._peer()} failed: {exc}")
        except RemoteProtocolError as exc:
            await self._fail(f"{what}: {exc.message} from {self._peer()}")
        except BaseException:
            # Cancelled mid-exchange: the far side's state is unknown, start clean next time.
            await self._drop()
            raise
        self._last_exchange = trio.current_time()
        return answer

    async def _connect(self) -> trio.SocketStream:
        if self._stream is not None:
            return self._stream
        errors = []
        refused = False  # a far side that answers and refuses us is not probed every second
        for address in self.addresses:
            try:
                with trio.fail_after(self.timeout):
                    stream = await trio.open_tcp_stream(*address)
            except (OSError, trio.TooSlowError) as exc:
                errors.append(f"{_where(address)}: {exc or 'connect timed out'}")
                continue
            self._reader = FrameReader()
            try:
                with trio.fail_after(self.timeout):
                    await stream.send_all(encode(Auth(self.passkey)))
                    answer = await self._receive(stream)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                errors.append(f"{_where(address)}: no answer to AUTH ({exc or 'timed out'})")
            except RemoteProtocolError as exc:
                errors.append(f"{_where(address)}: {exc.message}")
            else:
                if isinstance(answer, AuthAccepted):
                    self._stream, self.peer = stream, address
                    return stream
                reason = answer.reason if isinstance(answer, AuthRefused) else repr(answer)
                errors.append(f"{_where(address)}: passkey refused: {reason}")
                refused = True
            await trio.aclose_forcefully(stream)
        self._last_error = "cannot connect: " + "; ".join(errors)
        raise (DeliveryError if refused else UnreachableError)(self._last_error)

    async def _receive(self, stream: trio.SocketStream) -> Message:
        while True:
            event = self._reader.next_event()
            if event is NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    raise trio.BrokenResourceError("connection closed by the far side")
                self._reader.receive_data(data)
                continue
            if isinstance(event, RemoteProtocolError):
                raise event
            assert not isinstance(event, type)
            return event

    def _peer(self) -> str:
        return "?" if self.peer is None else _where(self.peer)

    async def _fail(self, reason: str) -> NoReturn:
        self._last_error = reason
        await self._drop()
        raise DeliveryError(reason)

    async def _drop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await trio.aclose_forcefully(stream)
