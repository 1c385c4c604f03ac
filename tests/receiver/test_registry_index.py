"""The in-memory registry index: per-frame resolution, bridges, library entries, refresh; loaded
from a SQLite file and from PostgreSQL alike."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.registry import AccountKey, AccountSpec, Registry
from receiver.registry_index import LibraryEntry, RegistryIndex
from receiver.store.interface import RegistryTables
from tests.receiver.conftest import store_section

KEY = "000102030405060708090A0B0C0D0E0F"


@pytest.fixture
def db(store_location: str) -> str:
    """S1 (lines 0 and 1=ABC) with accounts 1234 (site, key, supervised) and ABC1234."""
    path = store_location
    reg = Registry.open(path)
    reg.add_station("S1")
    reg.add_line("S1", "1", "ABC")
    reg.add_dealer("D1")
    reg.add_site("Main St", dealer="D1")
    reg.add_account(
        "S1",
        AccountSpec(
            number="1234",
            site="Main St",
            key=AccountKey.parse(KEY),
            supervision=90,
            window_past=30,
            window_policy="flag",
        ),
    )
    reg.add_account("S1", AccountSpec(line="1", number="1234"))
    reg.close()
    return path


@pytest.fixture
def conn(db: str) -> Iterator[RegistryTables]:
    """The registry's tables through the store's interface (``registry()``)."""
    registry = Registry.open(db)
    yield registry.tables
    registry.close()


def test_resolve_by_station_line_and_number(conn: RegistryTables) -> None:
    """A frame's account resolves with the line's prefix applied, in any case and line spelling."""
    index = RegistryIndex.load(conn)
    plain = index.resolve("S1", None, "1234")
    assert plain is not None
    assert (plain.effective, plain.site_name, plain.dealer, plain.key) == (
        "1234",
        "Main St",
        "D1",
        bytes(range(16)),
    )
    assert (plain.supervision, plain.window_past, plain.window_future, plain.window_policy) == (
        90.0,
        30.0,
        None,
        "flag",
    )
    for line in ("1", "L1", "L001", "001"):
        prefixed = index.resolve("S1", line, "1234")
        assert prefixed is not None
        assert (prefixed.effective, prefixed.line, prefixed.number) == ("ABC1234", "1", "1234")
    assert index.resolve("S1", "0", "abc1234") == index.resolve("S1", "L1", "1234")
    assert index.resolve("S1", "0", "9999") is None
    assert index.resolve("S2", "0", "1234") is None


def test_station_none_means_the_only_station(db: str, conn: RegistryTables) -> None:
    """Without a station name the only station is used; with several, nothing resolves."""
    index = RegistryIndex.load(conn)
    resolved = index.resolve(None, "L0", "1234")
    assert resolved is not None
    assert resolved.station == "S1"
    reg = Registry.open(db)
    reg.add_station("S2")
    reg.close()
    index = index.refresh_if_changed(conn)
    assert index.resolve(None, "0", "1234") is None
    assert index.resolve("S1", "0", "1234") is not None


def test_unknown_line_resolves_without_prefix_and_is_reported(conn: RegistryTables) -> None:
    """A frame on an unregistered line resolves as a line without prefix; line_known says so."""
    index = RegistryIndex.load(conn)
    resolved = index.resolve("S1", "L7", "1234")
    assert resolved is not None
    assert resolved.effective == "1234"
    assert not index.line_known("S1", "L7")
    assert index.line_known("S1", "L01")
    assert index.line_known("S1", None)
    assert index.resolve("S1", "L#?", "abc1234") is not None  # junk never raises


def test_refresh_is_cheap_when_unchanged_and_sees_a_cli_change(
    db: str, conn: RegistryTables, tmp_path: Path
) -> None:
    """The index stays itself until the registry changes; an account added by the CLI appears."""
    index = RegistryIndex.load(conn)
    assert index.refresh_if_changed(conn) is index
    config = tmp_path / "receiver.toml"
    config.write_text(store_section(db), encoding="utf-8")
    script = Path(sys.executable).with_name("receiver")
    done = subprocess.run(
        [str(script), "--config", str(config), "accounts", "add", "--station", "S1", "4321"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert index.resolve("S1", "0", "4321") is None
    fresh = index.refresh_if_changed(conn)
    assert fresh is not index
    assert fresh.generation > index.generation
    added = fresh.resolve("S1", "0", "4321")
    assert added is not None
    assert added.site_name is None
    assert fresh.refresh_if_changed(conn) is fresh


def test_accounts_lists_every_account(conn: RegistryTables) -> None:
    """The supervisor sees every account with its supervision interval."""
    index = RegistryIndex.load(conn)
    assert sorted((a.effective, a.supervision) for a in index.accounts()) == [
        ("1234", 90.0),
        ("ABC1234", None),
    ]


def test_bridges_and_library_entries(db: str, conn: RegistryTables) -> None:
    """A bridge carries its account and channel map; library entries follow the precedence."""
    reg = Registry.open(db)
    reg.add_bridge(site="Main St", serial="ab-01", token="tok", channels=4, model="CKB304")
    reg.set_channel("AB-01", 2, zone=12, zone_type="Entry/Exit", camera="Door")
    reg.set_channel("AB-01", 3, zone_type="24-Hour", code="150", enabled=False)
    reg.set_library("Entry/Exit", dealer="D1", code="135")
    reg.set_library("24_hour", site="Main St", code="140")
    reg.close()
    index = RegistryIndex.load(conn)
    bridge = index.bridge("ab-01")
    assert bridge is not None
    assert (bridge.serial, bridge.token, bridge.model, bridge.channels, bridge.site_name) == (
        "AB-01",
        "tok",
        "CKB304",
        4,
        "Main St",
    )
    assert bridge.account is not None
    assert bridge.account.effective == "1234"
    assert [(c.channel, c.zone, c.zone_type, c.camera) for c in bridge.channel_map.values()] == [
        (1, 1, "instant", None),
        (2, 12, "entry_exit", "Door"),
        (3, 3, "24_hour", None),
        (4, 4, "instant", None),
    ]
    assert index.bridge("nope") is None
    site = bridge.site_id
    assert index.library_entry(site, "entry_exit") == LibraryEntry(
        "entry_exit", "135", True, "dealer"
    )
    assert index.library_entry(site, "24_hour") == LibraryEntry("24_hour", "140", True, "site")
    assert index.library_entry(site, "24_hour", serial="AB-01", channel=3) == LibraryEntry(
        "24_hour", "150", False, "channel"
    )
    assert index.library_entry(site, "instant", serial="AB-01", channel=1) == LibraryEntry(
        "instant", "130", True, "builtin"
    )
    assert index.library_entry(9999, "follower") == LibraryEntry("follower", "132", True, "builtin")
