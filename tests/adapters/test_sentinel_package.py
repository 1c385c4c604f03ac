"""Sentinel XML package: fields an operator relies on, the XSD, the parser, properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from adapters.sentinel import package as package_module
from adapters.sentinel.package import (
    PACKAGE_ID,
    Package,
    check_link_template,
    package_xml,
    validate,
)
from protocols.errors import InvalidInputError, LocalProtocolError, PayloadError
from protocols.signal import ContactIdView, SiaView, Signal, Source

RECEIVED = datetime(2026, 3, 1, 22, 15, 7, 250000, tzinfo=UTC)
LAUNCH = "https://monitoring.example/monitoring?act={account}&zone={zone}"


def make_signal(**changes: Any) -> Signal:
    """A bridge burglary on channel 3 of account 1234, line prefix ABC, site 17."""
    base = Signal(
        id="0005f1a2b3c4d5e-a1b2c3-000001",
        received_at=RECEIVED,
        source=Source.BRIDGE,
        peer="127.0.0.1:50000",
        account="1234",
        effective_account="ABC1234",
        station="CS-EAST",
        site_id=17,
        site_name="Main Street Shop",
        device_time=RECEIVED - timedelta(seconds=2),
        cid=ContactIdView("E", "130", "01", "003"),
        name="Burglary",
        device="BR-00A1",
        channel=3,
        zone_type="Instant",
        flags=frozenset({"encrypted"}),
        extended=(("V", "clip-42"),),
    )
    return attrs.evolve(base, **changes)


def build(signal: Signal, package_id: str = "pkg-1", **kwargs: Any) -> bytes:
    """Build a package and validate it, as every test does with every package."""
    xml = Package.from_signal(signal, package_id, **kwargs).to_xml()
    validate(xml)
    return xml


def text(xml: bytes, tag: str) -> str | None:
    element = etree.fromstring(xml).find(tag)
    return None if element is None else element.text


def test_package_carries_what_the_operator_needs() -> None:
    """Device ID with the line prefix, site, event, zone, times, source and the video link."""
    xml = build(make_signal(), link_template=LAUNCH)
    root = etree.fromstring(xml)
    assert root.get("id") == "pkg-1"
    assert {tag: text(xml, tag) for tag in ("DeviceId", "ReceivedAccount", "Station")} == {
        "DeviceId": "ABC1234",
        "ReceivedAccount": "1234",
        "Station": "CS-EAST",
    }
    assert text(xml, "SiteId") == "17"
    assert text(xml, "SiteName") == "Main Street Shop"
    assert text(xml, "EventCode") == "130"
    assert root.find("EventCode").get("format") == "cid"  # type: ignore[union-attr]
    assert text(xml, "Qualifier") == "E"
    assert text(xml, "Zone") == "003"
    assert text(xml, "Partition") == "01"
    assert text(xml, "User") is None
    assert text(xml, "ZoneType") == "Instant"
    assert text(xml, "ReceiverTime") == "2026-03-01T22:15:07.250000+00:00"
    assert text(xml, "DeviceTime") == "2026-03-01T22:15:05.250000+00:00"
    assert text(xml, "SourceDevice") == "BR-00A1"
    assert text(xml, "Channel") == "3"
    assert text(xml, "VideoLink") == "https://monitoring.example/monitoring?act=ABC1234&zone=003"


def test_account_falls_back_to_the_received_one() -> None:
    """An unknown account is sent as received, not left out."""
    xml = build(make_signal(effective_account=None, account="9876"), link_template=LAUNCH)
    assert text(xml, "DeviceId") == "9876"
    assert "act=9876" in (text(xml, "VideoLink") or "")


def test_sia_signal_gives_user_and_partition_from_modifiers() -> None:
    """A SIA closing by user 22 in area 4 carries the user and partition, and the SIA format."""
    signal = make_signal(
        cid=None,
        channel=None,
        zone_type=None,
        sia=SiaView("CL", "22", (("ri", "4"), ("id", "22"))),
    )
    xml = build(signal)
    assert (text(xml, "EventCode"), text(xml, "SiaCode"), text(xml, "Qualifier")) == (
        "CL",
        "CL",
        None,
    )
    assert etree.fromstring(xml).find("EventCode").get("format") == "sia"  # type: ignore[union-attr]
    assert (text(xml, "User"), text(xml, "Partition"), text(xml, "Zone")) == ("22", "4", "022")


def test_contact_id_opening_names_the_user() -> None:
    """A panel's 401 opening by user 5 puts the user in User."""
    signal = make_signal(channel=None, zone_type=None, cid=ContactIdView("E", "401", "01", "005"))
    assert text(build(signal), "User") == "005"


