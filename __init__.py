"""ComfyUI entry point of ComfyUI-SyncHuman.

ComfyUI imports this file by path and finds ``comfy_entrypoint`` (V3 API). Importing it registers nothing
and does not import ComfyUI: the nodes are imported when ComfyUI calls the entry point, so this folder can
be imported anywhere (tests, packaging tools) without side effects.

A git-clone or ComfyUI-Manager install only installs ``requirements.txt``, not this folder as a package, so
the bundled ``synchuman_core`` is put on ``sys.path`` here when Python would not find this copy of it.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

_PACK_DIR = Path(__file__).resolve().parent


def _use_bundled_core() -> None:
    spec = importlib.util.find_spec("synchuman_core")
    origin = Path(spec.origin).resolve().parent.parent if spec is not None and spec.origin else None
    if origin == _PACK_DIR:
        return
    if "synchuman_core" in sys.modules:
        logging.getLogger(__name__).warning(
            "ComfyUI-SyncHuman: another synchuman_core is already imported from %s; the nodes use it instead of "
            "the copy in %s", origin, _PACK_DIR)
        return
    sys.path.insert(0, str(_PACK_DIR))


_use_bundled_core()

from .nodes import comfy_entrypoint  # noqa: E402

__all__ = ["comfy_entrypoint"]
