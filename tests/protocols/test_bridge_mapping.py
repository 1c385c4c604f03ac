"""The bridge event -> Contact ID mapping and the suppression rules, without sockets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from attrs import frozen
from hypothesis import given
from hypothesis import strategies as st

from protocols.bridge import (
    CHANNEL_KINDS,
    EITHER_KINDS,
    USER_KINDS,
    ArmState,
    Envelope,
    Event,
    EventKind,
    Hello,
    encode_frame,
)
from protocols.bridge_mapping import (
    FLAG_DISARMED,
    FLAG_UNMAPPED_CHANNEL,
    FLAG_ZONE_TYPE_OFF,
    PROTOCOL_TOKEN,
    BridgeMapping,
    BridgeSubject,
    TroubleChange,
    map_event,
    map_refusal,
)
from protocols.signal import Flag, Signal, Source

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@frozen
class Channel:
    channel: int
    zone: int
    zone_type: str
    camera: str | None = None


@frozen
class Entry:
    zone_type: str
    code: str
    enabled: bool = True


CHANNELS = {
    1: Channel(1, 1, "instant", "cam-1"),
    2: Channel(2, 12, "24_hour"),
    3: Channel(3, 3, "entry_exit"),
}
CODES = {"instant": "130", "24_hour": "133", "entry_exit": "134"}


def library(zone_type: str, *, off: frozenset[str] = frozenset()) -> Entry:
    return Entry(zone_type, CODES.get(zone_type, "130"), zone_type not in off)


def mapped(
    kind: EventKind,
    channel: int = 0,
    *,
    armed: ArmState | None = ArmState.ARMED,
    suppressed: frozenset[int] = frozenset(),
    off: frozenset[str] = frozenset(),
    user: int | None = None,
    text: str | None = None,
) -> BridgeMapping:
    return map_event(
        Event(channel=channel, kind=kind, user=user, text=text),
        channels=CHANNELS,
        library=lambda zone_type: library(zone_type, off=off),
        armed=armed,
        suppressed_alarms=suppressed,
    )


@pytest.mark.parametrize(
    ("kind", "channel", "expected"),
    [
        (EventKind.INPUT_ALARM, 1, "E130 01 001"),
        (EventKind.INPUT_RESTORE, 1, "R130 01 001"),
        (EventKind.ANALYTICS, 3, "E134 01 003"),
        (EventKind.INPUT_ALARM, 2, "E133 01 012"),
        (EventKind.CAMERA_LOST, 2, "E380 01 012"),
        (EventKind.CAMERA_RESTORED, 2, "R380 01 012"),
        (EventKind.TAMPER, 0, "E137 01 000"),
        (EventKind.TAMPER_RESTORE, 0, "R137 01 000"),
        (EventKind.TAMPER, 3, "E144 01 003"),
        (EventKind.ARM, 0, "R401 01 000"),
        (EventKind.PARTIAL_ARM, 0, "R441 01 000"),
        (EventKind.DISARM, 0, "E401 01 000"),
        (EventKind.POWER_LOST, 0, "E301 01 000"),
        (EventKind.POWER_RESTORED, 0, "R301 01 000"),
        (EventKind.PERIODIC_TEST, 0, "E602 01 000"),
        (EventKind.PRIVACY_ON, 0, "E574 01 000"),
        (EventKind.PRIVACY_OFF, 0, "R574 01 000"),
        (EventKind.PROGRAMMING_CHANGE, 0, "E306 01 000"),
    ],
)
def test_each_kind_has_the_contact_id_of_the_table(
    kind: EventKind, channel: int, expected: str
) -> None:
    """Every event kind gets the Contact ID the module's table names (zone = channel's zone)."""
    cid = mapped(kind, channel).cid
    assert f"{cid.qualifier}{cid.code} {cid.group} {cid.zone}" == expected


def test_a_disarmed_bridge_suppresses_alarms_except_24_hour_zones() -> None:
    """Disarmed: an instant zone's alarm is stored suppressed (and disarmed), a 24-hour
    zone's goes out; not knowing the arming state counts as armed."""
    instant = mapped(EventKind.INPUT_ALARM, 1, armed=ArmState.DISARMED)
    assert instant.suppressed
    assert FLAG_DISARMED in instant.flags
    assert instant.suppressed_alarms == {1}
    assert not mapped(EventKind.INPUT_ALARM, 2, armed=ArmState.DISARMED).suppressed
    assert not mapped(EventKind.ANALYTICS, 1, armed=None).suppressed
    assert not mapped(EventKind.INPUT_ALARM, 1, armed=ArmState.PARTIAL).suppressed


