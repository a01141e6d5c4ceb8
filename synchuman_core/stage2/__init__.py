"""Stage 2: structured-latent flow, multiview feature injection, mesh and Gaussian decoders."""

from .slat_flow import SLatFlowConfig, SLatFlowModel, SparseResBlock3d

__all__ = ["SLatFlowConfig", "SLatFlowModel", "SparseResBlock3d"]
