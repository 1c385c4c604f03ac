"""`receiver decode`: not built yet."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:  # pragma: no cover - placeholder
    del sub
