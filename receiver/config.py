"""Configuration: one TOML file, or the embedded default when there is none.

The embedded default runs a complete receiver on loopback with SQLite under ``./var/``.
Every limit has a safe default; every [U]-tagged protocol behaviour is a setting here.

Rules:
- Every value is checked when the file is read: its TOML type (``udp = "no"`` is not a
  boolean, ``max_frame_bytes = "big"`` is not a whole number) and its range (ports 1-65535,
  timeouts above zero, one of the allowed words). Each mistake is one line naming the key
  (``[dc09] listen: port 99999 is out of range 1-65535``) and all of them are reported at
  once (:class:`ConfigError`); an unknown key or section is a mistake too.
- A relative path in the file (``[store] path``, a spool output's ``directory``) is relative
  to the file's folder, so every subcommand finds the same store from any working directory.
  The embedded default's paths stay relative to the working directory.
- ``RECEIVER_CONFIG`` in the environment names the file when ``--config`` does not.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
from attrs import field, frozen

from protocols.errors import InvalidInputError

CONFIG_ENV = "RECEIVER_CONFIG"

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


class ConfigError(InvalidInputError):
    """A configuration with mistakes; ``errors`` holds every one, one line each."""

    def __init__(self, errors: list[str] | tuple[str, ...], source: str | None = None) -> None:
        self.errors = tuple(errors)
        self.source = source
        super().__init__("\n".join(self.errors))


# -- value checks (attrs validators whose message is one clean line) ------------------------


def _choice(*allowed: str) -> Validator:
    def check(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in allowed:
            raise ValueError(f"{_shown(value)} is not one of {', '.join(allowed)}")

    return check


def _at_least(minimum: float) -> Validator:
    def check(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if not value >= minimum:
            raise ValueError(f"must be at least {minimum}, got {_shown(value)}")

    return check


def _positive(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value > 0:
        raise ValueError(f"must be more than 0, got {_shown(value)}")


def _between(minimum: int, maximum: int) -> Validator:
    def check(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if not minimum <= value <= maximum:
            raise ValueError(f"must be {minimum} to {maximum}, got {_shown(value)}")

    return check


def _between_floats(minimum: float, maximum: float) -> Validator:
    def check(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if not minimum <= value <= maximum:
            raise ValueError(f"must be {minimum} to {maximum} seconds, got {_shown(value)}")

    return check


def _cid_code(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if not re.fullmatch(r"[0-9]{3}", str(value)):
        raise ValueError(f"must be a three-digit Contact ID code, got {_shown(value)}")


def _not_empty(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if not str(value).strip():
        raise ValueError("must not be empty")


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip()
    if not sep or not host or host in ("[", "[]") or not port.isdigit():
        raise InvalidInputError(f"must be HOST:PORT (e.g. 127.0.0.1:9000), got {_shown(value)}")
    number = int(port)
    # Port 0 (the system picks a free port) is kept for tests; it is never a station's port.
    if number > 65535:
        raise InvalidInputError(f"port {number} is out of range 1-65535")
    return host.strip("[]"), number


def _listen(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
    try:
        _host_port(value)
    except InvalidInputError as exc:
        raise ValueError(str(exc)) from None


def _console_listen(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """HOST:PORT, or "" for no console."""
    if value != "":
        _listen(instance, attribute, value)


LOG_LEVELS = ("debug", "info", "warning", "error")
OUTPUT_KINDS = ("sentinel", "surgard", "spool")
# Checked by name in every section (kept off the field lines, whose defaults change apart).
_BY_NAME: Mapping[str, Validator] = {
    "max_connections": _at_least(1),
    "max_connections_per_peer": _at_least(1),
}


# -- the sections -------------------------------------------------------------------------


def _store_url(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if value and not str(value).startswith(("postgresql://", "postgres://")):
        raise ValueError(
            f"must be a PostgreSQL URL (postgresql://USER@HOST:PORT/DB), got {_shown(value)}"
        )


@frozen
class StoreConfig:
    # The SQLite file (the embedded default, one node) ...
    path: str = field(default="var/receiver.sqlite3", validator=_not_empty)
    # ... or PostgreSQL, "postgresql://USER@HOST:PORT/DB" (several nodes): give one of them.
    url: str = field(default="", validator=_store_url)


@frozen
class NodeConfig:
    # This node's name among the receiver nodes sharing one store (its leases and heartbeat
    # carry it): unique per node. Empty: the host name.
    name: str = ""
    # Seconds a node holds an output's or the supervisor's lease without renewing it: a node
    # that dies or loses the database is replaced by another within about this long.
    lease: float = field(default=10.0, validator=_between_floats(1.0, 3600.0))

    @property
    def node_name(self) -> str:
        return self.name.strip() or socket.gethostname() or "receiver"


@frozen
class LogConfig:
    # Least severe level written: "debug", "info", "warning" or "error".
    level: str = field(default="info", validator=_choice(*LOG_LEVELS))


@frozen
class Dc09Config:
    listen: str = field(default="127.0.0.1:9000", validator=_listen)
    udp: bool = True
    # Station the DC-09 port serves (its registry name); empty: the registry's only station.
    station: str = ""
    max_frame_bytes: int = field(default=4096, validator=_between(64, 1_048_576))
    # A TCP connection closes after this long without a complete frame (accepted or rejected:
    # discarded garbage is no activity), ...
    idle_timeout: float = field(default=120.0, validator=_positive)
    # ... when a frame begun is not complete within this many seconds (slow senders), ...
    frame_timeout: float = field(default=30.0, validator=_positive)
    # ... when it sent only garbage (bytes the splitter discarded) for this long since its last
    # frame, and when a reply could not be written for this long (a panel not reading its ACKs).
    garbage_timeout: float = field(default=30.0, validator=_positive)
    send_timeout: float = field(default=10.0, validator=_positive)
    # Connections in total and from one address: one host (or a NAT'd site with a few hundred
    # panels) cannot take every slot. Lowered at start to fit the open-file limit.
    max_connections: int = 10_000
    max_connections_per_peer: int = 256
    # Replies a panel has not read yet, kept per connection; past this (or past send_timeout
    # without progress) the connection closes.
    reply_backlog_bytes: int = field(default=65_536, validator=_between(1024, 1 << 30))
    # Timestamp window (seconds before / after the receiver's clock).
    window_past: float = field(default=40.0, validator=_at_least(0))
    window_future: float = field(default=20.0, validator=_at_least(0))
    # "reject" NAKs frames outside the window, "flag" accepts and flags them as late.
    window_policy: str = field(default="reject", validator=_choice("reject", "flag"))
    # Check the window on plaintext frames that carry a timestamp too.
    check_plain_timestamps: bool = False
    # Reply to a bad CRC: "none" (the panel retries) or "nak".
    bad_crc_reply: str = field(default="none", validator=_choice("none", "nak"))
    # Unknown accounts: "accept" (store and flag), "duh" or "nak".
    unknown_account: str = field(default="accept", validator=_choice("accept", "duh", "nak"))
    # Encrypted ACK: standard form "<pad>|]_ts" or the compatibility form "<pad>]_ts".
    ack_pipe: bool = True
    duplicate_window: float = field(default=600.0, validator=_at_least(0))

    @property
    def address(self) -> tuple[str, int]:
        return _host_port(self.listen)


@frozen
class BridgeConfig:
    listen: str = field(default="127.0.0.1:9100", validator=_listen)
    # A bridge is offline after heartbeat_interval * heartbeat_grace seconds without traffic.
    heartbeat_interval: float = field(default=60.0, validator=_positive)
    heartbeat_grace: float = field(default=2.5, validator=_at_least(1))
    # Contact ID code of the offline trouble (E) and of its restore (R).
    offline_code: str = field(default="350", validator=_cid_code)
    # Unknown bridge / bad token: at most one receiver trouble per serial per this many seconds.
    refused_trouble_interval: float = field(default=600.0, validator=_at_least(0))
    refused_trouble_code: str = field(default="354", validator=_cid_code)
    # A connection closes after this long without a frame (keep it above the heartbeat
    # interval), or without a HELLO for hello_timeout after it opened.
    # A frame is a complete frame, accepted or rejected; bytes that make none (garbage, or a
    # frame trickling in) close the connection after garbage_timeout, and a reply that cannot
    # be written for send_timeout (a bridge not reading) closes it too.
    idle_timeout: float = field(default=300.0, validator=_positive)
    hello_timeout: float = field(default=30.0, validator=_positive)
    garbage_timeout: float = field(default=30.0, validator=_positive)
    send_timeout: float = field(default=10.0, validator=_positive)
    max_body: int = field(default=1024, validator=_between(64, 1024))
    # Replies a bridge has not read yet, kept per connection; past this it closes.
    reply_backlog_bytes: int = field(default=65_536, validator=_between(1024, 1 << 30))
    max_connections: int = 4_000
    max_connections_per_peer: int = 256
    # One task serves every bridge connection (receiver.ingest.bridge_loop); false: a task
    # per connection. Same rules either way.
    batched: bool = True

    @property
    def address(self) -> tuple[str, int]:
        return _host_port(self.listen)


@frozen
class SupervisionConfig:
    grace_factor: float = field(default=1.5, validator=_at_least(1))
    trouble_code: str = field(default="356", validator=_cid_code)
    check_interval: float = field(default=1.0, validator=_positive)


@frozen
class JournalConfig:
    max_batch: int = field(default=512, validator=_between(1, 100_000))
    queue_size: int = field(default=4096, validator=_between(1, 10_000_000))
    keep_days: int = field(default=400, validator=_between(1, 36_500))
    # Commit on the ingest loop's thread while the store's write lock is free (SQLite), else in
    # a worker thread; false: always the thread (receiver/journal.py).
    commit_inline: bool = True


@frozen
class ConsoleConfig:
    # HOST:PORT of the operator console (HTTP API, pages, /metrics, /healthz); "" turns it off.
    listen: str = field(default="127.0.0.1:8080", validator=_console_listen)
    # An output down this long puts the alarms waiting for it into the operator's queue.
    manual_after: float = field(default=60.0, validator=_at_least(0))
    # Whether /metrics needs a login (an API token or a session).
    metrics_login: bool = False
    # A login session ends this long after it began.
    session_hours: float = field(default=12.0, validator=_positive)
    # Failed logins allowed per user name and per address within login_window seconds.
    max_failed_logins: int = field(default=5, validator=_between(1, 1_000_000))
    login_window: float = field(default=300.0, validator=_positive)

    @property
    def address(self) -> tuple[str, int] | None:
        return _host_port(self.listen) if self.listen else None


@frozen
class IngestConfig:
    # Ingest processes sharing the DC-09 and bridge ports (SO_REUSEPORT); 0: one per core.
    # 1 runs everything in one process.
    workers: int = field(default=0, validator=_between(0, 256))
    # Seconds a thread may hold the interpreter lock while another waits for it
    # (``sys.setswitchinterval`` in every serving process; Python's default is 0.005). A commit
    # thread back from SQLite's fsync waits up to this long for the event loop's thread before
    # it can hand the ACKs back. Measured with 10 panels: 0.0005 was faster in 6 of 7
    # alternated pairs, by 17% (median of the pairs); 100 panels unchanged within noise.
    switch_interval: float = field(default=0.0005, validator=_between_floats(0.0001, 0.1))

    @property
    def worker_count(self) -> int:
        if self.workers:
            return self.workers
        if hasattr(os, "sched_getaffinity"):  # the cores this process may run on
            return max(1, len(os.sched_getaffinity(0)))
        return max(1, os.cpu_count() or 1)


@frozen
class DeliveryConfig:
    # An output that cannot deliver this long is a receiver trouble (E, zone = the output's
    # number in the file) journaled and sent to the other outputs; R when it delivers again.
    trouble_after: float = field(default=60.0, validator=_positive)
    trouble_code: str = field(default="354", validator=_cid_code)
    # An output that connected to its alternate address: E; back on its primary: R.
    failover_code: str = field(default="350", validator=_cid_code)


NOTIFY_EVENTS = (
    "output_down",
    "output_restored",
    "failover",
    "panel_lost",
    "panel_restored",
    "bridge_lost",
    "bridge_restored",
    "bridge_refused",
)


def _events(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
    for event in value:
        if event not in NOTIFY_EVENTS:
            raise ValueError(f"{_shown(event)} is not one of {', '.join(NOTIFY_EVENTS)}")


def _recipients(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value:
        raise ValueError("needs at least one address")
    for address in value:
        if "@" not in address:
            raise ValueError(f"{_shown(address)} is not an e-mail address")


@frozen
class NotifyConfig:
    """One ``[[notify]]`` target: who gets an e-mail, through which SMTP server, about what."""

    name: str = field(validator=_not_empty)
    to: tuple[str, ...] = field(validator=_recipients)
    # The TOML key is ``from``.
    sender: str = field(default="receiver@localhost", validator=_not_empty)
    smtp_host: str = field(default="127.0.0.1", validator=_not_empty)
    smtp_port: int = field(default=25, validator=_between(1, 65535))
    starttls: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    # What it wants (every event when empty) and whose signals: a registry station name,
    # a dealer name; empty: every station, every dealer.
    events: tuple[str, ...] = field(default=(), validator=_events)
    station: str = ""
    dealer: str = ""
    # At most one message per this many seconds, listing what happened meanwhile.
    batch_interval: float = field(default=60.0, validator=_positive)


@frozen
class OutputConfig:
    name: str = field(validator=_not_empty)
    kind: str = field(validator=_choice(*OUTPUT_KINDS))
    settings: dict[str, Any] = field(factory=dict, hash=False)


@frozen
class Config:
    store: StoreConfig = StoreConfig()
    log: LogConfig = LogConfig()
    dc09: Dc09Config = Dc09Config()
    bridge: BridgeConfig = BridgeConfig()
    supervision: SupervisionConfig = SupervisionConfig()
    journal: JournalConfig = JournalConfig()
    console: ConsoleConfig = ConsoleConfig()
    ingest: IngestConfig = IngestConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    node: NodeConfig = NodeConfig()
    outputs: tuple[OutputConfig, ...] = (
        OutputConfig(name="spool", kind="spool", settings={"directory": "var/spool"}),
    )
    log_signals: bool = True
    notify: tuple[NotifyConfig, ...] = ()


SECTIONS: Mapping[str, type[Any]] = {
    "store": StoreConfig,
    "log": LogConfig,
    "dc09": Dc09Config,
    "bridge": BridgeConfig,
    "supervision": SupervisionConfig,
    "journal": JournalConfig,
    "console": ConsoleConfig,
    "ingest": IngestConfig,
    "delivery": DeliveryConfig,
    "node": NodeConfig,
}
TOP_LEVEL_KEYS = ("log_signals", "outputs", "notify")
# Output settings that are paths, by kind: relative ones are relative to the config file.
_PATH_SETTINGS: Mapping[str, tuple[tuple[str, str], ...]] = {"spool": (("directory", "var/spool"),)}


# -- reading --------------------------------------------------------------------------------


def _typed(kind: str, value: Any) -> tuple[Any, str | None]:
    """The value as the field's annotated type, or an error; bool is never a number."""
    if kind == "bool":
        if isinstance(value, bool):
            return value, None
        return value, f"must be true or false, got {_shown(value)}"
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        return value, f"must be a whole number, got {_shown(value)}"
    if kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                return value, f"must be a finite number, got {_shown(value)}"
            return float(value), None
        return value, f"must be a number, got {_shown(value)}"
    if kind == "str":
        if isinstance(value, str):
            return value, None
        return value, f"must be a string, got {_shown(value)}"
    if kind == "tuple[str, ...]":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value), None
        return value, f"must be a list of strings, got {_shown(value)}"
    return value, None


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return json.dumps(value) if isinstance(value, bool | str) else repr(value)


