"""Stage 1: the joint 2D-3D diffusion model, its 3D flow branch and the occupancy decoder."""

from .structure_decoder import SparseStructureDecoder, SparseStructureDecoderConfig, occupancy_coords
from .structure_flow import (
    SparseStructureFlowConfig,
    SparseStructureFlowModel,
    StructureFlowLayers,
    structure_pos_emb,
)

__all__ = [
    "SparseStructureDecoder",
    "SparseStructureDecoderConfig",
    "SparseStructureFlowConfig",
    "SparseStructureFlowModel",
    "StructureFlowLayers",
    "occupancy_coords",
    "structure_pos_emb",
]
