"""Sur-Gard automation output over pyserial: a serial device, or TCP through ``socket://``.

Rules (reference §4.1):
- One message at a time. Each is answered by ACK (0x06) or NAK (0x15) within ``ack_timeout``
  (4 s); a NAK or silence is followed by up to ``retries`` (3) retransmissions. When they are
  spent the output reports itself down and raises :class:`DeliveryError`: the backlog waits
  in the journal, nothing is dropped.
- While down, a delivery first sends one heartbeat; only an ACKed heartbeat brings the output
  back up (the CPM "manual mode"). A heartbeat probe that fails is an
  :class:`UnreachableError` (no alarm was sent), which the dispatcher retries about every
  second. ``run_heartbeats`` sends a heartbeat whenever the link has
  been idle for ``heartbeat`` seconds, so a recovered automation is noticed without traffic.
- Stale bytes are flushed before each send, so an answer always belongs to the message just
  sent (the format has no message id; a resend is a repeat, at-least-once).
- The account is the one received from the panel: the automation identifies the receiver
  and line by ``RRLLL`` and applies its own line prefix. A Contact ID account that does not fit
  the format (1 to 10 of 0-9 B-F) falls back to protocol S when the signal has a SIA view;
  otherwise the delivery fails loudly rather than sending a wrong account.
- pyserial blocks: each attempt (write + wait for the answer) is one worker-thread call.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, NoReturn

import serial
import trio

from adapters.output import DeliveryError, Settings, UndeliverableError, UnreachableError
from protocols.errors import InvalidInputError
from protocols.signal import Signal
from protocols.surgard import (
    NEED_DATA,
    ContactIdMessage,
    Handshake,
    HandshakeReader,
    Header,
    Heartbeat,
    SiaMessage,
    SurGardMessage,
)

_CID_ACCOUNT = re.compile(r"^[0-9B-F]{1,10}\Z")
_POLL = 0.05  # pyserial read timeout: how often a waiting attempt looks at its deadline
_PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


class SurGardOutput:
    """Sends SG messages to an automation computer and waits for its handshake."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        receiver_number: int = 1,
        line_number: int = 1,
        header_digits: int = 5,
        heartbeat_line: int | None = None,
        numbers: str = "config",
        ack_timeout: float = 4.0,
        retries: int = 3,
        heartbeat: float = 30.0,
    ) -> None:
        if parity not in _PARITIES or bytesize not in (7, 8) or stopbits not in (1, 1.5, 2):
            raise InvalidInputError(
                f"output {name!r}: serial settings must be bytesize 7/8, parity N/E/O, "
                "stopbits 1/1.5/2"
            )
        if numbers not in ("config", "signal"):
            raise InvalidInputError(f"output {name!r}: numbers must be 'config' or 'signal'")
        try:
            self.header = Header(receiver_number, line_number, header_digits)
            # 1RR000 on 5-digit headers (System III/5), the line itself on RRL units (1011).
            hb_line = (
                heartbeat_line
                if heartbeat_line is not None
                else (0 if header_digits >= 5 else line_number)
            )
            self.heartbeat_message = Heartbeat(Header(receiver_number, hb_line, header_digits))
        except ValueError as exc:
            raise InvalidInputError(f"output {name!r}: {exc}") from exc
        self.name = name
        self.url = url
        self.serial_settings: dict[str, Any] = {
            "baudrate": baudrate,
            "bytesize": bytesize,
            "parity": _PARITIES[parity],
            "stopbits": stopbits,
        }
        self.numbers = numbers
        self.ack_timeout = ack_timeout
        self.retries = retries
        self.heartbeat = heartbeat
        self.down = False
        self._port: serial.Serial | None = None
        self._lock = trio.Lock()
        self._last_error: str | None = None
        self._last_exchange = float("-inf")

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any]) -> SurGardOutput:
        read = Settings(name, settings)
        url = read.text("url")
        if not url:
            raise InvalidInputError(f"output {name!r}: a surgard output needs url")
        heartbeat_line = read.optional_integer("heartbeat_line")
        output = cls(
            name,
            url,
            baudrate=read.integer("baudrate", 9600, minimum=50, maximum=4_000_000),
            bytesize=read.integer("bytesize", 8, minimum=7, maximum=8),
            parity=(read.text("parity", "N") or "N").upper(),
            stopbits=read.number("stopbits", 1, minimum=1),
            receiver_number=read.integer("receiver_number", 1, maximum=99),
            line_number=read.integer("line_number", 1),
            header_digits=read.integer("header_digits", 5, minimum=3, maximum=9),
            heartbeat_line=heartbeat_line,
            numbers=read.text("numbers", "config") or "config",
            ack_timeout=read.number("ack_timeout", 4.0, minimum=0.001),
            retries=read.integer("retries", 3, maximum=100),
            heartbeat=read.number("heartbeat", 30.0),
        )
        read.finish()
        return output

    @property
    def connected(self) -> bool:
        return self._port is not None and not self.down

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def message_for(self, signal: Signal) -> SurGardMessage:
        """The SG message for one signal (Contact ID as ``5``/``Q``, SIA as ``S``)."""
        header = self._header_for(signal)
        account = signal.account
        if signal.cid is not None and _CID_ACCOUNT.match(account):
            return ContactIdMessage(header, account, signal.cid)
        if signal.sia is not None:
            try:
                return SiaMessage.from_view(header, account, signal.sia)
            except ValueError as exc:
                raise UndeliverableError(
                    f"signal {signal.id} cannot be sent in SG format: {exc}"
                ) from exc
        if signal.cid is not None:
            raise UndeliverableError(
                f"signal {signal.id}: account {account!r} does not fit SG Contact ID"
            )
        raise UndeliverableError(f"signal {signal.id} has no Contact ID or SIA event for SG")

    def _header_for(self, signal: Signal) -> Header:
        if self.numbers == "signal":
            try:
                return Header(
                    int(signal.receiver_no or self.header.receiver),
                    int(signal.line or self.header.line),
                    self.header.digits,
                )
            except ValueError:
                pass  # not decimal or too wide for the header: the configured numbers
        return self.header

    async def deliver(self, signal: Signal, package_id: str) -> None:
        try:
            data = self.message_for(signal).encode()
        except DeliveryError as exc:
            self._last_error = str(exc)
            raise
        async with self._lock:
            if self.down:
                try:
                    await self._send(self.heartbeat_message.encode(), "heartbeat", attempts=1)
                except DeliveryError as exc:
                    # Only a heartbeat went out: a cheap probe, retried about every second.
                    raise UnreachableError(str(exc)) from exc
            await self._send(data, f"package {package_id}", attempts=1 + self.retries)

    async def run_heartbeats(self) -> NoReturn:
        """Send a heartbeat whenever the link has been idle for ``heartbeat`` s; never returns."""
        if self.heartbeat <= 0:
            await trio.sleep_forever()
        while True:
            idle = trio.current_time() - self._last_exchange
            if idle < self.heartbeat:
                await trio.sleep(self.heartbeat - idle)
                continue
            async with self._lock:
                try:
                    attempts = 1 if self.down else 1 + self.retries
                    await self._send(self.heartbeat_message.encode(), "heartbeat", attempts)
                except DeliveryError:
                    self._last_exchange = trio.current_time()  # already recorded

    async def aclose(self) -> None:
        async with self._lock:
            await trio.to_thread.run_sync(self._close)

    async def _send(self, data: bytes, what: str, attempts: int) -> None:
        answer: Handshake | None = None
        for _ in range(attempts):
            try:
                answer = await trio.to_thread.run_sync(self._attempt, data)
            except (serial.SerialException, OSError, ValueError) as exc:
                await trio.to_thread.run_sync(self._close)
                self._fail(f"{what}: {self.url}: {exc}")
            if answer is Handshake.ACK:
                self.down = False
                self._last_error = None
                self._last_exchange = trio.current_time()
                return
        said = "NAK" if answer is Handshake.NAK else f"no answer within {self.ack_timeout:g} s"
        self._fail(f"{what}: {said} after {attempts} attempt(s) to {self.url}; output down")

    def _fail(self, reason: str) -> NoReturn:
        self.down = True
        self._last_error = reason
        raise DeliveryError(reason)

    def _attempt(self, data: bytes) -> Handshake | None:
        """Worker thread: one transmission and the wait for its ACK or NAK."""
        port = self._open()
        port.reset_input_buffer()
        port.write(data)
        port.flush()
        reader = HandshakeReader()
        deadline = time.monotonic() + self.ack_timeout
        while time.monotonic() < deadline:
            chunk = port.read(max(1, port.in_waiting))
            if chunk:
                reader.receive_data(chunk)
                answer = reader.next_event()
                if answer is not NEED_DATA:
                    assert isinstance(answer, Handshake)
                    return answer
        return None

    def _open(self) -> serial.Serial:
        if self._port is None:
            self._port = serial.serial_for_url(
                self.url, timeout=_POLL, write_timeout=self.ack_timeout, **self.serial_settings
            )
        return self._port

    def _close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            port.close()
