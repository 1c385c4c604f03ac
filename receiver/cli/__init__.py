"""The ``receiver`` console script.

Exit codes: 0 ok, 1 refused or not found, 2 bad input. Errors are one line on stderr.
Each subcommand group lives in its own module with a ``register(subparsers)`` function; the
handler it sets returns the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from protocols.errors import InvalidInputError, NotFoundError, ReceiverError, RegistryError

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
    "users",
)

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 on usage errors, which matches "bad input"; keep it to one line.
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="receiver", description="Central-station alarm receiver.")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        import_module(f"receiver.cli.{name}").register(sub)
    return parser


def fail(message: str, code: int) -> int:
    print(f"receiver: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except NotFoundError as exc:
        return fail(str(exc), EXIT_REFUSED)
    except RegistryError as exc:
        return fail(str(exc), EXIT_REFUSED)
    except InvalidInputError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    except ReceiverError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
