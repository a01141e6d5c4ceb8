"""Benchmark of the mesh export: clean-up + UV unwrap + texture bake on a ~100k-face body mesh.

    python benchmarks/bench_export.py                      # CPU, 1024² texture, 768² views
    python benchmarks/bench_export.py --mode opt --opt-steps 100
    python benchmarks/bench_export.py --device cuda        # rasterisation + bake on the GPU

The stages are timed one by one (wall clock and process CPU time: on a shared machine the CPU time is
the better figure). Views are rendered from the synthetic mesh with known colors (our rasteriser,
generated orientation), so the script also reports how well the exported mesh reproduces them (PSNR on
pixels covered in both).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from synchuman_core.geometry import (
    BakeSettings,
    CleanupSettings,
    TexturedMesh,
    bake_texture,
    cleanup_mesh,
    render_generated_views,
    unwrap_uv,
    views_from_generated,
)
from synchuman_core.geometry.synthetic import smooth_color_field, synthetic_body


class _Timer:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []

    def __call__(self, name: str, fn, *args, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.rows.append((name, time.perf_counter() - w, time.process_time() - c))
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detail", type=int, default=81, help="tessellation of the synthetic body (81 ≈ 100k faces)")
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--view-res", type=int, default=768, help="resolution of the 4 body views and the face view")
    ap.add_argument("--decimate", type=float, default=0.7, help="fraction of faces removed (official 0.7)")
    ap.add_argument("--mode", choices=["fast", "opt"], default="fast")
    ap.add_argument("--opt-steps", type=int, default=100)
    ap.add_argument("--visibility-views", type=int, default=48)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    v, f = synthetic_body(args.detail)
    src = TexturedMesh(v, f, vertex_colors=smooth_color_field(v))
    timer = _Timer()
    rv = timer("render views", render_generated_views, src.to(dev), args.view_res, face_resolution=args.view_res)
    views = views_from_generated(
        rv.colors.cpu(), face=rv.face.cpu(), normals=rv.normals.cpu(), face_normal=rv.face_normal.cpu(), device=dev
    )
    cs = CleanupSettings(decimate_ratio=args.decimate, visibility_views=args.visibility_views)
    bs = BakeSettings(texture_size=args.texture_size, mode=args.mode, opt_steps=args.opt_steps)
    n_render = len(timer.rows)
    v1, f1, _, stats = timer("clean-up", cleanup_mesh, v, f, None, cs, device=dev)
    v2, f2, uv, _ = timer("uv (xatlas)", unwrap_uv, v1, f1, texture_size=args.texture_size)
    tex, bstats = timer("bake", bake_texture, v2.to(dev), f2.to(dev), uv.to(dev), views, bs)

    out = TexturedMesh(v2.to(dev), f2.to(dev), uvs=uv.to(dev), texture=tex)
    back = render_generated_views(out, args.view_res)
    both = back.masks & rv.masks
    mse = ((back.colors - rv.colors) ** 2).movedim(1, -1)[both].mean().item()

    print(f"device {args.device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"input mesh: {f.shape[0]} faces, {v.shape[0]} vertices; views {args.view_res}² + face {args.view_res}²")
    print(
        f"clean-up: {stats['faces_in']:.0f} -> decimated {stats.get('faces_decimated', stats['faces_in']):.0f} -> "
        f"{stats['faces_out']:.0f} faces (invisible removed {stats.get('invisible_faces_removed', 0):.0f}, "
        f"holes filled {stats.get('holes_filled', 0):.0f}); {uv.shape[0]} vertices after UV seams"
    )
    print(f"{'stage':14s} {'wall s':>8s} {'CPU s':>8s}")
    for name, w, c in timer.rows:
        print(f"{name:14s} {w:8.2f} {c:8.2f}")
    export_rows = timer.rows[n_render:]
    print(
        f"{'export total':14s} {sum(r[1] for r in export_rows):8.2f} {sum(r[2] for r in export_rows):8.2f}"
        f"   (texture {args.texture_size}², mode {args.mode})"
    )
    print(f"texel coverage {bstats['texel_coverage']:.3f}; render-back PSNR {10 * math.log10(1 / mse):.2f} dB")


if __name__ == "__main__":
    main()
