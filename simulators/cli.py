"""The ``receiver-sim`` console script: panel and bridge fleets, sinks, scenario replay.

Each subcommand lives in its own module under ``simulators`` with ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from protocols.errors import InvalidInputError, ReceiverError
from simulators.endpoints import leaf_error

SIM_MODULES: tuple[str, ...] = ("bridge", "sink", "panel", "replay")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="receiver-sim", description="Receiver simulators.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SIM_MODULES:
        import_module(f"simulators.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Errors the subcommand did not report itself (trio hands them over
    wrapped in ExceptionGroups) become one line on stderr: exit 2 for bad input, 1 for a
    socket or service that failed."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except (ReceiverError, OSError, BaseExceptionGroup) as exc:
        error = leaf_error(exc)
        if isinstance(error, KeyboardInterrupt):
            return 130
        if not isinstance(error, ReceiverError | OSError):
            raise
        print(f"receiver-sim {args.command}: {error}", file=sys.stderr)
        return 2 if isinstance(error, InvalidInputError) else 1


if __name__ == "__main__":
    sys.exit(main())
