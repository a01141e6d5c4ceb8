"""Stand-in of ``comfy_api.latest._util``: the geometry containers core 3D nodes exchange."""

from __future__ import annotations

import torch


class VOXEL:
    """``data``: ``[B, D, H, W]`` float grid (core ``VoxelToMesh`` thresholds it)."""

    def __init__(self, data: torch.Tensor):
        self.data = data


class MESH:
    """``vertices`` float ``[B, N, 3]``, ``faces`` int64 ``[B, M, 3]``; nothing else."""

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor):
        self.vertices = vertices
        self.faces = faces


__all__ = ["MESH", "VOXEL"]