def test_the_restore_of_a_suppressed_alarm_is_suppressed_and_clears_it() -> None:
    """The restore of a channel whose alarm was suppressed is suppressed too, once: the
    channel leaves the suppressed set; a restore of an alarm that went out goes out."""
    restore = mapped(EventKind.INPUT_RESTORE, 1, armed=ArmState.ARMED, suppressed=frozenset({1}))
    assert restore.suppressed
    assert FLAG_DISARMED in restore.flags
    assert restore.suppressed_alarms == frozenset()
    assert not mapped(EventKind.INPUT_RESTORE, 1, suppressed=frozenset({3})).suppressed


def test_an_alarm_that_goes_out_clears_an_earlier_suppression() -> None:
    """An armed alarm on a channel whose last alarm was suppressed takes it off the set."""
    alarm = mapped(EventKind.INPUT_ALARM, 1, suppressed=frozenset({1, 3}))
    assert not alarm.suppressed
    assert alarm.suppressed_alarms == {3}


def test_a_zone_type_switched_off_is_suppressed_armed_or_not() -> None:
    """A zone type off in the effective library: alarm and restore stored suppressed."""
    off = frozenset({"instant"})
    for kind in (EventKind.INPUT_ALARM, EventKind.INPUT_RESTORE, EventKind.ANALYTICS):
        result = mapped(kind, 1, off=off)
        assert result.suppressed
        assert FLAG_ZONE_TYPE_OFF in result.flags
        assert FLAG_DISARMED not in result.flags


def test_an_unregistered_channel_is_still_an_alarm_on_its_number() -> None:
    """Channel 9 is not in the registry: an instant alarm on zone 009, flagged."""
    result = mapped(EventKind.INPUT_ALARM, 9)
    assert (result.cid.code, result.cid.zone, result.zone_type) == ("130", "009", "instant")
    assert FLAG_UNMAPPED_CHANNEL in result.flags
    assert not result.suppressed


def test_user_camera_and_text_go_to_extended() -> None:
    """The user is the Contact ID zone (three digits; a larger one only in extended), the
    channel's camera and the event's text are extended data."""
    assert mapped(EventKind.DISARM, user=42).cid.zone == "042"
    big = mapped(EventKind.ARM, user=4321)
    assert big.cid.zone == "000"
    assert ("user", "4321") in big.extended
    alarm = mapped(EventKind.INPUT_ALARM, 1, text="person detected")
    assert alarm.extended == (("camera", "cam-1"), ("text", "person detected"))


def test_arming_and_troubles() -> None:
    """Arm/disarm set the bridge's arming state; troubles open and close per channel or for
    the bridge; other kinds change neither."""
    assert mapped(EventKind.DISARM).armed is ArmState.DISARMED
    assert mapped(EventKind.PARTIAL_ARM).armed is ArmState.PARTIAL
    assert mapped(EventKind.PERIODIC_TEST).armed is None
    assert mapped(EventKind.CAMERA_LOST, 2).trouble == TroubleChange("camera_lost", True, 2)
    assert mapped(EventKind.TAMPER_RESTORE, 0).trouble == TroubleChange("tamper", False, 0)
    assert mapped(EventKind.POWER_LOST).trouble == TroubleChange("power_lost", True, None)
    assert mapped(EventKind.PRIVACY_OFF).trouble == TroubleChange("privacy", False, None)
    assert mapped(EventKind.INPUT_ALARM, 1).trouble is None


def _events() -> st.SearchStrategy[Event]:
    def build(kind: EventKind, channel: int, user: int | None) -> Event:
        if kind in CHANNEL_KINDS:
            channel = channel or 1
        elif kind not in EITHER_KINDS:
            channel = 0
        return Event(channel=channel, kind=kind, user=user if kind in USER_KINDS else None)

    return st.builds(
        build,
        st.sampled_from(list(EventKind)),
        st.integers(0, 16),
        st.none() | st.integers(0, 0xFFFE),
    )


