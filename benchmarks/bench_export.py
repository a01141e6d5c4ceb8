"""Per-step cost of the export recipes (``official`` and ``fast``) at a given texture size and face count.

    python benchmarks/bench_export.py                          # 50k and 200k faces, 1024², CPU
    python benchmarks/bench_export.py --faces 50000 --device cuda
    python benchmarks/bench_export.py --gaussians 600000       # splat renders with a decoder-sized cloud

Every unit of work is timed a few times and multiplied by the recipe's count, so a CPU run finishes in
minutes even where the full recipe takes hours:

- official: visibility render (x1000 at 1024²), Gaussian render (x95 at 1024²), bake rasterisation of a
  view (x100), optimisation step (x1000), TELEA inpaint (x1);
- fast: visibility render (x100 at 512²), projection bake of the 5 views (x1).

The mesh is the synthetic body (overlapping capsules, the size of a cleaned decoder mesh); the views are
rendered from it, the Gaussians sampled from its surface. Wall clock on a shared machine is noisy: the
numbers are the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from synchuman_core.geometry import BakeSettings, TexturedMesh, bake_texture, render_generated_views, unwrap_uv
from synchuman_core.geometry.bake import inpaint_outside_charts, uv_rasterize
from synchuman_core.geometry.cameras import hammersley_cameras
from synchuman_core.geometry.raster import rasterize
from synchuman_core.geometry.splat import render_gaussians
from synchuman_core.geometry.synthetic import (
    smooth_color_field,
    surface_gaussians,
    synthetic_body,
    synthetic_body_detail,
)
from synchuman_core.geometry.texopt import (
    OptSchedule,
    ViewSamples,
    _Adam,
    mip_pyramid,
    prepare_view_samples,
    sample_mipmapped,
)
from synchuman_core.geometry.views import views_from_generated


def _median_time(fn, repeat: int, device: torch.device) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _opt_step(param: torch.Tensor, adam, samples: ViewSamples, target: torch.Tensor, sched: OptSchedule) -> None:
    """One optimisation step as texopt runs it (lookup, L1 + TV, backward, Adam update)."""
    param.grad = None
    loss = sched.tv_weight * ((param[..., 1:, :] - param[..., :-1, :]).abs().mean()
                              + (param[..., :, 1:] - param[..., :, :-1]).abs().mean())
    loss = loss + (sample_mipmapped(mip_pyramid(param), samples) - target).abs().mean()
    loss.backward()
    adam.step(1e-3)


def bench(faces: int, texture: int, gaussians: int, repeat: int, device: torch.device) -> dict[str, float]:
    v, f = synthetic_body(synthetic_body_detail(faces))
    src = TexturedMesh(v, f, vertex_colors=smooth_color_field(v))
    rv = render_generated_views(src, 768, face_resolution=768)
    views = views_from_generated(rv.colors, face=rv.face, normals=rv.normals, face_normal=rv.face_normal,
                                 device=device)
    t = time.perf_counter()
    v2, f2, uv, _ = unwrap_uv(v, f, texture_size=texture)
    uv_s = time.perf_counter() - t
    v2, f2, uv = v2.to(device), f2.to(device), uv.to(device)
    cloud = surface_gaussians(v, f, smooth_color_field, gaussians).to(device)
    cams = hammersley_cameras(100)
    row: dict[str, float] = {"faces": float(f2.shape[0]), "uv_s": uv_s}

    def vis(res: int) -> None:
        cam = cams[7]
        rasterize(cam.project(v2, res, res), f2, res, res)

    row["visibility_1024_view_s"] = _median_time(lambda: vis(1024), repeat, device)
    row["visibility_512_view_s"] = _median_time(lambda: vis(512), repeat, device)
    row["gaussian_render_1024_view_s"] = _median_time(
        lambda: render_gaussians(cloud, cams[11], 1024, 1024), repeat, device)
    obs = render_gaussians(cloud, cams[11], 1024, 1024)
    from synchuman_core.geometry.views import BakeView

    view = BakeView(camera=cams[11], image=obs.color, mask=obs.alpha > 0.5, depth=obs.depth)
    row["bake_rasterise_view_s"] = _median_time(
        lambda: prepare_view_samples(v2, f2, uv, view, texture), repeat, device)
    smp = prepare_view_samples(v2, f2, uv, view, texture)
    target = smp.target.float() / 255
    param = torch.zeros(1, 3, texture, texture, device=device, requires_grad=True)
    sched = OptSchedule()
    adam = _Adam(param, sched.betas)
    row["opt_step_s"] = _median_time(lambda: _opt_step(param, adam, smp, target, sched), max(repeat, 5), device)
    tex = torch.rand(texture, texture, 3, device=device)
    inside = uv_rasterize(f2, uv, texture).mask
    row["telea_s"] = _median_time(lambda: inpaint_outside_charts(tex, inside, "telea"), 1, device)
    row["fast_bake_s"] = _median_time(
        lambda: bake_texture(v2, f2, uv, views, BakeSettings(texture_size=texture, mode="fast")), 1, device)
    row["official_total_s"] = (1000 * row["visibility_1024_view_s"] + 95 * row["gaussian_render_1024_view_s"]
                               + 100 * row["bake_rasterise_view_s"] + 1000 * row["opt_step_s"] + row["telea_s"]
                               + uv_s)
    row["fast_total_s"] = 100 * row["visibility_512_view_s"] + row["fast_bake_s"] + uv_s
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, nargs="+", default=[50000, 200000])
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--gaussians", type=int, default=300000, help="Gaussians in the splat renders")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    print(f"device {dev}, texture {a.texture_size}², {a.gaussians} Gaussians, torch threads {torch.get_num_threads()}")
    for n in a.faces:
        row = bench(n, a.texture_size, a.gaussians, a.repeat, dev)
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