def _unknown(what: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(known)})"
    return f"unknown {what}{hint}"


def _section(cls: type[Any], name: str, raw: Any, errors: list[str]) -> Any:
    if not isinstance(raw, dict):
        errors.append(f"[{name}] must be a table, got {_shown(raw)}")
        return None
    fields = {a.name: a for a in attrs.fields(cls)}
    before = len(errors)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        attribute = fields.get(key)
        if attribute is None:
            errors.append(f"[{name}] {key}: {_unknown('key', key, list(fields))}")
            continue
        typed, problem = _typed(str(attribute.type), value)
        if problem is None:
            checks = [attribute.validator, _BY_NAME.get(key)]
            for check in (c for c in checks if c is not None):
                try:
                    check(None, attribute, typed)
                except (TypeError, ValueError) as exc:
                    problem = str(exc.args[0]) if exc.args else type(exc).__name__
                    break
        if problem is not None:
            errors.append(f"[{name}] {key}: {problem}")
            continue
        values[key] = typed
    if len(errors) > before:
        return None
    return cls(**values)


def _relative_to(base: Path | None, path: str) -> str:
    if base is None or path == ":memory:" or Path(path).expanduser().is_absolute():
        return str(Path(path).expanduser()) if base is not None else path
    return str(base / path)


def _outputs(raw: Any, base: Path | None, errors: list[str]) -> tuple[OutputConfig, ...]:
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        errors.append("outputs: must be [[outputs]] tables (or outputs = [] for none)")
        return ()
    outputs: list[OutputConfig] = []
    seen: set[str] = set()
    for number, table in enumerate(raw, start=1):
        settings = dict(table)
        name, kind = settings.pop("name", None), settings.pop("kind", None)
        label = f"[[outputs]] #{number}"
        if not isinstance(name, str) or not name.strip():
            errors.append(f"{label} name: every output needs a name (a string)")
            continue
        label = f"[[outputs]] {name}"
        if name in seen:
            errors.append(f"{label} name: two outputs are named {name!r} (names must differ)")
            continue
        seen.add(name)
        if kind not in OUTPUT_KINDS:
            got = "missing, must be" if kind is None else f"{_shown(kind)} is not"
            errors.append(f"{label} kind: {got} one of {', '.join(OUTPUT_KINDS)}")
            continue
        for key, default in _PATH_SETTINGS.get(kind, ()):
            value = settings.get(key, default if base is not None else None)
            if isinstance(value, str):
                settings[key] = _relative_to(base, value)
        output = OutputConfig(name=name, kind=kind, settings=settings)
        problem = _output_problem(output)
        if problem is not None:
            errors.append(f"{label}: {problem}")
            continue
        outputs.append(output)
    return tuple(outputs)


