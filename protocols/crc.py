"""CRC-16/ARC, the DC-09 frame check (SIA DC-07).

Rules: poly 0x8005 reflected (0xA001), init 0, no final XOR; check value CRC("123456789") =
0xBB3D. The tables are computed from the polynomial at import, never typed in, so the typo in
the table printed in DC-07 (entry 100 printed as 0xBE01, correct 0xEB01) cannot creep in.

The hot path folds two bytes per step with a 64K-entry table: a 16-bit register that absorbs
a 16-bit word has shifted all of its old bits out, so one lookup replaces two bytewise steps.

The register update is linear (init 0, no final XOR), so CRC(A + B) = Z(CRC(A)) ^ CRC(B), where
Z pushes a register through len(B) zero bytes: ``crc16_arc_combine`` builds a reply's CRC from
the CRCs of its parts, each cached where it repeats (an account's address, a sequence).
"""

from __future__ import annotations

import functools
import sys
from array import array

__all__ = ["CRC16_ARC_TABLE", "crc16_arc", "crc16_arc_bytewise", "crc16_arc_combine"]


def _byte_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


CRC16_ARC_TABLE: tuple[int, ...] = _byte_table()
"""The 256-entry bytewise table (DC-07's printed table, with entry 100 = 0xEB01)."""


def _word_table() -> list[int]:
    # Absorbing zero input is linear in the register, so the 16-bit step for register x is
    # step(low byte) ^ step(high byte << 8): two 256-entry halves combine into the full table.
    t = CRC16_ARC_TABLE

    def two_steps(reg: int) -> int:
        reg = (reg >> 8) ^ t[reg & 0xFF]
        return (reg >> 8) ^ t[reg & 0xFF]

    low = [two_steps(b) for b in range(256)]
    high = [two_steps(b << 8) for b in range(256)]
    return [h ^ lo for h in high for lo in low]


_WORDS = _word_table()
_LITTLE = sys.byteorder == "little"


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC of ``data`` (two bytes per step)."""
    table = _WORDS
    crc = 0
    even = len(data) & ~1
    words = array("H", data[:even])
    if not _LITTLE:  # pragma: no cover - the word must hold the first byte in its low bits
        words.byteswap()
    for word in words:
        crc = table[crc ^ word]
    if even != len(data):
        crc = (crc >> 8) ^ CRC16_ARC_TABLE[(crc ^ data[-1]) & 0xFF]
    return crc


def crc16_arc_bytewise(data: bytes) -> int:
    """CRC-16/ARC one byte per step: the plain reference the fast path is tested against."""
    table = CRC16_ARC_TABLE
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


@functools.lru_cache(maxsize=64)
def _zeros_tables(count: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The register after ``count`` zero bytes, from its low byte and from its high byte."""

    def through_zeros(reg: int) -> int:
        for _ in range(count):
            reg = (reg >> 8) ^ CRC16_ARC_TABLE[reg & 0xFF]
        return reg

    return (
        tuple(through_zeros(b) for b in range(256)),
        tuple(through_zeros(b << 8) for b in range(256)),
    )


def crc16_arc_combine(crc_first: int, crc_second: int, second_length: int) -> int:
    """CRC-16/ARC of ``first + second`` from the CRC of each and the length of ``second``."""
    low, high = _zeros_tables(second_length)
    return low[crc_first & 0xFF] ^ high[crc_first >> 8] ^ crc_second
