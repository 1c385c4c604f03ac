"""Sentinel XML package: one self-contained, XSD-valid document per signal.

Rules:
- Every package parsed is validated against ``package.xsd`` (kept beside this module) before it
  is believed. A package is built as text (``to_xml``), byte for byte what the lxml tree
  builder (``to_xml_with_lxml``, kept as the oracle the fast builder is tested against) writes;
  ``to_xml()`` validates what it built against the XSD. A caller writing many packages (the
  spool) builds with ``validate=False`` and validates a sample (see ``adapters/spool.py``):
  the XSD costs more than the build, and what the builder can emit is proven valid by the
  property tests (any signal, any text). The spool builds in one pass from the Signal
  (``package_xml``, no ``Package`` in between): the same bytes (a property test), half the CPU.
- Any valid Signal yields a valid package: text XML 1.0 cannot carry is replaced by U+FFFD and
  over-long values are cut to the schema's limits. A signal is never held back because its
  panel sent odd text.
- The account is the one the automation knows (Sentinel's Device ID: the effective account,
  line prefix included), falling back to the account as received.
- The package id is the dispatcher's, used verbatim; it doubles as a file name, so it is
  restricted to ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``.
- Parsing refuses DTDs and entities (no XXE, no billion laughs).
- ``VideoLink`` is there only when the output has a ``link_template``: without one there is no
  link to give, and a placeholder would send operators to a site that does not exist.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from urllib.parse import quote

from attrs import field, frozen, validators
from lxml import etree

from protocols.errors import InvalidInputError, LocalProtocolError, PayloadError
from protocols.signal import Signal

VERSION: Final = 1
PACKAGE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_is_package_id = PACKAGE_ID.fullmatch
LINK_FIELDS: Final = frozenset({"account", "zone", "site", "channel"})

_SCHEMA = etree.XMLSchema(etree.parse(str(Path(__file__).with_name("package.xsd"))))
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ZONE = re.compile(r"^[0-9A-F]{3}\Z")
_is_zone = _ZONE.match
_TOKEN_MAX = 128
_TEXT_MAX = 2000


def _text(value: str, limit: int = _TEXT_MAX) -> str:
    if value.isascii() and value.isprintable():  # the common case: nothing to replace
        return value[:limit]
    return _NOT_XML.sub("\ufffd", value)[:limit]


def _token(value: str | None) -> str | None:
    """An optional short value: None when empty, so the element is left out."""
    if value is None:
        return None
    value = _text(value, _TOKEN_MAX)
    return value or None


def _note(value: str | None) -> str | None:
    """Optional free text: None when empty."""
    return _text(value) if value else None


def _when(value: datetime) -> str:
    # UTC always: xs:dateTime has no second-level offsets, and the automation compares instants.
    return value.astimezone(UTC).isoformat()


def check_package_id(package_id: str) -> str:
    # fullmatch: ``$`` alone also matches before a trailing newline, which is no file name.
    if not PACKAGE_ID.fullmatch(package_id):
        raise LocalProtocolError(f"package id must match {PACKAGE_ID.pattern}: {package_id!r}")
    return package_id


def check_link_template(template: str | None) -> str | None:
    """Refuse a template with a field we do not fill (a typo must not reach operators).

    None or empty: no template, packages carry no ``VideoLink``."""
    if not template:
        return None
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise InvalidInputError(f"link_template: {exc}") from exc
    unknown = names - LINK_FIELDS
    if unknown:
        raise InvalidInputError(
            f"link_template has unknown fields {sorted(unknown)}; known: {sorted(LINK_FIELDS)}"
        )
    return template


def video_link(template: str, *, account: str, zone: str, site: str, channel: str) -> str:
    values = {"account": account, "zone": zone, "site": site, "channel": channel}
    return template.format_map({k: quote(v, safe="") for k, v in values.items()})


def _user(signal: Signal) -> str | None:
    """Contact ID 4xx reports carry a user in CCC; SIA carries it in ``id`` or O*/C* addresses."""
    if signal.channel is not None or signal.zone_type is not None:
        return None  # a bridge channel is always a zone
    if signal.cid is not None:
        return signal.cid.zone if signal.cid.code.startswith("4") else None
    if signal.sia is not None:
        if (user := signal.sia.modifier("id")) is not None:
            return user
        if signal.sia.code[0] in "OC" and signal.sia.address:
            return signal.sia.address
    return None


@frozen(kw_only=True)
class Package:
    """The package's content; ``to_xml``/``from_xml`` are exact inverses for clean text."""

    package_id: str = field(validator=validators.matches_re(PACKAGE_ID))
    signal_id: str
    station: str | None = None
    device_id: str
    received_account: str
    site_id: str | None = None
    site_name: str | None = None
    event_code: str | None = None
    event_format: str | None = field(default=None, validator=validators.in_((None, "cid", "sia")))
    qualifier: str | None = None
    sia_code: str | None = None
    zone: str = "000"
    partition: str | None = None
    user: str | None = None
    description: str | None = None
    zone_type: str | None = None
    device_time: datetime | None = None
    receiver_time: datetime
    source: str
    source_device: str | None = None
    channel: int | None = None
    receiver_number: str | None = None
    line_number: str | None = None
    video_link: str | None = None
    flags: tuple[str, ...] = ()
    extended: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_signal(
        cls,
        signal: Signal,
        package_id: str,
        *,
        link_template: str | None = None,
        station: str | None = None,
    ) -> Package:
        """Everything the automation needs about one signal; ``station`` overrides its label."""
        check_package_id(package_id)
        account = signal.effective_account or signal.account
        zone = signal.zone if signal.zone and _ZONE.match(signal.zone) else "000"
        code: str | None = None
        fmt: str | None = None
        qualifier: str | None = None
        partition: str | None = None
        if signal.cid is not None:
            code, fmt, qualifier = signal.cid.code, "cid", signal.cid.qualifier
            partition = signal.cid.group
        elif signal.sia is not None:
            code, fmt, qualifier = signal.sia.code, "sia", None
            partition = signal.sia.modifier("ri")
        site = "" if signal.site_id is None else str(signal.site_id)
        channel = signal.channel if signal.channel is not None and signal.channel >= 0 else None
        link = (
            video_link(
                link_template,
                account=account,
                zone=zone,
                site=site,
                channel="" if channel is None else str(channel),
            )
            if link_template
            else None
        )
        return cls(
            package_id=package_id,
            signal_id=_token(signal.id) or "-",
            station=_token(station if station is not None else signal.station),
            device_id=_text(account, _TOKEN_MAX),
            received_account=_text(signal.account, _TOKEN_MAX),
            site_id=_token(site),
            site_name=_note(signal.site_name),
            event_code=code,
            event_format=fmt,
            qualifier=qualifier,
            sia_code=signal.sia.code if signal.sia is not None else None,
            zone=zone,
            partition=_token(partition),
            user=_token(_user(signal)),
            description=_note(signal.name),
            zone_type=_token(signal.zone_type),
            device_time=signal.device_time,
            receiver_time=signal.received_at,
            source=str(signal.source),
            source_device=_token(signal.device),
            channel=channel,
            receiver_number=_token(signal.receiver_no),
            line_number=_token(signal.line),
            video_link=link,
            flags=tuple(sorted({_token(f) or "-" for f in signal.flags})),
            extended=tuple((_token(key) or "-", _text(value)) for key, value in signal.extended),
        )

    def to_xml(self, *, validate: bool = True) -> bytes:
        """The document; validated against the XSD unless ``validate`` is False (a package
        that fails its own schema is our bug: LocalProtocolError)."""
        document = self._document()
        if validate:
            check_built(document, self.package_id)
        return document

    def _document(self) -> bytes:
        # What lxml's tostring(pretty_print=True) writes for the tree to_xml_with_lxml builds:
        # two spaces per level, one element a line, text escaped as libxml2 escapes it.
        parts = [_HEAD, _attribute(self.package_id), _VERSION_TAIL]
        add = parts.append
        add(f"  <SignalId>{_escape(self.signal_id)}</SignalId>\n")
        if self.station is not None:
            add(f"  <Station>{_escape(self.station)}</Station>\n")
        add(f"  <DeviceId>{_escape(self.device_id)}</DeviceId>\n")
        add(f"  <ReceivedAccount>{_escape(self.received_account)}</ReceivedAccount>\n")
        if self.site_id is not None:
            add(f"  <SiteId>{_escape(self.site_id)}</SiteId>\n")
        if self.site_name is not None:
            add(f"  <SiteName>{_escape(self.site_name)}</SiteName>\n")
        if self.event_code is not None:
            add(
                f'  <EventCode format="{_attribute(self.event_format or "cid")}">'
                f"{_escape(self.event_code)}</EventCode>\n"
            )
        for tag, value in (
            ("Qualifier", self.qualifier),
            ("SiaCode", self.sia_code),
            ("Zone", self.zone),
            ("Partition", self.partition),
            ("User", self.user),
            ("Description", self.description),
            ("ZoneType", self.zone_type),
            ("DeviceTime", None if self.device_time is None else _when(self.device_time)),
            ("ReceiverTime", _when(self.receiver_time)),
            ("Source", self.source),
            ("SourceDevice", self.source_device),
            ("Channel", None if self.channel is None else str(self.channel)),
            ("ReceiverNumber", self.receiver_number),
            ("LineNumber", self.line_number),
            ("VideoLink", self.video_link),
        ):
            if value is not None:
                add(f"  <{tag}>{_escape(value)}</{tag}>\n")
        return _closed(parts, self.flags, self.extended)

    def to_xml_with_lxml(self) -> bytes:
        """The document built as an lxml tree and validated: the reference ``to_xml`` is
        tested against (byte for byte), not used on the delivery path."""
        root = etree.Element("Package", id=self.package_id, version=str(VERSION))

        def add(tag: str, value: str | None, **attrib: str) -> None:
            if value is not None:
                etree.SubElement(root, tag, attrib).text = value

        add("SignalId", self.signal_id)
        add("Station", self.station)
        add("DeviceId", self.device_id)
        add("ReceivedAccount", self.received_account)
        add("SiteId", self.site_id)
        add("SiteName", self.site_name)
        if self.event_code is not None:
            add("EventCode", self.event_code, format=self.event_format or "cid")
        add("Qualifier", self.qualifier)
        add("SiaCode", self.sia_code)
        add("Zone", self.zone)
        add("Partition", self.partition)
        add("User", self.user)
        add("Description", self.description)
        add("ZoneType", self.zone_type)
        add("DeviceTime", None if self.device_time is None else _when(self.device_time))
        add("ReceiverTime", _when(self.receiver_time))
        add("Source", self.source)
        add("SourceDevice", self.source_device)
        add("Channel", None if self.channel is None else str(self.channel))
        add("ReceiverNumber", self.receiver_number)
        add("LineNumber", self.line_number)
        add("VideoLink", self.video_link)
        if self.flags:
            flags = etree.SubElement(root, "Flags")
            for flag in self.flags:
                etree.SubElement(flags, "Flag").text = flag
        if self.extended:
            extended = etree.SubElement(root, "Extended")
            for key, value in self.extended:
                etree.SubElement(extended, "Data", id=key).text = value
        if not _SCHEMA.validate(root):
            raise LocalProtocolError(
                f"package {self.package_id} fails the XSD: {_last_line(_SCHEMA.error_log)}"
            )
        return bytes(
            etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
        )

    @classmethod
    def from_xml(cls, data: bytes) -> Package:
        """Parse and validate one document; anything else is a :class:`PayloadError`."""
        root = parse_document(data)
        children = {child.tag: child for child in _elements(root)}

        def get(tag: str) -> str | None:
            element = children.get(tag)
            return None if element is None else (element.text or "")

        def need(tag: str) -> str:
            value = get(tag)
            assert value is not None  # the schema requires it
            return value

        def when(tag: str) -> datetime | None:
            value = get(tag)
            return None if value is None else datetime.fromisoformat(value)

        event = children.get("EventCode")
        channel = get("Channel")
        flags = children.get("Flags")
        extended = children.get("Extended")
        receiver_time = when("ReceiverTime")
        assert receiver_time is not None
        try:
            return cls(
                package_id=str(root.get("id")),
                signal_id=need("SignalId"),
                station=get("Station"),
                device_id=need("DeviceId"),
                received_account=need("ReceivedAccount"),
                site_id=get("SiteId"),
                site_name=get("SiteName"),
                event_code=None if event is None else event.text or "",
                event_format=None if event is None else event.get("format"),
                qualifier=get("Qualifier"),
                sia_code=get("SiaCode"),
                zone=need("Zone"),
                partition=get("Partition"),
                user=get("User"),
                description=get("Description"),
                zone_type=get("ZoneType"),
                device_time=when("DeviceTime"),
                receiver_time=receiver_time,
                source=need("Source"),
                source_device=get("SourceDevice"),
                channel=None if channel is None else int(channel),
                receiver_number=get("ReceiverNumber"),
                line_number=get("LineNumber"),
                video_link=get("VideoLink"),
                flags=() if flags is None else tuple(f.text or "" for f in _elements(flags)),
                extended=()
                if extended is None
                else tuple((str(d.get("id")), d.text or "") for d in _elements(extended)),
            )
        except ValueError as exc:  # a timestamp Python cannot read, though the XSD allowed it
            raise PayloadError(f"package: {exc}", raw=data[:256]) from exc


