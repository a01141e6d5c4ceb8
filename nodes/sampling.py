"""Sampling nodes: sampler settings, the joint 2D-3D sampler (stage 1), the structured-latent sampler."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import Types, io

from synchuman_core.errors import ConfigError
from synchuman_core.samplers import SAMPLERS, SamplerSettings, make_generator
from synchuman_core.samplers.guidance import GUIDANCE_FORMS

from . import comfy_bridge as bridge
from .inputs import chw_to_image
from .models import ModelBundle
from .types import CATEGORY, INPUT, MODELS, SAMPLER, SLAT, STRUCTURE, StructuredLatent

log = logging.getLogger(__name__)

SEED_MAX = 0xFFFFFFFFFFFFFFFF
CFG_BATCHING = ("batched", "sequential")
GRID = 64  # occupancy grid side


def settings_or_default(settings: SamplerSettings | None, default: SamplerSettings) -> SamplerSettings:
    if settings is None:
        return default
    if not isinstance(settings, SamplerSettings):
        raise ConfigError(
            f"the settings input must come from a SyncHuman Sampler Settings node, got {type(settings).__name__}"
        )
    return settings


def occupancy_voxel(coords: torch.Tensor, grid: int = GRID) -> torch.Tensor:
    """``[N, 4]`` (batch, x, y, z) voxels -> ``[1, D, H, W]`` occupancy for core ``VOXEL`` previews.

    Core ``VoxelToMesh`` reads ``data[d, h, w]`` as the point ``(w, h, d)`` of a y-up scene, so the grid is
    laid out ``data[grid-1-y, z, x]``: our z (up) becomes the viewer's up axis and the subject, which faces
    the front camera at -Y, faces the viewer (+Z), as in the GLB files we write.
    """
    out = torch.zeros(1, grid, grid, grid, dtype=torch.float32)
    c = coords.long().cpu()
    if c.numel():
        out[0, grid - 1 - c[:, 2], c[:, 3], c[:, 1]] = 1.0
    return out.to(bridge.intermediate_device())


class SyncHumanSamplerSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        d = SamplerSettings.stage1()
        return io.Schema(
            node_id="SyncHumanSamplerSettings",
            display_name="SyncHuman Sampler Settings",
            category=CATEGORY,
            description="Flow sampler, steps and guidance for either sampler. Defaults: the official stage-1 "
                        "values (Euler, 50 steps, CFG 3). Official stage 2: 25 steps, trellis CFG 5 on [0.5, 1]. "
                        "A sampler with nothing connected uses its stage's official values.",
            inputs=[
                io.Combo.Input("sampler", options=sorted(SAMPLERS), default=d.sampler,
                               tooltip="Flow integrator: euler (official, one model call per step) or heun "
                                       "(two calls per step, usually fine with fewer steps)."),
                io.Int.Input("steps", default=d.steps, min=1, max=500,
                             tooltip="Number of sampling steps (official: 50 in stage 1, 25 in stage 2)."),
                io.Float.Input("guidance", default=d.guidance, min=0.0, max=30.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance strength, read in the form below "
                                       "(standard: 1 = none; trellis: 0 = none)."),
                io.Combo.Input("guidance_form", options=list(GUIDANCE_FORMS), default=d.guidance_form,
                               tooltip="standard: u + g (c - u) (stage 1 official); trellis: (1 + g) c - g u "
                                       "(stage 2 official)."),
                io.Float.Input("interval_start", default=d.interval[0], min=0.0, max=1.0, step=0.01,
                               tooltip="Guidance is applied only while start <= t <= end (t: 1 = noise, 0 = "
                                       "data). Official stage 2: 0.5."),
                io.Float.Input("interval_end", default=d.interval[1], min=0.0, max=1.0, step=0.01,
                               tooltip="End of the guidance interval (official: 1.0)."),
                io.Float.Input("rescale_t", default=d.rescale_t, min=0.05, max=20.0, step=0.05,
                               tooltip="Time-schedule warp; larger spends more steps near the noise end "
                                       "(official: 3)."),
            ],
            outputs=[SAMPLER.Output(display_name="settings")],
        )

    @classmethod
    def execute(cls, sampler: str = "euler", steps: int = 50, guidance: float = 3.0, guidance_form: str = "standard",
                interval_start: float = 0.0, interval_end: float = 1.0, rescale_t: float = 3.0) -> io.NodeOutput:
        return io.NodeOutput(SamplerSettings(sampler=sampler, steps=steps, guidance=guidance,
                                             guidance_form=guidance_form, interval=(interval_start, interval_end),
                                             rescale_t=rescale_t))


class SyncHumanJointSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SyncHumanJointSampler",
            display_name="SyncHuman Joint 2D-3D Sampler",
            category=CATEGORY,
            description="Stage 1: samples five colour views, five normal views and the coarse 3D structure "
                        "together. The views are standard IMAGE batches (0 front, 1 right, 2 back mirrored, "
                        "3 left mirrored, 4 face); the structure is also a VOXEL for core 3D previews.",
            inputs=[
                MODELS.Input("models", tooltip="From SyncHuman Model Loader."),
                INPUT.Input("input", tooltip="From SyncHuman Preprocess."),
                io.Int.Input("seed", default=43, min=0, max=SEED_MAX, control_after_generate=True,
                             tooltip="Noise seed (official: 43). The same seed gives the same result on the same "
                                     "device."),
                io.Combo.Input("cfg_batching", options=list(CFG_BATCHING), default="batched",
                               tooltip="batched: conditional and unconditional passes in one batch (fastest). "
                                       "sequential: one after the other, about half the activation memory."),
                SAMPLER.Input("settings", optional=True,
                              tooltip="Sampler settings; not connected: the official stage-1 values (Euler, 50 "
                                      "steps, CFG 3)."),
            ],
            outputs=[
                io.Image.Output(display_name="color_views", tooltip="5 colour views [5, H, W, 3]; view 0 is the "
                                                                      "input photo (official)."),
                io.Image.Output(display_name="normal_views", tooltip="5 normal views [5, H, W, 3]."),
                STRUCTURE.Output(display_name="structure", tooltip="Occupied voxels and what stage 2 needs."),
                io.Voxel.Output(display_name="voxel", tooltip="64^3 occupancy for core VoxelToMesh previews."),
            ],
        )

    @classmethod
    def execute(cls, models: ModelBundle, input, seed: int = 43, cfg_batching: str = "batched",
                settings: SamplerSettings | None = None) -> io.NodeOutput:
        from synchuman_core.pipeline import decode_joint, fit_to_models, prepare_conditioning, sample_joint

        settings = settings_or_default(settings, SamplerSettings.stage1())
        hint = ("set the Model Loader's dtype to fp16 (or bf16), set cfg_batching to 'sequential', and close other "
                "models")
        with bridge.oom_hint("the joint 2D-3D sampler (stage 1)", hint):
            prepared = fit_to_models(models, input)
            size = prepared.mv_views.shape[-1]
            inputs = prepare_conditioning(models.load("conditioning", view_size=size), prepared,
                                          **models.stage_kwargs("conditioning"))
            tier = models.stage_kwargs("stage1")  # VAE slicing/tiling of the loader's tier; CFG batching from here
            models.load("stage1_sampling", "stage1_decode", view_size=size)
            latents = sample_joint(models, inputs, settings, make_generator(seed), bridge.step_callback(settings.steps),
                                   cfg_batching=cfg_batching)
            out = decode_joint(models, inputs, latents, decode_slice_size=tier["decode_slice_size"],
                               decode_tile_size=tier["decode_tile_size"], output_device=bridge.intermediate_device())
        return io.NodeOutput(chw_to_image(out.color_views), chw_to_image(out.normal_views), out,
                             Types.VOXEL(occupancy_voxel(out.coords)))


class SyncHumanStructuredLatentSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SyncHumanStructuredLatentSampler",
            display_name="SyncHuman Structured Latent Sampler",
            category=CATEGORY,
            description="Stage 2: samples the structured latent (8 features per occupied voxel) on the stage-1 "
                        "structure, conditioned on the input photo.",
            inputs=[
                MODELS.Input("models", tooltip="From SyncHuman Model Loader."),
                STRUCTURE.Input("structure", tooltip="From the Joint 2D-3D Sampler."),
                io.Int.Input("seed", default=43, min=0, max=SEED_MAX, control_after_generate=True,
                             tooltip="Noise seed of this stage (the official stage 2 is unseeded)."),
                io.Boolean.Input("offload_stage1", default=True,
                                 tooltip="Move the stage-1 models (joint model, VAE, CLIP, structure decoder) off "
                                         "the GPU before sampling, so stage 2 has their memory."),
                SAMPLER.Input("settings", optional=True,
                              tooltip="Sampler settings; not connected: the checkpoint's pipeline.json (official: "
                                      "Euler, 25 steps, trellis CFG 5 on [0.5, 1])."),
            ],
            outputs=[SLAT.Output(display_name="slat", tooltip="Structured latent on the stage-1 voxels.")],
        )

    @classmethod
    def execute(cls, models: ModelBundle, structure, seed: int = 43, offload_stage1: bool = True,
                settings: SamplerSettings | None = None) -> io.NodeOutput:
        from synchuman_core.errors import InputImageError
        from synchuman_core.pipeline import sample_structured_latent, stage2_defaults

        if structure.coords.shape[0] == 0:
            raise InputImageError(
                "stage 1 found no occupied voxels, so there is nothing to reconstruct; try another seed or check "
                "that the input shows a whole person on a transparent background"
            )
        if offload_stage1:
            models.unload()
        hint = "set the Model Loader's dtype to fp16 and keep offload_stage1 on"
        with bridge.oom_hint("the structured-latent sampler (stage 2)", hint):
            settings = settings_or_default(settings, stage2_defaults(models)[0])
            slat = sample_structured_latent(models.load("stage2_slat"), structure, settings, make_generator(seed),
                                            bridge.step_callback(settings.steps))
        return io.NodeOutput(StructuredLatent(slat=slat.to(bridge.intermediate_device()), structure=structure))
