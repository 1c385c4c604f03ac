"""DC-09 codec cost per frame: ``decode_frame`` plus the ACK, as the listener calls them.

Run ``python -m benchmarks.codec``. Prints µs per frame for plain SIA-DCS, plain ADM-CID,
AES-128 and AES-256 SIA-DCS (the median of several runs), the CRC alone, then one JSON line.
Single process, single thread; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from protocols import dc09
from protocols.crc import crc16_arc

NOW = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
KEY_128 = bytes.fromhex("0123456789ABCDEF0123456789ABCDEF")
KEY_256 = bytes.fromhex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")


def _cases() -> dict[str, tuple[bytes, bytes | None]]:
    sia = "#1234|Nri1/BA012"
    cid = "#1234|1131 01 009"
    return {
        "plain_sia_dcs": (dc09.encode_frame("SIA-DCS", 1, "1234", sia, timestamp=NOW), None),
        "plain_adm_cid": (dc09.encode_frame("ADM-CID", 2, "1234", cid, receiver="1"), None),
        "aes128_sia_dcs": (
            dc09.encode_frame("SIA-DCS", 3, "1234", sia, key=KEY_128, timestamp=NOW),
            KEY_128,
        ),
        "aes256_sia_dcs": (
            dc09.encode_frame("SIA-DCS", 4, "1234", sia, key=KEY_256, timestamp=NOW),
            KEY_256,
        ),
    }


def _per_call_us(call: Callable[[], object], count: int, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(count):
            call()
        samples.append((time.perf_counter() - start) / count * 1e6)
    return statistics.median(samples)


def _decode_and_ack(raw: bytes, key: bytes | None) -> Callable[[], object]:
    def run() -> bytes:
        frame = dc09.decode_frame(raw, key=key, now=NOW)
        return dc09.ack(frame.header, key=key, now=NOW)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=20000, help="frames per run")
    parser.add_argument("--runs", type=int, default=7, help="runs; the median is reported")
    args = parser.parse_args(argv)
    # Measured on core 0, like the receiver in the end-to-end runs; the affinity is restored.
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if affinity is not None and len(affinity) > 1 and 0 in affinity:
        os.sched_setaffinity(0, {0})
    try:
        return _measure(args.count, args.runs)
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)


def _measure(count: int, runs: int) -> int:
    figures: dict[str, float] = {}
    for name, (raw, key) in _cases().items():
        _decode_and_ack(raw, key)()  # warm up and prove the frame decodes
        figures[name] = _per_call_us(_decode_and_ack(raw, key), count, runs)
        print(f"{name:16s} decode+ACK {figures[name]:7.2f} µs/frame  ({len(raw)} bytes)")
    span = _cases()["plain_sia_dcs"][0][9:-1]
    figures["crc16_arc_span"] = _per_call_us(lambda: crc16_arc(span), count, runs)
    print(f"{'crc16_arc':16s} {len(span)}-byte span {figures['crc16_arc_span']:6.2f} µs")
    print(
        json.dumps(
            {
                "benchmark": "dc09_codec",
                "unit": "us_per_frame",
                "python": sys.version.split()[0],
                "runs": runs,
                "count": count,
                **{k: round(v, 2) for k, v in figures.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
