"""The ``signals`` log line: the service's JSON logging renders it without structlog's chain,
and an operator reads the same line, key for key, as structlog would have written."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
import structlog.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.signal import ContactIdView, SiaView, Signal, Source, new_signal_id
from receiver import logs
from receiver.logs import log_signals

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_HEX = st.text("0123456789ABCDEF", min_size=3, max_size=3)


@st.composite
def signals(draw: st.DrawFn) -> Signal:
    now = datetime.now(UTC)
    cid = draw(
        st.none()
        | st.builds(
            ContactIdView,
            st.sampled_from("ERP"),
            _HEX,
            st.text("0123456789", min_size=2, max_size=2),
            _HEX,
        )
    )
    sia = draw(
        st.none()
        | st.builds(
            SiaView,
            st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2),
            st.text("0123456789", max_size=4),
        )
    )
    device = draw(st.none() | _TEXT)
    return Signal(
        id=new_signal_id(now),
        received_at=now,
        source=Source.BRIDGE if device is not None else Source.DC09,
        account=draw(_TEXT),
        effective_account=draw(st.none() | _TEXT),
        device=device,
        channel=draw(st.none() | st.integers(0, 16)) if device is not None else None,
        cid=cid,
        sia=sia,
        name=draw(st.none() | _TEXT),
        flags=frozenset(draw(st.lists(_TEXT, max_size=3))),
    )


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The service's JSON logging, into a buffer; structlog's configuration restored after."""
    saved = structlog.get_config()
    stream = io.StringIO()
    logs.configure(json=True, stream=stream)
    try:
        yield stream
    finally:
        structlog.configure(**saved)
        logs._configured.signal_lines = None


def _last(stream: io.StringIO) -> dict[str, Any]:
    line: dict[str, Any] = json.loads(stream.getvalue().splitlines()[-1])
    return line


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.lists(signals(), min_size=1, max_size=8),
    duplicated=st.sets(st.integers(0, 7)),
    context=st.dictionaries(st.sampled_from(["peer", "conn_id", "transport", "count"]), _TEXT),
)
def test_the_rendered_line_is_the_one_structlog_writes(
    json_log: io.StringIO,
    batch: list[Signal],
    duplicated: set[int],
    context: dict[str, str],
) -> None:
    """Any batch, any bound context: the line written directly has the same keys in the same
    order and the same values as the line structlog renders (only the timestamp moves on)."""
    log = structlog.get_logger("receiver.dc09").bind(**context)
    duplicates = [s for i, s in enumerate(batch) if i in duplicated]
    log_signals(log, batch, duplicates)
    direct_text = json_log.getvalue().splitlines()[-1]
    fast, logs._configured.signal_lines = logs._configured.signal_lines, None
    try:
        log_signals(log, batch, duplicates)
    finally:
        logs._configured.signal_lines = fast
    through_structlog = _last(json_log)
    direct = json.loads(direct_text)
    assert fast is not None
    assert list(direct) == list(through_structlog)
    direct["timestamp"] = through_structlog["timestamp"]
    assert direct == through_structlog
    assert direct["event"] == "signals"
    assert direct["count"] == len(batch)
    assert [e.get("duplicate", False) for e in direct["signals"]] == [
        i in duplicated for i in range(len(batch))
    ]


def test_capture_logs_still_sees_the_signals_event(json_log: io.StringIO) -> None:
    """Tests (and any other configuration) get the event through structlog as before."""
    now = datetime.now(UTC)
    signal = Signal(
        id=new_signal_id(now), received_at=now, source=Source.DC09, account="1234", name="x"
    )
    with structlog.testing.capture_logs() as captured:
        log_signals(structlog.get_logger("receiver.dc09"), [signal])
    assert [e["signals"] for e in captured if e["event"] == "signals"] == [
        [{"signal_id": signal.id, "account": "1234", "name": "x"}]
    ]
    assert json_log.getvalue() == ""
