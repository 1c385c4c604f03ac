"""Shared test settings: hypothesis profiles and the public test vectors (``tests/vectors/``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NoReturn

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"


def load_vectors(name: str) -> Any:
    """Read ``tests/vectors/<name>`` (each vector names its public source)."""
    path = VECTORS / name
    return json.loads(path.read_text(encoding="utf-8"))


def under_ci() -> bool:
    """CI runs with ``CI`` set or the ``ci`` hypothesis profile (``.ci/run``)."""
    return bool(os.environ.get("CI")) or os.environ.get("HYPOTHESIS_PROFILE") == "ci"


def unavailable(message: str) -> NoReturn:
    """A real part a test needs is missing: under CI that is a failure, never a skip."""
    if under_ci():
        pytest.fail(message)
    pytest.skip(message)
