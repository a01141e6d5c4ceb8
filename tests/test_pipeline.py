"""Pipeline orchestration: post-edits, stage wiring on tiny random models, seeds, hooks."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from synchuman_core.errors import ConfigError, InputImageError
from synchuman_core.model_source import ModuleSet
from synchuman_core.pipeline import (
    Stage1Inputs,
    Stage1Output,
    Stage2Output,
    face_region,
    paste_face_normal,
    prepare_conditioning,
    replace_front_color,
    run_stage1,
    run_stage2,
)
from synchuman_core.samplers import SamplerSettings, make_generator
from synchuman_core.sparse import SparseTensor

S = 192  # tiny joint model: latent 24 (the sync bridges need 24 -> 12 -> 6 -> 3), VAE x8


# ------------------------------------------------------------------------------------------ post-edits


def test_face_region_is_the_official_box_at_768():
    rows, cols = face_region(768)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (0, 256, 256, 512)


def test_paste_face_normal_matches_official_formula():
    g = torch.Generator().manual_seed(0)
    normals = torch.rand(5, 3, 48, 48, generator=g)
    out = paste_face_normal(normals)
    face = torch.nn.functional.interpolate(normals[4:5], size=(16, 16), mode="bilinear", align_corners=False)[0]
    assert torch.equal(out[0, :, :16, 16:32], face)
    mask = torch.ones(48, 48, dtype=torch.bool)
    mask[:16, 16:32] = False
    assert torch.equal(out[0][:, mask], normals[0][:, mask])
    assert torch.equal(out[1:], normals[1:])
    assert not torch.equal(normals[0, :, :16, 16:32], face)  # input untouched


def test_replace_front_color():
    colors, views = torch.rand(5, 3, 8, 8), torch.rand(5, 3, 8, 8)
    out = replace_front_color(colors, views)
    assert torch.equal(out[0], views[0]) and torch.equal(out[1:], colors[1:])


# ------------------------------------------------------------------------------------------ tiny models


@pytest.fixture(scope="module")
def tiny():
    from synchuman_core.io.tiny import fill_tiny, tiny_model
    from synchuman_core.io.tiny_configs import TINY_CROSS_DIM, TINY_JOINT
    from synchuman_core.stage1.joint import JointModelConfig, SyncHumanJointModel

    # smaller than the io.tiny checkpoint (latent 24 instead of 96, 2 sync heads) to keep CPU time low;
    # fp16 parts cast to fp32 (fp16 conv3d on CPU is very slow)
    cfg = JointModelConfig.from_official(
        {**TINY_JOINT, "sample_size": S // 8, "model_channels": 32, "num_heads": 2, "num_head_channels": 16}
    )
    joint = fill_tiny(SyncHumanJointModel(dataclasses.replace(cfg, sync_heads=2, sync_head_dim=16)), 1)
    models = ModuleSet(
        {"joint": joint.eval(), **{n: tiny_model(n, seed=i)[0].float() for i, n in enumerate(
            ["structure_decoder", "vae", "image_encoder", "dinov2", "slat_flow"])}},
        prompt_embeds=torch.randn(10, 77, TINY_CROSS_DIM, generator=make_generator(3)),
    )
    g = make_generator(5)
    views = torch.rand(5, 3, S, S, generator=g)
    pre = SimpleNamespace(mv_views=views, dino_image=(torch.rand(518, 518, 3, generator=g) * 255).to(torch.uint8))
    return models, pre


def _settings():
    return SamplerSettings.stage1(steps=2)


def test_prepare_conditioning_shapes(tiny):
    models, pre = tiny
    events = []
    inp = prepare_conditioning(models, pre, on_stage_done=events.append)
    c = inp.conditioning
    assert isinstance(inp, Stage1Inputs) and events == ["conditioning"]
    assert c.prompt_embeds.shape == (10, 77, 32)
    assert c.image_embeds.shape == (10, 32)  # CLIP projection 16 + noise-level 16
    assert torch.equal(c.image_embeds[:, 16:], torch.cat([torch.ones(10, 8), torch.zeros(10, 8)], 1))
    assert c.image_latents.shape == (10, 4, S // 8, S // 8)
    assert torch.equal(c.image_latents[:5], c.image_latents[5:])  # same views in both domain halves
    assert c.structure_cond.shape == (1, 1374, 32) and c.structure_cond.dtype == torch.float32
    # DINO condition is layer-normed without affine
    torch.testing.assert_close(c.structure_cond.mean(-1), torch.zeros(1, 1374), atol=1e-4, rtol=0)


def test_wrong_view_size_is_a_clear_error(tiny):
    models, pre = tiny
    bad = SimpleNamespace(mv_views=torch.rand(5, 3, 96, 96), dino_image=pre.dino_image)
    with pytest.raises(InputImageError, match="192x192"):
        prepare_conditioning(models, bad)
    with pytest.raises(InputImageError):
        prepare_conditioning(models, object())


@pytest.mark.slow
def test_stage1_end_to_end_tiny(tiny):
    models, pre = tiny
    inp = prepare_conditioning(models, pre)
    events, steps = [], []
    out = run_stage1(models, inp, _settings(), make_generator(43), lambda i, n, x: steps.append((i, n)),
                     on_stage_done=events.append)
    assert isinstance(out, Stage1Output) and events == ["stage1"] and steps == [(1, 2), (2, 2)]
    for t in (out.color_views, out.normal_views):
        assert t.shape == (5, 3, S, S) and t.dtype == torch.float32
        assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert torch.equal(out.color_views[0], pre.mv_views[0])
    third = S // 3
    face = torch.nn.functional.interpolate(out.normal_views[4:5], size=(third, third), mode="bilinear",
                                           align_corners=False)[0]
    assert torch.equal(out.normal_views[0, :, :third, third:2 * third], face)
    assert out.structure_latent.shape == (1, 8, 16, 16, 16) and out.structure_latent.dtype == torch.float32
    assert out.coords.dtype == torch.int32 and out.coords.ndim == 2 and out.coords.shape[1] == 4
    assert out.coords.shape[0] > 0 and int(out.coords[:, 0].max()) == 0
    assert int(out.coords[:, 1:].min()) >= 0 and int(out.coords[:, 1:].max()) < 64
    assert out.latents.shape == (10, 4, S // 8, S // 8)

    # same seed -> identical results; other seed -> different
    again = run_stage1(models, inp, _settings(), make_generator(43))
    assert torch.equal(out.latents, again.latents) and torch.equal(out.coords, again.coords)
    assert torch.equal(out.normal_views, again.normal_views)


def test_stage2_slat_tiny(tiny):
    models, pre = tiny
    g = torch.Generator().manual_seed(0)
    xyz = torch.randperm(64**3, generator=g)[:40].sort().values
    coords = torch.stack([torch.zeros_like(xyz), xyz // 4096, (xyz // 64) % 64, xyz % 64], 1).int()
    s1 = Stage1Output(
        color_views=torch.rand(5, 3, S, S), normal_views=torch.rand(5, 3, S, S),
        structure_latent=torch.zeros(1, 8, 16, 16, 16), coords=coords, condition_image=pre.dino_image,
    )
    events = []
    settings = SamplerSettings.stage2(steps=3)
    a = run_stage2(models, s1, settings, make_generator(1), decode_mesh=False, decode_gaussians=False,
                   on_stage_done=events.append)
    b = run_stage2(models, s1, settings, make_generator(1), decode_mesh=False, decode_gaussians=False)
    assert isinstance(a, Stage2Output) and events == ["stage2"]
    assert isinstance(a.slat, SparseTensor) and a.slat.feats.shape == (40, 8)
    assert torch.equal(a.slat.coords, coords) and torch.isfinite(a.slat.feats).all()
    assert torch.equal(a.slat.feats, b.slat.feats)
    empty = Stage1Output(s1.color_views, s1.normal_views, s1.structure_latent, coords[:0], s1.condition_image)
    with pytest.raises(InputImageError, match="no occupied voxels"):
        run_stage2(models, empty, settings, make_generator(1))


class TiledDino:
    """The tiny DINOv2 with its multiview features computed at 224 px and upsampled to the 64x64 grid
    to save CPU time (4 layers x 32 channels, the tiny decoders' ``4 * mv_dim``)."""

    def __init__(self, dino):
        self.dino = dino

    def global_condition(self, *args, **kwargs):
        return self.dino.global_condition(*args, **kwargs)

    def multiview_features(self, views):
        f = self.dino.multiview_features(views, size=224)  # [V, 16, 16, 128]
        f = torch.nn.functional.interpolate(f.permute(0, 3, 1, 2), size=(64, 64), mode="nearest")
        return f.permute(0, 2, 3, 1)


class TopKOccupancy(torch.nn.Module):
    """The tiny structure decoder with all but its ``k`` largest logits pushed below 0 (random weights
    occupy half the grid, far too much for a CPU test of stage 2)."""

    def __init__(self, decoder, k=48):
        super().__init__()
        self.decoder, self.k = decoder, k

    def forward(self, z):
        logits = self.decoder(z)
        kth = logits.flatten().topk(self.k).values[-1]
        return logits - kth + 1e-3


@pytest.fixture(scope="module")
def tiny_full(tiny):
    from synchuman_core.io.tiny import tiny_model

    models, pre = tiny
    full = ModuleSet({**models.modules, "dinov2": TiledDino(models.get("dinov2")),
                      "structure_decoder": TopKOccupancy(models.get("structure_decoder")),
                      "mesh_decoder": tiny_model("mesh_decoder", seed=7)[0].float(),
                      "gs_decoder": tiny_model("gs_decoder", seed=8)[0].float()},
                     prompt_embeds=models.prompt_embeds())
    return full, pre


@pytest.mark.slow
def test_stage2_decoders_tiny(tiny_full):
    from synchuman_core.geometry.flexicubes import Mesh
    from synchuman_core.stage2.gaussians import Gaussians

    models, pre = tiny_full
    g = torch.Generator().manual_seed(1)
    xyz = torch.randperm(64**3, generator=g)[:30].sort().values
    coords = torch.stack([torch.zeros_like(xyz), xyz // 4096, (xyz // 64) % 64, xyz % 64], 1).int()
    s1 = Stage1Output(torch.rand(5, 3, S, S, generator=g), torch.rand(5, 3, S, S, generator=g),
                      torch.zeros(1, 8, 16, 16, 16), coords, pre.dino_image)
    out = run_stage2(models, s1, SamplerSettings.stage2(steps=2), make_generator(0))
    assert isinstance(out.mesh, Mesh) and isinstance(out.gaussians, Gaussians)
    assert out.gaussians.xyz.shape == (30 * 32, 3)
    assert out.mesh.vertices.ndim == 2 and out.mesh.vertices.shape[1] == 3
    if out.mesh.vertices.shape[0]:
        assert float(out.mesh.vertices.abs().max()) <= 0.5 + 1 / 256  # grid + deform of at most half a cell


@pytest.mark.slow
def test_reconstruct_tiny_from_rgba(tiny_full):
    from synchuman_core.pipeline import Reconstruction, multiview_size, reconstruct

    models, _ = tiny_full
    assert multiview_size(models) == S
    # an RGBA "person": an opaque ellipse on a transparent background
    yy, xx = torch.meshgrid(torch.arange(300), torch.arange(160), indexing="ij")
    alpha = (((yy - 150) / 140.0) ** 2 + ((xx - 80) / 60.0) ** 2 <= 1).to(torch.uint8) * 255
    rgb = (torch.rand(300, 160, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    rgba = torch.cat([rgb, alpha[..., None]], -1).numpy()
    events, progress = [], []
    rec = reconstruct(models, rgba, seed=43, stage1_settings=SamplerSettings.stage1(steps=1),
                      stage2_settings=SamplerSettings.stage2(steps=2), on_stage_done=events.append,
                      callback=lambda stage, i, n: progress.append((stage, i, n)))
    assert isinstance(rec, Reconstruction)
    assert events == ["conditioning", "stage1", "stage2"]
    assert progress == [("stage1", 1, 1), ("stage2", 1, 2), ("stage2", 2, 2)]
    s1, s2 = rec.stage1, rec.stage2
    assert s1.color_views.shape == (5, 3, S, S) and s1.coords.shape == (48, 4)
    assert s2.slat.feats.shape == (48, 8) and s2.gaussians.xyz.shape == (48 * 32, 3)
    # colour view 0 is the framed input: white background where alpha was 0
    assert float(s1.color_views[0, :, 0, 0].min()) == 1.0


def test_models_must_be_a_model_source():
    """A plain object is refused with what it lacks, before any compute."""
    from synchuman_core.pipeline import reconstruct

    with pytest.raises(ConfigError, match="model source.*lacks get, peek"):
        reconstruct(SimpleNamespace(joint=None), object())


def test_split_views_is_the_one_view_split():
    from synchuman_core.pipeline import split_views

    v5 = torch.rand(5, 3, 8, 8)
    body, face = split_views(v5)
    assert torch.equal(body, v5[:4]) and torch.equal(face, v5[4])
    body, face = split_views(v5[:4])
    assert torch.equal(body, v5[:4]) and face is None
    assert split_views(None) == (None, None)
    with pytest.raises(InputImageError, match="4 or 5"):
        split_views(v5[:3])