def _notify(raw: Any, errors: list[str]) -> tuple[NotifyConfig, ...]:
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        errors.append("notify: must be [[notify]] tables")
        return ()
    targets: list[NotifyConfig] = []
    seen: set[str] = set()
    for number, table in enumerate(raw, start=1):
        values = dict(table)
        if "from" in values:
            values["sender"] = values.pop("from")
        name = values.get("name")
        label = f"[[notify]] {name}" if isinstance(name, str) and name else f"[[notify]] #{number}"
        missing = [key for key in ("name", "to") if key not in values]
        if missing:
            errors.append(f"{label}: needs {' and '.join(missing)}")
            continue
        if name in seen:
            errors.append(f"{label} name: two [[notify]] targets are named {name!r}")
            continue
        seen.add(str(name))
        inner: list[str] = []
        target = _section(NotifyConfig, "notify", values, inner)
        errors.extend(label + line.removeprefix("[notify]") for line in inner)
        if target is not None:
            targets.append(target)
    return tuple(targets)


def _output_problem(output: OutputConfig) -> str | None:
    """The output driver's own check of its settings (it does no I/O when built)."""
    from adapters.output import build_output  # noqa: PLC0415 (adapters import this module)

    try:
        build_output(output)
    except InvalidInputError as exc:
        return str(exc).removeprefix(f"output {output.name!r}: ")
    return None


