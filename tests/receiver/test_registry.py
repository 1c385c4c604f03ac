"""The registry service on a real store, SQLite file and PostgreSQL database alike: collisions,
imports, library, bridges, generation."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from protocols.errors import CollisionError, InvalidInputError, NotFoundError, RegistryError
from receiver.registry import (
    AccountCheck,
    AccountKey,
    AccountSpec,
    Registry,
    backends,
    line_number,
    read_import_csv,
)


@pytest.fixture
def registry(store_location: str) -> Iterator[Registry]:
    """Station S1 with line 0 (no prefix) and line 1 (prefix ABC); dealer D1; site Main St."""
    reg = Registry.open(store_location)
    reg.add_station("S1")
    reg.add_line("S1", "1", "abc")
    reg.add_dealer("D1")
    reg.add_site("Main St", dealer="D1", address="1 Main St")
    yield reg
    reg.close()


def accounts(reg: Registry) -> list[tuple[str, str, str]]:
    return [(a["line"], a["number"], a["effective"]) for a in reg.list_accounts("S1")]


def generation(reg: Registry) -> int:
    return reg.tables.generation()


def test_prefixed_line_collides_with_typed_prefix_both_ways(registry: Registry) -> None:
    """1234 on line ABC and ABC1234 typed on a line without prefix are one account: refused."""
    registry.add_account("S1", AccountSpec(line="1", number="1234", site="Main St"))
    with pytest.raises(CollisionError) as refused:
        registry.add_account("S1", AccountSpec(line="0", number="abc1234"))
    assert str(refused.value) == (
        'account ABC1234 is taken at station S1: held by site "Main St" (line 1, number 1234)'
    )
    assert accounts(registry) == [("1", "1234", "ABC1234")]


def test_typed_number_collides_with_a_later_prefixed_one(registry: Registry) -> None:
    """ABC1234 typed on line 0 first makes 1234 on the ABC line collide, naming the typed form."""
    registry.add_account("S1", AccountSpec(number=" abc1234 "))
    with pytest.raises(CollisionError, match=r"held by no site \(line 0, number abc1234\)"):
        registry.add_account("S1", AccountSpec(line="L01", number="1234"))


def test_leading_zeros_are_significant_and_case_is_not(registry: Registry) -> None:
    """0123 and 123 are different accounts; 00ab and 00AB are the same."""
    registry.add_account("S1", AccountSpec(number="0123"))
    registry.add_account("S1", AccountSpec(number="123"))
    registry.add_account("S1", AccountSpec(number="00ab"))
    with pytest.raises(CollisionError):
        registry.add_account("S1", AccountSpec(number="00AB"))
    assert sorted(a[2] for a in accounts(registry)) == ["00AB", "0123", "123"]


def test_same_number_at_another_station_is_free(registry: Registry) -> None:
    """Uniqueness is per station: another station may hold the same number."""
    registry.add_station("S2")
    registry.add_account("S1", AccountSpec(number="1234"))
    registry.add_account("S2", AccountSpec(number="1234"))
    assert len(registry.list_accounts()) == 2


def test_line_numbers_normalize(registry: Registry) -> None:
    """L0, 000 and 0 are the same line; a line is 1-6 hex digits."""
    assert line_number("L000") == line_number("000") == line_number("0") == "0"
    assert line_number("l01a") == "1A"
    with pytest.raises(RegistryError, match="already has line 1"):
        registry.add_line("S1", "L001")
    for bad in ("", "L", "1234567", "G1", "1 2"):
        with pytest.raises(InvalidInputError):
            line_number(bad)


def test_account_number_rules() -> None:
    """Numbers are 3-16 ASCII letters or digits after trimming; anything else is bad input."""
    assert AccountSpec(number=" 0fa9 ").number == "0fa9"
    for bad in ("", "12", "x" * 17, "12-3", "１２３", "ßßß", "12\n"):
        with pytest.raises(InvalidInputError):
            AccountSpec(number=bad)


def test_number_typed_with_its_line_prefix_is_flagged(registry: Registry) -> None:
    """ABC1234 typed on the ABC line is accepted as ABCABC1234 with a warning."""
    added = registry.add_account("S1", AccountSpec(line="1", number="ABC1234"))
    assert added.effective == "ABCABC1234"
    assert len(added.warnings) == 1
    assert "likely a mistake" in added.warnings[0]


def test_check_reports_holder_without_writing(registry: Registry) -> None:
    """check names the holder of a taken number and changes nothing."""
    registry.add_account("S1", AccountSpec(line="1", number="555", site="Main St"))
    before = generation(registry)
    taken = registry.check_account("S1", "0", "ABC555")
    assert not taken.free
    assert taken.holder is not None
    assert taken.holder.describe() == 'held by site "Main St" (line 1, number 555)'
    free = registry.check_account("S1", "1", "556")
    assert free == AccountCheck("S1", "1", "556", "ABC556", None, ())
    assert generation(registry) == before


def test_unknown_station_line_and_site_are_not_found(registry: Registry) -> None:
    """Referring to a station, line or site that does not exist is refused as not found."""
    with pytest.raises(NotFoundError, match="no station"):
        registry.add_account("S9", AccountSpec(number="1234"))
    with pytest.raises(NotFoundError, match="no line 7"):
        registry.add_account("S1", AccountSpec(line="7", number="1234"))
    with pytest.raises(NotFoundError, match="no site"):
        registry.add_account("S1", AccountSpec(number="1234", site="Nowhere"))
    assert accounts(registry) == []


def test_unique_index_violation_becomes_a_collision_naming_the_holder(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the application check is bypassed, the database refuses and the holder is still named."""
    registry.add_account("S1", AccountSpec(line="1", number="777", site="Main St"))
    real_check = Registry._check

    def blind_check(self: Registry, station: object, line: str, number: str) -> AccountCheck:
        found = real_check(self, station, line, number)  # type: ignore[arg-type]
        return AccountCheck(found.station, found.line, found.number, found.effective, None)

    monkeypatch.setattr(Registry, "_check", blind_check)
    with pytest.raises(CollisionError, match=r'held by site "Main St" \(line 1, number 777\)'):
        registry.add_account("S1", AccountSpec(number="ABC777"))
    assert accounts(registry) == [("1", "777", "ABC777")]


