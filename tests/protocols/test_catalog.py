"""The event catalog: coverage of the reference's codes, consistent restore pairs, mapping."""

from __future__ import annotations

import pytest

from protocols.catalog import (
    CID,
    SIA,
    SIA_TO_CID,
    Category,
    cid_entry,
    cid_for_sia,
    describe,
    sia_entry,
    sia_for_cid,
)
from protocols.signal import ContactIdView, SiaView

# Every Contact ID code named in reference/protocols.md section 2, plus the bridge's codes.
REFERENCE_CID = [
    "100",
    "101",
    "110",
    "111",
    "113",
    "114",
    "117",
    "120",
    "121",
    "122",
    "123",
    "130",
    "131",
    "132",
    "133",
    "134",
    "137",
    "139",
    "144",
    "147",
    "150",
    "151",
    "154",
    "158",
    "159",
    "162",
    "200",
    "300",
    "301",
    "302",
    "305",
    "306",
    "309",
    "311",
    "321",
    "333",
    "344",
    "350",
    "351",
    "352",
    "354",
    "373",
    "380",
    "381",
    "383",
    "384",
    "400",
    "401",
    "402",
    "403",
    "406",
    "407",
    "408",
    "409",
    "441",
    "450",
    "451",
    "452",
    "453",
    "454",
    "455",
    "456",
    "457",
    "459",
    "461",
    "421",
    "423",
    "570",
    "571",
    "572",
    "573",
    "574",
    "601",
    "602",
    "603",
    "604",
    "606",
    "607",
    "608",
    "625",
    "627",
    "628",
    "654",
    "136",
    "420",
    "356",
]

# Every SIA code named in reference/protocols.md section 3.
REFERENCE_SIA = [
    "BA",
    "BH",
    "BR",
    "BB",
    "BU",
    "BT",
    "BJ",
    "BC",
    "FA",
    "FH",
    "FR",
    "FT",
    "FJ",
    "PA",
    "PH",
    "PR",
    "HA",
    "HH",
    "HR",
    "MA",
    "MH",
    "TA",
    "TR",
    "WA",
    "WH",
    "GA",
    "GH",
    "KA",
    "KH",
    "ZA",
    "ZH",
    "QA",
    "QH",
    "UA",
    "UH",
    "CL",
    "OP",
    "CA",
    "OA",
    "CG",
    "OG",
    "CF",
    "CI",
    "OI",
    "CQ",
    "OQ",
    "CS",
    "OS",
    "OC",
    "NL",
    "RP",
    "RX",
    "RR",
    "YT",
    "YR",
    "YM",
    "AT",
    "AR",
    "YC",
    "YK",
    "LT",
    "LR",
    "XT",
    "XR",
    "ET",
    "ER",
    "JA",
    "DD",
    "DF",
    "YX",
    "YZ",
    "UX",
    "YN",
    "OB",
    "CB",
    "FX",
    "FK",
    "XC",
    "KR",
]


@pytest.mark.parametrize("code", REFERENCE_CID)
def test_reference_cid_code_has_a_name(code: str) -> None:
    """Every Contact ID code the reference lists has a name and category."""
    entry = cid_entry(code)
    assert entry is not None
    assert entry.name
    assert entry.category in Category


@pytest.mark.parametrize("code", REFERENCE_SIA)
def test_reference_sia_code_has_a_name(code: str) -> None:
    """Every SIA code the reference lists has a name and category."""
    entry = sia_entry(code)
    assert entry is not None
    assert entry.name


def test_every_cid_entry_is_named_and_maps_to_known_sia() -> None:
    """Every CID code in the table has a name, and the SIA codes it maps to exist."""
    for entry in CID.values():
        assert entry.name, entry.code
        for sia in (entry.sia_event, entry.sia_restore):
            assert sia is None or sia in SIA, (entry.code, sia)


def test_sia_restore_pairs_are_consistent() -> None:
    """A condition's pair is a restore, and a restore's pair is a condition."""
    for entry in SIA.values():
        if entry.role == "condition":
            assert entry.pair is not None, entry.code
            assert SIA[entry.pair].role == "restore", entry.code
        elif entry.role == "restore":
            assert entry.pair is not None, entry.code
            assert SIA[entry.pair].role == "condition", entry.code


