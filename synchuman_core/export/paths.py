"""Safe output paths: sanitised file names and sub-folders that cannot leave the output folder."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigError

__all__ = ["check_output_target", "resolve_output_path", "sanitize_name"]

_BAD_CHARS = re.compile(r"[^\w.\- ]", flags=re.UNICODE)
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def sanitize_name(name: str, *, default: str = "mesh", max_length: int = 120) -> str:
    """A single safe path component: keeps letters, digits, ``_ - . space``; everything else becomes ``_``.

    Leading/trailing dots and spaces are stripped (no hidden files, no ``..``); Windows device names get a
    leading underscore; empty results fall back to ``default``.
    """
    s = _BAD_CHARS.sub("_", str(name)).strip(" .")
    s = s[:max_length].strip(" .")
    if not s:
        s = default
    if s.split(".")[0].upper() in _WINDOWS_RESERVED:
        s = "_" + s
    return s


def _target_folder(output_dir: str | Path, filename: str, suffix: str, subfolder: str) -> tuple[Path, str]:
    """Checked ``(folder, stem)`` for :func:`resolve_output_path`; creates nothing."""
    if not str(output_dir):
        raise ConfigError("output folder is empty; pass the folder to write meshes into")
    root = Path(output_dir).expanduser()
    if "/" in str(filename) or "\\" in str(filename):
        raise ConfigError(
            f"file name {filename!r} contains a folder separator; pass folders through 'subfolder' instead"
        )
    sub = str(subfolder or "").replace("\\", "/")
    if sub.startswith("/") or re.match(r"^[A-Za-z]:", sub):
        raise ConfigError(f"subfolder {subfolder!r} must be relative to the output folder, not an absolute path")
    parts = [p for p in sub.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ConfigError(f"subfolder {subfolder!r} may not contain '..'; it must stay inside the output folder")
    parts = [sanitize_name(p, default="_") for p in parts]
    name = str(filename)
    stem = sanitize_name(name[: -len(suffix)] if suffix and name.lower().endswith(suffix.lower()) else name)
    folder = root.joinpath(*parts)
    root_resolved = root.resolve()
    folder_resolved = folder.resolve()
    if folder_resolved != root_resolved and root_resolved not in folder_resolved.parents:
        raise ConfigError(f"subfolder {subfolder!r} resolves outside the output folder {root_resolved}")
    return folder, stem


def check_output_target(output_dir: str | Path, filename: str, *, subfolder: str = "", suffix: str = "") -> None:
    """Raise ``ConfigError`` now if :func:`resolve_output_path` would refuse these names (before long work)."""
    _target_folder(output_dir, filename, suffix, subfolder)


def resolve_output_path(
    output_dir: str | Path,
    filename: str,
    suffix: str,
    *,
    subfolder: str = "",
    overwrite: bool = False,
) -> Path:
    """``output_dir / subfolder / <sanitised filename><suffix>``, created folders included.

    ``filename`` may not contain folders (use ``subfolder``); ``subfolder`` is relative, its parts are
    sanitised and ``..`` is refused. The resolved path must stay inside ``output_dir`` (symlinks included).
    Without ``overwrite`` an existing file gets a counter: ``name_00001.glb``.
    Raises ``ConfigError`` naming the offending value.
    """
    folder, stem = _target_folder(output_dir, filename, suffix, subfolder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}{suffix}"
    if not overwrite:
        counter = 1
        while path.exists():
            path = folder / f"{stem}_{counter:05d}{suffix}"
            counter += 1
    if path.resolve().parent != folder.resolve():
        raise ConfigError(f"output file {path} resolves outside {folder}")
    return path
