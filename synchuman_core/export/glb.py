"""Binary glTF 2.0 (GLB) writer: one mesh, one PBR material (base-color texture or vertex colors).

Written by hand (JSON chunk + BIN chunk) so the layout is explicit: every bufferView starts on a 4-byte
boundary, POSITION carries min/max, indices are uint32, the texture is an embedded PNG.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import torch

from ..geometry.mesh import TexturedMesh, welded_vertex_normals
from .axes import UpAxis, convert_up_axis
from .writer import write_file

__all__ = ["encode_png", "glb_bytes", "write_glb"]

_GLB_MAGIC = 0x46546C67  # "glTF"
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942
_FLOAT, _UBYTE, _UINT = 5126, 5121, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def encode_png(texture: torch.Tensor) -> bytes:
    """``[H, W, 3]`` float in [0, 1] → PNG bytes (8-bit, rounded)."""
    from PIL import Image

    arr = (texture.detach().float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


class _BinBuilder:
    """Accumulates 4-byte aligned bufferViews and their accessors."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, data: bytes, target: int | None = None) -> int:
        pad = (-len(self.blob)) % 4
        self.blob.extend(b"\x00" * pad)
        entry = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": len(data)}
        if target is not None:
            entry["target"] = target
        self.blob.extend(data)
        self.views.append(entry)
        return len(self.views) - 1

    def accessor(
        self,
        array: np.ndarray,
        type_: str,
        component: int,
        *,
        target: int,
        normalized: bool = False,
        minmax: bool = False,
    ) -> int:
        array = np.ascontiguousarray(array)
        acc = {
            "bufferView": self.view(array.tobytes(), target),
            "componentType": component,
            "count": int(array.shape[0]),
            "type": type_,
        }
        if normalized:
            acc["normalized"] = True
        if minmax:
            acc["min"] = [float(x) for x in array.min(axis=0)]
            acc["max"] = [float(x) for x in array.max(axis=0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def glb_bytes(mesh: TexturedMesh, *, up_axis: UpAxis = "y", name: str = "synchuman") -> bytes:
    """Serialise ``mesh`` to GLB bytes (see :func:`write_glb`)."""
    mesh.validate()
    v = mesh.vertices.detach().float().cpu()
    f = mesh.faces.detach().long().cpu()
    pos = convert_up_axis(v, up_axis).numpy().astype(np.float32)
    nrm = convert_up_axis(welded_vertex_normals(v, f), up_axis).numpy().astype(np.float32)
    b = _BinBuilder()
    attributes = {
        "POSITION": b.accessor(pos, "VEC3", _FLOAT, target=_ARRAY_BUFFER, minmax=True),
        "NORMAL": b.accessor(nrm, "VEC3", _FLOAT, target=_ARRAY_BUFFER),
    }
    material: dict = {
        "name": name,
        "pbrMetallicRoughness": {
            "baseColorFactor": [1.0, 1.0, 1.0, 1.0],
            "metallicFactor": 0.0,
            "roughnessFactor": 1.0,
        },
        "doubleSided": False,
    }
    gltf: dict = {"asset": {"version": "2.0", "generator": "ComfyUI-SyncHuman"}}
    if mesh.texture is not None:
        uv = mesh.uvs.detach().float().cpu().numpy().astype(np.float32)  # v from the top row = glTF convention
        attributes["TEXCOORD_0"] = b.accessor(uv, "VEC2", _FLOAT, target=_ARRAY_BUFFER)
    elif mesh.vertex_colors is not None:
        rgb = mesh.vertex_colors.detach().float().clamp(0, 1).cpu().numpy()
        rgba = np.concatenate([rgb, np.ones_like(rgb[:, :1])], axis=1)
        attributes["COLOR_0"] = b.accessor(
            (rgba * 255.0 + 0.5).astype(np.uint8), "VEC4", _UBYTE, target=_ARRAY_BUFFER, normalized=True
        )
    indices = b.accessor(f.numpy().astype(np.uint32).reshape(-1), "SCALAR", _UINT, target=_ELEMENT_ARRAY_BUFFER)
    if mesh.texture is not None:
        image_view = b.view(encode_png(mesh.texture))
        gltf["images"] = [{"bufferView": image_view, "mimeType": "image/png", "name": f"{name}_basecolor"}]
        gltf["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}]
        gltf["textures"] = [{"sampler": 0, "source": 0}]
        material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0, "texCoord": 0}

    pad = (-len(b.blob)) % 4
    b.blob.extend(b"\x00" * pad)
    gltf.update(
        {
            "scene": 0,
            "scenes": [{"nodes": [0]}],
            "nodes": [{"mesh": 0, "name": name}],
            "meshes": [
                {"name": name, "primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}
            ],
            "materials": [material],
            "accessors": b.accessors,
            "bufferViews": b.views,
            "buffers": [{"byteLength": len(b.blob)}],
        }
    )
    js = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    js += b" " * ((-len(js)) % 4)
    total = 12 + 8 + len(js) + 8 + len(b.blob)
    out = bytearray(struct.pack("<III", _GLB_MAGIC, 2, total))
    out += struct.pack("<II", len(js), _CHUNK_JSON) + js
    out += struct.pack("<II", len(b.blob), _CHUNK_BIN) + bytes(b.blob)
    return bytes(out)


def write_glb(mesh: TexturedMesh, path: str | Path, *, up_axis: UpAxis = "y", name: str = "synchuman") -> Path:
    """Write ``mesh`` as GLB: glTF Y-up with the subject facing +Z by default (official axis change).

    Textured meshes get ``TEXCOORD_0`` and a PBR material with an embedded PNG ``baseColorTexture``
    (metallic 0, roughness 1; the official file leaves metallic at glTF's default 1). Meshes without a
    texture but with vertex colors get ``COLOR_0``. Smooth vertex normals are always written.

    Written through :mod:`.writer`: never replaces an existing file (a taken name gets ``_00001``), never
    leaves a partial file. Returns the path written.
    """
    p = Path(path)
    return write_file(p.parent, p.name, ".glb", glb_bytes(mesh, up_axis=up_axis, name=name))
