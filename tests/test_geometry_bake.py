"""Texture baking from the generated views: render → bake → render back, orientation, fills, opt mode."""

from __future__ import annotations

import math

import pytest
import torch
import trimesh

from synchuman_core.errors import ConfigError, InputImageError
from synchuman_core.geometry import (
    BakeSettings,
    TexturedMesh,
    bake_texture,
    bake_vertex_colors,
    pull_push_fill,
    render_generated_views,
    unwrap_uv,
    views_from_generated,
)
from synchuman_core.geometry.synthetic import smooth_color_field, synthetic_body
from synchuman_core.geometry.views import non_white_mask

RES = 128  # view resolution used by these tests
TEX = 512


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    mse = ((a - b) ** 2).movedim(-3, -1)[mask].mean().item()
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def _texture_at(mesh_v: torch.Tensor, uv: torch.Tensor, tex: torch.Tensor) -> torch.Tensor:
    grid = (uv * 2 - 1).view(1, 1, -1, 2)
    return torch.nn.functional.grid_sample(tex.permute(2, 0, 1)[None], grid, align_corners=False)[0, :, 0].T


@pytest.fixture(scope="module")
def body_scene():
    """A body-like mesh with known smooth colors, its generated views (mirrored back/left) and a UV layout."""
    v, f = synthetic_body(8)
    src = TexturedMesh(v, f, vertex_colors=smooth_color_field(v))
    rv = render_generated_views(src, RES, face_resolution=RES)
    v2, f2, uv, _ = unwrap_uv(v, f, texture_size=TEX)
    return src, rv, (v2, f2, uv)


def test_bake_renders_back_to_the_views(body_scene):
    _, rv, (v2, f2, uv) = body_scene
    views = views_from_generated(rv.colors, face=rv.face, normals=rv.normals, face_normal=rv.face_normal)
    tex, stats = bake_texture(v2, f2, uv, views, BakeSettings(texture_size=TEX))
    back = render_generated_views(TexturedMesh(v2, f2, uvs=uv, texture=tex), RES, face_resolution=RES)
    p_body = psnr(back.colors, rv.colors, rv.masks)
    p_face = psnr(back.face, rv.face, rv.face_mask)
    print(f"bake PSNR body {p_body:.2f} dB, face {p_face:.2f} dB, coverage {stats['texel_coverage']:.3f}")
    assert p_body >= 30.0 and p_face >= 30.0
    assert 0.5 < stats["texel_coverage"] < 1.0  # the tops of the head/shoulders face no view
    assert torch.isfinite(tex).all() and tex.shape == (TEX, TEX, 3)


def test_unseen_texels_are_filled():
    box = trimesh.creation.box(extents=(0.5, 0.4, 0.6)).subdivide().subdivide().subdivide()
    v = torch.tensor(box.vertices, dtype=torch.float32)
    f = torch.tensor(box.faces)
    color = torch.tensor([0.2, 0.6, 0.3])
    views = views_from_generated(color.view(1, 3, 1, 1).expand(4, 3, 64, 64).clone())
    v2, f2, uv, _ = unwrap_uv(v, f, texture_size=TEX)
    tex, stats = bake_texture(v2, f2, uv, views, BakeSettings(texture_size=TEX))
    assert stats["texel_coverage"] < 0.9  # top and bottom (normal ±z) face none of the 4 side views
    # seen, unseen-but-on-surface and gutter texels all carry the one color
    torch.testing.assert_close(tex, color.expand_as(tex), atol=2e-3, rtol=0)


def _orientation_bake(view_index: int, left: tuple[float, ...], right: tuple[float, ...]):
    """Sphere + generated views that are grey except ``view_index``, split into a left / right half."""
    m = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    v = torch.tensor(m.vertices, dtype=torch.float32)
    f = torch.tensor(m.faces)
    h = 64
    views = torch.full((4, 3, h, h), 0.5)
    views[view_index, :, :, : h // 2] = torch.tensor(left).view(3, 1, 1)
    views[view_index, :, :, h // 2 :] = torch.tensor(right).view(3, 1, 1)
    v2, f2, uv, _ = unwrap_uv(v, f, texture_size=TEX)
    tex, _ = bake_texture(v2, f2, uv, views_from_generated(views), BakeSettings(texture_size=TEX, weight_power=4))
    return v2, _texture_at(v2, uv, tex)


@pytest.mark.parametrize(
    ("view_index", "depth_axis", "depth_sign", "column_axis"),
    [
        (2, 1, +1.0, 0),  # back view (camera at +Y), generated column = +x (mirrored)
        (3, 0, -1.0, 1),  # left view (camera at -X), generated column = +y (mirrored)
        (1, 0, +1.0, 1),  # right view (camera at +X), column = +y (a true render)
        (0, 1, -1.0, 0),  # front view (camera at -Y), column = +x
    ],
)
def test_generated_orientation_of_each_view(view_index, depth_axis, depth_sign, column_axis):
    """The image's right half must land on the side where the column axis is positive (§3.4)."""
    red, blue = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
    v, col = _orientation_bake(view_index, left=red, right=blue)
    facing = v[:, depth_axis] * depth_sign > 0.3  # the cap this view looks at
    pos = facing & (v[:, column_axis] > 0.08)
    neg = facing & (v[:, column_axis] < -0.08)
    assert pos.sum() > 5 and neg.sum() > 5
    assert (col[pos, 2] > col[pos, 0] + 0.2).all()  # blue where the column axis is positive
    assert (col[neg, 0] > col[neg, 2] + 0.2).all()


def test_opt_mode_runs_under_inference_mode(body_scene):
    _, rv, (v2, f2, uv) = body_scene
    with torch.inference_mode():
        views = views_from_generated(rv.colors, face=rv.face, masks=rv.masks, face_mask=rv.face_mask)
        s = BakeSettings(texture_size=TEX, mode="opt", opt_steps=8, opt_init="fast")
        tex, _ = bake_texture(v2, f2, uv, views, s)
        back = render_generated_views(TexturedMesh(v2, f2, uvs=uv, texture=tex), RES)
    assert psnr(back.colors, rv.colors, rv.masks) >= 30.0


def test_vertex_colors_from_views(body_scene):
    src, rv, _ = body_scene
    views = views_from_generated(rv.colors, normals=rv.normals)
    colors, stats = bake_vertex_colors(src.vertices, src.faces, views)
    assert stats["vertex_coverage"] > 0.5
    err = (colors - src.vertex_colors).abs()
    assert err.median() < 0.02 and torch.isfinite(colors).all()


def test_pull_push_keeps_known_and_fills_unknown():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(37, 50, 3, generator=g)
    known = torch.rand(37, 50, generator=g) < 0.1
    out = pull_push_fill(img * known[..., None], known)
    assert torch.equal(out[known], img[known])
    lo, hi = img[known].min(0).values, img[known].max(0).values
    assert ((out >= lo - 1e-6) & (out <= hi + 1e-6)).all()


def test_masks_from_normal_maps_and_bad_inputs():
    nrm = torch.ones(4, 3, 8, 8)
    nrm[:, :, 2:4, 2:4] = 0.5
    m = non_white_mask(nrm)
    assert m.sum() == 4 * 4 and m[:, 2, 2].all()
    with pytest.raises(InputImageError):
        views_from_generated(torch.rand(3, 3, 8, 8))
    with pytest.raises(ConfigError):
        BakeSettings(texture_size=32).validate()
    # channel-last (ComfyUI IMAGE) input is accepted
    assert views_from_generated(torch.rand(4, 8, 8, 3))[0].image.shape == (3, 8, 8)
