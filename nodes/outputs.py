"""Output files of the Save/Export nodes: ComfyUI's ``filename_prefix`` naming on top of the core writer.

Files are named the ComfyUI way (``<prefix>_00001_.glb`` in ``output/<subfolder>``), with the name cleaned
by the core's :func:`~synchuman_core.export.paths.sanitize_name` (so a newline or a ``:`` in the prefix
never reaches the file system) and reserved through :func:`~synchuman_core.export.writer.reserve_stem`
(never overwrites, never leaves a partial file; companions share one stem).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from synchuman_core.errors import ConfigError
from synchuman_core.export.paths import sanitize_name
from synchuman_core.export.writer import OutputSet, check_output_location, reserve_stem

__all__ = ["WHAT", "check_output", "check_prefix", "relative_name", "reserve_output"]

WHAT = "filename_prefix"


def check_prefix(filename_prefix: str) -> str:
    """``filename_prefix`` normalised (``/`` separators); refuses absolute prefixes and ``..`` with our error."""
    prefix = str(filename_prefix).replace("\\", "/").strip()
    if not prefix.strip("/"):
        raise ConfigError("filename_prefix is empty; give a file name such as 'synchuman/mesh'")
    if prefix.startswith("/") or (len(prefix) > 2 and prefix[0].isascii() and prefix[0].isalpha()
                                  and prefix[1:3] == ":/"):
        raise ConfigError(f"filename_prefix {filename_prefix!r} points outside the output folder (absolute path); "
                          "give a name inside it such as 'synchuman/mesh'")
    if any(part == ".." for part in prefix.split("/")):
        raise ConfigError(f"filename_prefix {filename_prefix!r} points outside the output folder ('..'); "
                          "give a name inside it such as 'synchuman/mesh'")
    parts = [p for p in prefix.split("/") if p not in ("", ".")]
    return "/".join([*(sanitize_name(p, default="_") for p in parts[:-1]), sanitize_name(parts[-1], default="output")])


def _comfy_target(filename_prefix: str) -> tuple[str, str, str]:
    """``(full folder, stem, subfolder)``: ComfyUI's counter on the cleaned prefix (``name_00001_``)."""
    import folder_paths

    out_dir = folder_paths.get_output_directory()
    prefix = check_prefix(filename_prefix)
    full, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir)
    return full, f"{name}_{counter:05}_", subfolder


def reserve_output(filename_prefix: str, suffixes: Iterable[str], *, estimate_bytes: int = 0) -> tuple[OutputSet, str]:
    """Check the output folder (writable, ``estimate_bytes`` free) and reserve one stem for ``suffixes``.

    Returns ``(output set, subfolder)``; use the set as a context manager (it commits on success)."""
    sufs = tuple(suffixes)
    full, stem, subfolder = _comfy_target(filename_prefix)
    check_output_location(full, stem, sufs, estimate_bytes=estimate_bytes, what=WHAT)
    return reserve_stem(full, stem, sufs, what=WHAT), subfolder


def check_output(filename_prefix: str, suffixes: Iterable[str], *, estimate_bytes: int = 0) -> None:
    """The checks of :func:`reserve_output` without reserving (before long compute)."""
    full, stem, _ = _comfy_target(filename_prefix)
    check_output_location(full, stem, tuple(suffixes), estimate_bytes=estimate_bytes, what=WHAT)


def relative_name(path: str | os.PathLike, subfolder: str) -> str:
    """``subfolder/file`` as ComfyUI's Preview3D and ``ui`` entries want it."""
    return "/".join(p for p in (subfolder, os.path.basename(os.fspath(path))) if p)
