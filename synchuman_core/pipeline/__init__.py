"""The one orchestrator: the SyncHuman chain as public stage functions with typed stage outputs (tensors in
memory), shaped like TRELLIS's ``TrellisImageTo3DPipeline`` (``sample_sparse_structure``, ``sample_slat``,
``decode_slat`` composed by ``run``). The ComfyUI nodes call the stage functions one by one; the CLI, the
batch runner and the benchmarks call the compositions; so every speed and precision choice (attention backend,
dtype plan, residency, host-sync policy) is the same everywhere.

::

    pre  = preprocess(models, image, mask)                       # framed for these models  (stage1.py)
    inp  = prepare_conditioning(models, pre)                     # CLIP, VAE, DINOv2, view prompts
    lat  = sample_joint(models, inp, settings1, generator)       # joint 2D-3D sampling (stage 1)
    out1 = decode_joint(models, inp, lat)                        # views + official post-edits, voxels
    slat = sample_structured_latent(models, out1, settings2, generator)   #                (stage2.py)
    mvc  = multiview_features(models, out1.color_views)          # DINOv2 features of the 4 body views
    mvn  = multiview_features(models, out1.normal_views)
    mesh = decode_mesh(models, slat, mvc, mvn); gs = decode_gaussians(models, slat, mvc, mvn)
    v, f, c = mesh_arrays(mesh)                                  #                          (export.py)
    export_reconstruction(v, f, vertex_colors=c, color_views=out1.color_views, normal_views=out1.normal_views,
                          settings=export_settings("glb"), output_dir=..., filename=...)

    run_stage1 = sample_joint + decode_joint; run_stage2 = sample_structured_latent + features + decoders
    reconstruct(models_or_tier_run, image, seed=43)              # both stages           (run.py)
    reconstruct_to_files(tier_run, image, mask, "out.glb", seed=43)   # + export: CLI and batch runner

``models`` is a :class:`~synchuman_core.model_source.ModelSource` (``SyncHumanModels``, a memory tier's
``ManagedModels``, the ComfyUI ``ModelBundle``). Each component is fetched (``models.get``) right before it
runs, so a residency policy can keep one model at a time on the GPU; ``on_stage_done(event)`` is called with
"conditioning", "stage1" and "stage2" (:data:`STAGE_EVENTS`).
"""

from .data import (
    BODY_VIEWS,
    NUM_VIEWS,
    STAGE_EVENTS,
    Reconstruction,
    Stage1Inputs,
    Stage1Output,
    Stage2Output,
    component_attention,
    face_region,
    paste_face_normal,
    replace_front_color,
    split_views,
)
from .export import export_reconstruction, export_settings, mesh_arrays
from .run import reconstruct, reconstruct_to_files
from .stage1 import (
    decode_joint,
    fit_to_models,
    multiview_size,
    prepare_conditioning,
    preprocess,
    run_stage1,
    sample_joint,
    view_prompt_embeds,
)
from .stage2 import (
    decode_gaussians,
    decode_mesh,
    multiview_features,
    run_stage2,
    sample_structured_latent,
    stage2_defaults,
)

__all__ = [
    "BODY_VIEWS",
    "NUM_VIEWS",
    "STAGE_EVENTS",
    "Reconstruction",
    "Stage1Inputs",
    "Stage1Output",
    "Stage2Output",
    "component_attention",
    "decode_gaussians",
    "decode_joint",
    "decode_mesh",
    "export_reconstruction",
    "export_settings",
    "face_region",
    "fit_to_models",
    "mesh_arrays",
    "multiview_features",
    "multiview_size",
    "paste_face_normal",
    "prepare_conditioning",
    "preprocess",
    "reconstruct",
    "reconstruct_to_files",
    "replace_front_color",
    "run_stage1",
    "run_stage2",
    "sample_joint",
    "sample_structured_latent",
    "split_views",
    "stage2_defaults",
    "view_prompt_embeds",
]
