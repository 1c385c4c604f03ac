"""Configuration: one TOML file, or the embedded default when there is none.

The embedded default runs a complete receiver on loopback with SQLite under ``./var/``.
Every limit has a safe default; every [U]-tagged protocol behaviour is a setting here.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import attrs
from attrs import field, frozen

from protocols.errors import InvalidInputError


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidInputError(f"address must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


@frozen
class StoreConfig:
    path: str = "var/receiver.sqlite3"


@frozen
class Dc09Config:
    listen: str = "127.0.0.1:9000"
    udp: bool = True
    # Station the DC-09 port serves (its registry name); empty: the registry's only station.
    station: str = ""
    max_frame_bytes: int = 4096
    idle_timeout: float = 120.0
    # A frame begun must be complete within this many seconds (slow senders).
    frame_timeout: float = 30.0
    max_connections: int = 20_000
    max_connections_per_peer: int = 20_000
    # Replies a panel has not read yet, kept per connection; past this the connection closes.
    reply_backlog_bytes: int = 65_536
    # Timestamp window (seconds before / after the receiver's clock).
    window_past: float = 40.0
    window_future: float = 20.0
    # "reject" NAKs frames outside the window, "flag" accepts and flags them as late.
    window_policy: str = field(default="reject", validator=attrs.validators.in_(("reject", "flag")))
    # Check the window on plaintext frames that carry a timestamp too.
    check_plain_timestamps: bool = False
    # Reply to a bad CRC: "none" (the panel retries) or "nak".
    bad_crc_reply: str = field(default="none", validator=attrs.validators.in_(("none", "nak")))
    # Unknown accounts: "accept" (store and flag), "duh" or "nak".
    unknown_account: str = field(
        default="accept", validator=attrs.validators.in_(("accept", "duh", "nak"))
    )
    # Encrypted ACK: standard form "<pad>|]_ts" or the compatibility form "<pad>]_ts".
    ack_pipe: bool = True
    duplicate_window: float = 600.0

    @property
    def address(self) -> tuple[str, int]:
        return _host_port(self.listen)


@frozen
class BridgeConfig:
    listen: str = "127.0.0.1:9100"
    # A bridge is offline after heartbeat_interval * heartbeat_grace seconds without traffic.
    heartbeat_interval: float = field(default=60.0, validator=attrs.validators.gt(0))
    heartbeat_grace: float = field(default=2.5, validator=attrs.validators.ge(1))
    # Contact ID code of the offline trouble (E) and of its restore (R).
    offline_code: str = field(default="350", validator=attrs.validators.matches_re(r"^[0-9]{3}$"))
    # Unknown bridge / bad token: at most one receiver trouble per serial per this many seconds.
    refused_trouble_interval: float = 600.0
    refused_trouble_code: str = field(
        default="354", validator=attrs.validators.matches_re(r"^[0-9]{3}$")
    )
    # A connection closes after this long without a frame (keep it above the heartbeat
    # interval), or without a HELLO for hello_timeout after it opened.
    idle_timeout: float = 300.0
    hello_timeout: float = 30.0
    max_body: int = field(default=1024, validator=attrs.validators.in_(range(64, 1025)))
    max_connections: int = 20_000
    max_connections_per_peer: int = 20_000

    @property
    def address(self) -> tuple[str, int]:
        return _host_port(self.listen)


@frozen
class SupervisionConfig:
    grace_factor: float = 1.5
    trouble_code: str = "356"
    check_interval: float = 1.0


@frozen
class JournalConfig:
    max_batch: int = 512
    queue_size: int = 4096


@frozen
class OutputConfig:
    name: str
    kind: str = field(validator=attrs.validators.in_(("sentinel", "surgard", "spool")))
    settings: dict[str, Any] = field(factory=dict, hash=False)


@frozen
class Config:
    store: StoreConfig = StoreConfig()
    dc09: Dc09Config = Dc09Config()
    bridge: BridgeConfig = BridgeConfig()
    supervision: SupervisionConfig = SupervisionConfig()
    journal: JournalConfig = JournalConfig()
    outputs: tuple[OutputConfig, ...] = (
        OutputConfig(name="spool", kind="spool", settings={"directory": "var/spool"}),
    )
    log_signals: bool = True


_SECTIONS: dict[str, type[Any]] = {
    "store": StoreConfig,
    "dc09": Dc09Config,
    "bridge": BridgeConfig,
    "supervision": SupervisionConfig,
    "journal": JournalConfig,
}


def _section(cls: type[Any], name: str, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise InvalidInputError(f"[{name}] must be a table")
    known = {a.name for a in attrs.fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise InvalidInputError(f"[{name}] has unknown keys: {', '.join(sorted(unknown))}")
    try:
        return cls(**raw)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"[{name}]: {exc}") from exc


def parse_config(text: str) -> Config:
    """Parse TOML text into a Config; unknown keys are refused (a typo must not go unnoticed)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(f"config is not valid TOML: {exc}") from exc
    kwargs: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        if name in data:
            kwargs[name] = _section(cls, name, data.pop(name))
    if "outputs" in data:
        outputs = []
        for table in data.pop("outputs"):
            settings = dict(table)
            try:
                outputs.append(
                    OutputConfig(
                        name=settings.pop("name"), kind=settings.pop("kind"), settings=settings
                    )
                )
            except (KeyError, ValueError) as exc:
                raise InvalidInputError(f"[[outputs]]: {exc}") from exc
        kwargs["outputs"] = tuple(outputs)
    if "log_signals" in data:
        kwargs["log_signals"] = bool(data.pop("log_signals"))
    if data:
        raise InvalidInputError(f"config has unknown sections: {', '.join(sorted(data))}")
    return Config(**kwargs)


def load_config(path: str | Path | None) -> Config:
    """Load the file, or return the embedded default when ``path`` is None."""
    if path is None:
        return Config()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read config {path}: {exc.strerror}") from exc
    return parse_config(text)
