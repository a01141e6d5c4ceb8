"""Wire types of the node pack and the payloads they carry between nodes.

A wire is a ``io.Custom("SYNCHUMAN_...")`` type string: ComfyUI only links outputs to inputs of the same
string, so a wrong connection is refused by the editor and by prompt validation. Payloads are plain
objects from ``synchuman_core`` where one exists (``SamplerSettings``, ``PreparedInput``, ``Stage1Output``,
``SparseTensor``, ``Gaussians``) and small dataclasses here otherwise. Standard ComfyUI types are used
wherever a core node can consume the data: views are ``IMAGE`` batches, the structure is also a ``VOXEL``
and the mesh also a ``MESH``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from comfy_api.latest import io

MODELS = io.Custom("SYNCHUMAN_MODELS")  # nodes.models.ModelBundle
INPUT = io.Custom("SYNCHUMAN_INPUT")  # synchuman_core.preprocess.PreparedInput
SAMPLER = io.Custom("SYNCHUMAN_SAMPLER")  # synchuman_core.samplers.SamplerSettings
STRUCTURE = io.Custom("SYNCHUMAN_STRUCTURE")  # synchuman_core.pipeline.Stage1Output
SLAT = io.Custom("SYNCHUMAN_SLAT")  # StructuredLatent
FEATURES = io.Custom("SYNCHUMAN_FEATURES")  # InjectedFeatures
MESH = io.Custom("SYNCHUMAN_MESH")  # DecodedMesh
GAUSSIANS = io.Custom("SYNCHUMAN_GAUSSIANS")  # synchuman_core.stage2.gaussians.Gaussians

CATEGORY = "SyncHuman"

#: The documented view order of every view batch (IMAGE ``[B, H, W, 3]``).
VIEW_ORDER_HELP = (
    "Views in this order: 0 front, 1 right, 2 back (mirrored left-right, as stage 1 generates it), "
    "3 left (mirrored), 4 face close-up (optional)"
)


@dataclass
class StructuredLatent:
    """``SYNCHUMAN_SLAT``: the sampled structured latent and the stage-1 result it was sampled on.

    ``slat``: ``SparseTensor [N, 8]`` on the occupied voxels; ``structure``: the ``Stage1Output`` (voxels,
    views, DINOv2 crop), kept so that the injector can default to its views.
    """

    slat: Any
    structure: Any


@dataclass
class InjectedFeatures:
    """``SYNCHUMAN_FEATURES``: the structured latent plus the multiview DINOv2 features the decoders read.

    ``mv_color`` / ``mv_normal``: ``[1, 4, 64, 64, C]`` feature maps of the four body views;
    ``color_views`` / ``normal_views``: the views they came from, ``[V, 3, H, W]`` in [0, 1], V = 4 or 5
    (with the face close-up), views 2/3 mirrored as generated; the exporter bakes the texture from them.
    """

    slat: Any
    mv_color: torch.Tensor
    mv_normal: torch.Tensor
    color_views: torch.Tensor
    normal_views: torch.Tensor


@dataclass
class DecodedMesh:
    """``SYNCHUMAN_MESH``: the decoder's mesh (z up, unit cube) with its vertex colours and the views to bake.

    ``vertices [V, 3]`` float32, ``faces [F, 3]`` int64, ``vertex_colors [V, 3]`` in [0, 1] or None;
    ``color_views`` / ``normal_views`` as in :class:`InjectedFeatures`.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    vertex_colors: torch.Tensor | None
    color_views: torch.Tensor | None
    normal_views: torch.Tensor | None
