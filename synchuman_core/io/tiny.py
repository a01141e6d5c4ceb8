"""Tiny random-weight checkpoints in the official layout, for tests and demos.

``python -m synchuman_core.io.tiny OUT_DIR`` writes every file of a SyncHuman model folder
(``OUT_DIR/ckpts/OneStage/...``, ``OUT_DIR/ckpts/SecondStage/...``, ``OUT_DIR/dinov2/``,
``OUT_DIR/prompt_embeds/``) with official-format configs holding tiny values
(:mod:`.tiny_configs`), the official settings files, and safetensors weights drawn from our own
modules built with those configs. Loading it goes through exactly the code path of the real
checkpoint. Each component comes from its registry entry (:mod:`.registry`) and is written by its file
format (:mod:`.formats`).

Weights follow the seeded rule of :mod:`.seeded` (the parity fixtures' rule: seeded per key,
``z / sqrt(fan_in)`` for matrices, ``1 + 0.1 z`` for scales, ``0.1 z`` for biases), so outputs are
finite and deterministic.
"""

from __future__ import annotations

import argparse
import copy
import functools
import logging
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .dinov2_files import DINOV2_HF_REPO_ID
from .layout import HF_REPO_ID, ModelFolder
from .prompt_cache import save_prompt_embeds
from .registry import COMPONENTS, ComponentSpec, get_spec
from .seeded import gen_param
from .tiny_configs import TINY_CROSS_DIM

__all__ = ["TinyCheckpoint", "tiny_model", "write_tiny_checkpoint", "write_tiny_dinov2_hf", "write_tiny_hub", "main"]

logger = logging.getLogger(__name__)


@dataclass
class TinyCheckpoint:
    folder: ModelFolder
    written: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    weight_bytes: int = 0


@torch.no_grad()
def fill_tiny(model: nn.Module, seed: int) -> nn.Module:
    """Deterministic weights by the fixture rules; buffers keep their computed values."""
    for k, p in model.named_parameters():
        p.copy_(gen_param(k, list(p.shape), seed).to(p.dtype))
    return model


def tiny_model(name: str | ComponentSpec, seed: int = 0) -> tuple[nn.Module, Any]:
    """Build component ``name`` from its tiny config on CPU with deterministic weights: ``(model, config)``."""
    spec = get_spec(name)
    if spec.tiny_config is None:
        raise ValueError(f"component {spec.name!r} has no tiny config")
    model = spec.build(spec.tiny_config, device="cpu")
    spec.finish(model, torch.device("cpu"))
    model = fill_tiny(model, seed).eval()
    if spec.name == "structure_decoder":
        calibrate_tiny_occupancy(model, seed)
    return model, spec.read_config(spec.tiny_config)


#: Fraction of the 64³ grid a tiny structure decoder marks occupied for a unit-normal latent. Random
#: weights alone mark about half the grid, which would make every tiny stage-2 run (subdivided twice to
#: 256³) needlessly slow; a real human occupies roughly 1-3 %.
TINY_OCCUPANCY = 0.01