def package_xml(
    signal: Signal,
    package_id: str,
    *,
    link_template: str | None = None,
    station: str | None = None,
) -> bytes:
    """``Package.from_signal(...).to_xml(validate=False)`` in one pass, without the
    ``Package`` in between: the spool's builder (a property test shows the bytes equal the
    general path's for any signal). Text that is printable ASCII, short enough and free of
    ``&<>`` is written as it is; anything else (and a ``link_template``) takes the general
    path. Not validated: see ``to_xml``.

    One test covers every value written as text (all of them joined: a value left out joins as
    ``None``, which is plain too), lengths are looked at one by one only when the whole is
    longer than one value may be, and the document is one string expression; the ``<Flags>``
    element of each flag set is built once (``_flags_block``)."""
    if link_template:
        return Package.from_signal(
            signal, package_id, link_template=link_template, station=station
        ).to_xml(validate=False)
    if _is_package_id(package_id) is None:
        check_package_id(package_id)  # raises
    cid, sia = signal.cid, signal.sia
    account = signal.account
    device_id = signal.effective_account or account
    site_id = signal.site_id
    site = None if site_id is None else str(site_id)
    label = station if station is not None else signal.station
    code: str | None = None
    qualifier: str | None = None
    partition: str | None = None
    zone: str | None = None
    sia_code: str | None = None
    fmt = ""
    if cid is not None:
        code, qualifier, partition, zone, fmt = cid.code, cid.qualifier, cid.group, cid.zone, "cid"
        if sia is not None:
            sia_code = sia.code
    elif sia is not None:
        code = sia_code = sia.code
        fmt, partition = "sia", sia.modifier("ri")
        address = sia.address
        zone = address.zfill(3)[-3:] if address.isdigit() else None
    if zone is None or _is_zone(zone) is None:
        zone = "000"
    user = _user(signal)
    signal_id, name, site_name = signal.id, signal.name, signal.site_name
    zone_type, device, receiver_no, line = (
        signal.zone_type,
        signal.device,
        signal.receiver_no,
        signal.line,
    )
    joined = (
        f"{device_id}{account}{code}{qualifier}{sia_code}{signal_id}{label}{site}{partition}"
        f"{user}{zone_type}{device}{receiver_no}{line}{site_name}{name}"
    )
    if (len(joined) > _TOKEN_MAX and _too_long(signal, label, site, partition, user)) or not (
        joined.isascii() and joined.isprintable() and _needs_escape(joined) is None
    ):
        return _general(signal, package_id, station)
    device_time, channel = signal.device_time, signal.channel
    text = (
        f"{_HEAD}{package_id}{_VERSION_TAIL}  <SignalId>{signal_id or '-'}</SignalId>\n"
        + (f"  <Station>{label}</Station>\n" if label else "")
        + f"  <DeviceId>{device_id}</DeviceId>\n  <ReceivedAccount>{account}</ReceivedAccount>\n"
        + (f"  <SiteId>{site}</SiteId>\n" if site else "")
        + (f"  <SiteName>{site_name}</SiteName>\n" if site_name else "")
        + (f'  <EventCode format="{fmt}">{code}</EventCode>\n' if code is not None else "")
        + (f"  <Qualifier>{qualifier}</Qualifier>\n" if qualifier is not None else "")
        + (f"  <SiaCode>{sia_code}</SiaCode>\n" if sia_code is not None else "")
        + f"  <Zone>{zone}</Zone>\n"
        + (f"  <Partition>{partition}</Partition>\n" if partition else "")
        + (f"  <User>{user}</User>\n" if user else "")
        + (f"  <Description>{name}</Description>\n" if name else "")
        + (f"  <ZoneType>{zone_type}</ZoneType>\n" if zone_type else "")
        + (
            f"  <DeviceTime>{_utc_text(device_time)}</DeviceTime>\n"
            if device_time is not None
            else ""
        )
        + f"  <ReceiverTime>{_utc_text(signal.received_at)}</ReceiverTime>\n"
        f"  <Source>{signal.source._value_}</Source>\n"
        + (f"  <SourceDevice>{device}</SourceDevice>\n" if device else "")
        + (f"  <Channel>{channel}</Channel>\n" if channel is not None and channel >= 0 else "")
        + (f"  <ReceiverNumber>{receiver_no}</ReceiverNumber>\n" if receiver_no else "")
        + (f"  <LineNumber>{line}</LineNumber>\n" if line else "")
    )
    flags, extended = signal.flags, signal.extended
    if not extended:  # printable ASCII up to here: UTF-8 as it is (the flags block may not be)
        if not flags:
            return f"{text}</Package>\n".encode()
        return f"{text}{_flags_block(flags)}</Package>\n".encode()
    # Extended data as the general path normalises it (rarely any: no shortcut).
    return _closed(
        [text],
        sorted({_token(f) or "-" for f in flags}) if flags else (),
        [(_token(key) or "-", _text(value)) for key, value in extended],
    )


