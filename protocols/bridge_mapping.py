"""What a video bridge's event means for automation: its Contact ID and whether it is suppressed.

Pure rules, no I/O: the listener hands in the event, the registry's view of the channel, the
effective alarm-library entry for the channel's zone type (a lookup) and the bridge's current
arming state and suppressed channels; it gets back the Contact ID, the SIA view, the flags, the
trouble it opens or closes, and the arming state and suppressed channels after the event, to
keep. ``Signal.from_bridge`` builds the journal's Signal from that.

Event kinds to Contact ID (group 01; zone = the channel's zone, 3 digits, or the user):

    input alarm / restore, analytics   E/R <library code>   zone
    camera lost / restored             E/R 380 sensor trouble   zone
    tamper / restore                   E/R 137 (bridge, zone 000) or 144 sensor tamper (zone)
    arm / partial arm / disarm         R401 / R441 armed stay / E401   user
    power lost / restored              E/R 301 AC loss
    periodic test                      E602
    privacy mode on / off              E/R 574 group bypass   user
    programming change                 E306   user
    refused HELLO                      E<refused code> (group 00, zone 000), source receiver

Suppression (flagged ``suppressed``: kept in history, never sent to automation):
- a zone type switched off in the effective library: flagged ``zone_type_off`` too;
- a disarmed bridge's alarm (input alarm, analytics) on a zone that is not 24-hour: flagged
  ``disarmed`` too. A bridge whose arming state is not known yet counts as armed: when in
  doubt, an alarm goes out;
- the restore of a channel whose last input alarm was suppressed: flagged ``disarmed``.
A channel the registry does not know (more channels than registered) is still an alarm: zone =
its channel number, zone type instant, flagged ``unmapped_channel``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, Protocol

from attrs import frozen

from protocols import catalog
from protocols.bridge import ArmState, Event, EventKind
from protocols.signal import ContactIdView, Flag, SiaView

GROUP: Final = "01"
# The protocol token journaled with bridge signals (what "SIA-DCS" is for DC-09).
PROTOCOL_TOKEN: Final = "BRIDGE"  # noqa: S105 - a protocol name, not a secret
ZONE_TYPE_24H: Final = "24_hour"
ZONE_TYPE_UNMAPPED: Final = "instant"
FLAG_DISARMED: Final = "disarmed"
FLAG_ZONE_TYPE_OFF: Final = "zone_type_off"
FLAG_UNMAPPED_CHANNEL: Final = "unmapped_channel"

ZONE_KINDS: Final = frozenset({EventKind.INPUT_ALARM, EventKind.INPUT_RESTORE, EventKind.ANALYTICS})
FIXED: Final[Mapping[EventKind, tuple[str, str]]] = {
    EventKind.CAMERA_LOST: ("E", "380"),
    EventKind.CAMERA_RESTORED: ("R", "380"),
    EventKind.ARM: ("R", "401"),
    EventKind.DISARM: ("E", "401"),
    EventKind.PARTIAL_ARM: ("R", "441"),
    EventKind.POWER_LOST: ("E", "301"),
    EventKind.POWER_RESTORED: ("R", "301"),
    EventKind.PERIODIC_TEST: ("E", "602"),
    EventKind.PRIVACY_ON: ("E", "574"),
    EventKind.PRIVACY_OFF: ("R", "574"),
    EventKind.PROGRAMMING_CHANGE: ("E", "306"),
}
ARMING: Final[Mapping[EventKind, ArmState]] = {
    EventKind.ARM: ArmState.ARMED,
    EventKind.DISARM: ArmState.DISARMED,
    EventKind.PARTIAL_ARM: ArmState.PARTIAL,
}
# Kinds that open (True) or close (False) a trouble shown by the status report.
TROUBLES: Final[Mapping[EventKind, tuple[str, bool]]] = {
    EventKind.CAMERA_LOST: ("camera_lost", True),
    EventKind.CAMERA_RESTORED: ("camera_lost", False),
    EventKind.TAMPER: ("tamper", True),
    EventKind.TAMPER_RESTORE: ("tamper", False),
    EventKind.POWER_LOST: ("power_lost", True),
    EventKind.POWER_RESTORED: ("power_lost", False),
    EventKind.PRIVACY_ON: ("privacy", True),
    EventKind.PRIVACY_OFF: ("privacy", False),
}
# Troubles kept per channel (the others are the bridge's).
PER_CHANNEL: Final = frozenset(
    {
        EventKind.CAMERA_LOST,
        EventKind.CAMERA_RESTORED,
        EventKind.TAMPER,
        EventKind.TAMPER_RESTORE,
    }
)


class ChannelRecord(Protocol):
    """A channel as the registry knows it."""

    @property
    def channel(self) -> int: ...
    @property
    def zone(self) -> int: ...
    @property
    def zone_type(self) -> str: ...
    @property
    def camera(self) -> str | None: ...


class LibraryCode(Protocol):
    """The effective alarm-library entry for a zone type (channel > site > dealer > built-in)."""

    @property
    def zone_type(self) -> str: ...
    @property
    def code(self) -> str: ...
    @property
    def enabled(self) -> bool: ...


@frozen
class UnmappedChannel:
    """A channel the registry does not list: still an alarm, on its own number."""

    channel: int
    zone_type: str = ZONE_TYPE_UNMAPPED
    camera: str | None = None

    @property
    def zone(self) -> int:
        return self.channel


@frozen(kw_only=True)
class BridgeSubject:
    """Who a bridge signal is about: the site's account (or the bridge's serial) and site."""

    account: str
    device: str
    account_id: int | None = None
    effective_account: str | None = None
    station: str | None = None
    line: str | None = None
    site_id: int | None = None
    site_name: str | None = None


@frozen
class TroubleChange:
    """A trouble the event opens or closes: what, and on which channel (None: the bridge)."""

    what: str
    opened: bool
    channel: int | None


@frozen(kw_only=True)
class BridgeMapping:
    """What one bridge event means, and the bridge's state after it."""

    cid: ContactIdView
    sia: SiaView | None
    name: str | None
    category: str | None
    channel: int | None = None
    zone_type: str | None = None
    extended: tuple[tuple[str, str], ...] = ()
    flags: frozenset[str] = frozenset()
    trouble: TroubleChange | None = None
    armed: ArmState | None = None  # the arming state the event sets (None: unchanged)
    suppressed_alarms: frozenset[int] = frozenset()  # channels whose restore is suppressed

    @property
    def suppressed(self) -> bool:
        return Flag.SUPPRESSED in self.flags