def test_database_enforces_uniqueness_on_its_own(registry: Registry, store_location: str) -> None:
    """A raw insert of a taken effective number fails in the database itself."""
    registry.add_account("S1", AccountSpec(number="1234"))
    raw = backends.connect(store_location)
    try:
        with pytest.raises(backends.sql_for(raw).IntegrityError):
            raw.execute(
                "INSERT INTO accounts (station_id, line_id, number, effective) "
                "SELECT station_id, line_id, 'x', '1234' FROM accounts"
            )
    finally:
        raw.close()


def test_keys_are_validated_and_exposed_raw() -> None:
    """Hex and ASCII keys must be 16, 24 or 32 bytes; the raw bytes are what the codec gets."""
    assert AccountKey.parse("000102030405060708090a0b0c0d0e0f").raw == bytes(range(16))
    assert AccountKey.parse("0123456789abcdef01234567", "ascii").raw == b"0123456789abcdef01234567"
    for text, fmt in (
        ("00" * 15, "hex"),
        ("zz" * 16, "hex"),
        ("short", "ascii"),
        ("é" * 16, "ascii"),
    ):
        with pytest.raises(InvalidInputError):
            AccountKey.parse(text, fmt)
    with pytest.raises(InvalidInputError):
        AccountKey.parse("00" * 16, "base64")


def test_every_registry_change_bumps_the_generation(registry: Registry) -> None:
    """Adds, library settings and bridge changes each move the counter the receiver watches."""
    seen = [generation(registry)]
    registry.add_account("S1", AccountSpec(number="1234", site="Main St"))
    seen.append(generation(registry))
    registry.set_library("instant", site="Main St", code="131")
    seen.append(generation(registry))
    registry.add_bridge(site="Main St", serial="b1", token="t", channels=4)
    seen.append(generation(registry))
    registry.set_channel("B1", 2, camera="Door")
    seen.append(generation(registry))
    assert seen == sorted(set(seen))


# -- import ---------------------------------------------------------------------------------


def rows(text: str) -> list:  # type: ignore[type-arg]
    return read_import_csv(io.StringIO(text))


