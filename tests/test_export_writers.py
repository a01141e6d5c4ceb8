"""GLB / OBJ / PLY writers and safe output paths."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from synchuman_core.errors import ConfigError
from synchuman_core.export import (
    output_folder,
    sanitize_name,
    write_glb,
    write_obj,
    write_ply,
    zup_to_yup,
)
from synchuman_core.export.writer import write_file
from synchuman_core.geometry import TexturedMesh, unwrap_uv
from synchuman_core.geometry.synthetic import smooth_color_field, synthetic_body


@pytest.fixture(scope="module")
def textured():
    """Small body mesh (nose on the -Y side), UV-mapped, with a texture whose texel colors encode the UVs."""
    v, f = synthetic_body(6)
    v2, f2, uv, _ = unwrap_uv(v, f, texture_size=512)
    t = 64
    ramp = (torch.arange(t, dtype=torch.float32) + 0.5) / t
    tex = torch.stack([ramp.view(1, t).expand(t, t), ramp.view(t, 1).expand(t, t), torch.full((t, t), 0.25)], dim=-1)
    return TexturedMesh(v2, f2, uvs=uv, texture=tex)


def _check_gltf_structure(path):
    pygltflib = pytest.importorskip("pygltflib")
    g = pygltflib.GLTF2().load(str(path))
    blob = g.binary_blob()
    assert g.asset.version == "2.0"
    assert len(g.buffers) == 1 and g.buffers[0].byteLength == len(blob) and len(blob) % 4 == 0
    for bv in g.bufferViews:
        assert bv.buffer == 0 and bv.byteOffset % 4 == 0
        assert bv.byteOffset + bv.byteLength <= len(blob)
    sizes = {5126: 4, 5121: 1, 5125: 4, 5123: 2}
    ncomp = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
    for acc in g.accessors:
        bv = g.bufferViews[acc.bufferView]
        assert (acc.byteOffset or 0) + acc.count * sizes[acc.componentType] * ncomp[acc.type] <= bv.byteLength
    prim = g.meshes[0].primitives[0]
    pos = g.accessors[prim.attributes.POSITION]
    assert pos.min is not None and pos.max is not None and pos.type == "VEC3"
    idx = g.accessors[prim.indices]
    assert idx.count % 3 == 0 and idx.componentType == 5125
    assert g.scenes[g.scene].nodes == [0] and g.nodes[0].mesh == 0
    return g


def test_glb_textured_structure_and_reload(tmp_path, textured):
    path = write_glb(textured, tmp_path / "m.glb")
    g = _check_gltf_structure(path)
    mat = g.materials[g.meshes[0].primitives[0].material]
    tex_index = mat.pbrMetallicRoughness.baseColorTexture.index
    image = g.images[g.textures[tex_index].source]
    assert image.mimeType == "image/png" and image.bufferView is not None and image.uri is None  # embedded
    bv = g.bufferViews[image.bufferView]
    png = Image.open(io.BytesIO(g.binary_blob()[bv.byteOffset : bv.byteOffset + bv.byteLength]))
    assert png.size == (64, 64)
    assert g.meshes[0].primitives[0].attributes.TEXCOORD_0 is not None

    scene = trimesh.load(path, process=False)
    mesh = next(iter(scene.geometry.values()))
    assert len(mesh.faces) == textured.num_faces
    # Y-up: the file's y is the SyncHuman z; subject faces +Z: the nose (SyncHuman -Y) has the largest z
    np.testing.assert_allclose(mesh.vertices, zup_to_yup(textured.vertices).numpy(), atol=1e-6)
    head = mesh.vertices[:, 1] > 0.3
    nose_tip = mesh.vertices[head][np.argmax(mesh.vertices[head][:, 2])]
    assert nose_tip[2] > 0.1 and abs(nose_tip[0]) < 0.02
    assert mesh.vertices[:, 1].max() > 0.45  # top of the head is up
    # trimesh flips glTF v (origin top-left) to OpenGL (origin bottom-left)
    np.testing.assert_allclose(1.0 - mesh.visual.uv[:, 1], textured.uvs[:, 1].numpy(), atol=1e-6)
    loaded = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
    expected = (textured.texture.numpy() * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(loaded, expected)


def test_glb_vertex_colors_fast_path(tmp_path):
    v, f = synthetic_body(4)
    colors = smooth_color_field(v)
    path = write_glb(TexturedMesh(v, f, vertex_colors=colors), tmp_path / "vc.glb")
    g = _check_gltf_structure(path)
    prim = g.meshes[0].primitives[0]
    assert prim.attributes.COLOR_0 is not None and prim.attributes.TEXCOORD_0 is None
    assert g.materials[0].pbrMetallicRoughness.baseColorTexture is None
    mesh = next(iter(trimesh.load(path, process=False).geometry.values()))
    # trimesh keeps COLOR_0 as a vertex attribute when the primitive also has a material
    loaded = mesh.visual.vertex_attributes["color"] if hasattr(mesh.visual, "vertex_attributes") else None
    if loaded is None:
        loaded = mesh.visual.vertex_colors
    np.testing.assert_allclose(np.asarray(loaded)[:, :3] / 255.0, colors.numpy(), atol=1 / 255 + 1e-6)


def test_obj_mtl_png_reload(tmp_path, textured):
    files = write_obj(textured, tmp_path / "m.obj")
    assert sorted(p.suffix for p in files) == [".mtl", ".obj", ".png"]
    mesh = trimesh.load(files[0], process=False, maintain_order=True)
    assert len(mesh.faces) == textured.num_faces
    np.testing.assert_allclose(mesh.vertices, zup_to_yup(textured.vertices).numpy(), atol=1e-5)
    # OBJ stores v from the bottom; trimesh keeps that convention
    np.testing.assert_allclose(1.0 - mesh.visual.uv[:, 1], textured.uvs[:, 1].numpy(), atol=1e-5)
    assert mesh.visual.material.image.size == (64, 64)


def test_ply_reload_with_colors(tmp_path, textured):
    path = write_ply(textured, tmp_path / "m.ply")
    mesh = trimesh.load(path, process=False)
    assert len(mesh.faces) == textured.num_faces and len(mesh.vertices) == textured.num_vertices
    np.testing.assert_allclose(mesh.vertices, zup_to_yup(textured.vertices).numpy(), atol=1e-6)
    # texture encodes (u, v) in red/green: the vertex colors must be the texture at each vertex's UV
    rgb = mesh.visual.vertex_colors[:, :3] / 255.0
    np.testing.assert_allclose(rgb[:, 0], textured.uvs[:, 0].numpy(), atol=1 / 64 + 1 / 255)
    np.testing.assert_allclose(rgb[:, 1], textured.uvs[:, 1].numpy(), atol=1 / 64 + 1 / 255)
    z_up = write_ply(textured, tmp_path / "z.ply", up_axis="z")
    np.testing.assert_allclose(trimesh.load(z_up, process=False).vertices, textured.vertices.numpy(), atol=1e-6)


def test_axis_change_is_the_official_matrix():
    p = torch.randn(10, 3)
    official = p @ torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    torch.testing.assert_close(zup_to_yup(p), official)


def test_output_paths_are_sanitised(tmp_path):
    assert sanitize_name("../../etc/passwd") == "_.._etc_passwd"
    assert sanitize_name("..") == "mesh" and sanitize_name("CON") == "_CON"
    assert sanitize_name("my mesh: v2?") == "my mesh_ v2_"
    folder, stem = output_folder(tmp_path, "body", "runs/a")
    assert (folder, stem) == (tmp_path / "runs" / "a", "body") and not folder.exists()  # creates nothing
    first = write_file(folder, stem, ".glb", b"x")
    assert first == folder / "body.glb" and write_file(folder, "body.glb", ".glb", b"y").name == "body_00001.glb"
    assert first.read_bytes() == b"x"  # never overwritten
    for bad in ("../x", "a/../../x", "/abs", "C:/x"):
        with pytest.raises(ConfigError):
            output_folder(tmp_path, "body", bad)
    with pytest.raises(ConfigError):
        output_folder(tmp_path, "a/b")
    outside = tmp_path.parent / f"{tmp_path.name}_outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "link")
    with pytest.raises(ConfigError):
        output_folder(tmp_path, "body", "link")
