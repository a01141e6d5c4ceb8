"""The whole chain on a tiny random checkpoint in the official layout: preprocessing -> stage 1 ->
stage 2 -> mesh + Gaussians -> GLB/PLY files, through the headless runner (the README's main job)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synchuman_core.cli import main as cli_main
from synchuman_core.demo import example_person
from synchuman_core.io import SyncHumanModels
from synchuman_core.io.tiny import write_tiny_checkpoint
from synchuman_core.pipeline import prepare_conditioning, preprocess, run_stage1, run_stage2
from synchuman_core.samplers import SamplerSettings, make_generator
from synchuman_core.stage2.gaussians import load_gaussians_ply, save_gaussians_ply

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e") / "tiny"
    write_tiny_checkpoint(root, seed=5)
    return root


def _run(folder, seed):
    models = SyncHumanModels(folder, dtype=torch.float32)
    pre = preprocess(models, example_person(384))
    inputs = prepare_conditioning(models, pre)
    s1 = run_stage1(models, inputs, SamplerSettings.stage1(steps=1), make_generator(seed))
    s2 = run_stage2(models, s1, SamplerSettings.stage2(steps=1), make_generator(seed))
    return s1, s2


def test_stage1_stage2_mesh_and_gaussians(tiny_folder, tmp_path):
    s1, s2 = _run(tiny_folder, seed=7)
    size = s1.color_views.shape[-1]
    assert s1.color_views.shape == s1.normal_views.shape == (5, 3, size, size)
    assert s1.color_views.dtype == torch.float32
    assert 0.0 <= float(s1.color_views.min()) and float(s1.color_views.max()) <= 1.0
    assert s1.structure_latent.shape == (1, 8, 16, 16, 16)
    c = s1.coords
    assert c.dtype == torch.int32 and c.shape[1] == 4 and c.shape[0] > 0
    assert int(c[:, 0].max()) == 0 and int(c[:, 1:].min()) >= 0 and int(c[:, 1:].max()) <= 63

    mesh = s2.mesh
    v, f = mesh.vertices, mesh.faces
    assert v.ndim == 2 and v.shape[1] == 3 and f.ndim == 2 and f.shape[1] == 3 and f.shape[0] > 0
    assert torch.isfinite(v).all()
    assert int(f.min()) >= 0 and int(f.max()) < v.shape[0]
    # inside the unit cube [-0.5, 0.5]^3, up to FlexiCubes' deformation allowance of half a 256^3 cell
    assert float(v.abs().max()) <= 0.5 + 1 / 512 + 1e-6

    gs = s2.gaussians
    assert gs.xyz.shape[0] == 32 * c.shape[0]
    path = tmp_path / "g.ply"
    save_gaussians_ply(gs, path)
    back = load_gaussians_ply(path)
    torch.testing.assert_close(back.xyz, gs.xyz, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back.opacity, gs.opacity, atol=1e-5, rtol=1e-5)


def test_same_seed_same_result(tiny_folder):
    a1, a2 = _run(tiny_folder, seed=11)
    b1, b2 = _run(tiny_folder, seed=11)
    assert torch.equal(a1.color_views, b1.color_views) and torch.equal(a1.coords, b1.coords)
    assert torch.equal(a2.slat.feats, b2.slat.feats)
    assert torch.equal(a2.mesh.faces, b2.mesh.faces)


def _reconstruct(tiny_folder, tmp_path, capsys, out_name: str, *options: str):
    """``python -m synchuman_core reconstruct`` on the example person, 1 + 1 steps on CPU -> (path, summary)."""
    img = tmp_path / "person.png"
    example_person(384).save(img)
    out = tmp_path / "out" / out_name
    # recipe fast: the official one is 1000 visibility + 95 splat renders at 1024², hours on this CPU
    rc = cli_main(["reconstruct", str(img), "-o", str(out), "--models", str(tiny_folder), "--steps1", "1",
                   "--steps2", "1", "--device", "cpu", "--recipe", "fast", *options])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert str(out) in summary["files"] and summary["faces"] > 0
    return out, summary


def test_headless_runner_writes_a_glb(tiny_folder, tmp_path, capsys):
    import trimesh
    from PIL import Image

    out, summary = _reconstruct(tiny_folder, tmp_path, capsys, "person.glb", "--texture-size", "512", "--seed", "3")
    assert summary["memory_tier"] == "high"
    scene = trimesh.load(out)
    geom = next(iter(scene.geometry.values()))
    assert len(geom.faces) == summary["faces"]
    tex = geom.visual.material.baseColorTexture
    assert isinstance(tex, Image.Image) and tex.size == (512, 512)
    assert np.isfinite(np.asarray(geom.vertices)).all()


def test_runner_memory_tier_low(tiny_folder, tmp_path, capsys):
    """``--memory-tier low`` (sequential CFG, tiled VAE decode, chunked attention, one model at a time)
    runs the whole chain and says which tier and precision it used."""
    _, summary = _reconstruct(tiny_folder, tmp_path, capsys, "low.ply", "--color", "vertex", "--memory-tier", "low")
    assert summary["memory_tier"] == "low" and summary["precision"] == "fp32"


def test_runner_reports_bad_input(tiny_folder, tmp_path, capsys):
    from PIL import Image

    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (64, 96), (200, 10, 10)).save(rgb)
    rc = cli_main(["reconstruct", str(rgb), "-o", str(tmp_path / "x.glb"), "--models", str(tiny_folder)])
    assert rc == 2
    assert "mask" in capsys.readouterr().err.lower()
