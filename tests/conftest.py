"""Shared test settings: hypothesis profiles and the path to the public vectors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
VECTORS = ROOT.parent / "shared" / "vectors"


def load_vectors(name: str) -> Any:
    """Read ``../shared/vectors/<name>``; skip when shared/ is not beside the checkout."""
    path = VECTORS / name
    if not path.exists():
        pytest.skip(f"vector file {path} not present")
    return json.loads(path.read_text(encoding="utf-8"))
