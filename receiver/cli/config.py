"""`receiver config check`: read the configuration as ``serve`` would, and show it.

Rules: the file is ``--config``, else ``$RECEIVER_CONFIG``, else the embedded default (every
subcommand reads it the same way, through :func:`configured`). ``check`` exits 0 and prints the
effective configuration (every default filled in, relative paths made absolute) as TOML that
parses back to the same values, or exits 2 with every mistake, one line each, naming the key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from receiver.config import Config, config_file, load_config, to_toml


def config_source(args: argparse.Namespace) -> Path | None:
    """The configuration file this command reads (None: the embedded default)."""
    return config_file(getattr(args, "config", None))


def configured(args: argparse.Namespace) -> Config:
    """The configuration this command runs on; :class:`ConfigError` lists every mistake."""
    return load_config(config_source(args))


def describe_source(path: Path | None) -> str:
    if path is None:
        return "the embedded default configuration (no --config, RECEIVER_CONFIG unset)"
    return f"configuration {path.resolve()}"


def _check(args: argparse.Namespace) -> int:
    path = config_source(args)
    config = load_config(path)
    print(f"receiver: {describe_source(path)} is valid", file=sys.stderr)
    sys.stdout.write(to_toml(config))
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    config = sub.add_parser("config", help="check the configuration and show it")
    csub = config.add_subparsers(dest="config_command", metavar="COMMAND")
    csub.required = True
    p = csub.add_parser(
        "check",
        help="exit 0 and print the effective configuration, or exit 2 with every mistake",
        description=(
            "Read the configuration as `receiver serve` would (--config FILE, else "
            "$RECEIVER_CONFIG, else the embedded default). Valid: exit 0, the effective "
            "configuration as TOML on stdout (defaults filled in, paths absolute). Not: exit "
            "2, every mistake on stderr, one line each."
        ),
    )
    p.set_defaults(handler=_check)
