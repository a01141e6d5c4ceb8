"""Peak host memory and time of loading SyncHuman components, relative to the weight bytes.

    python -m benchmarks.bench_load                      # tiny checkpoint (test size), every component
    python -m benchmarks.bench_load --size medium        # + real-size DINOv2 ViT-L (1.2 GB) and structure decoder
    python -m benchmarks.bench_load --folder ~/models/synchuman --components joint,vae
    python -m benchmarks.bench_load --device cuda
    python -m benchmarks.bench_load --size medium --dtype bfloat16   # every tensor converted while loading

Each load runs in a fresh subprocess: imports, config read and the meta build happen first; then the
kernel's peak-RSS counter is reset (``/proc/self/clear_refs``), anonymous RSS is sampled every 1 ms, and
``synchuman_core.io.load_component`` runs. Reported per component:

* ``weights``: bytes of the loaded tensors in memory (what one copy costs);
* ``peak anon``: peak growth of anonymous memory (heap: copies and conversions) / weights;
* ``peak rss``: peak growth of all resident memory, including the file pages of the memory-mapped
  safetensors file (page cache, reclaimable) / weights;
* ``naive``: the same ratio for ``Model(config)`` on CPU + ``safetensors.torch.load_file`` +
  ``load_state_dict`` (random init, then a full second copy), for comparison (``--naive``).

At test size the checkpoint is a few MB, so allocator granularity dominates; ``--size medium`` shows
the ratio on weights large enough to measure (1.2 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    return out


class _Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_anon = _status()["RssAnon"]
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak_anon = max(self.peak_anon, _status()["RssAnon"])
            time.sleep(0.001)


def child(name: str, folder: str, device: str, naive: bool, dtype_name: str | None) -> dict:
    import torch

    from synchuman_core.io import load_component
    from synchuman_core.io.loading import build_empty, component_files, read_component_config

    torch.set_num_threads(1)
    cf, _ = component_files(name, folder)
    official = read_component_config(cf)
    dtype = getattr(torch, dtype_name) if dtype_name else None
    build_empty(cf.spec, official, dtype)  # warm up imports and lazy init
    if naive:
        from safetensors.torch import load_file

        assert cf.weights is not None and len(cf.weights.files) == 1
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status()
    sampler = _Sampler()
    sampler.start()
    t0 = time.perf_counter()
    if naive:
        model = cf.spec.build(official, device="cpu", dtype=dtype)
        sd = load_file(str(cf.weights.files[0]))
        mapping, _ = cf.spec.map_keys(sd)
        model.load_state_dict({mapping[k]: sd[k] for k in mapping}, strict=True)
        del sd
    else:
        model = load_component(name, folder, device, dtype)
    dt = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    end = _status()
    sampler.peak_anon = max(sampler.peak_anon, end["RssAnon"])
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    files = cf.weights.total_bytes if cf.weights is not None else 0
    return {
        "component": name,
        "weights": weights,
        "file_bytes": files,
        "peak_anon": sampler.peak_anon - base["RssAnon"],
        "peak_rss": end["VmHWM"] - base["VmRSS"],
        "final_rss": end["VmRSS"] - base["VmRSS"],
        "seconds": dt,
    }


def _run_child(name: str, folder: Path, device: str, naive: bool, dtype: str | None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_load", "--child", name, "--folder", str(folder), "--device", device]
    if dtype:
        cmd += ["--dtype", dtype]
    if naive:
        cmd.append("--naive")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    if out.returncode:
        raise RuntimeError(f"{name}: child failed\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_medium(folder: Path) -> list[str]:
    """Real-size DINOv2 ViT-L/14-reg (fp32, 1.2 GB) and the real structure decoder, random weights."""
    import torch
    from safetensors.torch import save_file

    from synchuman_core.encoders.dinov2 import DINOv2, DINOv2Config
    from synchuman_core.io.tiny import write_tiny_checkpoint
    from synchuman_core.stage1.structure_decoder import SparseStructureDecoder, SparseStructureDecoderConfig

    write_tiny_checkpoint(folder, components=["pipeline_stage1"], prompt_embeds=False)
    real_dec = {"name": "SparseStructureDecoder", "args": {"out_channels": 1, "latent_channels": 8,
                "num_res_blocks": 2, "num_res_blocks_middle": 2, "channels": [512, 128, 32], "use_fp16": True}}
    d = folder / "ckpts/OneStage/sparse_structure_decoder"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(real_dec))
    g = torch.Generator().manual_seed(0)
    for target, model in (
        (d / "model.safetensors", SparseStructureDecoder(SparseStructureDecoderConfig.from_official(real_dec))),
        (folder / "dinov2/dinov2_vitl14_reg4.safetensors", DINOv2(DINOv2Config())),
    ):
        sd = {}
        for k, v in model.state_dict().items():
            sd[k] = (torch.randn(v.shape, generator=g) * 0.02).to(v.dtype)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file(sd, str(target))
        del model, sd
    return ["structure_decoder", "dinov2"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", type=Path, default=None, help="an existing model folder (default: write a tiny one)")
    ap.add_argument("--size", choices=("tiny", "medium"), default="tiny")
    ap.add_argument("--components", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"),
                    help="load in this dtype (default: the official per-parameter dtypes)")
    ap.add_argument("--naive", action="store_true", help="also measure a plain build + load_file + load_state_dict")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.stdout.write(json.dumps(child(args.child, str(args.folder), args.device, args.naive, args.dtype)) + "\n")
        return 0

    from synchuman_core.io.registry import COMPONENTS

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            folder = Path(tmp) / args.size
            if args.size == "tiny":
                from synchuman_core.io.tiny import write_tiny_checkpoint

                res = write_tiny_checkpoint(folder, prompt_embeds=False)
                names = [n for n in res.written if COMPONENTS[n].is_module]
            else:
                names = write_medium(folder)
        else:
            names = [n for n, s in COMPONENTS.items() if s.is_module and not s.optional]
        if args.components:
            names = args.components.split(",")
        header = f"{'component':<18}{'weights MB':>11}{'file MB':>9}{'peak anon':>11}{'peak rss':>10}{'after':>8}{'time s':>8}"
        if args.naive:
            header += f"{'naive anon':>12}"
        sys.stdout.write(f"device {args.device}, dtype {args.dtype or 'official'}, folder {folder}\n{header}\n")
        for name in names:
            r = _run_child(name, folder, args.device, False, args.dtype)
            w = max(r["weights"], 1)
            line = (f"{name:<18}{r['weights'] / 1e6:>11.1f}{r['file_bytes'] / 1e6:>9.1f}"
                    f"{r['peak_anon'] / w:>10.2f}x{r['peak_rss'] / w:>9.2f}x{r['final_rss'] / w:>7.2f}x{r['seconds']:>8.2f}")
            if args.naive:
                n = _run_child(name, folder, args.device, True, args.dtype)
                line += f"{n['peak_anon'] / w:>11.2f}x"
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
