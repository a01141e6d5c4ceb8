"""The files of one reconstruction, as one reserved :class:`~.writer.OutputSet`.

A result is the mesh (``.glb`` / ``.obj`` + ``.mtl`` + ``.png`` / ``.ply``), optionally the Gaussians
(``<stem>_gaussians.ply``) and the views (``<stem>_color_front.png`` ...): one stem, numbered together,
reserved *before* compute (:func:`reserve_result` checks the folder first), written into the set while the
run goes on and placed all at once when the caller's ``with`` block ends. Any failure or interrupt leaves
nothing of the result behind.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from .writer import OutputSet, check_output_location, estimate_result_bytes, reserve_stem

__all__ = [
    "GAUSSIANS_SUFFIX",
    "MESH_SUFFIXES",
    "check_result_location",
    "reserve_result",
    "result_format",
    "result_suffixes",
]

GAUSSIANS_SUFFIX = "_gaussians.ply"
MESH_SUFFIXES = {"glb": (".glb",), "obj": (".obj", ".mtl", ".png"), "ply": (".ply",)}
#: Gaussians per voxel of the decoder and voxels of a large result, for the free-space estimate.
_GAUSSIANS_ESTIMATE = 32 * 40_000


def result_format(out_path: str | os.PathLike, *, what: str = "-o/--output") -> str:
    """The mesh format named by ``out_path``'s suffix (none: ``glb``); others are our error."""
    suffix = Path(out_path).suffix.lower().lstrip(".")
    if not suffix:
        return "glb"
    if suffix not in MESH_SUFFIXES:
        raise ConfigError(f"{what} {os.fspath(out_path)!r}: unknown mesh format '.{suffix}'; use .glb, .obj or .ply")
    return suffix


def result_suffixes(fmt: str, *, gaussians: bool = True, views: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Every suffix one result may write: mesh files, ``_gaussians.ply``, ``views`` (e.g. VIEW_SUFFIXES)."""
    if fmt not in MESH_SUFFIXES:
        raise ConfigError(f"unknown mesh format {fmt!r}; choose from {tuple(MESH_SUFFIXES)}")
    return tuple(dict.fromkeys((*MESH_SUFFIXES[fmt], *((GAUSSIANS_SUFFIX,) if gaussians else ()), *views)))


def _estimate(texture_size: int, gaussians: bool, views: tuple[str, ...]) -> int:
    return estimate_result_bytes(texture_size=texture_size, gaussians=_GAUSSIANS_ESTIMATE if gaussians else 0,
                                 views=len(views))


def check_result_location(out_path: str | os.PathLike, *, texture_size: int = 1024, gaussians: bool = True,
                          views: tuple[str, ...] = (), what: str = "-o/--output") -> Path:
    """Before any model loads: the format is known, the folder writable with room for a rough size
    estimate, the names fit. Creates nothing. Returns the folder."""
    p = Path(out_path).expanduser()
    sufs = result_suffixes(result_format(p, what=what), gaussians=gaussians, views=views)
    if p.name in ("", ".", "..") or str(out_path).endswith(("/", os.sep)):
        raise ConfigError(f"{what} {os.fspath(out_path)!r} names a folder; give a file name such as person.glb")
    folder = check_output_location(p.parent, p.stem, sufs, estimate_bytes=_estimate(texture_size, gaussians, views),
                                   what=what)  # lengths first: a too-long path cannot even be looked at
    if p.is_dir():
        raise ConfigError(f"{what} {os.fspath(out_path)!r} is a folder; give a file name such as {p / 'person.glb'}")
    return folder


def reserve_result(out_path: str | os.PathLike, *, texture_size: int = 1024, gaussians: bool = True,
                   views: tuple[str, ...] = (), what: str = "-o/--output") -> OutputSet:
    """:func:`check_result_location`, then reserve the result's stem (``person``, ``person_00001``, ...) for
    all its files. Use the set as a context manager around the run: it commits when the block ends."""
    check_result_location(out_path, texture_size=texture_size, gaussians=gaussians, views=views, what=what)
    p = Path(out_path).expanduser()
    sufs = result_suffixes(result_format(p, what=what), gaussians=gaussians, views=views)
    return reserve_stem(p.parent, p.name, sufs, what=what)
