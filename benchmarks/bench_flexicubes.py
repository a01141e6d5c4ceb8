"""Time and peak memory of sparse FlexiCubes at 256^3 on a human-sized shell of voxels.

The shell is what the mesh decoder produces: all cubes within a few voxels of the surface of a
human-like union of capsules (torso, head, arms, legs) filling the unit cube, with an analytic SDF
on the cube corners, small random deformations and random FlexiCubes weights / colours.

    PYTHONPATH=. python benchmarks/bench_flexicubes.py [--res 256] [--thickness 3.0] [--threads N]

Prints the number of active cubes, vertices, faces, wall time and the peak resident-memory increase
during extraction (sampled every 5 ms with psutil; inputs excluded).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import sys
import threading
import time

import psutil
import torch

from synchuman_core.geometry.flexicubes import CUBE_CORNERS, sparse_features_to_mesh

# (a, b, radius) capsules in the unit cube [-0.5, 0.5]^3, z up: a standing figure ~0.9 tall.
CAPSULES = [
    ((0.0, 0.0, 0.30), (0.0, 0.0, 0.36), 0.07),  # head
    ((0.0, 0.0, 0.00), (0.0, 0.0, 0.22), 0.11),  # torso
    ((-0.14, 0.0, 0.20), (-0.36, 0.0, 0.02), 0.04),  # left arm
    ((0.14, 0.0, 0.20), (0.36, 0.0, 0.02), 0.04),  # right arm
    ((-0.06, 0.0, -0.04), (-0.08, 0.0, -0.42), 0.055),  # left leg
    ((0.06, 0.0, -0.04), (0.08, 0.0, -0.42), 0.055),  # right leg
]


def human_sdf(p: torch.Tensor) -> torch.Tensor:
    """Signed distance ``[...]`` of points ``[..., 3]`` to the union of :data:`CAPSULES`."""
    d = None
    for a, b, r in CAPSULES:
        a_, b_ = torch.tensor(a), torch.tensor(b)
        ab = b_ - a_
        t = (((p - a_) * ab).sum(-1) / (ab * ab).sum()).clamp(0, 1)
        di = (p - (a_ + t[..., None] * ab)).norm(dim=-1) - r
        d = di if d is None else torch.minimum(d, di)
    return d


def make_shell(res: int, thickness: float, seed: int = 0, solid: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Active cubes within ``thickness`` voxels of the surface (or inside it, ``solid``), ``[N, 101]`` features."""
    g = torch.Generator().manual_seed(seed)
    coords = []
    for x0 in range(0, res, 32):  # slabs keep the dense scan small
        xs = torch.arange(x0, min(x0 + 32, res))
        grid = torch.stack(torch.meshgrid(xs, torch.arange(res), torch.arange(res), indexing="ij"), -1)
        centre = (grid.float() + 0.5) / res - 0.5
        sdf = human_sdf(centre)
        near = (sdf < thickness / res) if solid else (sdf.abs() < thickness / res)
        coords.append(grid[near])
    coords = torch.cat(coords).int()
    n = coords.shape[0]
    corners = coords[:, None, :].float() + torch.tensor(CUBE_CORNERS).float()  # [N, 8, 3]
    feats = torch.randn(n, 101, generator=g)
    feats[:, 0:8] = human_sdf(corners / res - 0.5) * 2 + 1.0 / res  # decoder-like scale, bias compensated
    feats[:, 8:32] *= 0.3
    return coords, feats


def release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc), so the RSS baseline is not inflated by input building."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass


def make_subdivided(res: int, coarse: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cubes of a solid ``coarse^3`` occupancy (voxels within one coarse voxel of the figure), each split
    into its ``(res/coarse)^3`` children, as the decoder's two subdivisions produce."""
    g = torch.Generator().manual_seed(seed)
    k = res // coarse
    grid = torch.stack(torch.meshgrid(*[torch.arange(coarse)] * 3, indexing="ij"), -1).reshape(-1, 3)
    occ = grid[human_sdf((grid.float() + 0.5) / coarse - 0.5) < 1.0 / coarse]
    sub = torch.stack(torch.meshgrid(*[torch.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 3)
    coords = (occ[:, None, :] * k + sub[None]).reshape(-1, 3).int()
    n = coords.shape[0]
    corners = coords[:, None, :].float() + torch.tensor(CUBE_CORNERS).float()
    feats = torch.randn(n, 101, generator=g)
    feats[:, 0:8] = human_sdf(corners / res - 0.5) * 2 + 1.0 / res
    feats[:, 8:32] *= 0.3
    return coords, feats


class PeakRSS:
    """Peak resident set size (bytes) above the value at entry, sampled in a thread."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.proc = interval, psutil.Process()

    def __enter__(self):
        release_free_memory()
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def increase(self) -> int:
        return self.peak - self.base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--thickness", type=float, default=3.0, help="shell half-thickness in voxels")
    ap.add_argument("--solid", action="store_true", help="all cubes inside the figure (plus the shell outside)")
    ap.add_argument(
        "--decoder-like",
        action="store_true",
        help="what the mesh decoder emits: a solid 64^3 occupancy (plus one voxel) subdivided to 256^3 (64 children each)",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.decoder_like:
        coords, feats = make_subdivided(args.res)
    else:
        coords, feats = make_shell(args.res, args.thickness, solid=args.solid)
    print(
        f"res {args.res}, active cubes {coords.shape[0]:,}, input {feats.numel() * 4 / 2**20:.0f} MiB, "
        f"threads {torch.get_num_threads()}"
    )
    for i in range(args.repeat):
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            mesh = sparse_features_to_mesh(coords, feats, res=args.res)
            dt = time.perf_counter() - t0
        print(
            f"run {i}: {dt:.2f} s, peak RSS +{mem.increase / 2**20:.0f} MiB, "
            f"{mesh.vertices.shape[0]:,} vertices, {mesh.faces.shape[0]:,} faces"
        )
        del mesh


if __name__ == "__main__":
    main()
