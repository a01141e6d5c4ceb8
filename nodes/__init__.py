"""ComfyUI nodes of SyncHuman (V3 API): one node per pipeline stage, joined by typed ``SYNCHUMAN_*`` wires.

Importing this package has no side effects and does not import ComfyUI; ``comfy_entrypoint`` (called by
ComfyUI) imports the nodes, registers the ``models/synchuman`` folder and returns the extension.
``NODES`` and ``SyncHumanExtension`` are loaded on first access (they need ``comfy_api``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["NODES", "SyncHumanExtension", "comfy_entrypoint"]


async def comfy_entrypoint() -> Any:
    """Called once by ComfyUI when it loads the pack (``on_load`` is not called by ComfyUI 0.8.0)."""
    from .comfy_bridge import register_model_folder
    from .extension import SyncHumanExtension

    register_model_folder()
    return SyncHumanExtension()


def __getattr__(name: str) -> Any:
    if name in ("NODES", "SyncHumanExtension"):
        from . import extension

        return getattr(extension, name)
    raise AttributeError(name)