@given(st.lists(_events(), max_size=40), st.sets(st.sampled_from(sorted(CODES))))
def test_a_stream_of_events_never_lets_a_suppressed_alarms_restore_out(
    events: list[Event], off: set[str]
) -> None:
    """Over any sequence of events (arming state carried along as the listener keeps it):
    nothing raises, a disarmed non-24-hour alarm never reaches automation, and the restore of
    a channel whose last alarm was suppressed never does either."""
    armed: ArmState | None = None
    suppressed: frozenset[int] = frozenset()
    last_alarm_suppressed: dict[int, bool] = {}
    for event in events:
        result = map_event(
            event,
            channels=CHANNELS,
            library=lambda zone_type: library(zone_type, off=frozenset(off)),
            armed=armed,
            suppressed_alarms=suppressed,
        )
        if event.kind is EventKind.INPUT_ALARM:
            last_alarm_suppressed[event.channel] = result.suppressed
            if armed is ArmState.DISARMED and result.zone_type != "24_hour":
                assert result.suppressed
        if event.kind is EventKind.INPUT_RESTORE and last_alarm_suppressed.pop(
            event.channel, False
        ):
            assert result.suppressed
        if result.armed is not None:  # DISARMED is 0: falsy
            armed = result.armed
        suppressed = result.suppressed_alarms


def test_signal_from_bridge_carries_the_mapping_and_the_subject() -> None:
    """``Signal.from_bridge``: a bridge Signal with the mapped code, the site's account, the
    bridge's serial as device, the sequence and raw frame of the envelope."""
    envelope = Envelope(
        bridge_id=b"\x02\x00\x00\x00\x00\x01",
        sequence=7,
        device_time=NOW,
        body=Event(channel=1, kind=EventKind.INPUT_ALARM),
    )
    envelope = Envelope(
        bridge_id=envelope.bridge_id,
        sequence=7,
        device_time=NOW,
        body=envelope.body,
        raw=encode_frame(envelope),
    )
    subject = BridgeSubject(
        account="1234", device="BR-1", account_id=5, effective_account="1234", site_id=2
    )
    result = mapped(EventKind.INPUT_ALARM, 1, armed=ArmState.DISARMED)
    signal = Signal.from_bridge(envelope, result, subject=subject, received_at=NOW, peer="p:1")
    assert signal.source is Source.BRIDGE
    assert (signal.token, signal.sequence, signal.device) == (PROTOCOL_TOKEN, "7", "BR-1")
    assert (signal.account_id, signal.site_id, signal.channel) == (5, 2, 1)
    assert signal.cid == result.cid
    assert Flag.SUPPRESSED in signal.flags
    assert not signal.is_alarm_for_automation
    assert signal.raw == envelope.raw


def test_a_refused_hello_trouble_masks_the_token() -> None:
    """The refused-HELLO trouble is a receiver signal E354 with the reason, and its raw frame
    never carries the token the bridge sent."""
    hello = Envelope(
        bridge_id=b"\x02\x00\x00\x00\x00\x01",
        sequence=1,
        device_time=None,
        body=Hello("BR-1", "VB-4", 4, "1.0", "s3cret-token"),
    )
    raw = encode_frame(hello)
    hello = Envelope(
        bridge_id=hello.bridge_id, sequence=1, device_time=None, body=hello.body, raw=raw
    )
    trouble = map_refusal("354", "bad_token", hello.bridge_mac)
    signal = Signal.from_bridge(
        hello,
        trouble,
        subject=BridgeSubject(account="BR-1", device="BR-1"),
        received_at=NOW,
        peer="p:1",
        refused=True,
    )
    assert signal.source is Source.RECEIVER
    assert (signal.cid.qualifier, signal.cid.code) == ("E", "354")  # type: ignore[union-attr]
    assert ("reason", "bad_token") in signal.extended
    assert b"s3cret-token" in raw
    assert b"s3cret-token" not in signal.raw