@torch.no_grad()
def calibrate_tiny_occupancy(decoder: nn.Module, seed: int, fraction: float = TINY_OCCUPANCY) -> None:
    """Shift the tiny structure decoder's last bias so that about ``fraction`` of the voxels are occupied
    for a unit-normal latent (the distribution stage 1 starts from). Tiny checkpoints only."""
    conv = decoder.out_layer[-1]
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, decoder.input_layer.in_channels, 16, 16, 16, generator=g)
    logits = copy.deepcopy(decoder).float()(z).flatten()  # fp32 copy: fp16 convs are very slow on CPU
    thr = torch.quantile(logits[:: max(1, logits.numel() // 100_000)], 1.0 - fraction)
    conv.bias.sub_(thr.to(conv.bias.dtype))


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


@functools.lru_cache(maxsize=32)
def tiny_state_dict(name: str, seed: int) -> dict[str, torch.Tensor]:
    """The tiny component's state dict, built once per process (writing many tiny folders in one test
    session then costs file writes only). Callers must not modify the returned tensors."""
    model, _ = tiny_model(name, seed)
    return _state_dict(model)


def write_tiny_dinov2_hf(out_dir: str | Path, seed: int = 0) -> Path:
    """The tiny DINOv2 in the transformers format (``config.json`` + ``model.safetensors``) in ``out_dir``."""
    spec = get_spec("dinov2")
    spec.layout().write_dir(spec, Path(out_dir), tiny_state_dict("dinov2", seed), spec.tiny_config, "hf")
    return Path(out_dir)


def _write_component(spec: ComponentSpec, mf: ModelFolder, seed: int, variants: Mapping[str, str]) -> int:
    sd = tiny_state_dict(spec.name, seed) if spec.is_module else None
    return spec.layout().write(spec, mf, sd, spec.tiny_config, variants.get(spec.name))


def write_tiny_checkpoint(
    out_dir: str | Path,
    *,
    components: Iterable[str] | None = None,
    seed: int = 0,
    flat: bool = False,
    variants: Mapping[str, str] | None = None,
    prompt_embeds: bool = True,
) -> TinyCheckpoint:
    """Write a tiny checkpoint to ``out_dir`` (HF snapshot layout ``ckpts/...``, or ``flat``: ``OneStage/...``).

    ``components`` defaults to every registry entry with a tiny config (text encoder included);
    ``variants``: ``{component: file variant}`` for components whose format has several (e.g.
    ``{"dinov2": "hf"}``: the transformers files instead of ours; see :mod:`.dinov2_files`).
    ``prompt_embeds`` writes a random prompt-embedding cache (``prompt_embeds/``).
    """
    base = Path(out_dir)
    mf = ModelFolder(base, base if flat else base / "ckpts")
    result = TinyCheckpoint(mf)
    names = list(components) if components is not None else list(COMPONENTS)
    for name in names:
        spec = get_spec(name)
        if spec.tiny_config is None:
            result.skipped[name] = "no tiny config"
            continue
        result.weight_bytes += _write_component(spec, mf, seed, variants or {})
        result.written.append(name)
    if prompt_embeds:
        g = torch.Generator().manual_seed(seed)
        normal7, color7 = (torch.randn(7, 77, TINY_CROSS_DIM, generator=g).half() for _ in range(2))
        save_prompt_embeds(mf, normal7, color7)
        result.written.append("prompt_embeds")
    for name, why in result.skipped.items():
        logger.info("tiny checkpoint: skipped %s (%s)", name, why)
    return result


def write_tiny_hub(root: str | Path, seed: int = 0, components: Iterable[str] | None = None) -> dict[str, Path]:
    """Local stand-ins of the two Hugging Face repositories (for download tests with the network mocked).

    Returns ``{repo_id: folder}``: the SyncHuman repo (``ckpts/...`` + ``README.md``, no DINOv2, no prompt
    cache) and the transformers DINOv2 repo.
    """
    root = Path(root)
    sync = root / HF_REPO_ID.replace("/", "--")
    names = [n for n in (components or COMPONENTS) if get_spec(n).layout().repo_id == HF_REPO_ID]
    write_tiny_checkpoint(sync, components=names, seed=seed, prompt_embeds=False)
    (sync / "README.md").write_text("---\nlicense: unknown\n---\n# tiny stand-in of the SyncHuman weights\n")
    dino = write_tiny_dinov2_hf(root / DINOV2_HF_REPO_ID.replace("/", "--"), seed)
    return {HF_REPO_ID: sync, DINOV2_HF_REPO_ID: dino}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synchuman_core.io.tiny", description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flat", action="store_true", help="write OneStage/ and SecondStage/ without the ckpts/ level")
    ap.add_argument("--variant", action="append", default=[], metavar="COMPONENT=VARIANT",
                    help="file variant of a component whose format has several, e.g. dinov2=hf (repeatable)")
    ap.add_argument("--components", default=None, help="comma-separated subset (default: all)")
    ap.add_argument("--no-prompt-embeds", action="store_true")
    ap.add_argument("--force", action="store_true", help="delete OUT_DIR first if it exists")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.out_dir.exists() and any(args.out_dir.iterdir()):
        if not args.force:
            sys.stderr.write(f"{args.out_dir} is not empty; use --force to replace it\n")
            return 2
        shutil.rmtree(args.out_dir)
    comps = args.components.split(",") if args.components else None
    bad = [v for v in args.variant if "=" not in v]
    if bad:
        sys.stderr.write(f"--variant takes COMPONENT=VARIANT, got {bad[0]!r}\n")
        return 2
    res = write_tiny_checkpoint(args.out_dir, components=comps, seed=args.seed, flat=args.flat,
                                variants=dict(v.split("=", 1) for v in args.variant), prompt_embeds=not args.no_prompt_embeds)
    sys.stdout.write(f"wrote {', '.join(res.written)} to {args.out_dir} ({res.weight_bytes / 1e6:.1f} MB of weights)\n")
    if res.skipped:
        sys.stdout.write("skipped: " + "; ".join(f"{k} ({v})" for k, v in res.skipped.items()) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
