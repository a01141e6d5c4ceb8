"""Headless runner: ``python -m synchuman_core <command>`` (also installed as ``synchuman``).

Commands:

* ``reconstruct IMAGE -o OUT.glb`` — the whole chain on real weights (``--models DIR``; ``--download``
  fetches missing files from Hugging Face when allowed).
* ``smoke [-o DIR]`` — SMOKE MODE: writes a tiny *random* checkpoint and runs the whole chain on the
  bundled synthetic example person. Random weights make no human; this proves the install on a machine
  without the real weights.
* ``download [--models DIR]`` / ``check [--models DIR]`` — fetch or verify the model files.
* ``workflow FILE.json [--server URL]`` — queue one of our API-format workflows on a running ComfyUI
  and wait for its outputs (no browser needed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import torch

from .errors import SyncHumanError

logger = logging.getLogger("synchuman")

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _out(msg: str) -> None:
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


class _TerminalProgress:
    """One progress line per stage on stderr (tqdm when available)."""

    def __init__(self) -> None:
        self._bars: dict[str, Any] = {}
        try:
            from tqdm.auto import tqdm

            self._tqdm = tqdm
        except ImportError:  # pragma: no cover - tqdm ships with huggingface_hub
            self._tqdm = None

    def __call__(self, stage: str, step: int, total: int) -> None:
        if self._tqdm is None:
            sys.stderr.write(f"\r{stage}: {step}/{total}")
            return
        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = self._tqdm(total=total, desc=stage, unit="step", leave=True)
        bar.n = step
        bar.refresh()
        if step >= total:
            bar.close()

    def export(self, stage: str, fraction: float) -> None:
        self(f"export:{stage}", int(round(100 * fraction)), 100)


def _device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load_image(path: Path, mask: Path | None) -> tuple[Any, Any]:
    from PIL import Image

    if not path.exists():
        raise SyncHumanError(f"input image {path} does not exist")
    img = Image.open(path)
    img.load()
    m = None
    if mask is not None:
        m = Image.open(mask)
        m.load()
    return img, m


def run_reconstruction(
    image: Any,
    mask: Any,
    models_dir: Path,
    out_path: Path,
    *,
    seed: int,
    steps1: int | None,
    steps2: int | None,
    texture_size: int,
    dtype: str,
    device: torch.device,
    export_mode: str = "texture",
    memory_tier: str = "high",
    compile_models: bool = False,
) -> dict[str, Any]:
    """Image (+ mask) -> files; returns a summary (paths, timings, counts, tier).

    ``memory_tier`` is one of :data:`synchuman_core.memory.TIERS` (``high``, ``balanced``, ``low``);
    ``dtype`` other than ``auto`` overrides the tier's precision.
    """
    from .export import ExportSettings, export_mesh
    from .memory import apply_tier, get_tier
    from .pipeline import prepare_conditioning, preprocess, run_stage1, run_stage2
    from .samplers import SamplerSettings, make_generator

    progress = _TerminalProgress()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    tier = get_tier(memory_tier)
    if dtype != "auto":
        tier = tier.with_(precision=dtype)
    if compile_models:
        tier = tier.with_(compile=True)
    run = apply_tier(tier, models_dir, device=device)
    models = run.models
    gen = make_generator(seed)
    with run.active():
        pre = preprocess(models, image, mask)
        t = time.perf_counter()
        inputs = prepare_conditioning(models, pre, **run.conditioning_kwargs())
        timings["conditioning"] = time.perf_counter() - t
        t = time.perf_counter()
        s1 = SamplerSettings.stage1(**({"steps": steps1} if steps1 else {}))
        out1 = run_stage1(models, inputs, s1, gen, lambda i, n, x: progress("stage 1", i, n), **run.stage1_kwargs())
        timings["stage1"] = time.perf_counter() - t
        t = time.perf_counter()
        s2 = SamplerSettings.stage2(**({"steps": steps2} if steps2 else {}))
        out2 = run_stage2(models, out1, s2, gen, lambda i, n, x: progress("stage 2", i, n), **run.stage2_kwargs())
        timings["stage2"] = time.perf_counter() - t
    if out2.mesh is None:
        raise SyncHumanError("the mesh decoder produced no mesh")
    t = time.perf_counter()
    settings = ExportSettings.official()
    settings.bake.texture_size = texture_size
    settings.color_mode = export_mode  # type: ignore[assignment]
    fmt = out_path.suffix.lower().lstrip(".") or "glb"
    settings.formats = (fmt,)
    mesh = out2.mesh
    colors = getattr(mesh, "vertex_attrs", None)
    result = export_mesh(
        mesh.vertices, mesh.faces,
        vertex_colors=colors[:, :3] if colors is not None else None,
        views=out1.color_views[:4], face_view=out1.color_views[4],
        normal_views=out1.normal_views[:4], face_normal=out1.normal_views[4],
        settings=settings, output_dir=out_path.parent, filename=out_path.stem,
        device=device, progress=progress.export,
    )
    timings["export"] = time.perf_counter() - t
    files = [str(p) for paths in result.files.values() for p in paths]
    if out2.gaussians is not None:
        from .stage2.gaussians import save_gaussians_ply

        gs_path = out_path.with_name(out_path.stem + "_gaussians.ply")
        save_gaussians_ply(out2.gaussians, gs_path)
        files.append(str(gs_path))
    timings["total"] = time.perf_counter() - t0
    return {
        "files": files,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "voxels": int(out1.coords.shape[0]),
        "faces": int(result.mesh.faces.shape[0]),
        "memory_tier": tier.name,
        "precision": run.precision,
    }


def cmd_reconstruct(a: argparse.Namespace) -> int:
    from .io.layout import resolve_model_folder

    models_dir = Path(a.models)
    if a.download:
        from .io.download import download

        download(models_dir)
    resolve_model_folder(models_dir)
    image, mask = _load_image(Path(a.image), Path(a.mask) if a.mask else None)
    summary = run_reconstruction(
        image, mask, models_dir, Path(a.output), seed=a.seed, steps1=a.steps1, steps2=a.steps2,
        texture_size=a.texture_size, dtype=a.dtype, device=_device(a.device), export_mode=a.color,
        memory_tier=a.memory_tier or ("balanced" if a.low_memory else "high"), compile_models=a.compile,
    )
    _out(json.dumps(summary, indent=2))
    return 0


def cmd_smoke(a: argparse.Namespace) -> int:
    from .demo import example_person
    from .io.tiny import write_tiny_checkpoint

    out_dir = Path(a.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    _out("SMOKE MODE: tiny RANDOM weights and a synthetic example person. The result is not a human; "
         "this run only proves that the whole chain works on this machine.")
    ckpt = out_dir / "tiny_checkpoint"
    write_tiny_checkpoint(ckpt, seed=a.seed)
    image = example_person(512)
    image.save(out_dir / "example_person.png")
    summary = run_reconstruction(
        image, None, ckpt, out_dir / "smoke.glb", seed=a.seed, steps1=a.steps1, steps2=a.steps2,
        texture_size=a.texture_size, dtype="fp32", device=_device(a.device), export_mode=a.color,
        memory_tier=a.memory_tier or "high",
    )
    summary["mode"] = "smoke (random weights)"
    _out(json.dumps(summary, indent=2))
    return 0


def cmd_download(a: argparse.Namespace) -> int:
    from .io.download import download

    download(Path(a.models))
    _out(f"model files are in {a.models}")
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    from .io.verify import verify_model_folder

    report = verify_model_folder(Path(a.models), None)
    _out(str(report))
    return 0 if getattr(report, "ok", True) else 1


def _http(method: str, url: str, body: dict | None = None, timeout: float = 30) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - user-given local server
        raw = r.read()
    return json.loads(raw) if raw else None


def cmd_workflow(a: argparse.Namespace) -> int:
    """Queue an API-format workflow on a running ComfyUI and wait for it."""
    prompt = json.loads(Path(a.workflow).read_text())
    if "prompt" in prompt and isinstance(prompt["prompt"], dict):
        prompt = prompt["prompt"]
    if any(not isinstance(v, dict) or "class_type" not in v for v in prompt.values()):
        raise SyncHumanError(f"{a.workflow} is not an API-format workflow (export it with 'Save (API)' in ComfyUI)")
    server = a.server.rstrip("/")
    try:
        resp = _http("POST", f"{server}/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})
    except urllib.error.HTTPError as e:
        raise SyncHumanError(f"ComfyUI rejected the workflow: {e.read().decode(errors='replace')}") from None
    except urllib.error.URLError as e:
        raise SyncHumanError(f"no ComfyUI answers at {server} ({e.reason}); start it or pass --server") from None
    if resp.get("node_errors"):
        raise SyncHumanError(f"ComfyUI reported node errors: {json.dumps(resp['node_errors'])}")
    pid = resp["prompt_id"]
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        hist = _http("GET", f"{server}/history/{pid}") or {}
        if pid in hist:
            entry = hist[pid]
            status = entry.get("status", {})
            _out(json.dumps({"status": status.get("status_str"), "outputs": entry.get("outputs", {})}, indent=2))
            return 0 if status.get("status_str") == "success" else 1
        time.sleep(1.0)
    raise SyncHumanError(f"the workflow did not finish within {a.timeout} s (prompt {pid})")


def build_parser() -> argparse.ArgumentParser:
    from .io.layout import default_models_root

    ap = argparse.ArgumentParser(prog="python -m synchuman_core", description=__doc__.split("\n\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--seed", type=int, default=43, help="seed of both stages (official 43)")
        p.add_argument("--steps1", type=int, default=None, help="stage-1 steps (official 50)")
        p.add_argument("--steps2", type=int, default=None, help="stage-2 steps (official 25)")
        p.add_argument("--texture-size", type=int, default=1024, help="texture size, 512..4096")
        p.add_argument("--color", choices=("texture", "vertex", "none"), default="texture",
                       help="bake a texture from the views, use vertex colours, or geometry only")
        p.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda if available)")
        p.add_argument("--memory-tier", choices=("high", "balanced", "low"), default=None,
                       help="high: fastest, every model stays on the GPU (~11.5 GB est.); balanced: CFG halves in "
                            "sequence, models offloaded between stages (~6.8 GB); low: also tiled VAE, chunked "
                            "attention, one model on the GPU at a time (~4.7 GB). See docs/PERFORMANCE.md")

    p = sub.add_parser("reconstruct", help="image -> textured mesh with the real weights")
    p.add_argument("image", help="RGBA cut-out of one person (or RGB with --mask)")
    p.add_argument("-o", "--output", default="synchuman.glb", help="output .glb, .obj or .ply")
    p.add_argument("--mask", default=None, help="optional mask image (white = person)")
    p.add_argument("--models", default=str(default_models_root()), help="SyncHuman model folder")
    p.add_argument("--download", action="store_true", help="download missing model files from Hugging Face")
    p.add_argument("--dtype", choices=tuple(_DTYPES) + ("auto",), default="auto")
    p.add_argument("--low-memory", action="store_true", help="same as --memory-tier balanced")
    p.add_argument("--compile", action="store_true", help="torch.compile the heavy modules (GPU; measure first)")
    common(p)
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("smoke", help="SMOKE MODE: whole chain on a tiny random checkpoint")
    p.add_argument("-o", "--output", default="synchuman_smoke", help="output folder")
    common(p)
    p.set_defaults(func=cmd_smoke, steps1=None, steps2=None)

    p = sub.add_parser("download", help="download the official weights + DINOv2")
    p.add_argument("--models", default=str(default_models_root()))
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("check", help="verify a model folder without loading it")
    p.add_argument("--models", default=str(default_models_root()))
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("workflow", help="run an API-format workflow on a running ComfyUI")
    p.add_argument("workflow")
    p.add_argument("--server", default="http://127.0.0.1:8188")
    p.add_argument("--timeout", type=float, default=3600)
    p.set_defaults(func=cmd_workflow)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except SyncHumanError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
