"""Shared test helpers: where the official fixtures live, deterministic torch settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings as _hypothesis_settings

# Property tests draw the same examples on every run (a CI result must not depend on luck); set
# HYPOTHESIS_PROFILE=explore to search new random examples locally.
_hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
_hypothesis_settings.register_profile("explore", derandomize=False, print_blob=True)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """The official reference data: ``tests/reference`` in this repository (override with SYNCHUMAN_REFERENCE)."""
    env = os.environ.get("SYNCHUMAN_REFERENCE")
    return Path(env) if env else ROOT / "tests" / "reference"


FIXTURES = reference_dir() / "fixtures"
MANIFESTS = reference_dir() / "manifests"
CLIP_BPE = reference_dir() / "clip" / "bpe_simple_vocab_16e6.txt.gz"


def _missing(what: str, p: Path) -> None:
    # A missing reference is a broken checkout or a wrong SYNCHUMAN_REFERENCE, never a reason to skip.
    where = f"SYNCHUMAN_REFERENCE={os.environ['SYNCHUMAN_REFERENCE']}" if os.environ.get("SYNCHUMAN_REFERENCE") \
        else "tests/reference (part of the repository)"
    pytest.fail(f"{what} not found at {p}; the reference data comes from {where}", pytrace=False)


def fixture_dir(name: str) -> Path:
    p = FIXTURES / name
    if not (p / "config.json").is_file():
        _missing(f"official fixture {name}", p)
    return p


def manifest_path(name: str) -> Path:
    p = MANIFESTS / f"{name}.json"
    if not p.is_file():
        _missing(f"manifest {name}", p)
    return p


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
