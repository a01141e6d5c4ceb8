"""Stand-in for ``comfy_api.latest`` (ComfyUI 0.8.0), enough for V3 node packs in tests."""

from __future__ import annotations

from abc import ABC, abstractmethod

from . import _io as io

IO = io


class MESH:
    def __init__(self, vertices, faces):
        self.vertices = vertices
        self.faces = faces


class VOXEL:
    def __init__(self, data):
        self.data = data


class Types:
    MESH = MESH
    VOXEL = VOXEL


class ComfyExtension(ABC):
    async def on_load(self) -> None:  # never called by ComfyUI 0.8.0 either
        return None

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]: ...


ui = io
UI = io
__all__ = ["ComfyExtension", "IO", "Types", "UI", "io", "ui"]