def test_import_is_all_or_nothing_and_reports_every_collision(registry: Registry) -> None:
    """One collision with the registry and one inside the file: nothing imported, both reported."""
    registry.add_account("S1", AccountSpec(number="1234", site="Main St"))
    before = generation(registry)
    report = registry.import_accounts(
        "S1",
        rows(
            "line,number,site\n"
            "0,5000,Main St\n"  # line 2: fine
            "1,5000,\n"  # line 3: ABC5000, fine
            "0,abc5000,\n"  # line 4: collides with line 3
            "0,1234,\n"  # line 5: collides with the registry
        ),
    )
    assert report.refused
    assert report.imported == 0
    assert [(p.line, p.kind) for p in report.problems] == [(4, "collision"), (5, "collision")]
    assert "CSV line 3 (line 1, number 5000)" in report.problems[0].message
    assert 'held by site "Main St" (line 0, number 1234)' in report.problems[1].message
    assert accounts(registry) == [("0", "1234", "1234")]
    assert generation(registry) == before


def test_import_reports_bad_rows_with_their_line(registry: Registry) -> None:
    """Bad numbers, unknown lines and sites are reported with their CSV line; nothing imported."""
    report = registry.import_accounts(
        "S1",
        rows(
            "number,line,key,key_format,supervision\n"
            "12,0,,,\n"
            "1234,5,,,\n"
            "2345,0,00,hex,\n"
            "3456,0,,,-1\n"
            "4567,0,,,\n"
        ),
    )
    assert [(p.line, p.kind) for p in report.problems] == [
        (2, "invalid"),
        (3, "not_found"),
        (4, "invalid"),
        (5, "invalid"),
    ]
    assert accounts(registry) == []


def test_import_and_dry_run(registry: Registry) -> None:
    """A dry run reports and writes nothing; the real run imports every row with its settings."""
    text = (
        "line,number,site,key,key_format,supervision,window_policy\n"
        "0,6000,Main St,0123456789abcdef,ascii,90,flag\n"
        "L001,6000,,,,,\n"
        "1,abc6001,,,,,\n"
    )
    dry = registry.import_accounts("S1", rows(text), dry_run=True)
    assert (dry.refused, dry.imported, dry.rows) == (False, 0, 3)
    assert [(p.line, p.kind) for p in dry.problems] == [(4, "warning")]
    assert accounts(registry) == []
    seen: list[tuple[int, int]] = []
    done = registry.import_accounts("S1", rows(text), progress=lambda d, t: seen.append((d, t)))
    assert done.imported == 3
    assert seen[-1] == (3, 3)
    listed = {a["effective"]: a for a in registry.list_accounts("S1")}
    assert sorted(listed) == ["6000", "ABC6000", "ABCABC6001"]
    assert listed["6000"]["key_format"] == "ascii"
    assert listed["6000"]["supervision"] == 90.0
    assert listed["6000"]["window_policy"] == "flag"


def test_import_header_problems_are_bad_input() -> None:
    """A file without the required columns, or with unknown ones, is refused at line 1."""
    with pytest.raises(InvalidInputError, match=r"line 1: .*lacks column"):
        rows("number,site\n1234,x\n")
    with pytest.raises(InvalidInputError, match="unknown column"):
        rows("line,number,colour\n0,1234,red\n")
    with pytest.raises(InvalidInputError, match="empty"):
        rows("")
    with pytest.raises(InvalidInputError, match="line 3: 1 fields"):
        rows("line,number\n0,1234\n0\n")


# -- library and bridges --------------------------------------------------------------------


def test_library_show_names_each_entry_source(registry: Registry) -> None:
    """Dealer and site overrides show with their source; --inherit removes a site override."""
    registry.set_library("Entry/Exit", dealer="D1", code="135")
    registry.set_library("instant", dealer="D1", code="131")
    registry.set_library("instant", site="Main St", enabled=False)
    registry.set_library("24-Hour", site="Main St", code="150")
    lib = {e.zone_type: (e.code, e.enabled, e.source) for e in registry.library(site="Main St")}
    assert lib["entry_exit"] == ("135", True, "dealer")
    assert lib["instant"] == ("131", False, "site")
    assert lib["24_hour"] == ("150", True, "site")
    assert lib["follower"] == ("132", True, "builtin")
    registry.set_library("24_hour", site="Main St", inherit=True)
    after = {e.zone_type: (e.code, e.source) for e in registry.library(site="Main St")}
    assert after["24_hour"] == ("133", "builtin")
    with pytest.raises(InvalidInputError, match="nothing to set"):
        registry.set_library("instant", site="Main St")


