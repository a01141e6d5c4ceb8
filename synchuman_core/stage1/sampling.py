"""Stage-1 joint 2D-3D sampler (docs/ARCHITECTURE.md §1.1 steps 7-10, §5.1).

One flow integrates two states together: the multiview latents ``[2V, 4, h, w]`` (V = 5 views,
normal views first, then colour views) and the sparse-structure latent ``[1, 8, 16, 16, 16]``. Every
step evaluates the joint model once (or twice, see ``cfg_batching``) and applies classifier-free
guidance to both branches.

Model contract (the official forward, helper C's ``SyncHumanJointModel``)::

    v2d, v3d = model(sample, timestep, encoder_hidden_states=..., class_labels=...,
                     trellis_x=..., trellis_t=..., trellis_cond=...)

with, for a batch of G CFG groups (G = 2 with guidance, 1 without):
``sample [G*2V, 8, h, w]`` (noisy latents ⊕ image latents), ``timestep`` a 0-d tensor ``1000 t``
(float64 as the official python float; float32 on MPS), ``encoder_hidden_states [G*2V, 77, D]``,
``class_labels [G*2V, E]``, ``trellis_x [G, 8, 16, 16, 16]`` (float32), ``trellis_t [1]`` ``1000 t`` in the
model dtype (fp16 quantisation in fp16 runs, as official; see :func:`trellis_t_dtype`), ``trellis_cond [G, L, C]``
-> ``v2d [G*2V, 4, h, w]``, ``v3d [G, 8, 16, 16, 16]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ..errors import ConfigError, NumericalError
from ..samplers import Callback, SamplerSettings, randn

__all__ = [
    "CFG_BATCHINGS",
    "JointInputs",
    "JointLatents",
    "Stage1Conditioning",
    "cfg_inputs",
    "cond_inputs",
    "duplicate_for_cfg",
    "per_call_checks_deferred",
    "sample_joint",
    "split_cfg_2d",
    "split_cfg_3d",
    "timestep_dtype",
    "trellis_t_dtype",
    "uncond_inputs",
]

CFG_BATCHINGS = ("batched", "sequential")
STRUCTURE_LATENT_SHAPE = (8, 16, 16, 16)  # [C, X, Y, Z] of the sparse-structure latent


@dataclass
class Stage1Conditioning:
    """Everything the joint model is conditioned on (no CFG duplication yet).

    Attributes:
        prompt_embeds: ``[2V, 77, D]`` fixed view prompts, normal views then colour views.
        image_embeds: ``[2V, E]`` CLIP ``image_embeds`` ⊕ noise-level embedding (E = 2048 officially).
        image_latents: ``[2V, 4, h, w]`` VAE latents (×scaling factor) of the conditioning images.
        structure_cond: ``[1, L, C]`` normalised DINOv2 tokens of the input image (3D branch).
    """

    prompt_embeds: torch.Tensor
    image_embeds: torch.Tensor
    image_latents: torch.Tensor
    structure_cond: torch.Tensor

    def __post_init__(self) -> None:
        n = self.prompt_embeds.shape[0]
        if n % 2 or n < 2:
            raise ConfigError(f"prompt_embeds must hold normal and colour views ([2V, T, D]), got {tuple(self.prompt_embeds.shape)}")
        if self.image_embeds.ndim != 2 or self.image_embeds.shape[0] != n:
            raise ConfigError(f"image_embeds must be [{n}, E], got {tuple(self.image_embeds.shape)}")
        if self.image_latents.ndim != 4 or self.image_latents.shape[0] != n:
            raise ConfigError(f"image_latents must be [{n}, C, h, w], got {tuple(self.image_latents.shape)}")
        if self.structure_cond.ndim != 3 or self.structure_cond.shape[0] != 1:
            raise ConfigError(f"structure_cond must be [1, L, C], got {tuple(self.structure_cond.shape)}")

    @property
    def num_views(self) -> int:
        return self.prompt_embeds.shape[0] // 2

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Stage1Conditioning:
        return Stage1Conditioning(*(t.to(device=device, dtype=dtype) for t in
                                    (self.prompt_embeds, self.image_embeds, self.image_latents, self.structure_cond)))


@dataclass
class JointInputs:
    """The sample-independent inputs of one joint-model call (one or two CFG groups)."""

    encoder_hidden_states: torch.Tensor  # [G*2V, 77, D]
    class_labels: torch.Tensor  # [G*2V, E]
    image_latents: torch.Tensor  # [G*2V, 4, h, w]
    trellis_cond: torch.Tensor  # [G, L, C]


@dataclass
class JointLatents:
    """Result of the joint sampler."""

    latents: torch.Tensor  # [2V, 4, h, w] normal views then colour views, model dtype
    structure_latent: torch.Tensor  # [1, 8, 16, 16, 16] float32


# ---------------------------------------------------------------------------------------------------
# CFG batch layout (FIXTURES §5.4): groups [n_uncond, n_cond, c_uncond, c_cond], trellis [neg, cond]
# ---------------------------------------------------------------------------------------------------


def duplicate_for_cfg(x: torch.Tensor) -> torch.Tensor:
    """``[n(V), c(V)] -> [n, n, c, c]``: the official CFG layout of per-view tensors (the uncond and
    cond copies of each domain sit next to each other, normal domain first)."""
    n, c = x.chunk(2)
    return torch.cat([n, n, c, c])


def cfg_inputs(cond: Stage1Conditioning) -> JointInputs:
    """Inputs of the batched CFG call (4 groups of V views, 2 trellis items).

    Uncond = zero image embeddings (both the CLIP and the noise-level halves), zero image latents,
    the *same* prompts, and zero DINO tokens for the 3D branch.
    """
    pn, pc = cond.prompt_embeds.chunk(2)
    en, ec = cond.image_embeds.chunk(2)
    ln, lc = cond.image_latents.chunk(2)
    return JointInputs(
        encoder_hidden_states=torch.cat([pn, pn, pc, pc]),
        class_labels=torch.cat([torch.zeros_like(en), en, torch.zeros_like(ec), ec]),
        image_latents=torch.cat([torch.zeros_like(ln), ln, torch.zeros_like(lc), lc]),
        trellis_cond=torch.cat([torch.zeros_like(cond.structure_cond), cond.structure_cond]),
    )


def cond_inputs(cond: Stage1Conditioning) -> JointInputs:
    """Inputs of a conditional-only call (groups ``[n_cond, c_cond]``, trellis ``[cond]``)."""
    return JointInputs(cond.prompt_embeds, cond.image_embeds, cond.image_latents, cond.structure_cond)


def uncond_inputs(cond: Stage1Conditioning) -> JointInputs:
    """Inputs of an unconditional-only call (groups ``[n_uncond, c_uncond]``, trellis ``[neg]``)."""
    return JointInputs(
        cond.prompt_embeds,
        torch.zeros_like(cond.image_embeds),
        torch.zeros_like(cond.image_latents),
        torch.zeros_like(cond.structure_cond),
    )


def split_cfg_2d(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n_u, n_c, c_u, c_c] -> (cond [n_c, c_c], uncond [n_u, c_u])``."""
    nu, nc, cu, cc = v.chunk(4)
    return torch.cat([nc, cc]), torch.cat([nu, cu])


