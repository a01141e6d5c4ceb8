"""Issue 14 through the nodes (ComfyUI stand-in): the Save/Export nodes write through the one writer: clean
names (a newline in filename_prefix never reaches the disk), numbered, never overwriting, never partial, the
output checked before the bake, and each failure is our error naming the node input."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "comfy_standin"))

import harness  # noqa: E402

from synchuman_core.errors import ConfigError, OutputError  # noqa: E402
from synchuman_core.export import writer  # noqa: E402

comfy_root = harness.comfy_root  # fixture


def _run(cls, **kwargs):
    clone = cls.PREPARE_CLASS_CLONE({})
    with torch.inference_mode():
        return clone.EXECUTE_NORMALIZED(**kwargs)


def _node(node_id):
    import nodes

    return next(c for c in nodes.NODES if c.GET_SCHEMA().node_id == node_id)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def no_partial(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(writer.PART)]


@pytest.fixture
def gaussians():
    from synchuman_core.stage2.gaussians import Gaussians

    g = torch.Generator().manual_seed(0)
    n = 64
    return Gaussians(xyz=torch.rand(n, 3, generator=g), features_dc=torch.randn(n, 1, 3, generator=g),
                     scaling=torch.randn(n, 3, generator=g) * 0.1, rotation=torch.randn(n, 4, generator=g),
                     opacity=torch.randn(n, 1, generator=g))


@pytest.fixture
def mesh():
    from nodes.types import DecodedMesh
    from synchuman_core.geometry import synthetic

    v, f = synthetic.synthetic_body(6)
    return DecodedMesh(vertices=v.float(), faces=f.long(), vertex_colors=torch.rand(v.shape[0], 3),
                       color_views=None, normal_views=None)


EXPORT = dict(format="obj", color_mode="vertex", texture_size=512, bake_mode="fast", simplify=0.0, fill_holes=False,
              remove_floaters=False, remove_invisible=False)


def test_save_gaussians_newline_in_prefix_and_no_overwrite(comfy_root, gaussians):
    from synchuman_core.stage2.gaussians import load_gaussians_ply

    node = _node("SyncHumanSaveGaussians")
    first = _run(node, gaussians=gaussians, filename_prefix="people/gauss\nians").args[0]
    assert first == "people/gauss_ians_00001_.ply"
    out = comfy_root / "output"
    before = snapshot(out)
    second = _run(node, gaussians=gaussians, filename_prefix="people/gauss\nians").args[0]
    assert second == "people/gauss_ians_00002_.ply"
    assert {k: v for k, v in snapshot(out).items() if k in before} == before
    assert not any("\n" in p.name for p in out.rglob("*"))
    back = load_gaussians_ply(out / second)
    assert back.xyz.shape == gaussians.xyz.shape and no_partial(out)


@pytest.mark.parametrize("prefix", ["CON", "a:b*c?", "x" * 400, "\u00e9\u4eba\U0001f600/\u00fc" * 3])
def test_export_node_cleans_any_prefix(comfy_root, mesh, prefix):
    rel = _run(_node("SyncHumanExport"), synchuman_mesh=mesh, filename_prefix=prefix, **EXPORT).args[0]
    path = comfy_root / "output" / rel
    assert path.is_file() and path.suffix == ".obj"
    assert path.with_suffix(".mtl").is_file()  # companions share the stem
    assert all(len(part.encode()) <= 255 for part in Path(rel).parts)
    assert (comfy_root / "output").resolve() in path.resolve().parents


def test_export_node_disk_full_midway_leaves_nothing(comfy_root, mesh, monkeypatch):
    out = comfy_root / "output"
    _run(_node("SyncHumanExport"), synchuman_mesh=mesh, filename_prefix="m", **EXPORT)
    before = snapshot(out)
    real = writer._write_all
    calls = {"n": 0}

    def fills_up(fh, data):
        calls["n"] += 1
        if calls["n"] == 2:  # the .obj is written, the .mtl hits a full disk
            fh.write(bytes(memoryview(data)[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, data)

    monkeypatch.setattr(writer, "_write_all", fills_up)
    with pytest.raises(OutputError, match="disk is full.*filename_prefix"):
        _run(_node("SyncHumanExport"), synchuman_mesh=mesh, filename_prefix="m", **EXPORT)
    assert snapshot(out) == before and no_partial(out)


def test_export_node_checks_output_before_the_bake(comfy_root, mesh, monkeypatch):
    import synchuman_core.export as export_pkg
    import synchuman_core.export.api as api

    def no_bake(*a, **k):
        raise AssertionError("the export ran before the output folder was checked")

    monkeypatch.setattr(api, "export_mesh", no_bake)
    monkeypatch.setattr(export_pkg, "export_mesh", no_bake)
    usage = shutil.disk_usage(comfy_root)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(OutputError, match="not enough free space.*filename_prefix"):
        _run(_node("SyncHumanExport"), synchuman_mesh=mesh, filename_prefix="m", **EXPORT)
    monkeypatch.undo()
    real_open = os.open

    def denied(path, flags, *a):
        if ".synchuman-probe-" in os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", denied)
    monkeypatch.setattr(api, "export_mesh", no_bake)
    with pytest.raises(OutputError, match="permission denied.*filename_prefix"):
        _run(_node("SyncHumanExport"), synchuman_mesh=mesh, filename_prefix="m", **EXPORT)
    assert no_partial(comfy_root / "output")


@pytest.mark.parametrize("prefix", ["../escape", "/abs/path", "a/../../b", "   "])
def test_prefix_leaving_the_output_folder_is_our_error(comfy_root, gaussians, prefix):
    with pytest.raises(ConfigError, match="filename_prefix"):
        _run(_node("SyncHumanSaveGaussians"), gaussians=gaussians, filename_prefix=prefix)
    assert not list((comfy_root).rglob("*.ply"))


def test_interrupt_during_export_leaves_nothing(comfy_root, mesh, monkeypatch):
    """ComfyUI's interrupt raises inside the node (here: while the OBJ text is being made)."""
    import synchuman_core.export.api as api

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "obj_files", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(_node("SyncHumanExport"), synchuman_mesh=mesh, filename_prefix="sub/m", **EXPORT)
    out = comfy_root / "output"
    assert not list(out.rglob("m*")) and no_partial(out)
