"""One forward of the official ``SyncHuman_2D3DCrossSpaceDiffusion`` vs ours on parity fixture d, on the CPU.

Fixture d (``d_SyncHuman_2D3DCrossSpaceDiffusion`` in the shared reference) is the whole stage-1 joint
model at the smallest config its hard-wired sizes allow (1.04 B parameters, 20 views of 96x96 plus the
16^3 structure, the pipeline's CFG batch). Both sides build the model from the fixture's ``config.json``,
regenerate the weights with the fixture generator (``fixgen.fill_model(model, 4)``), check them against
``state_dict_checksums.json``, run ONE forward under ``torch.no_grad()`` in fp32 and compare both outputs
with ``outputs.safetensors`` (max abs error / reference absmax). Each side runs in its own subprocess, so
imports and peak RSS don't mix; the official side runs with the official environment's Python.

Nothing of the official code is part of this repository: it is imported from ``--official-src``. Get it
and its environment (outside this repository; torch 2.13.0 is the CPU wheel served from local disk)::

    git clone https://github.com/IGL-HKUST/SyncHuman /tmp/official/src
    python3 -m venv /tmp/official/venv
    /tmp/official/venv/bin/pip install torch==2.13.0 diffusers==0.29.1 transformers==4.36.0 \\
        "huggingface_hub<0.26" safetensors einops numpy

Then::

    python benchmarks/bench_official.py --official-src /tmp/official/src --threads 2 --json bench.json
    python benchmarks/bench_official.py --official-src /tmp/official/src --official-only --dry-run
    python benchmarks/bench_official.py --ours-only

The official side is called exactly as the fixture README says: ``from_config(config.json)``, ``.eval()``,
``enable_xformers_memory_efficient_attention()``. xformers has no CPU kernels, so an in-process
``xformers.ops`` shim stands in for it: ``memory_efficient_attention`` is plain
``softmax(q k^T / sqrt(d)) v`` in fp32, query-chunked only to bound memory, which is what the fixture
was made with. The 3D branch's attention uses torch SDPA (``ATTN_BACKEND=sdpa``, as in the fixture's
meta.json). Nothing else is stubbed: this path imports no sparse-conv or rendering package.

Reported per side: forward wall time (``time.perf_counter``) and process CPU time
(``time.process_time``, all threads), peak RSS of the whole process (``ru_maxrss``: build + weights +
forward) and the peak sampled during the forward (``/proc/self/statm`` every 5 ms), and the relative
errors. The 1-minute load average is printed before each side; ``--quiet-load 1.0`` waits (up to
``--quiet-timeout`` s) for it to drop below the threshold first, since a busy 2-core machine distorts both
timings. Fixture d's meta.json records 620 s / 591 s for the official forward (2 threads, shared machine)
and 8.2 GB peak RSS; uncontended it took 162-168 s here (docs/PERFORMANCE.md). Needs ~9 GB RAM for the
official side and ~3.5 min on 2 cores (build included); ours takes ~2 min.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIXTURE_NAME = "d_SyncHuman_2D3DCrossSpaceDiffusion"
OFFICIAL_CLASS = "SyncHuman.models.OneStage.SyncHuman_2D3DCrossSpaceDiffusion"
SEED = 4
SIDES = ("official", "ours")


def default_reference() -> Path:
    env = os.environ.get("SYNCHUMAN_REFERENCE")
    return Path(env) if env else REPO.parent / "shared" / "reference"


# --------------------------------------------------------------------------------------------- child side


class RssSampler:
    """Peak resident set size of this process, sampled from ``/proc/self/statm`` on a background thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def load_module_from_path(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _our_package() -> None:
    """Put this repository's ``synchuman_core`` on ``sys.path`` (pure torch/numpy/einops: it imports in the
    official environment too, so both children share our checksum check, input assembly and error metric)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def verify_checksums(sd: Mapping[str, Any], expected: Mapping[str, Mapping[str, Any]],
                     keys: list[str] | None = None) -> int:
    """:func:`synchuman_core.parity.fixgen.verify_checksums`: the number of keys checked, or ``ParityError``."""
    _our_package()
    from synchuman_core.parity.fixgen import verify_checksums as verify

    return verify(sd, expected, keys=keys)


def relative_error(ours: Any, ref: Any) -> float:
    """max |ours - ref| / max |ref| (:meth:`synchuman_core.parity.Comparison.relative_error`)."""
    _our_package()
    from synchuman_core.parity import Comparison

    return Comparison("output", ours, ref, 0.0).relative_error()


def install_xformers_shim() -> dict[str, int]:
    """Register an ``xformers`` / ``xformers.ops`` stand-in whose ``memory_efficient_attention`` is plain
    softmax attention in fp32 (the math of the xformers kernels), query-chunked to bound memory.

    Layouts as in xformers: ``[B, M, H, K]`` or ``[B, M, K]``; ``attn_bias`` (a tensor or None) is added
    to the scores. Returns a dict counting the calls.
    """
    import torch

    calls = {"n": 0}
    budget = 256 * 2**20  # bytes of fp32 scores per query chunk

    def memory_efficient_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                   attn_bias: torch.Tensor | None = None, p: float = 0.0,
                                   scale: float | None = None, op: object = None) -> torch.Tensor:
        if p:
            raise NotImplementedError("xformers shim: dropout is not supported")
        if attn_bias is not None and not isinstance(attn_bias, torch.Tensor):
            raise NotImplementedError(f"xformers shim: attn_bias of type {type(attn_bias).__name__}")
        calls["n"] += 1
        three_d = query.dim() == 3
        q, k, v = (x.unsqueeze(2) if three_d else x for x in (query, key, value))  # [B, M, H, K]
        q, k, v = (x.float().transpose(1, 2) for x in (q, k, v))  # [B, H, M, K]
        bias = None
        if attn_bias is not None:
            bias = attn_bias.float()
            if three_d:
                bias = bias.unsqueeze(1)  # [B, M, N] -> [B, 1, M, N]
        b, h, m, _ = q.shape
        n = k.shape[2]
        sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        step = max(1, budget // max(1, b * h * n * 4))
        kt = k.transpose(-1, -2)
        out = torch.empty(b, h, m, v.shape[-1], dtype=torch.float32)
        for i in range(0, m, step):
            s = (q[:, :, i:i + step] @ kt) * sc
            if bias is not None:
                s = s + bias[..., i:i + step, :]
            out[:, :, i:i + step] = torch.softmax(s, dim=-1) @ v
        out = out.transpose(1, 2).to(query.dtype)  # [B, M, H, K]
        return out.squeeze(2) if three_d else out

    pkg = types.ModuleType("xformers")
    pkg.__spec__ = importlib.machinery.ModuleSpec("xformers", None, is_package=True)
    pkg.__path__ = []
    pkg.__version__ = "0.0.0+cpu-softmax-shim"
    ops = types.ModuleType("xformers.ops")
    ops.__spec__ = importlib.machinery.ModuleSpec("xformers.ops", None)
    ops.memory_efficient_attention = memory_efficient_attention
    pkg.ops = ops
    sys.modules["xformers"], sys.modules["xformers.ops"] = pkg, ops
    return calls


def fixture_call(inp: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of one forward in the pipeline's CFG layout (fixture README), as our parity
    runner assembles them; the official forward takes the same names."""
    _our_package()
    from synchuman_core.parity.components.synchuman_2d3dcrossspacediffusion import cfg_inputs

    return cfg_inputs(inp)


@contextmanager
def _timed(result: dict[str, Any], prefix: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    result[f"{prefix}_s"] = time.perf_counter() - t0


def _timed_forward(fn: Callable[[], Any], result: dict[str, Any]) -> Any:
    import torch

    result["rss_before_forward_bytes"] = RssSampler().rss()
    with torch.no_grad(), RssSampler() as rss:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        result["forward_wall_s"] = time.perf_counter() - t0
        result["forward_cpu_s"] = time.process_time() - c0
    result["forward_peak_rss_bytes"] = rss.peak
    return out


def run_official(src: Path, fixture: Path, reference: Path, dry_run: bool) -> dict[str, Any]:
    # The fixture's environment: 3D-branch attention through torch SDPA, xformers through the shim.
    os.environ.setdefault("ATTN_BACKEND", "sdpa")
    os.environ.setdefault("SPARSE_ATTN_BACKEND", "xformers")
    os.environ.setdefault("SPARSE_BACKEND", "spconv")
    calls = install_xformers_shim()
    import diffusers
    import diffusers.utils.import_utils as diffusers_import_utils
    import torch
    from safetensors.torch import load_file

    # diffusers reads xformers' installed version from package metadata, which the shim has none of.
    diffusers_import_utils._xformers_available = True
    sys.path.insert(0, str(src))
    cls = importlib.import_module(OFFICIAL_CLASS).SyncHuman_2D3DCrossSpaceDiffusion
    fixgen = load_module_from_path("fixgen", reference / "fixtures" / "fixgen.py")
    config = json.loads((fixture / "config.json").read_text())
    expected = json.loads((fixture / "state_dict_checksums.json").read_text())
    result: dict[str, Any] = {"env": {"torch": torch.__version__, "diffusers": diffusers.__version__}}

    if dry_run:  # meta build, key/shape check, a few regenerated keys checked; no forward
        with torch.device("meta"):
            model = cls.from_config(config)
        model.eval().enable_xformers_memory_efficient_attention()
        sd = model.state_dict()
        shapes = {k: list(v.shape) for k, v in sd.items()}
        bad = [k for k in expected if shapes.get(k) != expected[k]["shape"]] + [k for k in sd if k not in expected]
        if bad:
            raise RuntimeError(f"{len(bad)} keys differ in name or shape from the checksums, e.g. {bad[:5]}")
        few = [k for k in list(expected)[:3] + list(expected)[-3:] if k != "pos_emb"]
        regenerated = {k: fixgen.gen_param(k, expected[k]["shape"], SEED) for k in few}
        result.update(dry_run=True, keys=len(sd), params=sum(v.numel() for v in sd.values()),
                      checked=verify_checksums(regenerated, expected, few))
        return result

    with _timed(result, "build"):
        model = cls.from_config(config)
        model.eval()
        model.enable_xformers_memory_efficient_attention()
    with _timed(result, "fill"):
        fixgen.fill_model(model, SEED)
        result["checked"] = verify_checksums(model.state_dict(), expected)
    kwargs = fixture_call(load_file(str(fixture / "inputs.safetensors")))
    kwargs.update(cross_attention_kwargs=None, return_dict=False)
    sample_out, trellis_out = _timed_forward(lambda: model(**kwargs), result)
    ref = load_file(str(fixture / "outputs.safetensors"))
    result["rel_err"] = {"sample": relative_error(sample_out, ref["sample_out"]),
                         "trellis": relative_error(trellis_out, ref["trellis_out"])}
    result["xformers_shim_calls"] = calls["n"]
    return result


def run_ours(fixture: Path) -> dict[str, Any]:
    _our_package()
    import torch

    from synchuman_core.parity import DEFAULT_TOLERANCE, Fixture, component_of
    from synchuman_core.parity.components.synchuman_2d3dcrossspacediffusion import build_model

    component = component_of(fixture)
    fx = Fixture(fixture, component, DEFAULT_TOLERANCE[component])
    result: dict[str, Any] = {"env": {"torch": torch.__version__}}
    with _timed(result, "fill"):  # meta build + regenerated weights + checksum check
        model = build_model(fx)
    kwargs = fixture_call(fx.inputs)
    sample_out, trellis_out = _timed_forward(lambda: model(**kwargs), result)
    result["rel_err"] = {"sample": relative_error(sample_out, fx.outputs["sample_out"]),
                         "trellis": relative_error(trellis_out, fx.outputs["trellis_out"])}
    return result


def child_main(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    fixture = Path(args.fixture)
    if args.child == "official":
        result = run_official(Path(args.official_src), fixture, Path(args.reference), args.dry_run)
    else:
        result = run_ours(fixture)
    result.update(side=args.child, threads=torch.get_num_threads(), peak_rss_bytes=max_rss_bytes())
    Path(args.result).write_text(json.dumps(result, indent=1))
    return 0


# -------------------------------------------------------------------------------------------- parent side


def wait_quiet(threshold: float | None, timeout: float, poll: float = 30.0) -> tuple[float, float, float]:
    """Wait until the 1-minute load average is below ``threshold`` (at most ``timeout`` s); return the load."""
    t0 = time.monotonic()
    load = os.getloadavg()
    while threshold is not None and load[0] >= threshold and time.monotonic() - t0 < timeout:
        print(f"  load {load[0]:.2f} >= {threshold}: waiting ({time.monotonic() - t0:.0f} s)", flush=True)
        time.sleep(poll)
        load = os.getloadavg()
    return load


def run_side(side: str, args: argparse.Namespace) -> dict[str, Any]:
    python = args.official_python if side == "official" else sys.executable
    if side == "official" and not Path(args.official_src, *OFFICIAL_CLASS.split(".")).with_suffix(".py").exists():
        raise SystemExit(f"--official-src {args.official_src}: no {OFFICIAL_CLASS.replace('.', '/')}.py there")
    load = wait_quiet(args.quiet_load, args.quiet_timeout)
    print(f"[{side}] load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}  ({python})", flush=True)
    threads = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, HF_HUB_OFFLINE="1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [python, str(Path(__file__).resolve()), "--child", side, "--result", str(out),
               "--threads", threads, "--fixture", str(args.fixture), "--reference", str(args.reference)]
        if side == "official":
            cmd += ["--official-src", str(args.official_src)] + (["--dry-run"] if args.dry_run else [])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=REPO)
        if proc.returncode != 0 or not out.exists():
            raise SystemExit(f"[{side}] child failed with exit code {proc.returncode}")
        result = json.loads(out.read_text())
    result["process_wall_s"] = time.perf_counter() - t0
    result["load_before"] = list(load)
    result["load_after"] = list(os.getloadavg())
    print(f"[{side}] done in {result['process_wall_s']:.0f} s; load average after: "
          + " ".join(f"{x:.2f}" for x in result["load_after"]), flush=True)
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    gb = 1e9
    head = f"{'side':<9} {'fwd wall s':>10} {'fwd CPU s':>10} {'peak RSS GB':>11} {'fwd peak GB':>11} " \
           f"{'rel err sample':>14} {'rel err trellis':>15} {'load 1m':>7}"
    print(head)
    print("-" * len(head))
    for r in results:
        err = r["rel_err"]
        print(f"{r['side']:<9} {r['forward_wall_s']:>10.1f} {r['forward_cpu_s']:>10.1f} "
              f"{r['peak_rss_bytes'] / gb:>11.2f} {r['forward_peak_rss_bytes'] / gb:>11.2f} "
              f"{err['sample']:>14.2e} {err['trellis']:>15.2e} "
              f"{r['load_before'][0]:>7.2f}")
    by = {r["side"]: r for r in results}
    if set(SIDES) <= set(by):
        o, u = by["official"], by["ours"]
        print(f"speed ratio official/ours: {o['forward_wall_s'] / u['forward_wall_s']:.2f}x wall, "
              f"{o['forward_cpu_s'] / u['forward_cpu_s']:.2f}x CPU; "
              f"peak RSS ours/official {u['peak_rss_bytes'] / o['peak_rss_bytes']:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official-src", type=Path, default=None, help="work tree of IGL-HKUST/SyncHuman")
    ap.add_argument("--official-python", default="/tmp/official/venv/bin/python",
                    help="Python of the official environment (diffusers 0.29.1, transformers 4.36.0)")
    ap.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads of each side")
    ap.add_argument("--reference", type=Path, default=None,
                    help="shared reference folder (default: $SYNCHUMAN_REFERENCE, else ../shared/reference "
                         "beside the repo)")
    ap.add_argument("--fixture", type=Path, default=None,
                    help=f"fixture folder (default: REFERENCE/fixtures/{FIXTURE_NAME})")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--ours-only", action="store_true")
    only.add_argument("--official-only", action="store_true")
    ap.add_argument("--dry-run", action="store_true",
                    help="official side only: build on meta and check key names/shapes and a few regenerated keys")
    ap.add_argument("--quiet-load", type=float, default=None,
                    help="before each side, wait until the 1-minute load average is below this")
    ap.add_argument("--quiet-timeout", type=float, default=1200.0, help="longest wait for --quiet-load, s")
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    ap.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.reference = (args.reference or default_reference()).resolve()
    args.fixture = (args.fixture or args.reference / "fixtures" / FIXTURE_NAME).resolve()
    if args.child:
        return child_main(args)

    sides = ["ours"] if args.ours_only else ["official"] if args.official_only or args.dry_run else list(SIDES)
    if "official" in sides and args.official_src is None:
        ap.error("--official-src is needed for the official side (or pass --ours-only)")
    if args.official_src is not None:
        args.official_src = args.official_src.resolve()
    print(f"fixture {args.fixture}, {args.threads} threads, {os.cpu_count()} CPUs", flush=True)
    results = [run_side(side, args) for side in sides]
    if args.dry_run:
        r = results[0]
        print(f"dry run ok: {r['keys']} keys, {r['params'] / 1e9:.3f} B elements, {r['checked']} regenerated keys "
              f"match the checksums ({r['env']})")
    else:
        print_table(results)
    if args.json:
        summary = {"fixture": str(args.fixture), "threads": args.threads, "results": results}
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