# The ``<Flags>`` element of a set of flags, as ``_closed`` writes it (normalised, sorted,
# escaped): the same few sets recur (``unknown_account``, ``encrypted``), so it is built once
# per set. Bounded: cleared when full (a dict read and write from any thread is safe).
_FLAGS_BLOCK: dict[frozenset[str], str] = {}
_FLAGS_BLOCK_MAX = 1024


def _flags_block(flags: frozenset[str]) -> str:
    try:
        block = _FLAGS_BLOCK.get(flags)
    except TypeError:  # not hashable (a set where a frozenset belongs): no cache, same text
        return _flags_text(flags)
    if block is None:
        block = _flags_text(flags)
        if len(_FLAGS_BLOCK) >= _FLAGS_BLOCK_MAX:
            _FLAGS_BLOCK.clear()
        _FLAGS_BLOCK[flags] = block
    return block


def _flags_text(flags: Iterable[str]) -> str:
    names = sorted({_token(f) or "-" for f in flags})
    flag_lines = "".join(f"    <Flag>{_escape(name)}</Flag>\n" for name in names)
    return f"  <Flags>\n{flag_lines}  </Flags>\n"


def _too_long(
    signal: Signal, label: str | None, site: str | None, partition: str | None, user: str | None
) -> bool:
    """Whether a value is longer than the general path keeps (it would cut it)."""
    tokens = (
        signal.effective_account or signal.account,
        signal.account,
        signal.id,
        label,
        site,
        partition,
        user,
        signal.zone_type,
        signal.device,
        signal.receiver_no,
        signal.line,
    )
    if any(value is not None and len(value) > _TOKEN_MAX for value in tokens):
        return True
    return any(
        value is not None and len(value) > _TEXT_MAX for value in (signal.site_name, signal.name)
    )


