"""CRC-16/ARC against the public vectors and the bytewise reference."""

from __future__ import annotations

import binascii
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.crc import (
    CRC16_ARC_TABLE,
    crc16_arc,
    crc16_arc_bytewise,
    crc16_arc_combine,
    zeros_tables,
)
from tests.conftest import load_vectors


def _vectors() -> list[Any]:
    return [v for v in load_vectors("crc16.json")["vectors"] if "crc16_arc" in v]


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["input_ascii"][:20])
def test_crc_vectors(vector: dict[str, Any]) -> None:
    """Every public CRC vector gives its published CRC-16/ARC."""
    assert f"{crc16_arc(vector['input_ascii'].encode('ascii')):04X}" == vector["crc16_arc"]


def test_not_ccitt() -> None:
    """The DC-09 CRC of the check string is not the CCITT/XModem value a public parser claims."""
    ccitt = next(
        v for v in load_vectors("crc16.json")["vectors"] if "WRONG_crc16_ccitt_xmodem" in v
    )
    assert f"{crc16_arc(b'123456789'):04X}" != ccitt["WRONG_crc16_ccitt_xmodem"]


def test_table_has_dc07_typo_fixed() -> None:
    """Table entry 100 is 0xEB01, not the 0xBE01 printed in DC-07."""
    check = load_vectors("crc16.json")["table_check"]
    assert f"{CRC16_ARC_TABLE[check['index']]:04X}" == check["value"]


@given(st.binary(max_size=300))
def test_word_table_matches_bytewise(data: bytes) -> None:
    """The two-bytes-per-step CRC equals the plain bytewise CRC for any input, odd lengths too."""
    assert crc16_arc(data) == crc16_arc_bytewise(data)


@given(st.binary(max_size=80), st.binary(max_size=80))
def test_combined_crc_is_the_crc_of_the_concatenation(first: bytes, second: bytes) -> None:
    """CRC(A + B) from CRC(A), CRC(B) and len(B), for any A and B."""
    combined = crc16_arc_combine(crc16_arc(first), crc16_arc(second), len(second))
    assert combined == crc16_arc_bytewise(first + second)


@given(st.binary(max_size=80), st.binary(max_size=80))
def test_a_crc_continued_from_a_register_is_the_crc_of_the_concatenation(
    first: bytes, second: bytes
) -> None:
    """``crc16_arc(b, crc16_arc(a)) == CRC(a + b)``, even and odd lengths, both paths."""
    expected = crc16_arc_bytewise(first + second)
    assert crc16_arc(second, crc16_arc(first)) == expected
    assert crc16_arc_bytewise(second, crc16_arc_bytewise(first)) == expected


@given(st.binary(max_size=80), st.integers(0, 40))
def test_the_zeros_tables_push_a_register_through_zero_bytes(data: bytes, count: int) -> None:
    """``zeros_tables(n)`` takes CRC(a) to CRC(a + n zero bytes): the inlined combine."""
    low, high = zeros_tables(count)
    crc = crc16_arc(data)
    assert low[crc & 0xFF] ^ high[crc >> 8] == crc16_arc_bytewise(data + bytes(count))


def test_the_standard_library_has_no_crc16_arc() -> None:
    """Checked, not guessed: binascii's CRC-16 is XMODEM (0x31C3 for the check string), not
    ARC (0xBB3D), so the pure-Python tables stay."""
    assert binascii.crc_hqx(b"123456789", 0) == 0x31C3
    assert crc16_arc(b"123456789") == 0xBB3D
