"""The alarm library: built-in codes, zone type spellings, channel > site > dealer precedence."""

from __future__ import annotations

import pytest

from protocols.errors import InvalidInputError
from receiver.alarm_library import (
    BUILTIN,
    LibraryEntry,
    LibraryOverride,
    event_code,
    resolve,
    resolve_all,
    zone_type_key,
)


def test_builtin_codes_match_the_published_library() -> None:
    """With no overrides every zone type reports its published Contact ID code, enabled."""
    assert {e.zone_type: (e.code, e.enabled, e.source) for e in resolve_all()} == {
        "entry_exit": ("134", True, "builtin"),
        "follower": ("132", True, "builtin"),
        "instant": ("130", True, "builtin"),
        "24_hour": ("133", True, "builtin"),
        "exterior_instant": ("136", True, "builtin"),
        "exterior_entry_exit": ("134", True, "builtin"),
        "intercom_armed": ("420", True, "builtin"),
    }


@pytest.mark.parametrize(
    ("spelling", "key"),
    [
        ("Entry/Exit", "entry_exit"),
        ("24-Hour", "24_hour"),
        ("24 hour", "24_hour"),
        ("Exterior (Instant)", "exterior_instant"),
        ("Exterior (Entry/Exit)", "exterior_entry_exit"),
        ("Intercom Armed Zone", "intercom_armed"),
        ("FOLLOWER", "follower"),
        ("instant", "instant"),
    ],
)
def test_friendly_zone_type_spellings_normalize(spelling: str, key: str) -> None:
    """Spellings from portals and manuals map to one canonical key, case-insensitively."""
    assert zone_type_key(spelling) == key


def test_unknown_zone_type_and_bad_code_are_bad_input() -> None:
    """An unknown zone type or a code that is not three digits is refused as bad input."""
    with pytest.raises(InvalidInputError, match="unknown zone type"):
        zone_type_key("panic")
    with pytest.raises(InvalidInputError, match="three digits"):
        event_code("13")
    with pytest.raises(InvalidInputError):
        LibraryOverride(code="1A0")


def test_an_override_code_with_a_trailing_newline_is_bad_input() -> None:
    """``130\n`` (a registry row or a form not stripped) is not three digits."""
    with pytest.raises(InvalidInputError, match="three digits"):
        LibraryOverride(code="130\n")


def test_precedence_is_channel_over_site_over_dealer() -> None:
    """Each level wins over the one below, and the source names the highest level that set it."""
    dealer = LibraryOverride(code="131")
    site = LibraryOverride(code="137")
    channel = LibraryOverride(code="139")
    assert resolve("instant", dealer=dealer) == LibraryEntry("instant", "131", True, "dealer")
    assert resolve("instant", dealer=dealer, site=site) == LibraryEntry(
        "instant", "137", True, "site"
    )
    assert resolve("instant", dealer=dealer, site=site, channel=channel) == LibraryEntry(
        "instant", "139", True, "channel"
    )


def test_an_override_may_set_only_the_switch() -> None:
    """A site that only switches a type off keeps the dealer's code."""
    entry = resolve(
        "entry_exit",
        dealer=LibraryOverride(code="135"),
        site=LibraryOverride(enabled=False),
    )
    assert entry == LibraryEntry("entry_exit", "135", False, "site")
    # The channel switches it back on; the code still comes from the dealer.
    entry = resolve(
        "entry_exit",
        dealer=LibraryOverride(code="135"),
        site=LibraryOverride(enabled=False),
        channel=LibraryOverride(enabled=True),
    )
    assert entry == LibraryEntry("entry_exit", "135", True, "channel")


def test_empty_overrides_change_nothing() -> None:
    """An override with neither code nor switch leaves the built-in entry and its source."""
    empty = LibraryOverride()
    for zone_type, code in BUILTIN.items():
        assert resolve(zone_type, dealer=empty, site=empty, channel=empty) == LibraryEntry(
            zone_type, code, True, "builtin"
        )