def test_bridge_zones_do_not_collide_within_an_account(registry: Registry) -> None:
    """A second bridge on one account needs other zones; renumbering into a taken zone fails."""
    registry.add_account("S1", AccountSpec(number="1234", site="Main St"))
    registry.add_bridge(site="Main St", serial="b1", token="t", channels=4, model="CKB304")
    with pytest.raises(CollisionError, match="zone 001 on account 1234 is held by bridge B1"):
        registry.add_bridge(site="Main St", serial="b2", token="t", channels=4)
    registry.add_bridge(site="Main St", serial="b2", token="t", channels=8, first_zone=5)
    with pytest.raises(CollisionError, match="zone 004 is already held"):
        registry.set_channel("B2", 1, zone=4)
    registry.set_channel("b2", 1, zone=20, zone_type="24-Hour", camera="Gate", code="131")
    listed = [
        (r["serial"], r["channel"], r["zone"], r["zone_type"]) for r in registry.list_bridges()
    ]
    assert listed[:5] == [
        ("B1", 1, "001", "instant"),
        ("B1", 2, "002", "instant"),
        ("B1", 3, "003", "instant"),
        ("B1", 4, "004", "instant"),
        ("B2", 1, "020", "24_hour"),
    ]
    assert listed[5] == ("B2", 2, "006", "instant")
    with pytest.raises(InvalidInputError, match="channels 1-8"):
        registry.set_channel("B2", 9, zone=30)
    with pytest.raises(RegistryError, match="already exists"):
        registry.add_bridge(site="Main St", serial="B1", token="t", channels=4, first_zone=50)


def test_bridge_picks_among_site_accounts(registry: Registry) -> None:
    """With several accounts on the site, --account picks the one the bridge reports under."""
    registry.add_account("S1", AccountSpec(number="1111", site="Main St"))
    registry.add_account("S1", AccountSpec(line="1", number="2222", site="Main St"))
    with pytest.raises(InvalidInputError, match="several accounts"):
        registry.add_bridge(site="Main St", serial="b1", token="t", channels=4)
    with pytest.raises(InvalidInputError, match="4, 8, 12 or 16"):
        registry.add_bridge(site="Main St", serial="b1", token="t", channels=6, account="1111")
    registry.add_bridge(site="Main St", serial="b1", token="t", channels=4, account="abc2222")
    assert {r["account"] for r in registry.list_bridges()} == {"ABC2222"}


def test_bridge_waits_for_its_site_account(registry: Registry) -> None:
    """A bridge added before its site has an account waits (no account, zones its own); the
    site's first account attaches it, unless its zones collide with a bridge attached first,
    which keeps waiting until set-channel moves its zones. A second account attaches nothing."""
    registry.add_bridge(site="Main St", serial="b1", token="t", channels=4)
    registry.add_bridge(site="Main St", serial="b2", token="t", channels=4)
    with pytest.raises(CollisionError, match="zone 002 is already held"):
        registry.set_channel("B1", 1, zone=2)
    assert {r["account"] for r in registry.list_bridges()} == {None}
    before = generation(registry)
    added = registry.add_account("S1", AccountSpec(number="1111", site="Main St"))
    assert added.attached_bridges == ("B1",)  # B2's zones 001-004 collide with B1's
    assert generation(registry) > before
    by_serial = {r["serial"]: r["account"] for r in registry.list_bridges()}
    assert by_serial == {"B1": "1111", "B2": None}
    for channel in range(1, 5):
        registry.set_channel("B2", channel, zone=10 + channel)
    again = registry.add_account("S1", AccountSpec(line="1", number="2222", site="Main St"))
    assert again.attached_bridges == ()  # two accounts: which one is the user's call
    assert {r["serial"]: r["account"] for r in registry.list_bridges()}["B2"] is None


def test_import_attaches_waiting_bridges(registry: Registry) -> None:
    """An import that gives a site its only account attaches the bridges waiting there."""
    registry.add_bridge(site="Main St", serial="b1", token="t", channels=4)
    report = registry.import_accounts("S1", rows("line,number,site\n0,7777,Main St\n"))
    assert report.imported == 1
    assert {r["account"] for r in registry.list_bridges()} == {"7777"}
