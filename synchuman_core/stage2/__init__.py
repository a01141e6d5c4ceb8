"""Stage 2: structured-latent flow, multiview feature injection, mesh and Gaussian decoders."""

from .decoders import (
    SLatGaussianDecoder,
    SLatGaussianDecoderConfig,
    SLatMeshDecoder,
    SLatMeshDecoderConfig,
)
from .gaussians import Gaussians, load_gaussians_ply, save_gaussians_ply
from .mv_features import condition_mv
from .slat_flow import SLatFlowConfig, SLatFlowModel, SparseResBlock3d

__all__ = [
    "Gaussians",
    "SLatFlowConfig",
    "SLatFlowModel",
    "SLatGaussianDecoder",
    "SLatGaussianDecoderConfig",
    "SLatMeshDecoder",
    "SLatMeshDecoderConfig",
    "SparseResBlock3d",
    "condition_mv",
    "load_gaussians_ply",
    "save_gaussians_ply",
]
