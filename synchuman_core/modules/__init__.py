"""Dense building blocks shared by every model (one copy each, TRELLIS parameter names)."""

from .attention import MultiHeadAttention
from .embedders import AbsolutePositionEmbedder, TimestepEmbedder, sincos_position_embedding, timestep_embedding
from .norms import ChannelLayerNorm32, GroupNorm32, LayerNorm32, MultiHeadRMSNorm
from .spatial import grid_to_tokens, patchify3d, pixel_shuffle_3d, tokens_to_grid, unpatchify3d
from .transformer import FeedForwardNet, ModulatedTransformerCrossBlock, modulate
from .utils import FP16_MODULE_TYPES, convert_to_fp16, first_param_dtype

__all__ = [
    "AbsolutePositionEmbedder",
    "ChannelLayerNorm32",
    "FP16_MODULE_TYPES",
    "FeedForwardNet",
    "GroupNorm32",
    "LayerNorm32",
    "ModulatedTransformerCrossBlock",
    "MultiHeadAttention",
    "MultiHeadRMSNorm",
    "TimestepEmbedder",
    "convert_to_fp16",
    "first_param_dtype",
    "grid_to_tokens",
    "modulate",
    "patchify3d",
    "pixel_shuffle_3d",
    "sincos_position_embedding",
    "timestep_embedding",
    "tokens_to_grid",
    "unpatchify3d",
]
