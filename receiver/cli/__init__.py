"""The ``receiver`` console script.

Exit codes: 0 ok, 1 refused, not found or cannot start (a port in use, a store that cannot
be opened or that another receiver holds, a store lost in the middle of a command), 2 bad input
(a configuration mistake: every one, one line each). Errors are one line on stderr. Each
subcommand group lives in its own module with a ``register(subparsers)`` function; the handler
it sets returns the exit code.

``--config FILE`` is accepted before or after the subcommand; without it ``RECEIVER_CONFIG``
names the file, and without that the embedded default applies.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from protocols.errors import (
    InvalidInputError,
    NotFoundError,
    ReceiverError,
    RegistryError,
    StartupError,
)
from receiver import __version__
from receiver.config import CONFIG_ENV, ConfigError
from receiver.store.faults import fault_line
from receiver.store.interface import StoreError

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2

# Modules under receiver.cli, each with register(subparsers).
COMMAND_MODULES = (
    "serve",
    "decode",
    "registry",
    "library",
    "bridges",
    "history",
    "report",
    "outputs",
    "config",
    "users",
    "journal",
    "backup",
    "nodes",
)

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 on usage errors, which matches "bad input"; keep it to one line.
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


CONFIG_HELP = f"TOML configuration file (default: ${CONFIG_ENV}, else the embedded default)"


def _config_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--config`` after any subcommand too; SUPPRESS keeps one given earlier."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.add_argument(
                    "--config", metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP
                )
                _config_everywhere(child)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="receiver", description="Central-station alarm receiver.")
    parser.add_argument("--version", action="version", version=f"receiver {__version__}")
    parser.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        import_module(f"receiver.cli.{name}").register(sub)
    _config_everywhere(parser)
    return parser


def fail(message: str, code: int) -> int:
    print(f"receiver: {message}", file=sys.stderr)
    return code


def config_errors(exc: ConfigError) -> int:
    """Every configuration mistake, one line each (naming the file), exit 2."""
    where = f"{exc.source}: " if exc.source else ""
    for error in exc.errors:
        print(f"receiver: {where}{error}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        return config_errors(exc)
    except StartupError as exc:
        return fail(str(exc), EXIT_REFUSED)
    except NotFoundError as exc:
        return fail(str(exc), EXIT_REFUSED)
    except RegistryError as exc:
        return fail(str(exc), EXIT_REFUSED)
    except InvalidInputError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    except StoreError as exc:  # a store that cannot be reached is not bad input
        return fail(fault_line(exc) or str(exc), EXIT_REFUSED)
    except ReceiverError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        line = fault_line(exc)  # SQLite's or PostgreSQL's own error, reaching us as it is
        if line is None:
            raise
        return fail(line, EXIT_REFUSED)


if __name__ == "__main__":
    sys.exit(main())
