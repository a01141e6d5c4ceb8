"""ComfyUI entry point of ComfyUI-SyncHuman.

ComfyUI imports this file by path. The nodes are registered through the V3 API
(``comfy_entrypoint``) only when the host is importable, so ``import`` of this package outside
ComfyUI (tests, the standalone library) has no side effects.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("comfy_api") is not None and importlib.util.find_spec("folder_paths") is not None:
    from .nodes import comfy_entrypoint  # noqa: F401

    __all__ = ["comfy_entrypoint"]
else:  # pragma: no cover - outside ComfyUI
    __all__ = []
