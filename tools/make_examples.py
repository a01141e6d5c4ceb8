"""Make the pack's example inputs, template thumbnails and registry icon from our own code.

    python tools/make_examples.py            # write every file
    python tools/make_examples.py --check    # exit 1 if a file is missing or an input image differs

Everything is drawn or rendered here, so the pack ships no third-party image:

* ``example_inputs/synchuman_example_person.png``: the synthetic person cut-out of
  :func:`synchuman_core.demo.example_person` (RGBA, transparent background);
* ``example_inputs/synchuman_view_{front,right,back,left}.png``: a synthetic human body
  (:func:`synchuman_core.geometry.synthetic.synthetic_human`, our FlexiCubes on a body SDF) coloured like
  that person and rendered by our rasteriser into the four body views in the order and orientation the
  stage-1 sampler produces (views 2 and 3 mirrored);
* ``example_workflows/<name>.jpg``: per template, the images its Load Image nodes read, an arrow, and a
  three-quarter render of the same body (what the template turns a photo into, as an illustration); a
  template that previews its stages also gets a row of stage images (a colour view, a normal view, the
  block structure, the result);
* ``docs/images/icon.png``: the render alone, square, for the Comfy Registry (``[tool.comfy] Icon``).

The images are deterministic (no random numbers); ``--check`` compares the input PNGs pixel by pixel and
only checks that thumbnails and icon exist and decode, since JPEG bytes depend on the Pillow version.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synchuman_core.demo import example_person  # noqa: E402
from synchuman_core.geometry.cameras import yaw_pitch_camera  # noqa: E402
from synchuman_core.geometry.mesh import TexturedMesh  # noqa: E402
from synchuman_core.geometry.render import render_generated_views, render_mesh  # noqa: E402
from synchuman_core.geometry.synthetic import synthetic_human  # noqa: E402

INPUTS = ROOT / "example_inputs"
TEMPLATES = ROOT / "example_workflows"
ICON = ROOT / "docs" / "images" / "icon.png"
PERSON = "synchuman_example_person.png"
VIEW_NAMES = ("front", "right", "back", "left")  # stage-1 order: 0 front, 1 right, 2 back, 3 left
VIEW_SIZE = 384
THUMB = (512, 512)
ICON_SIZE = 400  # the registry accepts up to 800 x 400

# The person's palette (synchuman_core.demo): skin, hair, shirt, trousers, shoes.
SKIN, HAIR, SHIRT, TROUSERS, SHOES = (224, 172, 140), (60, 40, 30), (40, 110, 190), (50, 50, 70), (30, 30, 30)
BACKGROUND = (246, 246, 248)


def person_colors(v: torch.Tensor) -> torch.Tensor:
    """Per-vertex RGB of the synthetic body (z up, front at -y), dressed like the example person."""
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    c = torch.empty(v.shape[0], 3)

    def paint(sel: torch.Tensor, rgb: tuple[int, int, int]) -> None:
        c[sel] = torch.tensor(rgb, dtype=torch.float32) / 255.0

    paint(torch.ones_like(z, dtype=torch.bool), SHIRT)
    paint(z < -0.08, TROUSERS)
    paint(z < -0.41, SHOES)
    paint((x.abs() > 0.24) & (z < 0.09), SKIN)  # hands
    paint(z > 0.275, SKIN)  # neck and face
    paint((z > 0.41) | ((z > 0.33) & (y > 0.02)), HAIR)  # top and back of the head
    return c


def body_mesh(res: int = 96) -> TexturedMesh:
    v, f = synthetic_human(res)
    return TexturedMesh(vertices=v, faces=f, vertex_colors=person_colors(v))


def _shade(color: torch.Tensor, normal: torch.Tensor, mask: torch.Tensor, light=(-0.45, -0.8, 0.55)) -> Image.Image:
    """Lambert shading of a render (``normal`` is ``n * 0.5 + 0.5``) on the light background."""
    n = normal * 2 - 1
    lvec = torch.tensor(light) / math.sqrt(sum(a * a for a in light))
    lam = (n * lvec[:, None, None]).sum(0).clamp(min=0)
    img = color * (0.42 + 0.58 * lam)[None]
    bg = torch.tensor(BACKGROUND, dtype=torch.float32)[:, None, None] / 255.0
    img = torch.where(mask[None], img, bg)
    return Image.fromarray((img.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))


def hero_render(mesh: TexturedMesh, size: int, fov_deg: float = 27.0) -> Image.Image:
    """Three-quarter view of the body, supersampled 2x."""
    cam = yaw_pitch_camera(-math.pi + 0.55, 0.12, radius=2.0, fov_deg=fov_deg)
    color, normal, mask = render_mesh(mesh, cam, 2 * size, 2 * size)
    return _shade(color, normal, mask).resize((size, size), Image.Resampling.LANCZOS)


def structure_render(size: int, res: int = 40) -> Image.Image:
    """The body as a block structure (occupied cells of a ``res``^3 grid), like the stage-1 voxel preview."""
    import trimesh

    from synchuman_core.geometry.synthetic import body_sdf

    g = (torch.arange(res, dtype=torch.float32) + 0.5) / res - 0.5
    pts = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), dim=-1).view(-1, 3)
    occ = (body_sdf(pts) < 0).view(res, res, res).numpy()
    boxes = trimesh.voxel.VoxelGrid(occ).as_boxes()
    v = torch.tensor(np.asarray(boxes.vertices), dtype=torch.float32) / res - 0.5
    f = torch.tensor(np.asarray(boxes.faces), dtype=torch.long)
    mesh = TexturedMesh(vertices=v, faces=f, vertex_colors=torch.full_like(v, 0.72))
    return hero_render(mesh, size)


def normal_render(mesh: TexturedMesh, size: int) -> Image.Image:
    """The front view's normals (``n * 0.5 + 0.5``), like the stage-1 normal maps."""
    views = render_generated_views(mesh, 2 * size)
    img = views.normals[0].clamp(0, 1).permute(1, 2, 0).numpy()
    return Image.fromarray((img * 255 + 0.5).astype(np.uint8)).resize((size, size), Image.Resampling.LANCZOS)


