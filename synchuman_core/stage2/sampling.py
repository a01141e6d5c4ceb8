"""Stage-2 structured-latent (SLat) sampler (docs/ARCHITECTURE.md §1.2 step 4, §5.2).

Samples ``[N, 8]`` features on the given occupied voxels with the SLat flow model, then de-normalises
them with the TRELLIS-image-large statistics. The official sampler is TRELLIS's
``FlowEulerGuidanceIntervalSampler`` (25 Euler steps, rescale 3, TRELLIS-form CFG 5 while
``0.5 <= t <= 1``); :meth:`SamplerSettings.stage2` holds those values.

Model contract (helper B's ``SLatFlowModel``): ``model(x: SparseTensor, t: [B] float32 (1000 t),
cond: [B, L, C]) -> SparseTensor`` on the same voxels. With guidance the model is called twice per
step, conditional first, then with the negative conditioning (zeros), as TRELLIS does.

Differences from the official code: the noise comes from an explicit generator (the official draws
from the unseeded global CPU RNG), and NaN/Inf raises :class:`NumericalError` after the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError, NumericalError
from ..samplers import Callback, SamplerSettings, randn
from ..sparse.tensor import SparseTensor

__all__ = ["SLAT_MEAN", "SLAT_STD", "SlatNormalization", "sample_slat"]

# TRELLIS-image-large SLat statistics, identical in ckpts/SecondStage/pipeline.json (§5.2).
SLAT_MEAN = (
    -2.1687545776367188, -0.004347046371549368, -0.13352349400520325, -0.08418072760105133,
    -0.5271206498146057, 0.7238689064979553, -1.1414450407028198, 1.2039363384246826,
)  # fmt: skip
SLAT_STD = (
    2.377650737762451, 2.386378288269043, 2.124418020248413, 2.1748552322387695,
    2.663944721221924, 2.371192216873169, 2.6217446327209473, 2.684523105621338,
)  # fmt: skip


@dataclass(frozen=True)
class SlatNormalization:
    """Per-channel ``mean``/``std`` of the SLat latent space: ``slat = x * std + mean``."""

    mean: tuple[float, ...] = SLAT_MEAN
    std: tuple[float, ...] = SLAT_STD

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ConfigError(f"slat normalization: {len(self.mean)} means for {len(self.std)} stds")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @classmethod
    def from_pipeline_json(cls, pipeline: Mapping[str, Any]) -> SlatNormalization:
        """Read ``args.slat_normalization`` from the contents of ``ckpts/SecondStage/pipeline.json``."""
        args = pipeline.get("args", pipeline)
        norm = args.get("slat_normalization")
        if not isinstance(norm, Mapping) or set(norm) != {"mean", "std"}:
            raise ConfigError("pipeline.json has no args.slat_normalization {mean, std}; is this ckpts/SecondStage/pipeline.json?")
        return cls(tuple(norm["mean"]), tuple(norm["std"]))

    def denormalize(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats [N, C] * std + mean`` (in the dtype of ``feats``)."""
        if feats.shape[-1] != len(self.mean):
            raise ConfigError(f"slat has {feats.shape[-1]} channels, the normalization {len(self.mean)}")
        std = torch.tensor(self.std, dtype=feats.dtype, device=feats.device)
        mean = torch.tensor(self.mean, dtype=feats.dtype, device=feats.device)
        return feats * std + mean


def _batch_size(coords: torch.Tensor) -> int:
    return int(coords[:, 0].max()) + 1 if coords.shape[0] else 1


@torch.no_grad()
def sample_slat(
    model: Callable[[SparseTensor, torch.Tensor, torch.Tensor], SparseTensor],
    coords: torch.Tensor,
    cond: torch.Tensor,
    settings: SamplerSettings | None = None,
    generator: torch.Generator | None = None,
    *,
    neg_cond: torch.Tensor | None = None,
    normalization: SlatNormalization | None = None,
    callback: Callback | None = None,
    noise: torch.Tensor | None = None,
    in_channels: int = 8,
    device: torch.device | str | None = None,
    check_finite: bool = True,
) -> SparseTensor:
    """Sample the structured latent on ``coords``.

    Args:
        model: SLat flow model (contract in the module docstring).
        coords: ``[N, 4]`` int (batch, x, y, z) occupied voxels of the 64³ grid, batch-sorted.
        cond: ``[1, L, C]`` or ``[B, L, C]`` DINOv2 tokens; a batch of one is repeated to ``B``.
        settings: default :meth:`SamplerSettings.stage2`.
        generator: CPU generator for the ``[N, in_channels]`` noise.
        neg_cond: unconditional tokens (default zeros, as official).
        normalization: default: the official TRELLIS statistics.
        callback: ``callback(step, total, feats [N, C])`` after every step (normalised features);
            may raise to interrupt.
        noise: ``[N, in_channels]`` start features instead of drawing from ``generator``.
        device: default: ``coords.device``.
        check_finite: raise :class:`NumericalError` on NaN/Inf (one host sync after the loop).

    Returns: the de-normalised SLat as a ``SparseTensor`` (float32) on ``coords``.
    """
    settings = settings or SamplerSettings.stage2()
    normalization = normalization or SlatNormalization()
    device = torch.device(device) if device is not None else coords.device
    coords = coords.to(device=device, dtype=torch.int32)
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ConfigError(f"coords must be [N, 4] (batch, x, y, z), got {tuple(coords.shape)}")
    n = coords.shape[0]
    if noise is not None:
        if tuple(noise.shape) != (n, in_channels):
            raise ConfigError(f"noise must be [{n}, {in_channels}], got {list(noise.shape)}")
        feats = noise.to(device=device, dtype=torch.float32)
    else:
        if generator is None:
            raise ConfigError("sample_slat needs a torch.Generator (or explicit noise) for reproducible results")
        feats = randn((n, in_channels), generator, device=device, dtype=torch.float32)

    # everything per-call is prepared before the loop (one host sync here, none inside it)
    b = _batch_size(coords)
    template = SparseTensor(feats, coords, batch_size=b)
    cond = cond.to(device)
    if cond.shape[0] == 1 and b > 1:
        cond = cond.repeat(b, *([1] * (cond.ndim - 1)))
    neg = torch.zeros_like(cond) if neg_cond is None else neg_cond.to(device).expand_as(cond).contiguous()
    t_seq = settings.schedule()
    timesteps = torch.tensor([[1000.0 * t] * b for t in t_seq], dtype=torch.float32, device=device)  # [S+1, B]
    guidance = settings.make_guidance()

    def predict(x: torch.Tensor, k: int, c: torch.Tensor) -> torch.Tensor:
        return model(template.replace(x), timesteps[k], c).feats

    def velocity(x: torch.Tensor, t: float, k: int) -> torch.Tensor:
        v = predict(x, k, cond)
        if guidance.needs_uncond(t):
            return guidance.combine(v, predict(x, k, neg))
        return v

    feats = settings.make_sampler().sample(velocity, feats, t_seq, callback)
    if check_finite and not bool(torch.isfinite(feats).all()):
        raise NumericalError("stage-2 SLat sampling produced NaN/Inf; check the weights and the conditioning dtype")
    return template.replace(normalization.denormalize(feats))