def parse_config(text: str, *, base: str | Path | None = None, source: str | None = None) -> Config:
    """Parse TOML text into a Config, or raise :class:`ConfigError` with every mistake.

    ``base`` is the folder relative paths are relative to (the config file's); without it
    they stay as written (relative to the working directory).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source) from None
    folder = Path(base) if base is not None else None
    errors: list[str] = []
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in SECTIONS:
            section = _section(SECTIONS[name], name, value, errors)
            if section is not None:
                kwargs[name] = section
        elif name == "outputs":
            kwargs["outputs"] = _outputs(value, folder, errors)
        elif name == "notify":
            kwargs["notify"] = _notify(value, errors)
        elif name == "log_signals":
            typed, problem = _typed("bool", value)
            if problem:
                errors.append(f"log_signals: {problem}")
            else:
                kwargs["log_signals"] = typed
        else:
            what = "section" if isinstance(value, dict) else "key"
            errors.append(f"{name}: {_unknown(what, name, [*SECTIONS, *TOP_LEVEL_KEYS])}")
    raw_store = data.get("store")
    if isinstance(raw_store, dict) and raw_store.get("url") and "path" in raw_store:
        errors.append(
            "[store] path and url: give one of them (path: a SQLite file, url: PostgreSQL)"
        )
    if errors:
        raise ConfigError(errors, source)
    if folder is not None:
        store = kwargs.get("store", StoreConfig())
        kwargs["store"] = attrs.evolve(store, path=_relative_to(folder, store.path))
        if "outputs" not in kwargs:
            kwargs["outputs"] = _outputs(
                [{"name": o.name, "kind": o.kind, **o.settings} for o in Config().outputs],
                folder,
                errors,
            )
    return Config(**kwargs)


def config_file(explicit: str | Path | None) -> Path | None:
    """The file to read: ``--config``, else ``RECEIVER_CONFIG``, else None (the default)."""
    if explicit:
        return Path(explicit)
    named = os.environ.get(CONFIG_ENV, "").strip()
    return Path(named) if named else None


def load_config(path: str | Path | None) -> Config:
    """Load the file, or return the embedded default when ``path`` is None."""
    if path is None:
        return Config()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read config {path}: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"config {path} is not UTF-8 text"]) from None
    folder = Path(path).expanduser().resolve().parent
    return parse_config(text, base=folder, source=str(path))


# -- writing ---------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
        return json.dumps(value).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _left_out(section: Any, key: str) -> bool:
    """``[store]`` shows the one store in use: its url, or its path."""
    if isinstance(section, StoreConfig):
        return key == ("path" if section.url else "url")
    return False


def to_toml(config: Config) -> str:
    """The configuration as a TOML file that parses back to the same values (defaults filled in)."""
    lines = [f"log_signals = {_toml_value(config.log_signals)}"]
    if not config.outputs:
        lines.append("outputs = []")
    for name in SECTIONS:
        lines += ["", f"[{name}]"]
        section = getattr(config, name)
        lines += [
            f"{a.name} = {_toml_value(getattr(section, a.name))}"
            for a in attrs.fields(type(section))
            if not _left_out(section, a.name)
        ]
    for output in config.outputs:
        lines += [
            "",
            "[[outputs]]",
            f"name = {_toml_value(output.name)}",
            f"kind = {_toml_value(output.kind)}",
        ]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in output.settings.items()]
    for target in config.notify:
        lines += ["", "[[notify]]"]
        lines += [
            f"{'from' if a.name == 'sender' else a.name} = {_toml_value(getattr(target, a.name))}"
            for a in attrs.fields(NotifyConfig)
        ]
    return "\n".join(lines) + "\n"
