"""Stand-ins of the ComfyUI 0.8.0 core nodes our example workflows use.

Schemas (ids, input names and order, types, defaults, categories) follow the real nodes, so UI workflows
convert and validate here as on the server (``tests/test_comfy_server.py`` compares them with the real
``/object_info``). Behaviour is what the workflows rely on: ``LoadImage`` returns ``IMAGE [1, H, W, 3]`` and
``MASK = 1 - alpha`` (a 64x64 zero mask without alpha); the savers write files and return the same ``ui``
entries; ``VoxelToMesh`` makes one quad pair per exposed voxel face for both algorithms.
"""

from __future__ import annotations

import json
import os
import struct

import folder_paths
import numpy as np
import torch
from comfy_api.latest import Types, io, ui
from PIL import Image, ImageOps, ImageSequence


class LoadImage:
    DISPLAY_NAME = "Load Image"
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI name)
        d = folder_paths.get_input_directory()
        files = sorted(f for f in os.listdir(d) if os.path.isfile(os.path.join(d, f))) if os.path.isdir(d) else []
        return {"required": {"image": (files, {"image_upload": True})}}

    def load_image(self, image):
        img = Image.open(folder_paths.get_annotated_filepath(image))
        images, masks = [], []
        for frame in ImageSequence.Iterator(img):
            frame = ImageOps.exif_transpose(frame)
            rgb = np.asarray(frame.convert("RGB")).astype(np.float32) / 255.0
            if "A" in frame.getbands():
                mask = 1.0 - torch.from_numpy(np.asarray(frame.getchannel("A")).astype(np.float32) / 255.0)
            else:
                mask = torch.zeros((64, 64), dtype=torch.float32)
            images.append(torch.from_numpy(rgb)[None])
            masks.append(mask[None])
        return torch.cat(images), torch.cat(masks)

    @classmethod
    def VALIDATE_INPUTS(cls, image):  # noqa: N802 (ComfyUI name)
        if not os.path.exists(folder_paths.get_annotated_filepath(image)):
            return f"Invalid image file: {image}"
        return True


class SaveImage:
    DISPLAY_NAME = "Save Image"
    CATEGORY = "image"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."
    kind, prefix_append = "output", ""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI name)
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": "The prefix for the file to save. "
                                               "This may include formatting information such as %date:yyyy-MM-dd% "
                                               "or %Empty Latent Image.width% to include values from nodes."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def _dir(self):
        return folder_paths.get_output_directory() if self.kind == "output" else folder_paths.get_temp_directory()

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        full, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix + self.prefix_append,
                                                                             self._dir())
        results = []
        for img in images:
            arr = np.clip(255.0 * img.cpu().numpy(), 0, 255).astype(np.uint8)
            f = f"{name}_{counter:05}_.png"
            Image.fromarray(arr).save(os.path.join(full, f))
            results.append({"filename": f, "subfolder": subfolder, "type": self.kind})
            counter += 1
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    DISPLAY_NAME = "Preview Image"
    kind, prefix_append = "temp", "_temp_standin"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 (ComfyUI name)
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}


class ImageFromBatch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ImageFromBatch",
            category="image/batch",
            inputs=[
                io.Image.Input("image"),
                io.Int.Input("batch_index", default=0, min=0, max=4095),
                io.Int.Input("length", default=1, min=1, max=4096),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image, batch_index, length):
        i = min(image.shape[0] - 1, batch_index)
        n = min(image.shape[0] - i, length)
        return io.NodeOutput(image[i:i + n].clone())


