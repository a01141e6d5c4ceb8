"""ComfyUI entry point of ComfyUI-SyncHuman.

ComfyUI imports this file by path and finds ``comfy_entrypoint`` (V3 API). Importing it registers nothing
and does not import ComfyUI: the nodes are imported when ComfyUI calls the entry point, so this folder can
be imported anywhere (tests, packaging tools) without side effects.
"""

from __future__ import annotations

from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