def split_cfg_3d(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[neg, cond] -> (cond, uncond)``."""
    vu, vc = v.chunk(2)
    return vc, vu


# ---------------------------------------------------------------------------------------------------


def _model_dtype_device(model: Callable, cond: Stage1Conditioning) -> tuple[torch.dtype, torch.device]:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype, p.device
    return cond.image_latents.dtype, cond.image_latents.device


def timestep_dtype(device: torch.device) -> torch.dtype:
    """dtype of the 2D timestep ``1000 t``: float64 like the official python float (which diffusers
    turns into a float64 tensor), float32 where the device has no float64 (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def trellis_t_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the 3D timestep ``trellis_t``: the official pipeline builds it in the pipeline dtype, so
    fp16 runs quantise ``1000 t`` to fp16 (993.24 -> 993.0; kept, the weights were used that way) and
    fp32 runs do not. bf16 (no official counterpart) would quantise far more coarsely, so it gets fp32."""
    return torch.float16 if dtype == torch.float16 else torch.float32


@contextlib.contextmanager
def per_call_checks_deferred(model: Callable) -> Iterator[None]:
    """Switch off a model's own per-call NaN/Inf check (``model.check_finite``, one host sync per
    call in :class:`~.joint.SyncHumanJointModel`) for the duration of a sampling loop; the sampler
    checks its result once after the loop instead (NaN/Inf propagate through the Euler updates)."""
    prev = getattr(model, "check_finite", None)
    if not isinstance(prev, bool):
        yield
        return
    model.check_finite = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        model.check_finite = prev  # type: ignore[attr-defined]


@torch.no_grad()
def sample_joint(
    model: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    cond: Stage1Conditioning,
    settings: SamplerSettings | None = None,
    generator: torch.Generator | None = None,
    *,
    callback: Callback | None = None,
    noise: tuple[torch.Tensor, torch.Tensor] | None = None,
    cfg_batching: str = "batched",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    check_finite: bool = True,
) -> JointLatents:
    """Sample the multiview latents and the structure latent jointly.

    Args:
        model: the joint model (contract in the module docstring).
        cond: conditioning (:class:`Stage1Conditioning`), without CFG duplication.
        settings: defaults to :meth:`SamplerSettings.stage1` (Euler, 50 steps, standard CFG 3, rescale 3).
        generator: CPU generator for the initial noise. The 3D noise ``[1, 8, 16, 16, 16]`` is drawn
            first (so seed 43 gives the official stage-1 3D noise), then the 2D noise ``[2V, 4, h, w]``.
        callback: ``callback(step, total, (latents, structure_latent))`` after every step; may raise
            to interrupt.
        noise: ``(latents0, structure0)`` to start from instead of drawing from ``generator``.
        cfg_batching: ``"batched"`` = one call per step on the official 4-group / 2-item CFG batch;
            ``"sequential"`` = two calls per step (conditional, then unconditional half), same math,
            about half the activation memory (the model must accept 2 groups / 1 trellis item, which
            also happens outside the guidance interval and when guidance is off).
        dtype: compute dtype of the 2D latents and the conditioning (default: the model's parameter
            dtype); ``trellis_t`` follows :func:`trellis_t_dtype`. The 3D latent stays float32 as in the
            official pipeline.
        device: default: the model's parameter device.
        check_finite: raise :class:`NumericalError` if the result holds NaN/Inf (one host sync
            after the loop; the loop itself never syncs: the joint model's own per-call check is
            deferred to this one, see :func:`per_call_checks_deferred`).

    Returns: :class:`JointLatents`.
    """
    settings = settings or SamplerSettings.stage1()
    if cfg_batching not in CFG_BATCHINGS:
        raise ConfigError(f"cfg_batching must be one of {CFG_BATCHINGS}, got {cfg_batching!r}")
    m_dtype, m_device = _model_dtype_device(model, cond)
    dtype = dtype or m_dtype
    device = torch.device(device) if device is not None else m_device
    cond = cond.to(device=device, dtype=dtype)
    n2, lat_c, h, w = cond.image_latents.shape

    # initial noise: 3D first (the official first CPU draw after manual_seed), then 2D
    if noise is not None:
        lat0, z0 = noise
        if tuple(lat0.shape) != (n2, lat_c, h, w) or tuple(z0.shape) != (1, *STRUCTURE_LATENT_SHAPE):
            raise ConfigError(
                f"noise must be ([{n2}, {lat_c}, {h}, {w}], [1, 8, 16, 16, 16]), "
                f"got ({list(lat0.shape)}, {list(z0.shape)})"
            )
        z = z0.to(device=device, dtype=torch.float32)
        latents = lat0.to(device=device, dtype=dtype)
    else:
        if generator is None:
            raise ConfigError("sample_joint needs a torch.Generator (or explicit noise) for reproducible results")
        z = randn((1, *STRUCTURE_LATENT_SHAPE), generator, device=device, dtype=torch.float32)
        latents = randn((n2, lat_c, h, w), generator, device=device, dtype=dtype)

    t_seq = settings.schedule()
    guidance = settings.make_guidance()
    # per-time model inputs, built once before the loop (no host->device copies inside it)
    timesteps = torch.tensor([1000.0 * t for t in t_seq], dtype=timestep_dtype(device), device=device)
    trellis_ts = torch.tensor([1000.0 * t for t in t_seq], dtype=trellis_t_dtype(dtype), device=device)
    full = cfg_inputs(cond) if cfg_batching == "batched" else None
    cond_in = cond_inputs(cond)
    uncond_in = uncond_inputs(cond)

    def call(lat: torch.Tensor, z3d: torch.Tensor, k: int, inp: JointInputs) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(
            torch.cat([lat, inp.image_latents], dim=1),
            timesteps[k],
            encoder_hidden_states=inp.encoder_hidden_states,
            class_labels=inp.class_labels,
            trellis_x=z3d,
            trellis_t=trellis_ts[k : k + 1],
            trellis_cond=inp.trellis_cond,
        )
        return out[0], out[1]

    def velocity(state: tuple[torch.Tensor, ...], t: float, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        lat, z3d = state
        if not guidance.needs_uncond(t):
            return call(lat, z3d, k, cond_in)
        if full is not None:
            v2d, v3d = call(duplicate_for_cfg(lat), torch.cat([z3d, z3d]), k, full)
            (c2, u2), (c3, u3) = split_cfg_2d(v2d), split_cfg_3d(v3d)
        else:
            c2, c3 = call(lat, z3d, k, cond_in)
            u2, u3 = call(lat, z3d, k, uncond_in)
        return guidance.combine(c2, u2), guidance.combine(c3, u3)

    with per_call_checks_deferred(model):
        latents, z = settings.make_sampler().sample(velocity, (latents, z), t_seq, callback)
    if check_finite and not (bool(torch.isfinite(latents).all()) and bool(torch.isfinite(z).all())):
        raise NumericalError(
            "stage-1 sampling produced NaN/Inf; with float16 try bfloat16 or float32, and check the weights"
        )
    return JointLatents(latents=latents, structure_latent=z)