# The text of a second (``YYYY-MM-DDTHH:MM:SS``), by its fields: the times of one busy second
# share it. Bounded: cleared when full (a dict read and write from any thread is safe).
_SECOND_TEXT: dict[tuple[int, int, int, int, int, int], str] = {}
_SECOND_TEXT_MAX = 4096


def _utc_text(moment: datetime) -> str:
    """``_when(moment)``: the instant in UTC as ``isoformat`` writes it, with ``+00:00``; a
    UTC time's seconds from a cache (isoformat of an aware time asks its zone for the offset
    each time)."""
    if moment.tzinfo is not UTC:
        return _when(moment)
    key = (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    second = _SECOND_TEXT.get(key)
    if second is None:
        if len(_SECOND_TEXT) >= _SECOND_TEXT_MAX:
            _SECOND_TEXT.clear()
        second = _SECOND_TEXT[key] = moment.replace(microsecond=0, tzinfo=None).isoformat()
    micro = moment.microsecond
    return f"{second}.{micro:06d}+00:00" if micro else f"{second}+00:00"


def _closed(parts: list[str], flags: Sequence[str], extended: Sequence[tuple[str, str]]) -> bytes:
    """The package's end, the same for both builders: its flags, its extended data (both
    already normalised) and the closing tag; the whole document as UTF-8."""
    add = parts.append
    if flags:
        add("  <Flags>\n")
        for flag in flags:
            add(f"    <Flag>{_escape(flag)}</Flag>\n")
        add("  </Flags>\n")
    if extended:
        add("  <Extended>\n")
        for key, value in extended:
            add(f'    <Data id="{_attribute(key)}">{_escape(value)}</Data>\n')
        add("  </Extended>\n")
    add("</Package>\n")
    return "".join(parts).encode("utf-8")


def _general(signal: Signal, package_id: str, station: str | None) -> bytes:
    return Package.from_signal(signal, package_id, station=station).to_xml(validate=False)


_HEAD: Final = "<?xml version='1.0' encoding='UTF-8'?>\n<Package id=\""
_VERSION_TAIL: Final = f'" version="{VERSION}">\n'
# libxml2's escapes in text content and in attribute values (UTF-8 output: no others).
_TEXT_ESCAPES: Final = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTRIBUTE_ESCAPES: Final = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#9;",
    }
)
_NEEDS_ESCAPE = re.compile("[&<>\r]")
_needs_escape = _NEEDS_ESCAPE.search
_ATTRIBUTE_NEEDS_ESCAPE = re.compile('[&<>"\n\r\t]')


