"""Fixture weights and inputs: the shared seeded rule (:mod:`synchuman_core.io.seeded`) plus checksums.

:func:`gen_param` / :func:`gen_input` are bit-compatible with the fixtures' generator; :func:`fill_model`
fills a module by that rule; :func:`checksums` / :func:`verify_checksums` compare regenerated weights with
a fixture's ``weights_checksums.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import ParityError
from ..io.seeded import gen_input, gen_param

__all__ = ["checksums", "fill_model", "gen_input", "gen_param", "verify_checksums"]


@torch.no_grad()
def fill_model(model: nn.Module, seed: int, key_map: Mapping[str, str] | None = None) -> nn.Module:
    """Fill every parameter of ``model`` with :func:`gen_param`.

    ``key_map`` maps our state-dict key to the official one where they differ (they should not:
    our modules use the official names). Parameters on the meta device are materialised on CPU.
    """
    key_map = key_map or {}
    if any(t.device.type == "meta" for t in list(model.parameters()) + list(model.buffers())):
        model.to_empty(device="cpu")  # buffers must then be recomputed by the caller if they matter
    params = dict(model.named_parameters())
    for k, p in params.items():
        w = gen_param(key_map.get(k, k), list(p.shape), seed)
        dev = p.device if p.device.type != "meta" else torch.device("cpu")
        p.data = w.to(device=dev, dtype=p.dtype)
    return model


def checksums(sd: Mapping[str, torch.Tensor]) -> dict[str, dict]:
    out = {}
    for k, v in sd.items():
        t = v.detach().double().reshape(-1)
        out[k] = dict(
            shape=list(v.shape),
            sum=float(t.sum()),
            sumsq=float((t * t).sum()),
            first=[float(x) for x in t[:4]],
        )
    return out


def verify_checksums(
    sd: Mapping[str, torch.Tensor], expected: Mapping[str, Mapping], rtol: float = 1e-6,
    keys: Sequence[str] | None = None,
) -> int:
    """Raise :class:`ParityError` if ``sd`` does not reproduce the checksum file's entries; returns the
    number of keys checked. ``keys``: check only these (no missing/extra-key check)."""
    problems = []
    if keys is None:
        keys = list(expected)
        missing = [k for k in expected if k not in sd]
        extra = [k for k in sd if k not in expected]
        if missing or extra:
            problems.append(f"keys differ: missing {missing[:5]}, extra {extra[:5]}")
    for k in keys:
        e = expected[k]
        if k not in sd:
            continue
        t = sd[k].detach().double().reshape(-1)
        if list(sd[k].shape) != list(e["shape"]):
            problems.append(f"{k}: shape {list(sd[k].shape)} != {e['shape']}")
            continue
        s, ss = float(t.sum()), float((t * t).sum())
        tol_s = rtol * max(1.0, abs(e["sumsq"])) ** 0.5 * max(1.0, t.numel() ** 0.5)
        if abs(s - e["sum"]) > tol_s or abs(ss - e["sumsq"]) > rtol * max(1.0, abs(e["sumsq"])) * 10:
            problems.append(f"{k}: sum {s:.6g}/{e['sum']:.6g}, sumsq {ss:.6g}/{e['sumsq']:.6g}")
        first = [float(x) for x in t[:4]]
        if any(abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(first, e["first"])):
            problems.append(f"{k}: first values {first} != {e['first']}")
    if problems:
        raise ParityError("regenerated weights do not match the fixture checksums:\n  " + "\n  ".join(problems[:20]))
    return len(keys)
