"""Sparse voxel tensors and the sparse layers of the stage-2 models, in plain PyTorch (no spconv).

Parameter names and layouts follow TRELLIS / spconv so official checkpoints load strictly:
``SparseLinear`` (``weight``, ``bias``), ``SparseConv3d`` (``conv.weight [out, kx, ky, kz, in]``,
``conv.bias``), norms as ``nn.GroupNorm`` / ``nn.LayerNorm``, attention as TRELLIS
``SparseMultiHeadAttention``.

For TRELLIS ``use_fp16`` conversion, pass :data:`FP16_SPARSE_MODULE_TYPES` as the extra module types
(``SparseLinear`` is an ``nn.Linear`` and is already covered).
"""

from .attention import (
    SparseMultiHeadAttention,
    WindowPartition,
    sparse_cross_attention,
    sparse_self_attention,
    sparse_windowed_self_attention,
    window_partition,
)
from .conv import (
    NeighbourMap,
    SparseConv3d,
    SubMConv3dKernel,
    dense_equivalent_weight,
    neighbour_map,
    spconv_1x1_matrix,
    submanifold_conv3d,
)
from .nn import (
    SparseGELU,
    SparseGroupNorm,
    SparseGroupNorm32,
    SparseLayerNorm,
    SparseLayerNorm32,
    SparseLinear,
    SparseReLU,
    SparseSiLU,
)
from .spatial import SparseDownsample, SparseSubdivide, SparseUpsample, trellis_mean_pool
from .tensor import SparseTensor, sparse_batch_broadcast, sparse_cat
from .transformer import (
    ModulatedSparseTransformerCrossBlock,
    SparseFeedForwardNet,
    SparseTransformerBlock,
    sparse_modulate,
)

# Modules whose own parameters TRELLIS's convert_to_fp16 turns to half, beyond nn.Linear / nn.Conv*.
FP16_SPARSE_MODULE_TYPES = (SubMConv3dKernel,)

__all__ = [
    "FP16_SPARSE_MODULE_TYPES",
    "ModulatedSparseTransformerCrossBlock",
    "NeighbourMap",
    "SparseConv3d",
    "SparseDownsample",
    "SparseFeedForwardNet",
    "SparseGELU",
    "SparseGroupNorm",
    "SparseGroupNorm32",
    "SparseLayerNorm",
    "SparseLayerNorm32",
    "SparseLinear",
    "SparseMultiHeadAttention",
    "SparseReLU",
    "SparseSiLU",
    "SparseSubdivide",
    "SparseTensor",
    "SparseTransformerBlock",
    "SparseUpsample",
    "SubMConv3dKernel",
    "WindowPartition",
    "dense_equivalent_weight",
    "neighbour_map",
    "sparse_batch_broadcast",
    "sparse_cat",
    "sparse_cross_attention",
    "sparse_modulate",
    "sparse_self_attention",
    "sparse_windowed_self_attention",
    "spconv_1x1_matrix",
    "submanifold_conv3d",
    "trellis_mean_pool",
    "window_partition",
]
