"""Safe output names: sanitised file names and sub-folders that cannot leave the output folder.

Files themselves are written only through :mod:`.writer` (reservation, no overwrite, no partial file).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from ..errors import ConfigError

__all__ = ["MAX_NAME_BYTES", "check_output_target", "output_folder", "sanitize_name"]

_BAD_CHARS = re.compile(r"[^\w.\- ]", flags=re.UNICODE)
_WINDOWS_RESERVED = {
    "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$",
    *(f"{dev}{i}" for dev in ("COM", "LPT") for i in (*range(10), "\u00b9", "\u00b2", "\u00b3")),
}  # fmt: skip

#: Longest cleaned name (UTF-8 bytes). File systems allow 255 bytes per name; the writer adds a counter
#: (``_00001``), a suffix (``_gaussians.ply``) and its temporary ``.<name>.part`` around it.
MAX_NAME_BYTES = 120


def _cut_utf8(s: str, max_bytes: int) -> str:
    """``s`` cut to at most ``max_bytes`` UTF-8 bytes, never inside a character."""
    raw = s.encode("utf-8")
    return s if len(raw) <= max_bytes else raw[:max_bytes].decode("utf-8", errors="ignore")


def sanitize_name(name: str, *, default: str = "mesh", max_length: int = MAX_NAME_BYTES) -> str:
    """A single safe path component: keeps letters, digits, ``_ - . space``; everything else becomes ``_``.

    Unicode is NFC-normalised; folder separators, control characters (newlines, tabs), quotes and the
    characters Windows refuses (``<>:"/\\|?*``) become ``_``. Leading/trailing dots and spaces are stripped
    (no hidden files, no ``..``, nothing Windows would silently drop); Windows device names (``CON``,
    ``com1.txt``, ``LPT\u00b9``) get a leading underscore; the result is at most ``max_length`` UTF-8 bytes;
    empty results fall back to ``default``. The same input always gives the same name.
    """
    s = unicodedata.normalize("NFC", str(name))
    s = _BAD_CHARS.sub("_", s)
    s = "".join("_" if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in s)
    s = s.strip(" .")
    s = _cut_utf8(s, max_length).strip(" .")
    if not s:
        s = default
    if s.split(".")[0].strip(" ").upper() in _WINDOWS_RESERVED:
        s = _cut_utf8("_" + s, max_length)
    return s


def _target_folder(output_dir: str | Path, filename: str, suffix: str, subfolder: str) -> tuple[Path, str]:
    """Checked ``(folder, stem)`` for :func:`output_folder`; creates nothing."""
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


def output_folder(output_dir: str | Path, filename: str, subfolder: str = "") -> tuple[Path, str]:
    """Checked ``(folder, cleaned stem)`` for ``filename`` in ``output_dir/subfolder``; creates nothing.

    ``filename`` may not contain folders; ``subfolder`` is relative, cleaned part by part, may not hold
    ``..`` and may not resolve outside ``output_dir`` (symlinks included). Raises ``ConfigError``.
    """
    return _target_folder(output_dir, filename, "", subfolder)


def check_output_target(output_dir: str | Path, filename: str, *, subfolder: str = "", suffix: str = "") -> None:
    """Raise ``ConfigError`` now if :func:`output_folder` would refuse these names (before long work)."""
    _target_folder(output_dir, filename, suffix, subfolder)