def test_configured_template_and_station_label() -> None:
    """The station label from the output's settings wins; the template fills site and channel."""
    xml = build(
        make_signal(),
        link_template="https://v.example/launch?site={site}&ch={channel}&a={account}",
        station="Central 2",
    )
    assert text(xml, "Station") == "Central 2"
    assert text(xml, "VideoLink") == "https://v.example/launch?site=17&ch=3&a=ABC1234"


def test_link_values_are_url_quoted() -> None:
    """An account with URL characters cannot change the link's meaning."""
    xml = build(make_signal(effective_account="A&B 1"), link_template=LAUNCH)
    assert text(xml, "VideoLink") == "https://monitoring.example/monitoring?act=A%26B%201&zone=003"


def test_without_a_template_there_is_no_video_link() -> None:
    """No link_template (the default, or empty): no VideoLink element, never a placeholder
    link; the package is still valid and reads back without a link."""
    for xml in (build(make_signal()), build(make_signal(), link_template="")):
        assert etree.fromstring(xml).find("VideoLink") is None
        assert b"monitoring.example" not in xml
        assert Package.from_xml(xml).video_link is None


def test_template_with_unknown_field_is_refused() -> None:
    """A typo in the template is an input error at start-up, not a broken link at 3 a.m."""
    with pytest.raises(InvalidInputError, match="acount"):
        check_link_template("https://x/?a={acount}")


def test_package_id_must_be_a_safe_file_name() -> None:
    """A package id with a path separator is refused before anything is built."""
    with pytest.raises(LocalProtocolError):
        Package.from_signal(make_signal(), "../etc/passwd")


def test_text_xml_cannot_carry_is_replaced_not_refused() -> None:
    """Control characters from a panel become U+FFFD; the alarm is still delivered."""
    xml = build(make_signal(site_name="Shop\x00\x1b<&>", name="x" * 5000))
    assert text(xml, "SiteName") == "Shop\ufffd\ufffd<&>"
    assert len(text(xml, "Description") or "") == 2000


def test_signal_without_event_or_zone_still_builds() -> None:
    """A receiver trouble with no Contact ID or SIA view gets zone 000 and no event code."""
    xml = build(make_signal(cid=None, channel=None, zone_type=None, source=Source.RECEIVER))
    assert text(xml, "Zone") == "000"
    assert text(xml, "EventCode") is None


