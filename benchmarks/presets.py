"""Benchmark model sets: official-format configs with random weights (fixture rules), built in memory.

Presets:

* ``tiny``: the test checkpoint's configs (``synchuman_core.io.tiny_configs``), 192 px views;
* ``medium``: the real depths and head sizes at about 1/5 of the widths, 384 px views;
* ``real``: the released checkpoint's configs (``benchmarks/real_configs.json``: 1.70 B-parameter joint model,
  768 px views, ViT-L DINOv2 at 896 px, FlexiCubes at 256³), no download.

:class:`RandomModels` builds each component on first access with the weights of
:func:`synchuman_core.io.tiny.fill_tiny` (seeded per component, so a component dropped with ``unload`` and
built again is identical) and answers like ``SyncHumanModels`` (``get``, ``unload``, ``loaded``, ``dtypes``,
``prompt_embeds``), so :func:`synchuman_core.memory.apply_tier` and the pipeline take it unchanged.

Occupancy: random weights occupy about half of the 64³ grid, a person 1-3 %. :class:`ShellOccupancy` keeps the
structure decoder's computation and output but makes exactly ``voxels`` voxels occupied: those of an upright
ellipsoidal shell (a body-sized surface: sparse convolutions and window attention see surface-like
neighbourhoods), ordered by distance to the shell, ties broken by the decoder's logits.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
PRESETS = ("tiny", "medium", "real")
#: Default occupied voxels and stage-2 DINOv2 feature size per preset (896 = the official size).
DEFAULT_VOXELS = {"tiny": 300, "medium": 2000, "real": 20_000}
DEFAULT_MV_SIZE = {"tiny": 224, "medium": 448, "real": 896}
COMPONENT_ORDER = ("image_encoder", "vae", "dinov2", "joint", "structure_decoder", "slat_flow", "gs_decoder",
                   "mesh_decoder")


def real_configs() -> dict[str, Any]:
    """The released checkpoint's component configs (``real_configs.json``) and parameter counts."""
    return json.loads((HERE / "real_configs.json").read_text())


def configs(preset: str) -> dict[str, Any]:
    """``{component: official-format config, "cross_dim": prompt width}`` of a preset."""
    if preset == "real":
        cfg = real_configs()
        return {k: cfg[k] for k in (*COMPONENT_ORDER, "cross_dim")}
    from synchuman_core.io.tiny_configs import (
        TINY_CROSS_DIM,
        TINY_DINOV2,
        TINY_GS_DECODER,
        TINY_IMAGE_ENCODER,
        TINY_JOINT,
        TINY_MESH_DECODER,
        TINY_SLAT_FLOW,
        TINY_STRUCTURE_DECODER,
        TINY_VAE,
    )

    def dec(base: dict, **args: Any) -> dict:
        return {"name": base["name"], "args": {**base["args"], **args}}

    if preset == "tiny":
        return {
            "joint": {**TINY_JOINT, "sample_size": 24, "model_channels": 32, "num_heads": 2,
                      "num_head_channels": 16},
            "vae": TINY_VAE, "image_encoder": TINY_IMAGE_ENCODER, "dinov2": TINY_DINOV2,
            "structure_decoder": TINY_STRUCTURE_DECODER, "slat_flow": TINY_SLAT_FLOW,
            "mesh_decoder": TINY_MESH_DECODER, "gs_decoder": TINY_GS_DECODER, "cross_dim": TINY_CROSS_DIM,
        }
    if preset != "medium":
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    dino, proj, cross = 128, 128, 256
    return {
        # UNet at 1/5 of the real widths with the real depth and head size, 48² latents (384 px views)
        "joint": {**TINY_JOINT, "sample_size": 48, "block_out_channels": [64, 128, 256, 256],
                  "attention_head_dim": [1, 2, 4, 4], "layers_per_block": 2, "cross_attention_dim": cross,
                  "projection_class_embeddings_input_dim": 2 * proj, "model_channels": 256, "num_heads": 4,
                  "num_head_channels": 64, "num_blocks": 8, "mlp_ratio": 4, "cond_channels": dino},
        "vae": {**TINY_VAE, "block_out_channels": [64, 128, 256, 256], "layers_per_block": 2, "sample_size": 384},
        "image_encoder": {**TINY_IMAGE_ENCODER, "hidden_size": 256, "intermediate_size": 1024,
                          "num_attention_heads": 4, "num_hidden_layers": 6, "patch_size": 14, "projection_dim": proj},
        "dinov2": {**TINY_DINOV2, "embed_dim": dino, "num_heads": 2, "mlp_ratio": 4.0},
        "structure_decoder": dec(TINY_STRUCTURE_DECODER, channels=[128, 64, 32], num_res_blocks=2,
                                 num_res_blocks_middle=2),
        "slat_flow": dec(TINY_SLAT_FLOW, model_channels=256, cond_channels=dino, num_blocks=6, num_heads=4,
                         mlp_ratio=4, io_block_channels=[64]),
        "mesh_decoder": dec(TINY_MESH_DECODER, model_channels=256, num_blocks=6, num_heads=4, mlp_ratio=4, mv_dim=dino),
        "gs_decoder": dec(TINY_GS_DECODER, model_channels=256, num_blocks=6, num_heads=4, mlp_ratio=4, mv_dim=dino),
        "cross_dim": cross,
    }


