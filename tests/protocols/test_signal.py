"""The Signal's trusted DC-09 factory: equal to the validated constructor, field for field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from hypothesis import assume, given
from hypothesis import strategies as st

from protocols import dc09
from protocols.dc09_engine import Accepted, AccountPolicy, Dc09Engine, ReceiverRules
from protocols.signal import Flag, Signal, Source

NOW = datetime(2024, 6, 1, 8, 30, 0, tzinfo=UTC)
KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")


@attrs.frozen
class Record:
    account_id: int
    station: str
    effective: str
    site_id: int | None
    site_name: str | None


def validated_from_dc09(accepted: Accepted[Any], event: Any, **kw: Any) -> Signal:
    """The factory as it was before the fast path: every field through the validators."""
    frame, header, account = accepted.frame, accepted.header, kw["account"]
    flags = event.flags
    if frame.quirks or header.encrypted or account is None:
        extra = {f"quirk:{q}" for q in frame.quirks}
        if "late" in frame.quirks:
            extra.add(Flag.LATE)
        if header.encrypted:
            extra.add(Flag.ENCRYPTED)
        if account is None:
            extra.add(Flag.UNKNOWN_ACCOUNT)
        flags = flags | extra
    return Signal(
        id="-",
        received_at=kw["received_at"],
        source=Source.DC09,
        peer=kw["peer"],
        account=header.account,
        station=account.station if account is not None else kw["station"],
        receiver_no=header.receiver,
        line=header.line,
        account_id=account.account_id if account is not None else None,
        effective_account=account.effective if account is not None else header.account.upper(),
        site_id=account.site_id if account is not None else None,
        site_name=account.site_name if account is not None else None,
        token=header.token,
        sequence=header.sequence,
        device_time=frame.timestamp,
        cid=event.cid,
        sia=event.sia,
        name=event.name,
        category=event.category,
        extended=frame.extended,
        flags=flags,
        raw=frame.raw,
    )


accounts = st.text("0123456789ABCDEFabcdef", min_size=1, max_size=8)
payloads = st.one_of(
    st.builds(lambda z: f"Nri1/BA{z:03d}", st.integers(0, 999)),
    st.builds(lambda z: f"NFA{z}", st.integers(0, 99)),
    st.builds(lambda q, z: f"{q}130 01 {z:03d}", st.sampled_from("136"), st.integers(0, 999)),
    st.just("NZZ1"),  # an unknown SIA code: flagged, not dropped
)


@st.composite
def accepted_frames(draw: st.DrawFn) -> tuple[bytes, bool]:
    account = draw(accounts)
    body = draw(payloads)
    token = "ADM-CID" if body[0].isdigit() else "SIA-DCS"
    keyed = draw(st.booleans())
    frame = dc09.encode_frame(
        token,
        draw(st.integers(0, 9999)),
        account,
        f"#{account}|{body}",
        receiver=draw(st.none() | st.just("12")),
        line=draw(st.none() | st.just("3")),
        key=KEY if keyed else None,
        timestamp=NOW if keyed else draw(st.none() | st.just(NOW - timedelta(seconds=5))),
        extended=draw(st.sampled_from([(), (("V", "clip"),), (("X", "1"), ("Y", "2"))])),
        crc_form=draw(st.sampled_from(["hex", "binary"])),
    )
    return frame, keyed


@given(
    accepted_frames(),
    st.none()
    | st.builds(
        Record,
        st.integers(1, 10**6),
        st.just("CS"),
        accounts,
        st.none() | st.integers(1, 99),
        st.none() | st.text(max_size=10),
    ),
    st.none() | st.just("CS-EAST"),
)
def test_trusted_factory_equals_the_validated_constructor(
    sample: tuple[bytes, bool], record: Record | None, station: str | None
) -> None:
    """For any accepted frame and account, the fast factory's Signal is the one the validated
    constructor builds from the same values (apart from its fresh id), and passes the
    validators."""
    frame, keyed = sample
    assume(record is not None or not keyed)  # an encrypted frame needs an account's key
    policy = None if record is None else AccountPolicy(record, key=KEY if keyed else None)
    engine: Dc09Engine[Record] = Dc09Engine(
        lambda h: policy,
        ReceiverRules(window=dc09.TimestampWindow(check_plain=True)),
        clock=lambda: NOW,
    )
    event = engine.judge(frame)
    assert isinstance(event, Accepted), event
    kw: dict[str, Any] = {
        "received_at": event.received_at,
        "peer": "127.0.0.1:5000",
        "account": record,
        "station": station,
    }
    for each in event.events:
        fast = Signal.from_dc09(event.frame, each, **kw)
        attrs.validate(fast)
        assert attrs.evolve(fast, id="-") == validated_from_dc09(event, each, **kw)
        assert len(fast.id) == 29