def view_images(mesh: TexturedMesh, size: int = VIEW_SIZE) -> list[Image.Image]:
    """The four body views in stage-1 order and orientation, RGB on white."""
    views = render_generated_views(mesh, 2 * size)
    out = []
    for k in range(4):
        img = views.colors[k].clamp(0, 1).permute(1, 2, 0).numpy()
        out.append(Image.fromarray((img * 255 + 0.5).astype(np.uint8)).resize((size, size), Image.Resampling.LANCZOS))
    return out


def example_images(mesh: TexturedMesh) -> dict[str, Image.Image]:
    imgs = {PERSON: example_person(768)}
    for name, img in zip(VIEW_NAMES, view_images(mesh), strict=True):
        imgs[f"synchuman_view_{name}.png"] = img
    return imgs


def loaded_images(workflow: dict) -> list[str]:
    """File names the template's Load Image nodes read, in node-id order."""
    nodes = sorted(workflow.get("nodes", []), key=lambda n: n["id"])
    return [n["widgets_values"][0] for n in nodes if n.get("type") == "LoadImage" and n.get("widgets_values")]


def _on_background(img: Image.Image) -> Image.Image:
    base = Image.new("RGB", img.size, BACKGROUND)
    if img.mode == "RGBA":
        base.paste(img, (0, 0), img)
        return base
    return img.convert("RGB")


def _fit(img: Image.Image, box: tuple[int, int]) -> Image.Image:
    s = min(box[0] / img.width, box[1] / img.height)
    return img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.Resampling.LANCZOS)