def shell_order(grid: int = 64) -> torch.Tensor:
    """``[grid³]`` distance of each voxel centre to an upright ellipsoid (semi-axes 0.18 / 0.12 / 0.45 of the
    grid in x / y / z: a standing person's proportions), flattened in ``[x, y, z]`` order."""
    r = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid - 0.5
    x, y, z = torch.meshgrid(r, r, r, indexing="ij")
    rho = ((x / 0.18) ** 2 + (y / 0.12) ** 2 + (z / 0.45) ** 2).sqrt()
    return (rho - 1.0).abs().flatten()


class ShellOccupancy(torch.nn.Module):
    """The structure decoder, its logits shifted so that exactly ``k`` voxels (a shell) are positive."""

    def __init__(self, decoder: torch.nn.Module, k: int) -> None:
        super().__init__()
        self.decoder, self.k = decoder, int(k)

    @property
    def config(self) -> Any:
        return getattr(self.decoder, "config", None)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(z)
        flat = logits.reshape(logits.shape[0], -1).float()
        grid = round(flat.shape[1] ** (1 / 3))
        dist = shell_order(grid).to(flat.device)
        # rank by distance to the shell; the decoder's logits (squashed to < 1e-3 of a voxel) break ties
        score = -dist - 1e-3 * torch.sigmoid(-flat)
        k = min(self.k, flat.shape[1])
        keep = score.topk(k, dim=1).indices
        out = torch.full_like(flat, -1.0)
        out.scatter_(1, keep, 1.0)
        return out.reshape(logits.shape).to(logits.dtype)


