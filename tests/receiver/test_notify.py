"""E-mail notifications on a real SMTP server on loopback (aiosmtpd): what a station's IT gets
when automation or supervision fails, batched so a storm is one message a minute."""

from __future__ import annotations

import email
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from aiosmtpd.controller import Controller
from structlog.testing import capture_logs

from protocols.signal import ContactIdView, Signal, Source, new_signal_id
from receiver.config import NotifyConfig
from receiver.journal import Journal
from receiver.notify import Notifier, event_of
from receiver.store.sqlite import connect
from receiver.store.sqlite_store import SqliteStore
from tests.adapters.test_sentinel_client import closed_port
from tests.receiver.conftest import start_receiver
from tests.receiver.test_dispatcher import send_alarms
from tests.receiver.test_output_troubles import two_outputs


class Inbox:
    """The aiosmtpd handler: every message the server accepted, parsed."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.arrived = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.arrived:
            self.messages.append(email.message_from_bytes(envelope.content))
            self.arrived.notify_all()
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Message]:
        """Block (real time: the test's trio clock may be a mock) until ``count`` arrived."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    async def received(self, count: int) -> list[Message]:
        messages = await trio.to_thread.run_sync(self.wait_for, count)
        assert len(messages) >= count, f"{len(messages)} messages, expected {count}"
        return messages


def start_smtp(inbox: Inbox, port: int) -> Controller:
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), closed_port()
    controller = start_smtp(inbox, port)
    try:
        yield inbox, port
    finally:
        controller.stop()


def body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def target(port: int, **settings: Any) -> NotifyConfig:
    return NotifyConfig(
        name=settings.pop("name", "it"),
        to=("it@station.example",),
        sender="receiver@station.example",
        smtp_port=port,
        **settings,
    )


def lost_panel(account: str, station: str) -> Signal:
    """A supervision trouble as the supervisor journals it."""
    now = datetime.now(UTC)
    return Signal(
        id=new_signal_id(now),
        received_at=now,
        source=Source.SUPERVISION,
        account=account,
        station=station,
        cid=ContactIdView("E", "356", "00", "000"),
        name="Loss of central polling",
        category="trouble",
    )


async def run_notifier(
    db: Path, targets: list[NotifyConfig], nursery: trio.Nursery, *, gather: float
) -> tuple[Journal, Notifier]:
    journal = Journal(SqliteStore(db))
    await nursery.start(journal.run)
    notifier = Notifier(targets, SqliteStore(db), journal, gather=gather, read_interval=0.05)
    await nursery.start(notifier.run)
    with trio.fail_after(10):
        await notifier.opened.wait()  # it has opened its cursors (at the journal's end)
    return journal, notifier


async def test_output_down_is_mailed(smtp: tuple[Inbox, int], tmp_path: Path) -> None:
    """The running receiver: an output down past trouble_after is one e-mail naming it."""
    inbox, port = smtp
    config = two_outputs(tmp_path, closed_port())
    config.write_text(
        config.read_text()
        + f'\n[[notify]]\nname = "it"\nto = ["it@station.example"]\nsmtp_port = {port}\n'
        'events = ["output_down"]\n'
    )
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        await send_alarms(running.ports.dc09, ["1001"], 1)
        [message] = await inbox.received(1)
        assert message["To"] == "it@station.example"
        assert message["Subject"] == "receiver: 1 event"
        assert "output_down | E354 | Failure to communicate event | output automation" in body(
            message
        )
        running.service.request_shutdown()
        nursery.cancel_scope.cancel()


