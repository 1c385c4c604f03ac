"""The rejection log: what an operator reads when a peer keeps sending bad input."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
import structlog.testing
import trio

from receiver.logs import PeerRejectionLogs, RejectionLog


def lines(logs: Sequence[Mapping[str, Any]], event: str) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == event]


async def test_a_steady_stream_of_rejections_logs_a_few_and_a_count_per_minute(
    autojump_clock: Any,
) -> None:
    """Ten rejections a second for three minutes: five logged in full in each minute, one
    count line per minute for the rest; the logged lines and the counts add up to all 1,800."""
    with structlog.testing.capture_logs() as logs:
        rejections = RejectionLog(structlog.get_logger())
        for n in range(1800):
            rejections.warning("frame_rejected", reason="bad_crc", raw=f"frame {n}")
            await trio.sleep(0.1)
        rejections.close()
    full = lines(logs, "frame_rejected")
    counts = lines(logs, "rejections_suppressed")
    assert len(full) == 15
    assert len(counts) == 3
    assert {(c["rejected"], c["reason"]) for c in counts} == {("frame_rejected", "bad_crc")}
    assert len(full) + sum(c["count"] for c in counts) == 1800


async def test_reasons_are_limited_apart_and_other_levels_pass_through() -> None:
    """A flood of one reason does not hide the first lines of another; info lines (stored
    signals) are never held back."""
    with structlog.testing.capture_logs() as logs:
        rejections = RejectionLog(structlog.get_logger(), burst=2)
        for _ in range(10):
            rejections.warning("frame_rejected", reason="bad_crc")
            rejections.info("signal")
        rejections.warning("frame_rejected", reason="stale")
        rejections.bind(serial="B1").warning("frame_rejected", reason="bad_crc")
        rejections.close()
    assert [e["reason"] for e in lines(logs, "frame_rejected")] == ["bad_crc", "bad_crc", "stale"]
    assert len(lines(logs, "signal")) == 10
    [count] = lines(logs, "rejections_suppressed")
    assert (count["reason"], count["count"]) == ("bad_crc", 9)


async def test_udp_peers_are_limited_apart_and_their_number_is_bounded() -> None:
    """One address flooding does not silence another; past ``max_peers`` addresses the oldest
    peer's count is reported and its state dropped."""
    with structlog.testing.capture_logs() as logs:
        peers = PeerRejectionLogs(structlog.get_logger(), max_peers=2, burst=1)
        for _ in range(5):
            peers.for_peer("10.0.0.1").warning("frame_rejected", reason="bad_crc")
        peers.for_peer("10.0.0.2").warning("frame_rejected", reason="bad_crc")
        peers.for_peer("10.0.0.3").warning("frame_rejected", reason="bad_crc")
        dropped = lines(logs, "rejections_suppressed")
        peers.close()
    assert [e["peer"] for e in lines(logs, "frame_rejected")] == [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
    ]
    assert [(e["peer"], e["count"]) for e in dropped] == [("10.0.0.1", 4)]
