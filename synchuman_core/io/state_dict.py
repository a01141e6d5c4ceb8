"""Strict state-dict comparison and loading with reports grouped by key prefix.

Never ``strict=False``: a checkpoint that does not fit raises :class:`StateDictMismatchError`
listing missing keys, unexpected keys and shape mismatches, grouped so that 24 identical blocks
read as one line (``blocks.*.attn.to_qkv.weight  x24``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import StateDictMismatchError

__all__ = ["StateDictDiff", "diff_state_dict", "group_keys", "load_state_dict_strict", "expected_entries"]

_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)")


def group_keys(keys: Iterable[str]) -> OrderedDict[str, int]:
    """Collapse numeric path components to ``*`` and count: ``blocks.3.x`` -> ``blocks.*.x``."""
    out: OrderedDict[str, int] = OrderedDict()
    for k in keys:
        g = _INDEX.sub("*", k)
        out[g] = out.get(g, 0) + 1
    return out


@dataclass
class StateDictDiff:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def report(self, limit: int = 30) -> str:
        lines: list[str] = []

        def section(title: str, keys: list[str]) -> None:
            if not keys:
                return
            groups = group_keys(keys)
            lines.append(f"{title} ({len(keys)} keys):")
            for i, (g, n) in enumerate(groups.items()):
                if i == limit:
                    lines.append(f"  ... and {len(groups) - limit} more groups")
                    break
                lines.append(f"  {g}" + (f"  x{n}" if n > 1 else ""))

        section("missing from the checkpoint", self.missing)
        section("unexpected in the checkpoint", self.unexpected)
        if self.shape_mismatch:
            lines.append(f"shape mismatches ({len(self.shape_mismatch)} keys):")
            for k, want, got in self.shape_mismatch[:limit]:
                lines.append(f"  {k}: model expects {list(want)}, checkpoint has {list(got)}")
            if len(self.shape_mismatch) > limit:
                lines.append(f"  ... and {len(self.shape_mismatch) - limit} more")
        return "\n".join(lines)


def expected_entries(module: nn.Module) -> OrderedDict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Key -> (shape, dtype) of ``module.state_dict()`` (works on the meta device)."""
    return OrderedDict((k, (tuple(v.shape), v.dtype)) for k, v in module.state_dict().items())


def diff_state_dict(
    expected: Mapping[str, tuple[Iterable[int], object]], actual: Mapping[str, object]
) -> StateDictDiff:
    """Compare expected ``{key: (shape, dtype)}`` against ``actual`` (tensors or ``(shape, ...)``)."""
    d = StateDictDiff()
    for k, (shape, _dt) in expected.items():
        if k not in actual:
            d.missing.append(k)
            continue
        a = actual[k]
        got = tuple(a.shape) if hasattr(a, "shape") else tuple(a[0])  # type: ignore[index]
        if got != tuple(shape):
            d.shape_mismatch.append((k, tuple(shape), got))
    d.unexpected = [k for k in actual if k not in expected]
    return d


@torch.no_grad()
def load_state_dict_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "checkpoint",
    device: torch.device | str | None = None,
) -> nn.Module:
    """Load ``state_dict`` into ``module``: every key present, no extra key, every shape equal.

    Each tensor is cast to the dtype the module declares for it (so fp16 blocks stay fp16 even if
    the file is fp32) and moved to ``device`` (default: the parameter's device, or CPU when the
    module lives on the meta device). Works on modules built on the meta device without
    allocating them first (tensors are assigned, not copied).
    """
    expected = module.state_dict(keep_vars=True)
    diff = diff_state_dict({k: (tuple(v.shape), v.dtype) for k, v in expected.items()}, state_dict)
    if not diff.ok:
        raise StateDictMismatchError(
            f"{source} does not fit {type(module).__name__}:\n{diff.report()}\n"
            "The file belongs to another model or another version of it: check that the folder holds the "
            "official SyncHuman files, or re-download them."
        )
    prepared: dict[str, torch.Tensor] = {}
    for k, ref in expected.items():
        t = state_dict[k]
        target_device = torch.device(device) if device is not None else ref.device
        if target_device.type == "meta":
            target_device = torch.device("cpu")
        prepared[k] = t.to(device=target_device, dtype=ref.dtype)
    module.load_state_dict(prepared, strict=True, assign=True)
    return module