async def test_a_storm_is_one_message_a_window_filtered_by_station(
    smtp: tuple[Inbox, int], tmp_path: Path
) -> None:
    """100 panels lost at once: one message listing them all; S2's target hears of its 40
    only; the next trouble waits for the next window (batch_interval, 60 s by default)."""
    inbox, port = smtp
    targets = [
        target(port, batch_interval=3.0),
        target(port, name="s2", station="S2", batch_interval=3.0),
    ]
    async with trio.open_nursery() as nursery:
        journal, _ = await run_notifier(tmp_path / "r.sqlite3", targets, nursery, gather=1.0)
        storm = [lost_panel(f"{n:04d}", "S1" if n < 60 else "S2") for n in range(100)]
        await journal.append(storm[:50])
        await journal.append(storm[50:])
        messages = await inbox.received(2)
        by_subject = sorted(m["Subject"] for m in messages)
        assert by_subject == ["receiver: 100 events", "receiver: 40 events"]
        [everything] = [m for m in messages if m["Subject"] == "receiver: 100 events"]
        lines = body(everything).splitlines()
        assert len(lines) == 100
        assert all("panel_lost | E356" in line for line in lines)
        [s2] = [m for m in messages if m["Subject"] == "receiver: 40 events"]
        assert "station S1" not in body(s2)
        await journal.append([lost_panel("9999", "S1")])
        assert len(inbox.messages) == 2  # the first target mailed less than a window ago
        [*_, later] = await inbox.received(3)
        assert later["Subject"] == "receiver: 1 event"
        assert "account 9999" in body(later)
        nursery.cancel_scope.cancel()


async def test_an_smtp_server_down_is_logged_and_retried(tmp_path: Path) -> None:
    """Nobody listens on the SMTP port: logged, tried again each window, the receiver goes
    on; once the server is up the lines arrive, none lost."""
    port = closed_port()
    inbox = Inbox()
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            journal, _ = await run_notifier(
                tmp_path / "r.sqlite3", [target(port, batch_interval=0.5)], nursery, gather=0.1
            )
            await journal.append([lost_panel("1001", "S1")])
            with trio.fail_after(20):
                while len(failures := [e for e in logs if e["event"] == "notify_failed"]) < 2:
                    await trio.sleep(0.05)
            assert failures[0]["target"] == "it"
            assert failures[0]["events"] == 1
            await journal.append([lost_panel("1002", "S1")])
            controller = start_smtp(inbox, port)
            try:
                [message] = await inbox.received(1)
            finally:
                controller.stop()
            assert message["Subject"] == "receiver: 2 events"
            assert "account 1001" in body(message)
            assert "account 1002" in body(message)
            nursery.cancel_scope.cancel()


def test_each_trouble_is_the_event_a_target_names() -> None:
    """What the journal holds becomes the event names a [[notify]] target lists."""
    panel = lost_panel("1001", "S1")
    bridge = attrs.evolve(panel, device="BR-1", cid=ContactIdView("R", "350", "00", "000"))
    refused = attrs.evolve(
        panel, source=Source.RECEIVER, extended=(("reason", "bad_token"), ("bridge_id", "AA"))
    )
    failover = attrs.evolve(
        panel, source=Source.RECEIVER, extended=(("trouble", "failover"), ("output", "a"))
    )
    restored = attrs.evolve(
        panel,
        source=Source.RECEIVER,
        cid=ContactIdView("R", "354", "00", "001"),
        extended=(("trouble", "output"), ("output", "a")),
    )
    alarm = attrs.evolve(panel, source=Source.DC09)
    assert [event_of(s) for s in (panel, bridge, refused, failover, restored, alarm)] == [
        "panel_lost",
        "bridge_restored",
        "bridge_refused",
        "failover",
        "output_restored",
        None,
    ]


async def test_a_dealer_target_hears_of_its_own_sites_only(
    smtp: tuple[Inbox, int], tmp_path: Path
) -> None:
    inbox, port = smtp
    db = tmp_path / "r.sqlite3"
    conn = connect(db)
    conn.execute("INSERT INTO dealers (id, name) VALUES (1, 'D1'), (2, 'D2')")
    conn.execute("INSERT INTO sites (id, name, dealer_id) VALUES (10, 'Mine', 1), (20, 'Other', 2)")
    conn.close()
    targets = [target(port, dealer="D1", batch_interval=1.0)]
    async with trio.open_nursery() as nursery:
        journal, _ = await run_notifier(db, targets, nursery, gather=0.5)
        mine = attrs.evolve(lost_panel("1001", "S1"), site_id=10, site_name="Mine")
        other = attrs.evolve(lost_panel("2002", "S1"), site_id=20, site_name="Other")
        await journal.append([other, mine, lost_panel("3003", "S1")])
        [message] = await inbox.received(1)
        assert body(message).splitlines()[0].endswith("account 1001 | site Mine | station S1")
        assert message["Subject"] == "receiver: 1 event"
        nursery.cancel_scope.cancel()
