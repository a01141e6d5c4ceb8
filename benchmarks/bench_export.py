"""Benchmark of the mesh export: clean-up + UV unwrap + texture bake on a ~100k-face body mesh.

    python benchmarks/bench_export.py                      # CPU, 1024² texture, 768² views
    python benchmarks/bench_export.py --mode opt --opt-steps 100
    python benchmarks/bench_export.py --device cuda        # rasterisation + bake on the GPU

Views are rendered from the synthetic mesh with known colors (our rasteriser, generated orientation), so
the script also reports how well the exported mesh reproduces them (PSNR on pixels covered in both).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from synchuman_core.export import ExportSettings, export_mesh
from synchuman_core.geometry import BakeSettings, CleanupSettings, TexturedMesh, render_generated_views
from synchuman_core.geometry.synthetic import smooth_color_field, synthetic_body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detail", type=int, default=54, help="tessellation of the synthetic body (54 ≈ 100k faces)")
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

    v, f = synthetic_body(args.detail)
    src = TexturedMesh(v, f, vertex_colors=smooth_color_field(v))
    t0 = time.perf_counter()
    views = render_generated_views(src.to(args.device), args.view_res, face_resolution=args.view_res)
    t_views = time.perf_counter() - t0
    settings = ExportSettings(
        cleanup=CleanupSettings(decimate_ratio=args.decimate, visibility_views=args.visibility_views),
        bake=BakeSettings(texture_size=args.texture_size, mode=args.mode, opt_steps=args.opt_steps),
    )
    t0 = time.perf_counter()
    res = export_mesh(
        v,
        f,
        views=views.colors.cpu(),
        face_view=views.face.cpu(),
        normal_views=views.normals.cpu(),
        face_normal=views.face_normal.cpu(),
        settings=settings,
        device=args.device,
    )
    total = time.perf_counter() - t0

    back = render_generated_views(res.mesh.to(args.device), args.view_res)
    both = (back.masks & views.masks).cpu()
    mse = ((back.colors.cpu() - views.colors.cpu()) ** 2).movedim(1, -1)[both].mean().item()
    st = res.mesh.stats
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"input mesh: {f.shape[0]} faces, {v.shape[0]} vertices; views {args.view_res}² (render {t_views:.2f} s)")
    print(
        f"clean-up: {st['faces_in']:.0f} -> decimated {st.get('faces_decimated', st['faces_in']):.0f} -> "
        f"{st['faces_out']:.0f} faces (invisible removed {st.get('invisible_faces_removed', 0):.0f}, "
        f"holes filled {st.get('holes_filled', 0):.0f})"
    )
    for stage in ("cleanup", "uv", "bake"):
        print(f"  {stage:8s} {res.timings.get(stage, 0.0):7.2f} s")
    print(f"  {'total':8s} {total:7.2f} s  (texture {args.texture_size}², mode {args.mode})")
    print(f"texel coverage {st.get('texel_coverage', 0):.3f}; render-back PSNR {10 * math.log10(1 / mse):.2f} dB")


if __name__ == "__main__":
    main()