def test_cid_conditions_map_to_a_sia_condition_and_its_restore() -> None:
    """For a CID condition, E maps to a SIA condition and R to the restore paired with it."""
    for entry in CID.values():
        if entry.role != "condition" or entry.sia_event is None:
            continue
        event, restore = SIA[entry.sia_event], SIA[entry.sia_restore or ""]
        assert event.role == "condition", entry.code
        assert restore.role == "restore", entry.code
        assert event.pair == restore.code or restore.pair == event.code, entry.code


def test_reverse_mapping_points_back() -> None:
    """A SIA code shown as Contact ID maps forward again to a code of the same category, and
    a SIA restore always becomes qualifier R."""
    for sia, (code, qualifier) in SIA_TO_CID.items():
        forward = sia_for_cid(ContactIdView(qualifier, code))
        assert forward is not None, sia
        assert SIA[forward].category == SIA[sia].category, sia
        if SIA[sia].role == "restore":
            assert qualifier == "R", sia


@pytest.mark.parametrize(
    ("cid", "sia"),
    [
        (ContactIdView("E", "130"), "BA"),
        (ContactIdView("R", "130"), "BH"),  # pysiaalarm's BH, not BR (docs/event-catalog.md)
        (ContactIdView("E", "401"), "OP"),
        (ContactIdView("R", "401"), "CL"),
        (ContactIdView("E", "441"), "OP"),  # disarm from stay
        (ContactIdView("R", "441"), "NL"),  # armed stay, as Jeedom
        (ContactIdView("E", "456"), "OG"),  # pysiaalarm's inverted CG/OG corrected
        (ContactIdView("R", "456"), "CG"),
        (ContactIdView("E", "384"), "XT"),
        (ContactIdView("R", "384"), "XR"),
        (ContactIdView("E", "602"), "RP"),
        (ContactIdView("P", "302"), "YT"),
        (ContactIdView("E", "999"), None),
    ],
)
def test_sia_for_cid(cid: ContactIdView, sia: str | None) -> None:
    """Contact ID events show as the SIA codes chosen in docs/event-catalog.md."""
    assert sia_for_cid(cid) == sia


def test_cid_for_sia_takes_zone_from_address_and_group_from_ri() -> None:
    """BA on zone 12 in area 3 is Contact ID E130, group 03, zone 012."""
    sia = SiaView("BA", "12", (("ri", "3"),))
    assert cid_for_sia(sia) == ContactIdView("E", "130", "03", "012")
    assert cid_for_sia(SiaView("CL", "5")) == ContactIdView("R", "401", "00", "005")


@pytest.mark.parametrize(
    "sia",
    [
        SiaView("BA", "1234"),  # zone does not fit 3 digits: no misleading truncation
        SiaView("BA", "1", (("ri", "123"),)),
        SiaView("ZQ", "1"),  # unknown code
        SiaView("RR", ""),  # no Contact ID counterpart
    ],
)
def test_cid_for_sia_none(sia: SiaView) -> None:
    """No derived Contact ID view when it would be wrong or does not exist."""
    assert cid_for_sia(sia) is None


def test_describe() -> None:
    """Names follow the qualifier: restore, opening/closing, still present; unknown is None."""
    assert describe(ContactIdView("E", "130"), None) == ("Burglary", "alarm")
    assert describe(ContactIdView("R", "130"), None) == ("Burglary restore", "alarm")
    assert describe(ContactIdView("R", "401"), None) == (
        "Open/close by user (closing)",
        "open_close",
    )
    assert describe(ContactIdView("P", "301"), None) == ("AC loss (still present)", "trouble")
    assert describe(None, SiaView("BA", "1")) == ("Burglary Alarm", "alarm")
    assert describe(ContactIdView("E", "999"), SiaView("RP", "")) == ("Automatic Test", "test")
    assert describe(ContactIdView("E", "999"), None) == (None, None)


def test_an_address_of_thousands_of_digits_does_not_map_and_does_not_raise() -> None:
    """Past 4,300 digits ``int()`` raised ValueError; any length is bounded before converting,
    and leading zeros still fit the zone."""
    assert cid_for_sia(SiaView("BA", "1" * 5000)) is None
    assert cid_for_sia(SiaView("BA", "1", (("ri", "7" * 5000),))) is None
    mapped = cid_for_sia(SiaView("BA", "0" * 5000 + "12"))
    assert mapped is not None
    assert mapped.zone == "012"
