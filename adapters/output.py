"""The one interface every automation output implements, and the factory from configuration.

Rules:
- The dispatcher holds one output per ``[[outputs]]`` table and calls ``deliver`` for one signal
  at a time, in journal order. ``deliver`` returns only once the far side acknowledged the
  package (or, for the spool, once it is durably written); otherwise it raises
  :class:`DeliveryError` and the dispatcher retries the same package later:
  :class:`UnreachableError` (nothing was sent, the far side cannot be reached) is retried
  about every second, so a recovered automation is served at once; any other failure (a NAK,
  a timeout mid-exchange) with a backoff that grows to ``max_backoff``.
- Outputs that supervise their link (Sentinel, Sur-Gard) also have ``run_heartbeats()``, which
  the dispatcher starts in its nursery; it sends heartbeats when idle and never returns.
- Settings are checked when the output is built: an unknown key or a bad value is an
  :class:`InvalidInputError` at start-up, not a surprise at the first alarm.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, runtime_checkable

from protocols.errors import InvalidInputError, ReceiverError
from protocols.signal import Signal

if TYPE_CHECKING:
    from receiver.config import OutputConfig


class DeliveryError(ReceiverError, ConnectionError):
    """A package was not acknowledged; the message is the reason shown as the last error.

    Transient by contract: the dispatcher retries the same package later.
    """


class UnreachableError(DeliveryError):
    """The far side could not be reached (connect refused or timed out, a spool that cannot
    be written): nothing of the package was sent.

    Trying again costs only a connect, so the dispatcher probes at a short fixed interval
    (about a second) instead of backing off further: an automation that comes back gets its
    backlog within a second or two, and a dead host sees one connect attempt a second.
    """


class UndeliverableError(DeliveryError):
    """This output can never carry this signal (e.g. an account its format cannot express).

    Retrying would block every later signal behind it, so the dispatcher skips it for this
    output, logs it with the signal id, and counts it (``receiver outputs``). The signal stays
    in the journal and goes to every other output.
    """


@runtime_checkable
class Output(Protocol):
    """What the dispatcher sees of an output."""

    name: str

    @property
    def connected(self) -> bool: ...

    @property
    def last_error(self) -> str | None: ...

    async def deliver(self, signal: Signal, package_id: str) -> None: ...

    async def aclose(self) -> None: ...


class SupervisedOutput(Output, Protocol):
    """An output with a link to supervise: start ``run_heartbeats`` beside the deliveries."""

    async def run_heartbeats(self) -> NoReturn: ...


class Settings:
    """Typed reads from one output's settings table; every key read is marked as known."""

    def __init__(self, output: str, raw: Mapping[str, Any]) -> None:
        self.output = output
        self.raw = dict(raw)
        self.known: set[str] = set()

    def _get(self, key: str, default: Any, kinds: tuple[type, ...]) -> Any:
        self.known.add(key)
        value = self.raw.get(key, default)
        # bool is an int in Python; a TOML `true` for a number is still a mistake.
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            raise InvalidInputError(
                f"output {self.output!r}: {key} must be {' or '.join(k.__name__ for k in kinds)}"
            )
        return value

    def text(self, key: str, default: str | None = None) -> str | None:
        value: str | None = self._get(key, default, (str,))
        return value

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = float(self._get(key, default, (int, float)))
        if value < minimum:
            raise InvalidInputError(f"output {self.output!r}: {key} must be at least {minimum}")
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0, maximum: int = 10**9) -> int:
        value: int = self._get(key, default, (int,))
        if not minimum <= value <= maximum:
            raise InvalidInputError(
                f"output {self.output!r}: {key} must be {minimum} to {maximum}, got {value}"
            )
        return value

    def optional_integer(self, key: str) -> int | None:
        value: int | None = self._get(key, None, (int,))
        return value

    def address(self, key: str, default: str | None = None) -> tuple[str, int] | None:
        value = self.text(key, default)
        return None if value is None else parse_address(value, f"output {self.output!r}: {key}")

    def finish(self) -> None:
        """Refuse keys nobody read: a typo must not go unnoticed."""
        unknown = set(self.raw) - self.known
        if unknown:
            raise InvalidInputError(
                f"output {self.output!r} has unknown settings: {', '.join(sorted(unknown))}"
            )


def parse_address(value: str, what: str = "address") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) to a tuple; :class:`InvalidInputError` otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidInputError(f"{what} must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


# kind -> (module, class); imported on use because each driver imports DeliveryError from here.
DRIVERS: Mapping[str, tuple[str, str]] = {
    "sentinel": ("adapters.sentinel.client", "SentinelOutput"),
    "surgard": ("adapters.surgard.output", "SurGardOutput"),
    "spool": ("adapters.spool", "SpoolOutput"),
}


def build_output(config: OutputConfig) -> Output:
    """The output a ``[[outputs]]`` table describes; bad settings are an InvalidInputError."""
    try:
        module, cls = DRIVERS[config.kind]
    except KeyError:
        raise InvalidInputError(f"output {config.name!r}: unknown kind {config.kind!r}") from None
    output: Output = getattr(import_module(module), cls).from_settings(config.name, config.settings)
    return output