def test_other_time_zones_are_sent_in_utc() -> None:
    """A device clock at +05:30 is sent as the same instant in UTC."""
    local = datetime(2026, 3, 2, 3, 45, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert text(build(make_signal(device_time=local)), "DeviceTime") == "2026-03-01T22:15:00+00:00"


def test_parser_refuses_a_dtd() -> None:
    """Entity tricks never reach the parser's expansion: a DOCTYPE is refused."""
    xml = build(make_signal())
    evil = xml.replace(b"<Package", b'<!DOCTYPE Package [<!ENTITY x "y">]>\n<Package', 1).replace(
        b"Burglary", b"&x;"
    )
    with pytest.raises(PayloadError):
        Package.from_xml(evil)


def test_parser_refuses_an_invalid_package() -> None:
    """A package without its Zone fails the XSD and is a PayloadError."""
    xml = build(make_signal())
    broken = xml.replace(b"<Zone>003</Zone>", b"")
    with pytest.raises(PayloadError, match="XSD"):
        validate(broken)
    with pytest.raises(PayloadError, match="not XML"):
        validate(b"<Package")


def test_parser_reads_back_the_built_package() -> None:
    """The sink's view of a package is exactly what the receiver built."""
    package = Package.from_signal(make_signal(), "pkg-1")
    assert Package.from_xml(build(make_signal())) == package


# --- properties -------------------------------------------------------------------------------

clean_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40
)
any_text = st.text(max_size=60)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
views = st.builds(
    ContactIdView,
    st.sampled_from("ERP"),
    st.text("0123456789ABCDEF", min_size=3, max_size=3),
    st.text("0123456789ABCDEF", min_size=2, max_size=2),
    st.text("0123456789ABCDEF", min_size=3, max_size=3),
)


def _signals(text_strategy: Any) -> Any:
    return st.builds(
        make_signal,
        account=text_strategy,
        effective_account=st.none() | text_strategy,
        site_name=st.none() | text_strategy,
        name=st.none() | text_strategy,
        zone_type=st.none() | text_strategy,
        device=st.none() | text_strategy,
        channel=st.none() | st.integers(0, 10_000),
        cid=st.none() | views,
        received_at=times,
        device_time=st.none() | times,
        flags=st.frozensets(text_strategy, max_size=3),
        extended=st.lists(st.tuples(text_strategy, text_strategy), max_size=3).map(tuple),
    )


@given(
    _signals(clean_text),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True),
    st.sampled_from([None, LAUNCH]),
)
def test_round_trip(signal: Signal, package_id: str, template: str | None) -> None:
    """For any signal with clean text, parsing the built package gives the package back."""
    package = Package.from_signal(signal, package_id, link_template=template)
    xml = package.to_xml()
    validate(xml)
    assert Package.from_xml(xml) == package


@given(_signals(any_text))
def test_any_signal_builds_a_valid_package(signal: Signal) -> None:
    """No text a panel can send stops a package from being built and validated."""
    validate(build(signal, "p"))


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_payload_errors(data: bytes) -> None:
    """Garbage handed to the parser is a PayloadError, never anything else."""
    with pytest.raises(PayloadError):
        Package.from_xml(data)


@given(
    _signals(any_text),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True),
    st.sampled_from([None, LAUNCH]),
    st.none() | any_text,
)
def test_text_builder_writes_exactly_what_the_lxml_tree_writes(
    signal: Signal, package_id: str, template: str | None, station: str | None
) -> None:
    """The fast builder's bytes are the lxml builder's, byte for byte, and pass the XSD."""
    package = Package.from_signal(signal, package_id, link_template=template, station=station)
    fast = package.to_xml(validate=False)
    assert fast == package.to_xml_with_lxml()
    validate(fast)


def test_text_builder_escapes_as_libxml2_does() -> None:
    """Markup characters, CR, tabs and quotes in text and in attributes come out as lxml
    writes them, and the package still reads back."""
    odd = "a&b<c>d\"e'f\rg\nh\ti ]]> é \U0001f600"
    signal = make_signal(site_name=odd, extended=((odd, odd),), flags=frozenset({odd}))
    package = Package.from_signal(signal, "pkg-1")
    assert package.to_xml() == package.to_xml_with_lxml()
    assert Package.from_xml(package.to_xml()) == package


def test_package_id_with_a_trailing_newline_is_refused() -> None:
    """``$`` in a pattern also matches before a final newline: such an id is no file name."""
    with pytest.raises(LocalProtocolError):
        Package.from_signal(make_signal(), "pkg-1\n")


def test_a_package_that_fails_its_schema_is_refused_when_validated() -> None:
    """The safety net: a built package the XSD refuses is our bug, raised, never sent."""
    package = attrs.evolve(Package.from_signal(make_signal(), "pkg-1"), zone="zone")
    with pytest.raises(LocalProtocolError, match="XSD"):
        package.to_xml()
    assert b"<Zone>zone</Zone>" in package.to_xml(validate=False)


