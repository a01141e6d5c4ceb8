"""Parity against the official modules' fixtures.

A fixture folder (format of the shared reference fixtures) is named ``<letter>_<Component>``; the
component after the first ``_`` selects a runner module
``synchuman_core.parity.components.<component lowercased>``, which exposes
``run(fixture: Fixture) -> list[Comparison]``. Runners build our implementation from the folder's
``config.json``, load or regenerate weights and inputs as the folder's README says, and return the
outputs to compare. ``python -m synchuman_core.parity DIR [DIR ...]`` prints, per output, the max
absolute error relative to the reference's absmax and exits non-zero above tolerance.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..errors import ParityError

__all__ = ["Comparison", "Fixture", "component_of", "run_fixture", "DEFAULT_TOLERANCE"]

# tests/reference/FIXTURES.md §6, relative to the reference output's absmax.
DEFAULT_TOLERANCE = {
    "DualCrossAttentionMV": 1e-5,
    "DualCrossAttentionSS": 1e-5,
    "sparse_structure_decoder": 1e-5,
    "sparse_structure_flow": 1e-5,
    "SyncHuman_2D3DCrossSpaceDiffusion": 1e-3,
    "slat_flow": 1e-5,
    "slat_mesh_decoder": 1e-4,
    "schedules_cfg": 1e-5,
    "flexicubes": 1e-5,
}


@dataclass
class Comparison:
    """One output: ours vs the reference, with a tolerance relative to the reference's absmax.

    ``error`` may be given directly for outputs compared another way (e.g. order-independent
    meshes, occupancy flips); it is then reported as is.
    """

    name: str
    ours: torch.Tensor | None
    ref: torch.Tensor | None
    tol: float
    error: float | None = None
    note: str = ""

    def relative_error(self) -> float:
        if self.error is not None:
            return float(self.error)
        assert self.ours is not None and self.ref is not None
        if tuple(self.ours.shape) != tuple(self.ref.shape):
            return float("inf")
        o, r = self.ours.detach().double().cpu(), self.ref.detach().double().cpu()
        if r.numel() == 0:
            return 0.0
        if not torch.isfinite(o).all():
            return float("inf")
        scale = max(float(r.abs().max()), 1e-12)
        return float((o - r).abs().max()) / scale

    @property
    def passed(self) -> bool:
        return self.relative_error() <= self.tol


@dataclass
class Fixture:
    path: Path
    component: str
    tol: float
    extras: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    @cached_property
    def meta(self) -> dict:
        p = self.path / "meta.json"
        return json.loads(p.read_text()) if p.exists() else {}

    @property
    def seed(self) -> int:
        """The fixgen seed the fixture was made with (``meta.json``'s ``seed``): weights and inputs that are
        not stored are regenerated with it."""
        seed = self.meta.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ParityError(f"fixture {self.path.name}: meta.json records no integer 'seed' (got {seed!r})")
        return seed

    def _load(self, name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        p = self.path / name
        if not p.exists():
            raise ParityError(f"fixture {self.path.name} has no {name}")
        return load_file(str(p))

    @cached_property
    def inputs(self) -> dict[str, torch.Tensor]:
        return self._load("inputs.safetensors")

    @cached_property
    def outputs(self) -> dict[str, torch.Tensor]:
        return self._load("outputs.safetensors")

    @cached_property
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._load("state_dict.safetensors")

    def json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def compare(self, name: str, ours: torch.Tensor, ref_key: str | None = None, tol: float | None = None) -> Comparison:
        return Comparison(name, ours, self.outputs[ref_key or name], self.tol if tol is None else tol)


def component_of(path: Path) -> str:
    name = Path(path).resolve().name
    if "_" not in name:
        raise ParityError(f"fixture folder {name!r} is not named <letter>_<Component>")
    return name.split("_", 1)[1]


def _runner(component: str) -> Callable[[Fixture], list[Comparison]]:
    mod_name = f"{__name__}.components.{component.lower()}"
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name != mod_name:
            raise
        raise ParityError(f"no parity runner for component {component!r} (expected module {mod_name})") from None
    return mod.run


def run_fixture(path: str | Path, tol: float | None = None) -> list[Comparison]:
    path = Path(path)
    component = component_of(path)
    fx = Fixture(path, component, tol if tol is not None else DEFAULT_TOLERANCE.get(component, 1e-5))
    with torch.no_grad():
        return _runner(component)(fx)
