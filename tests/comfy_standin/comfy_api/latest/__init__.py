"""Stand-in for ``comfy_api.latest`` (ComfyUI 0.8.0): what a V3 node pack imports."""

from __future__ import annotations

from abc import ABC, abstractmethod

from . import _io_public as io
from . import _ui_public as ui
from ._util import MESH, VOXEL


class ComfyExtension(ABC):
    async def on_load(self) -> None:  # noqa: B027 (as in ComfyUI; never called by 0.8.0 either)
        """Called when an extension is loaded (not by 0.8.0)."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]: ...


class Types:
    MESH = MESH
    VOXEL = VOXEL


IO = io
UI = ui
__all__ = ["IO", "UI", "ComfyExtension", "Types", "io", "ui"]
