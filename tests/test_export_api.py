"""export_mesh end to end: clean-up + UV + bake + writers, settings validation, inference mode."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from synchuman_core.errors import ConfigError, InputImageError
from synchuman_core.export import ExportSettings, export_mesh
from synchuman_core.geometry import BakeSettings, CleanupSettings, TexturedMesh, render_generated_views
from synchuman_core.geometry.synthetic import smooth_color_field, synthetic_body

RES = 96


@pytest.fixture(scope="module")
def scene():
    v, f = synthetic_body(12)
    rv = render_generated_views(TexturedMesh(v, f, vertex_colors=smooth_color_field(v)), RES, face_resolution=RES)
    return v, f, rv


def _fast_settings(**kw) -> ExportSettings:
    cleanup = CleanupSettings(decimate_ratio=0.3, visibility_views=12, visibility_resolution=192)
    return ExportSettings(cleanup=cleanup, bake=BakeSettings(texture_size=512), **kw)


def test_export_textured_all_formats(tmp_path, scene):
    v, f, rv = scene
    stages = []
    res = export_mesh(
        v,
        f,
        views=rv.colors,
        face_view=rv.face,
        normal_views=rv.normals,
        face_normal=rv.face_normal,
        settings=_fast_settings(formats=("glb", "obj", "ply")),
        output_dir=tmp_path,
        filename="body",
        subfolder="out",
        progress=lambda stage, frac: stages.append((stage, frac)),
    )
    m = res.mesh
    assert m.texture is not None and m.texture.shape == (512, 512, 3) and m.uvs is not None
    assert m.stats["invisible_faces_removed"] > 0  # the overlapping parts' inner faces
    assert m.stats["faces_decimated"] < 0.75 * f.shape[0]
    assert set(res.files) == {"glb", "obj", "ply"} and res.files["glb"][0] == tmp_path / "out" / "body.glb"
    assert stages[0][0] == "cleanup" and stages[-1] == ("done", 1.0)
    assert {"cleanup", "uv", "bake", "write"} <= set(res.timings)
    # the exported mesh still renders back to the views (decimated + cleaned geometry: looser bound)
    back = render_generated_views(m, RES)
    both = back.masks & rv.masks
    mse = ((back.colors - rv.colors) ** 2).movedim(1, -1)[both].mean().item()
    assert 10 * math.log10(1 / mse) > 25.0
    for path in (res.files["glb"][0], res.files["obj"][0], res.files["ply"][0]):
        loaded = trimesh.load(path, process=False, force="mesh")
        assert len(loaded.faces) == m.num_faces


def test_vertex_color_fast_path_without_uvs(tmp_path, scene):
    v, f, rv = scene
    res = export_mesh(v, f, views=rv.colors, settings=_fast_settings(color_mode="vertex"), output_dir=tmp_path)
    m = res.mesh
    assert m.uvs is None and m.texture is None and m.vertex_colors is not None
    assert "uv" not in res.timings and "bake" not in res.timings
    err = (m.vertex_colors - smooth_color_field(m.vertices)).abs()
    assert err.median() < 0.03


def test_vertex_colors_input_and_geometry_only(scene):
    v, f, _ = scene
    six = torch.cat([smooth_color_field(v), torch.rand(v.shape[0], 3)], dim=1)  # FlexiCubes gives 6 channels
    res = export_mesh(v[None], f[None], vertex_colors=six, settings=_fast_settings())  # batch of one accepted
    assert res.mesh.texture is not None and res.files == {}
    geo = export_mesh(v, f, settings=_fast_settings(color_mode="none"))
    assert geo.mesh.texture is None and geo.mesh.vertex_colors is None


def test_opt_bake_inside_inference_mode(scene):
    v, f, rv = scene
    s = _fast_settings()
    s.bake.mode, s.bake.opt_steps = "opt", 5
    with torch.inference_mode():
        res = export_mesh(v, f, views=rv.colors, masks=rv.masks, settings=s)
    assert torch.isfinite(res.mesh.texture).all()


def test_official_settings_and_validation(scene):
    off = ExportSettings.official()
    assert off.cleanup.decimate_ratio == 0.7 and off.bake.texture_size == 1024 and off.bake.mode == "opt"
    assert off.cleanup.max_hole_edges == 136
    v, f, rv = scene
    with pytest.raises(ConfigError, match="needs the generated color views"):
        export_mesh(v, f, settings=_fast_settings())
    with pytest.raises(ConfigError):
        export_mesh(v, f, views=rv.colors, settings=_fast_settings(formats=("fbx",)))
    bad = _fast_settings()
    bad.bake.texture_size = 8192
    with pytest.raises(ConfigError):
        export_mesh(v, f, views=rv.colors, settings=bad)
    with pytest.raises(InputImageError):
        export_mesh(v, torch.zeros(0, 3, dtype=torch.int64), views=rv.colors)
    with pytest.raises(InputImageError):
        export_mesh(v, f + v.shape[0], views=rv.colors)
    with pytest.raises(ConfigError):
        export_mesh(v, f, views=rv.colors, settings=_fast_settings(), output_dir="/tmp", subfolder="../x")
    nan = v.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(InputImageError):
        export_mesh(nan, f, views=rv.colors)
    assert np.isfinite(v.numpy()).all()


def test_flexicubes_fixture_mesh_exports(tmp_path):
    """The official FlexiCubes fixture (a ball at res 16) through helper F's extractor into a GLB."""
    from conftest import fixture_dir
    from safetensors.torch import load_file

    fc = pytest.importorskip("synchuman_core.geometry.flexicubes")
    d = fixture_dir("h_flexicubes")
    inputs = load_file(str(d / "inputs.safetensors"))
    coords = next(t for k, t in inputs.items() if "coord" in k)
    feats = next(t for k, t in inputs.items() if "feat" in k)
    mesh = fc.sparse_features_to_mesh(coords, feats, res=16)
    s = _fast_settings(color_mode="vertex", formats=("glb",))
    s.cleanup.decimate_ratio = 0.0
    res = export_mesh(mesh.vertices, mesh.faces, vertex_colors=mesh.vertex_attrs, settings=s, output_dir=tmp_path)
    assert res.mesh.stats.get("flipped_orientation", 0.0) == 0.0  # FlexiCubes winds faces outwards
    assert res.mesh.num_faces >= 0.9 * mesh.faces.shape[0]
    loaded = trimesh.load(res.files["glb"][0], process=False, force="mesh")
    assert loaded.is_watertight and len(loaded.faces) == res.mesh.num_faces
