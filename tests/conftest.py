"""Shared test helpers: where the official fixtures live, deterministic torch settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """``../shared/reference`` beside the checkout (override with SYNCHUMAN_REFERENCE)."""
    env = os.environ.get("SYNCHUMAN_REFERENCE")
    return Path(env) if env else ROOT.parent / "shared" / "reference"


FIXTURES = reference_dir() / "fixtures"
MANIFESTS = reference_dir() / "manifests"


def fixture_dir(name: str) -> Path:
    p = FIXTURES / name
    if not p.exists():
        pytest.skip(f"official fixture {name} not found at {p} (set SYNCHUMAN_REFERENCE)")
    return p


def manifest_path(name: str) -> Path:
    p = MANIFESTS / f"{name}.json"
    if not p.exists():
        pytest.skip(f"manifest {name} not found at {p} (set SYNCHUMAN_REFERENCE)")
    return p


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