# --- the spool's one-pass builder ---------------------------------------------------------

plain_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="&<>"), max_size=20
)
# Mostly text the one-pass builder writes as it is, sometimes what it hands to the general
# path: markup, control and non-ASCII characters, values past the schema's limits.
mixed_text = (
    plain_text
    | any_text
    | st.sampled_from(["a&b", "<x>", "tab\there", "cr\r", "é", "x" * 129, "y" * 2001, ""])
)


def _sia_views(text: Any) -> Any:
    return st.builds(
        SiaView,
        st.from_regex(r"[A-Z]{2}", fullmatch=True),
        st.sampled_from(["", "5", "012", "1234", "A1"]) | text,
        st.lists(st.tuples(st.sampled_from(["ri", "id", "pi", "ti"]), text), max_size=3).map(tuple),
        st.none() | text,
    )


cid_views = st.builds(
    ContactIdView,
    st.sampled_from("ERP"),
    st.sampled_from(["130", "401", "602", "1A0"]),
    st.sampled_from(["00", "01", "0F"]),
    st.sampled_from(["000", "003", "0AF"]),
)


def _any_signals(text: Any = mixed_text) -> Any:
    """Signals with every field varied; ``text``: the strategy of their text fields."""
    return st.builds(
        make_signal,
        id=st.sampled_from(["0005f1a2b3c4d5e-a1b2c3-000001", ""]) | text,
        source=st.sampled_from(list(Source)),
        account=text,
        effective_account=st.none() | text,
        station=st.none() | text,
        receiver_no=st.none() | text,
        line=st.none() | text,
        site_id=st.none() | st.integers(0, 10**9),
        site_name=st.none() | text,
        name=st.none() | text,
        zone_type=st.none() | text,
        device=st.none() | text,
        channel=st.none() | st.integers(-2, 10_000),
        cid=st.none() | cid_views,
        sia=st.none() | _sia_views(text),
        received_at=times,
        device_time=st.none() | times,
        flags=st.just(frozenset()) | st.frozensets(text, max_size=3),
        extended=st.just(()) | st.lists(st.tuples(text, text), max_size=3).map(tuple),
    )


@settings(max_examples=300)
@given(
    # Mostly signals whose text the one-pass builder writes as it is, some with odd text.
    st.one_of(_any_signals(plain_text), _any_signals(plain_text), _any_signals()),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True),
    st.sampled_from([None, None, LAUNCH]),
    st.none() | mixed_text,
)
def test_one_pass_builder_writes_exactly_what_the_package_writes(
    signal: Signal, package_id: str, template: str | None, station: str | None
) -> None:
    """``package_xml`` (the spool's builder) gives, for any signal, the bytes of
    ``Package.from_signal(...).to_xml()``, and they pass the XSD."""
    package = Package.from_signal(signal, package_id, link_template=template, station=station)
    fast = package_xml(signal, package_id, link_template=template, station=station)
    assert fast == package.to_xml(validate=False)
    validate(fast)


def test_one_pass_builder_refuses_a_package_id_that_is_no_file_name() -> None:
    with pytest.raises(LocalProtocolError):
        package_xml(make_signal(), "pkg-1\n")


def test_a_zone_with_a_trailing_newline_is_sent_as_zone_000() -> None:
    """A zone that is three hex digits and a newline is no zone: both builders write
    ``<Zone>000</Zone>``, and the package is XSD-valid. (A ``$`` anchor used to accept
    ``001\\n``; the view's own validator refuses it, so the view is built without it.)"""
    with attrs.validators.disabled():
        view = ContactIdView("E", "130", "01", "001\n")
    signal = make_signal(cid=view)
    assert text(build(signal), "Zone") == "000"
    fast = package_xml(signal, "pkg-1")
    validate(fast)
    assert b"<Zone>000</Zone>" in fast