class FeatureSize(torch.nn.Module):
    """DINOv2 whose stage-2 features are computed at ``size`` px and upsampled to the 64x64 grid (cheap presets)."""

    def __init__(self, dino: torch.nn.Module, size: int) -> None:
        super().__init__()
        self.dino, self.size = dino, size

    @property
    def config(self) -> Any:
        return getattr(self.dino, "config", None)

    def global_condition(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.dino.global_condition(*args, **kwargs)

    def multiview_features(self, views: torch.Tensor) -> torch.Tensor:
        f = self.dino.multiview_features(views, size=self.size)  # [V, g, g, C]
        up = torch.nn.functional.interpolate(f.permute(0, 3, 1, 2).float(), size=(64, 64), mode="nearest")
        return up.permute(0, 2, 3, 1).to(f.dtype)


def _recast_half_torso(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast the fp16 parameters of a mixed-precision (TRELLIS-style) model to ``dtype``; fp32 norms and I/O
    layers stay fp32 (the torso computes in the dtype of its Linear weights)."""
    for p in module.parameters():
        if p.dtype == torch.float16:
            p.data = p.data.to(dtype)


class RandomModels:
    """Components of a preset with random weights, built on first access (see the module docstring).

    ``dtypes``: constructor dtype per component (``None``: the official mixed dtypes); ``torso_dtype``: cast
    the fp16 torso of the mixed components to this dtype (e.g. bf16 on a CPU, whose fp16 matmuls are slow);
    ``on_build(name, module)``: called with each new module (benchmarks wrap its methods there).
    """

    COMPONENTS = COMPONENT_ORDER

    def __init__(self, preset: str, *, voxels: int | None = None, mv_size: int | None = None,
                 dtypes: dict[str, torch.dtype | None] | None = None, torso_dtype: torch.dtype | None = None,
                 device: torch.device | str = "cpu", on_build: Any = None) -> None:
        self.preset = preset
        self.cfgs = configs(preset)
        self.voxels = voxels if voxels is not None else DEFAULT_VOXELS[preset]
        self.mv_size = mv_size if mv_size is not None else DEFAULT_MV_SIZE[preset]
        self.dtypes = dict(dtypes or {})
        self.torso_dtype = torso_dtype
        self.device = torch.device(device)
        self.on_build = on_build
        self._modules: dict[str, torch.nn.Module] = {}
        self._skeletons: dict[str, torch.nn.Module] = {}  # meta-device builds for peek()
        self.build_seconds = 0.0
        self.builds: list[str] = []
        g = torch.Generator().manual_seed(3)
        self._prompts = torch.randn(10, 77, self.cfgs["cross_dim"], generator=g)

    # -- ModelSource (synchuman_core.model_source) ---------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in type(self).COMPONENTS:
            raise AttributeError(name)
        return self.get(name)

    @property
    def loaded(self) -> list[str]:
        return list(self._modules)

    def prompt_embeds(self) -> torch.Tensor:
        return self._prompts

    def peek(self, name: str) -> torch.nn.Module:
        """The built component, or a weightless meta-device build of it (config and dtypes only): the
        pipeline reads the joint model's view size in preprocessing and its dtype during conditioning, and
        building it there would hold 3-7 GB from the first stage on."""
        if name in self._modules:
            return self._modules[name]
        if name not in self._skeletons:
            from synchuman_core.io.loading import empty_weights
            from synchuman_core.io.registry import get_spec

            with empty_weights():
                skeleton = get_spec(name).build(self.cfgs[name], dtype=self.dtypes.get(name))
            if self.torso_dtype is not None and self.dtypes.get(name) is None:
                _recast_half_torso(skeleton, self.torso_dtype)
            self._skeletons[name] = skeleton
        return self._skeletons[name]

    def device_dtype(self, name: str) -> tuple[torch.device, torch.dtype]:
        from synchuman_core.model_source import module_device_dtype

        return self.device, module_device_dtype(self.peek(name))[1]

    def settings(self, name: str) -> dict[str, Any]:
        from synchuman_core.errors import ConfigError

        raise ConfigError(f"random benchmark models have no settings file {name!r} (official values apply)")

    def unload(self, name: str | None = None) -> None:
        if name is None:
            self._modules.clear()
        else:
            self._modules.pop(name, None)

    def get(self, name: str) -> torch.nn.Module:
        if name not in self._modules:
            t0 = time.perf_counter()
            self._modules[name] = self._build(name)
            self.build_seconds += time.perf_counter() - t0
            self.builds.append(name)
        return self._modules[name]

    # -- building ---------------------------------------------------------------------------------
    def _build(self, name: str) -> torch.nn.Module:
        from synchuman_core.io.registry import get_spec
        from synchuman_core.io.tiny import fill_tiny

        spec = get_spec(name)
        module = spec.build(self.cfgs[name], device="cpu", dtype=self.dtypes.get(name))
        spec.finish(module, torch.device("cpu"))
        module = fill_tiny(module, COMPONENT_ORDER.index(name)).eval()
        if self.torso_dtype is not None and self.dtypes.get(name) is None:
            _recast_half_torso(module, self.torso_dtype)
        if self.on_build is not None:
            self.on_build(name, module)
        if name == "structure_decoder":
            module = ShellOccupancy(module, self.voxels)
        elif name == "dinov2" and self.mv_size != 896:
            module = FeatureSize(module, self.mv_size)
        return module.to(self.device)

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for m in self._modules.values() for p in m.parameters())

    def __repr__(self) -> str:
        return f"RandomModels({self.preset!r}, voxels={self.voxels}, loaded={self.loaded})"


def person_rgba(h: int = 600, w: int = 320):
    """An RGBA cut-out (noise texture inside an upright ellipse, transparent outside) as a numpy array."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    alpha = (((yy - h / 2) / (0.47 * h)) ** 2 + ((xx - w / 2) / (0.4 * w)) ** 2 <= 1).to(torch.uint8) * 255
    rgb = (torch.rand(h, w, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    return torch.cat([rgb, alpha[..., None]], -1).numpy()