def _escape(text: str) -> str:
    return text.translate(_TEXT_ESCAPES) if _NEEDS_ESCAPE.search(text) else text


def _attribute(text: str) -> str:
    return text.translate(_ATTRIBUTE_ESCAPES) if _ATTRIBUTE_NEEDS_ESCAPE.search(text) else text


def check_built(document: bytes, package_id: str) -> None:
    """Validate a package we built against the XSD; LocalProtocolError (our bug) if it fails."""
    try:
        root = etree.fromstring(document, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise LocalProtocolError(f"package {package_id} is not well-formed: {exc}") from exc
    if not _SCHEMA.validate(root):
        raise LocalProtocolError(
            f"package {package_id} fails the XSD: {_last_line(_SCHEMA.error_log)}"
        )


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _elements(parent: etree._Element) -> list[etree._Element]:
    """Child elements only: comments and processing instructions are allowed and ignored."""
    return [child for child in parent if isinstance(child.tag, str)]


def _last_line(log: object) -> str:
    lines = str(log).strip().splitlines()
    return lines[-1] if lines else "invalid"


def parse_document(data: bytes) -> etree._Element:
    """Parse and validate a package document; raises :class:`PayloadError` when it is not one."""
    try:
        tree = etree.fromstring(data, _PARSER).getroottree()
    except etree.XMLSyntaxError as exc:
        raise PayloadError(f"package is not XML: {exc}", raw=data[:256]) from exc
    doctype: str = getattr(tree.docinfo, "doctype", "")
    if doctype:
        raise PayloadError("package must not carry a DTD", raw=data[:256])
    root = tree.getroot()
    if not _SCHEMA.validate(root):
        raise PayloadError(
            f"package fails the XSD: {_last_line(_SCHEMA.error_log)}", raw=data[:256]
        )
    return root


def validate(data: bytes) -> None:
    """Raise :class:`PayloadError` unless ``data`` is a valid package (tests use it on all)."""
    parse_document(data)