def _voxel_faces(grid: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exposed faces of ``grid [D, H, W] > threshold`` as a quad mesh (two triangles each), y-up, centred."""
    occ = grid > threshold
    pad = torch.nn.functional.pad(occ.float(), (1, 1, 1, 1, 1, 1))
    idx = torch.argwhere(occ)
    verts, faces = [], []
    n = 0
    for axis in range(3):
        for side in (0, 1):
            off = torch.zeros(3, dtype=torch.long)
            off[axis] = 1 if side else -1
            nb = idx + off + 1
            exposed = idx[pad[nb[:, 0], nb[:, 1], nb[:, 2]] == 0]
            a, b = [d for d in range(3) if d != axis]
            for p in exposed.tolist():
                base = [float(c) for c in p]
                base[axis] += side
                quad = []
                for da, db in ((0, 0), (1, 0), (1, 1), (0, 1)):
                    q = list(base)
                    q[a] += da
                    q[b] += db
                    quad.append(q)
                verts += quad
                faces += [[n, n + 1, n + 2], [n, n + 2, n + 3]]
                n += 4
    v = torch.tensor(verts, dtype=torch.float32).reshape(-1, 3)
    f = torch.tensor(faces, dtype=torch.long).reshape(-1, 3)
    size = max(grid.shape)
    v = (v - size / 2) / (size / 2)
    return torch.fliplr(v), f


class VoxelToMeshBasic(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VoxelToMeshBasic",
            category="3d",
            inputs=[io.Voxel.Input("voxel"), io.Float.Input("threshold", default=0.6, min=-1.0, max=1.0, step=0.01)],
            outputs=[io.Mesh.Output()],
        )

    @classmethod
    def execute(cls, voxel, threshold):
        vs, fs = zip(*[_voxel_faces(x, threshold) for x in voxel.data], strict=True)
        return io.NodeOutput(Types.MESH(torch.stack(vs), torch.stack(fs)))


class VoxelToMesh(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VoxelToMesh",
            category="3d",
            inputs=[
                io.Voxel.Input("voxel"),
                io.Combo.Input("algorithm", options=["surface net", "basic"]),
                io.Float.Input("threshold", default=0.6, min=-1.0, max=1.0, step=0.01),
            ],
            outputs=[io.Mesh.Output()],
        )

    @classmethod
    def execute(cls, voxel, algorithm, threshold):
        vs, fs = zip(*[_voxel_faces(x, threshold) for x in voxel.data], strict=True)
        return io.NodeOutput(Types.MESH(torch.stack(vs), torch.stack(fs)))


def write_plain_glb(vertices: torch.Tensor, faces: torch.Tensor, path: str) -> None:
    """A minimal geometry-only GLB (what core ``save_glb`` writes, without the metadata)."""
    v = vertices.detach().cpu().numpy().astype(np.float32)
    f = faces.detach().cpu().numpy().astype(np.uint32)
    vb, fb = v.tobytes(), f.tobytes()
    gltf = {
        "asset": {"version": "2.0"}, "buffers": [{"byteLength": len(vb) + len(fb)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(vb), "target": 34962},
                        {"buffer": 0, "byteOffset": len(vb), "byteLength": len(fb), "target": 34963}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": len(v), "type": "VEC3",
                       "min": v.min(0).tolist() if len(v) else [0, 0, 0],
                       "max": v.max(0).tolist() if len(v) else [0, 0, 0]},
                      {"bufferView": 1, "componentType": 5125, "count": f.size, "type": "SCALAR"}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1, "mode": 4}]}],
        "nodes": [{"mesh": 0}], "scenes": [{"nodes": [0]}], "scene": 0,
    }
    js = json.dumps(gltf).encode()
    js += b" " * ((4 - len(js) % 4) % 4)
    binary = vb + fb
    binary += b"\0" * ((4 - len(binary) % 4) % 4)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<4sII", b"glTF", 2, 12 + 8 + len(js) + 8 + len(binary)))
        fh.write(struct.pack("<II", len(js), 0x4E4F534A) + js)
        fh.write(struct.pack("<II", len(binary), 0x004E4942) + binary)


class SaveGLB(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SaveGLB",
            category="3d",
            is_output_node=True,
            inputs=[io.Mesh.Input("mesh"), io.String.Input("filename_prefix", default="mesh/ComfyUI")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
        )

    @classmethod
    def execute(cls, mesh, filename_prefix):
        full, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix,
                                                                             folder_paths.get_output_directory())
        results = []
        for i in range(mesh.vertices.shape[0]):
            f = f"{name}_{counter:05}_.glb"
            write_plain_glb(mesh.vertices[i], mesh.faces[i], os.path.join(full, f))
            results.append({"filename": f, "subfolder": subfolder, "type": "output"})
            counter += 1
        return io.NodeOutput(ui={"3d": results})


class Preview3D(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Preview3D",
            display_name="Preview 3D & Animation",
            category="3d",
            is_experimental=True,
            is_output_node=True,
            inputs=[
                io.String.Input("model_file", default="", multiline=False),
                io.Load3DCamera.Input("camera_info", optional=True),
                io.Image.Input("bg_image", optional=True),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, model_file, **kwargs):
        return io.NodeOutput(ui=ui.PreviewUI3D(model_file, kwargs.get("camera_info")))


CORE_NODES: dict[str, type] = {
    "LoadImage": LoadImage,
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
    "ImageFromBatch": ImageFromBatch,
    "VoxelToMeshBasic": VoxelToMeshBasic,
    "VoxelToMesh": VoxelToMesh,
    "SaveGLB": SaveGLB,
    "Preview3D": Preview3D,
}
