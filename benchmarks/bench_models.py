"""Forward time and peak memory of the structure decoder, the structure flow and the SLat flow.

    python -m benchmarks.bench_models                    # fixture configs + medium (half width) configs
    python -m benchmarks.bench_models --preset real      # the shipped configs (heavy on CPU)
    python -m benchmarks.bench_models --device cuda --dtype float16

Each case builds a model with random weights, runs one warm-up forward and ``--repeat`` timed forwards
under ``torch.no_grad()`` and prints: parameters, median wall time, and peak memory of the forward
(CUDA: ``torch.cuda.max_memory_allocated`` above the weights; CPU: peak process RSS sampled every 2 ms
above the RSS before the first forward, an approximation). "medium" halves the widths of the real configs and keeps the real
spatial sizes; its transformer depth is ``--blocks`` (default 4; ms/block is printed to extrapolate).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import torch

from synchuman_core.sparse import SparseTensor
from synchuman_core.stage1.structure_decoder import SparseStructureDecoder, SparseStructureDecoderConfig
from synchuman_core.stage1.structure_flow import SparseStructureFlowConfig, SparseStructureFlowModel
from synchuman_core.stage2.slat_flow import SLatFlowConfig, SLatFlowModel


@dataclass
class Case:
    name: str
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[torch.device, torch.dtype], tuple]
    blocks: int = 0


def shell_coords(res: int, radius: float, thickness: float, batch: int) -> torch.Tensor:
    """Voxels of a spherical shell (a stand-in for a body surface), ``[N, 4]`` int32 (b, x, y, z)."""
    r = torch.arange(res, dtype=torch.float32) - (res - 1) / 2
    d = (r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2).sqrt()
    xyz = torch.nonzero((d - radius).abs() < thickness / 2).int()
    return torch.cat([torch.cat([torch.full((len(xyz), 1), b, dtype=torch.int32), xyz], 1) for b in range(batch)])


def decoder_case(name: str, channels: list[int], res_blocks: int, middle: int) -> Case:
    cfg = SparseStructureDecoderConfig(1, 8, res_blocks, channels, middle)
    return Case(name, lambda: SparseStructureDecoder(cfg), lambda dev, dt: (torch.randn(1, 8, 16, 16, 16, device=dev),))


def structure_flow_case(name: str, ch: int, cond: int, blocks: int, heads: int, mlp: float) -> Case:
    cfg = SparseStructureFlowConfig(16, 8, ch, cond, 8, blocks, heads, mlp_ratio=mlp, patch_size=1, qk_rms_norm=True)

    def inputs(dev, dt):
        return (torch.randn(2, 8, 16, 16, 16, device=dev), torch.tensor([800.0, 300.0], device=dev),
                torch.randn(2, 1374, cond, device=dev))

    return Case(name, lambda: SparseStructureFlowModel(cfg), inputs, blocks)


def slat_flow_case(name: str, ch: int, cond: int, blocks: int, heads: int, mlp: float, io: int,
                   radius: float) -> Case:
    cfg = SLatFlowConfig(64, 8, ch, cond, 8, blocks, heads, mlp_ratio=mlp, patch_size=2, io_block_channels=[io],
                         qk_rms_norm=True)
    coords = shell_coords(64, radius, 2.5, 1)

    def inputs(dev, dt):
        x = SparseTensor(torch.randn(len(coords), 8, device=dev), coords.to(dev))
        return x, torch.tensor([750.0], device=dev), torch.randn(1, 1374, cond, device=dev)

    return Case(f"{name} (N={len(coords)})", lambda: SLatFlowModel(cfg), inputs, blocks)


def cases(preset: str, blocks: int) -> list[Case]:
    if preset == "fixture":
        return [
            decoder_case("ss_decoder fixture b", [32, 16, 8], 1, 1),
            structure_flow_case("ss_flow fixture c", 64, 32, 2, 4, 2),
            slat_flow_case("slat_flow fixture e", 64, 32, 2, 4, 2, 16, 12.0),
        ]
    if preset == "medium":
        return [
            decoder_case("ss_decoder medium", [256, 64, 16], 2, 2),
            structure_flow_case(f"ss_flow medium x{blocks}", 512, 1024, blocks, 8, 4),
            slat_flow_case(f"slat_flow medium x{blocks}", 512, 1024, blocks, 8, 4, 64, 20.0),
        ]
    return [
        decoder_case("ss_decoder real", [512, 128, 32], 2, 2),
        structure_flow_case(f"ss_flow real x{blocks}", 1024, 1024, blocks, 16, 4),
        slat_flow_case(f"slat_flow real x{blocks}", 1024, 1024, blocks, 16, 4, 128, 20.0),
    ]


class RssPeak:
    """Peak RSS of this process while the context is open (sampled every 2 ms)."""

    def __enter__(self) -> RssPeak:
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


@torch.no_grad()
def run_case(case: Case, device: torch.device, dtype: torch.dtype, repeat: int) -> str:
    model = case.build().to(device=device, dtype=dtype).eval()
    n_params = sum(p.numel() for p in model.parameters())
    inputs = case.inputs(device, dtype)
    inputs = tuple(i.to(dtype) if torch.is_tensor(i) and i.is_floating_point() else i for i in inputs)
    if isinstance(inputs[0], SparseTensor):
        inputs = (inputs[0].to(dtype), *inputs[1:])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with RssPeak() as rss:
        model(*inputs)  # warm-up (neighbour maps, kernels); inside the RSS window: freed memory is reused later
        sync()
        for _ in range(repeat):
            t0 = time.perf_counter()
            model(*inputs)
            sync()
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated(device) - base) if device.type == "cuda" else rss.peak - rss.base
    t = statistics.median(times)
    per_block = f"  {1000 * t / case.blocks:8.1f} ms/block" if case.blocks else ""
    return f"{case.name:38s} {n_params / 1e6:9.2f} M  {t * 1000:10.1f} ms  peak +{peak / 2**20:8.1f} MiB{per_block}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=["fixture", "medium", "real", "default"], default="default")
    ap.add_argument("--blocks", type=int, default=4, help="transformer depth of the medium/real flow cases")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, device {device}, dtype {args.dtype}, {torch.get_num_threads()} threads")
    presets = ["fixture", "medium"] if args.preset == "default" else [args.preset]
    for preset in presets:
        for case in cases(preset, args.blocks):
            print(run_case(case, device, dtype, args.repeat), flush=True)


if __name__ == "__main__":
    main()