def thumbnail(inputs: list[Image.Image], render: Image.Image) -> Image.Image:
    """Inputs in a column on the left, an arrow, the render on the right."""
    w, h = THUMB
    canvas = Image.new("RGB", (w, h), BACKGROUND)
    d = ImageDraw.Draw(canvas)
    col_w, pad = 150, 12
    n = max(1, len(inputs))
    cell_h = (h - pad * (n + 1)) // n
    for k, img in enumerate(inputs):
        tile = _fit(_on_background(img), (col_w - 2 * pad, cell_h))
        x = pad + (col_w - 2 * pad - tile.width) // 2
        y = pad + k * (cell_h + pad) + (cell_h - tile.height) // 2
        canvas.paste(tile, (x, y))
        d.rectangle([x - 1, y - 1, x + tile.width, y + tile.height], outline=(200, 200, 206))
    ay = h // 2
    d.line([col_w + 4, ay, col_w + 34, ay], fill=(90, 90, 100), width=5)
    d.polygon([(col_w + 34, ay - 11), (col_w + 50, ay), (col_w + 34, ay + 11)], fill=(90, 90, 100))
    side = min(w - col_w - 58, h)
    r = _fit(render, (side, side))
    canvas.paste(r, (w - r.width - 4, (h - r.height) // 2))
    return canvas


def stages_thumbnail(inputs: list[Image.Image], render: Image.Image, stages: list[Image.Image]) -> Image.Image:
    """:func:`thumbnail` with a row of stage previews (views, normals, structure) along the bottom."""
    w, h = THUMB
    strip_h = 128
    top = thumbnail(inputs, render).resize((w * (h - strip_h) // h, h - strip_h), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (w, h), BACKGROUND)
    canvas.paste(top, ((w - top.width) // 2, 0))
    d = ImageDraw.Draw(canvas)
    cell = (w - 8) // len(stages)
    for k, img in enumerate(stages):
        tile = _fit(_on_background(img), (cell - 12, strip_h - 12))
        x = 4 + k * cell + (cell - tile.width) // 2
        y = h - strip_h + (strip_h - tile.height) // 2
        canvas.paste(tile, (x, y))
        d.rectangle([x - 1, y - 1, x + tile.width, y + tile.height], outline=(200, 200, 206))
    return canvas


def build(mesh: TexturedMesh | None = None) -> dict[Path, Image.Image]:
    """Every file this tool writes, by path."""
    mesh = mesh or body_mesh()
    files: dict[Path, Image.Image] = {INPUTS / k: v for k, v in example_images(mesh).items()}
    render = hero_render(mesh, 400)
    by_name = {p.name: img for p, img in files.items()}
    stages = [by_name["synchuman_view_front.png"], normal_render(mesh, VIEW_SIZE), structure_render(VIEW_SIZE), render]
    for wf_path in sorted(TEMPLATES.glob("*.json")):
        wf = json.loads(wf_path.read_text(encoding="utf-8"))
        names = loaded_images(wf)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise SystemExit(f"{wf_path.name} loads {missing}, which are not example inputs ({sorted(by_name)})")
        inputs = [by_name[n] for n in names]
        previews = any(n.get("type") == "PreviewImage" for n in wf.get("nodes", []))  # a template showing each stage
        files[wf_path.with_suffix(".jpg")] = (stages_thumbnail(inputs, render, stages) if previews
                                              else thumbnail(inputs, render))
    files[ICON] = hero_render(mesh, ICON_SIZE, fov_deg=31.0)  # the whole figure with a margin
    return files


def _same_pixels(path: Path, img: Image.Image) -> bool:
    with Image.open(path) as old:
        return old.mode == img.mode and old.size == img.size and np.array_equal(np.asarray(old), np.asarray(img))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="report missing or changed files; write nothing")
    a = ap.parse_args(argv)
    bad = 0
    for path, img in build().items():
        rel = path.relative_to(ROOT)
        if a.check:
            if not path.is_file():
                sys.stderr.write(f"missing {rel}; run python tools/make_examples.py\n")
                bad += 1
            elif path.suffix == ".png" and path.parent == INPUTS and not _same_pixels(path, img):
                sys.stderr.write(f"{rel} differs from what tools/make_examples.py makes\n")
                bad += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".jpg":
            img.save(path, quality=88, optimize=True)
        else:
            img.save(path, optimize=True)
        sys.stdout.write(f"wrote {rel} ({path.stat().st_size // 1024} KB)\n")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
