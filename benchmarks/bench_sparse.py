"""Micro-benchmark of the sparse ops on surface-like voxel sets (a spherical shell, as a body surface).

    python benchmarks/bench_sparse.py            # ~20k voxels at 64^3: conv 128 ch, swin attention 768 ch
    python benchmarks/bench_sparse.py --large    # + mesh-decoder scale: ~1M voxels at 256^3, 96/192 ch

Prints wall times (median of --repeat runs) of: neighbour-map build, submanifold 3x3x3 conv, window
partition, windowed (swin) attention, full attention, group norm.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from synchuman_core.sparse import (
    SparseConv3d,
    SparseGroupNorm32,
    SparseMultiHeadAttention,
    SparseSubdivide,
    SparseTensor,
    neighbour_map,
    sparse_windowed_self_attention,
    window_partition,
)


def shell(res: int, radius: float, thickness: float, channels: int, batch: int = 1) -> SparseTensor:
    r = torch.arange(res, dtype=torch.float32) - (res - 1) / 2
    d = (r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2).sqrt()
    xyz = torch.nonzero((d - radius).abs() < thickness / 2).int()
    coords = torch.cat(
        [torch.cat([torch.full((xyz.shape[0], 1), b, dtype=torch.int32), xyz], 1) for b in range(batch)]
    )
    return SparseTensor(torch.randn(coords.shape[0], channels), coords)


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fresh(x: SparseTensor) -> SparseTensor:
    return SparseTensor(x.feats, x.coords.clone())


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--large", action="store_true", help="also run the ~1M-voxel mesh-decoder case")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    x = shell(64, 25.0, 2.2, 128)
    print(f"\nshell at 64^3: {x.num_voxels} voxels")
    print(f"  neighbour map 3^3 build      {timed(lambda: neighbour_map(fresh(x), (3, 3, 3)), args.repeat) * 1e3:8.1f} ms")
    conv = SparseConv3d(128, 128, 3)
    conv(x)
    print(f"  submconv 3^3 128->128 ({x.num_voxels} vox) {timed(lambda: conv(x), args.repeat) * 1e3:8.1f} ms")

    h = x.replace(torch.randn(x.num_voxels, 768))
    print(f"  window partition 8^3          {timed(lambda: window_partition(fresh(h), (8,) * 3, (4,) * 3), args.repeat) * 1e3:8.1f} ms")
    q, k, v = (torch.randn(h.num_voxels, 12, 64) for _ in range(3))
    sparse_windowed_self_attention(q, k, v, h, 8, 4)
    print(f"  swin attention kernel 12x64, window 8, shift 4 {timed(lambda: sparse_windowed_self_attention(q, k, v, h, 8, 4), args.repeat) * 1e3:8.1f} ms")
    swin = SparseMultiHeadAttention(768, 12, attn_mode="swin", window_size=8, shift_window=4).eval()
    swin(h)
    print(f"  swin attention 768 ch 12 heads (incl. qkv/out) {timed(lambda: swin(h), args.repeat) * 1e3:8.1f} ms")
    part = window_partition(h, (8,) * 3, (4,) * 3)
    print(f"    windows: {len(part.seq_lens)}, max {max(part.seq_lens)} voxels")
    small = shell(64, 12.0, 2.2, 1024, batch=2)
    full = SparseMultiHeadAttention(1024, 16, qk_rms_norm=True).eval()
    print(f"  full attention 1024 ch ({small.num_voxels} vox, B=2) {timed(lambda: full(small), args.repeat) * 1e3:8.1f} ms")

    if args.large:
        sub = SparseSubdivide()
        mid = sub(shell(64, 25.0, 2.2, 1))  # 128^3, as after the decoder's first subdivide block
        parent = SparseTensor(torch.randn(mid.num_voxels, 192), mid.coords)
        big = sub(parent)  # 256^3, lazily subdivided
        plain = SparseTensor(big.feats, big.coords)
        print(f"\nsubdivided shell at 256^3: {big.num_voxels} voxels ({parent.num_voxels} parents at 128^3)")
        print(f"  neighbour map 3^3 build      {timed(lambda: neighbour_map(fresh(plain), (3, 3, 3)), 1) * 1e3:8.1f} ms")
        c1 = SparseConv3d(192, 96, 3)
        c1(big)
        print(f"  submconv 3^3 192->96 right after subdivide (parent path) {timed(lambda: c1(big), 1) * 1e3:8.1f} ms")
        print(f"  submconv 3^3 192->96 same voxels, generic path          {timed(lambda: c1(plain), 1) * 1e3:8.1f} ms")
        b96 = plain.replace(torch.randn(plain.num_voxels, 96))
        c2 = SparseConv3d(96, 96, 3)
        print(f"  submconv 3^3 96->96          {timed(lambda: c2(b96), 1) * 1e3:8.1f} ms")
        gn = SparseGroupNorm32(32, 96)
        print(f"  group norm 32 groups 96 ch   {timed(lambda: gn(b96), 1) * 1e3:8.1f} ms")

if __name__ == "__main__":
    main()