def test_a_package_id_with_a_trailing_newline_is_refused() -> None:
    """``pkg-1\\n`` is not a package id, whether checked by ``match`` (the sink) or in full."""
    assert PACKAGE_ID.match("pkg-1\n") is None
    assert PACKAGE_ID.match("pkg-1") is not None
    with pytest.raises(LocalProtocolError, match="package id must match"):
        Package.from_signal(make_signal(), "pkg-1\n")


# Any zone, whole seconds often (DC-09 timestamps have no fraction): the one-pass builder
# writes UTC times from its per-second cache and any other zone through ``astimezone``.
zoned_times = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(0)), timezone(timedelta(hours=-5)), timezone.min]
    ),
).map(lambda moment: moment.replace(microsecond=0) if moment.second % 2 else moment)
# Plain text up to and past a token's 128 characters: all values joined are often longer than
# one may be, so the builder looks at each one's length.
long_plain_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="&<>"),
    min_size=100,
    max_size=130,
)


@settings(max_examples=300)
@given(
    st.one_of(_any_signals(plain_text), _any_signals(plain_text | long_plain_text)),
    zoned_times,
    st.none() | zoned_times,
    st.none() | plain_text | long_plain_text,
)
def test_one_pass_builder_equals_the_package_for_any_zone_and_length(
    signal: Signal, received: datetime, device_time: datetime | None, station: str | None
) -> None:
    """The spool's fast path (plain text, one check for all values, a UTC second's text from a
    cache) writes the bytes of the general path for times in any zone, with or without a
    fraction, and for values at and past the schema's limits; the result passes the XSD."""
    signal = attrs.evolve(signal, received_at=received, device_time=device_time)
    fast = package_xml(signal, "pkg-1", station=station)
    assert fast == Package.from_signal(signal, "pkg-1", station=station).to_xml(validate=False)
    assert fast == package_xml(signal, "pkg-1", station=station)  # the cache hit, the same
    validate(fast)


# Flag sets as they recur (the few real ones) and odd ones: markup, control and non-ASCII
# characters, an empty flag, one past a token's 128 characters.
flag_text = (
    st.sampled_from(
        ["unknown_account", "encrypted", "duplicate_received", "quirk:late", "a&b", "<x>", "é", ""]
    )
    | st.sampled_from(["z" * 129, "cr\r", "nul\x00"])
    | mixed_text
)


@settings(max_examples=300)
@given(
    _any_signals(plain_text).map(lambda s: attrs.evolve(s, extended=())),
    st.frozensets(flag_text, min_size=1, max_size=4),
    st.integers(1, 3),
)
def test_one_pass_builder_writes_the_flags_of_the_general_path_from_its_cache(
    signal: Signal, flags: frozenset[str], cache_size: int
) -> None:
    """The ``<Flags>`` element, built once per flag set and then taken from a bounded cache,
    is the general path's for any flags: on the first package, on a cache hit, after the
    cache was cleared for being full, and for a plain set (no cache); the result passes the
    XSD."""
    signal = attrs.evolve(signal, flags=flags)
    general = Package.from_signal(signal, "pkg-1").to_xml(validate=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(package_module, "_FLAGS_BLOCK_MAX", cache_size)
        patch.setattr(package_module, "_FLAGS_BLOCK", {})
        assert package_xml(signal, "pkg-1") == general
        assert package_xml(signal, "pkg-1") == general  # the cache hit
        for other in ({"x1"}, {"x2"}, {"x3"}):  # fills the cache past its bound
            package_xml(attrs.evolve(signal, flags=frozenset(other)), "pkg-2")
        assert len(package_module._FLAGS_BLOCK) <= cache_size
        assert package_xml(signal, "pkg-1") == general
    unhashable: Any = set(flags)  # a set where a frozenset belongs: built, never cached
    as_set = attrs.evolve(signal, flags=unhashable)
    assert package_xml(as_set, "pkg-1") == general
    validate(general)
