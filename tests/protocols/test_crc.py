"""CRC-16/ARC against the public vectors and the bytewise reference."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.crc import CRC16_ARC_TABLE, crc16_arc, crc16_arc_bytewise, crc16_arc_combine
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