def sia_for(cid: ContactIdView) -> SiaView | None:
    code = catalog.sia_for_cid(cid)
    return SiaView(code, cid.zone) if code is not None else None


def _described(cid: ContactIdView) -> tuple[SiaView | None, str | None, str | None]:
    name, category = catalog.describe(cid, None)
    return sia_for(cid), name, category


def map_event(
    event: Event,
    *,
    channels: Mapping[int, ChannelRecord],
    library: Callable[[str], LibraryCode],
    armed: ArmState | None,
    suppressed_alarms: frozenset[int] | set[int] = frozenset(),
    known_account: bool = True,
) -> BridgeMapping:
    """One event of a bridge whose arming state is ``armed`` and whose suppressed channels
    are ``suppressed_alarms``; ``library(zone_type)`` is the effective entry for this channel.
    """
    flags: set[str] = set()
    extended: list[tuple[str, str]] = []
    channel: ChannelRecord | None = None
    if event.channel:
        channel = channels.get(event.channel)
        if channel is None:
            flags.add(FLAG_UNMAPPED_CHANNEL)
            channel = UnmappedChannel(event.channel)
        if channel.camera:
            extended.append(("camera", channel.camera))
    zone = f"{channel.zone:03d}" if channel is not None else "000"
    kind = event.kind
    suppressed = set(suppressed_alarms)
    new_arming: ArmState | None = None
    if kind in ZONE_KINDS:
        assert channel is not None  # the codec refuses a zone event on channel 0
        entry = library(channel.zone_type)
        qualifier = "R" if kind is EventKind.INPUT_RESTORE else "E"
        code = entry.code
        if not entry.enabled:
            flags |= {Flag.SUPPRESSED, FLAG_ZONE_TYPE_OFF}
        if kind is EventKind.INPUT_RESTORE:
            if event.channel in suppressed:
                flags |= {Flag.SUPPRESSED, FLAG_DISARMED}
            suppressed.discard(event.channel)
        else:
            if armed is ArmState.DISARMED and entry.zone_type != ZONE_TYPE_24H:
                flags |= {Flag.SUPPRESSED, FLAG_DISARMED}
            if kind is EventKind.INPUT_ALARM:
                if Flag.SUPPRESSED in flags:
                    suppressed.add(event.channel)
                else:
                    suppressed.discard(event.channel)
    elif kind in (EventKind.TAMPER, EventKind.TAMPER_RESTORE):
        qualifier = "E" if kind is EventKind.TAMPER else "R"
        code = "144" if event.channel else "137"
    else:
        qualifier, code = FIXED[kind]
        new_arming = ARMING.get(kind)
    if event.user is not None:
        extended.append(("user", str(event.user)))
        # Contact ID has three digits for the user; a larger number stays in extended.
        zone = f"{event.user:03d}" if event.user <= 999 else "000"
    if event.text:
        extended.append(("text", event.text))
    cid = ContactIdView(qualifier, code, GROUP, zone)
    trouble: TroubleChange | None = None
    if kind in TROUBLES:
        what, opened = TROUBLES[kind]
        trouble = TroubleChange(what, opened, event.channel if kind in PER_CHANNEL else None)
    if not known_account:
        flags.add(Flag.UNKNOWN_ACCOUNT)
    sia, name, category = _described(cid)
    return BridgeMapping(
        cid=cid,
        sia=sia,
        name=name,
        category=category,
        channel=event.channel,
        zone_type=channel.zone_type if channel is not None else None,
        extended=tuple(extended),
        flags=frozenset(flags),
        trouble=trouble,
        armed=new_arming,
        suppressed_alarms=frozenset(suppressed),
    )


def map_refusal(code: str, reason: str, bridge_id: str) -> BridgeMapping:
    """The receiver trouble journaled for a refused HELLO (unknown bridge, bad token)."""
    cid = ContactIdView("E", code, "00", "000")
    sia, name, category = _described(cid)
    return BridgeMapping(
        cid=cid,
        sia=sia,
        name=name,
        category=category,
        extended=(("reason", reason), ("bridge_id", bridge_id)),
    )
