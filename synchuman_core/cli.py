"""Headless runner: ``python -m synchuman_core <command>`` (also installed as ``synchuman``).

Commands:

* ``reconstruct IMAGE -o OUT.glb`` — the whole chain on real weights (``--models DIR``; ``--download``
  fetches missing files from Hugging Face when allowed).
* ``smoke [-o DIR]`` — SMOKE MODE: writes a tiny *random* checkpoint and runs the whole chain on the
  bundled synthetic example person. Random weights make no human; this proves the install on a machine
  without the real weights.
* ``download [--models DIR]`` / ``check [--models DIR]`` — fetch or verify the model files.
* ``batch INPUTS -o OUT`` — many inputs on Ray workers, models loaded once per worker, resumable
  (:mod:`synchuman_core.batch`).
* ``workflow FILE.json [--inputs DIR] [--server URL ...]`` — an API-format workflow on one or more running
  ComfyUI servers: upload, queue, follow, download, retry elsewhere (:mod:`synchuman_core.comfy_api`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
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

    def __call__(self, stage: str, step: int, total: int, unit: str = "step") -> None:
        if self._tqdm is None:
            sys.stderr.write(f"\r{stage}: {step}/{total} {unit}")
            return
        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = self._tqdm(total=total, desc=stage, unit=unit, leave=True)
        bar.n = step
        bar.refresh()
        if step >= total:
            bar.close()

    def export(self, phase: str, done: int, total: int, unit: str) -> None:
        """Export work (``on_step``): one bar per phase, counted in its own units (views, steps, ...)."""
        if phase != "done":
            self(f"export: {phase}", done, total, unit)


def _device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def tier_from_args(a: argparse.Namespace, default: str = "high") -> Any:
    """The memory tier the flags ask for: ``--memory-tier`` (``--low-memory`` = balanced), ``--dtype``
    other than ``auto`` overrides its precision, ``--compile`` turns compilation on."""
    from .memory import get_tier

    tier = get_tier(getattr(a, "memory_tier", None) or ("balanced" if getattr(a, "low_memory", False) else default))
    if getattr(a, "dtype", "auto") != "auto":
        tier = tier.with_(precision=a.dtype)
    if getattr(a, "compile", False):
        tier = tier.with_(compile=True)
    return tier


def _reconstruct(a: argparse.Namespace, image: Any, models_dir: Path, out_path: Path, tier: Any, *,
                 save_views: bool = False) -> dict[str, Any]:
    """Load the models once with the tier (:func:`synchuman_core.memory.apply_tier`), then the one per-input
    call the batch runner also makes (:func:`synchuman_core.pipeline.reconstruct_to_files`)."""
    from .memory import apply_tier
    from .pipeline import reconstruct_to_files

    if not 0 <= a.turntable <= 3600:
        raise SyncHumanError(f"--turntable must be between 0 (off) and 3600 frames, got {a.turntable}")
    progress = _TerminalProgress()
    run = apply_tier(tier, models_dir, device=_device(a.device))
    return reconstruct_to_files(
        run, image, None, out_path, seed=a.seed, steps1=a.steps1, steps2=a.steps2, texture_size=a.texture_size,
        color_mode=a.color, save_views=save_views, progress=progress, export_steps=progress.export,
        bake_mode=a.recipe, turntable=a.turntable,
    )


def _check_output(out_path: str | Path, a: argparse.Namespace, *, save_views: bool = False,
                  tiny_checkpoint: bool = False) -> None:
    """``-o/--output`` before any compute: a known mesh format, a writable folder with room for a rough
    size estimate of every file of the result (and the smoke checkpoint), names that fit."""
    from .export.result import check_result_location
    from .export.views import VIEW_SUFFIXES
    from .export.writer import check_output_location

    texture = a.texture_size if getattr(a, "color", "texture") == "texture" else 0
    check_result_location(out_path, texture_size=texture, gaussians=True,
                          views=VIEW_SUFFIXES if save_views else (), what="-o/--output")
    if tiny_checkpoint:
        check_output_location(Path(out_path).parent, "smoke-checkpoint", (".safetensors",),
                              estimate_bytes=64 << 20, what="-o/--output")


def _png_bytes(image: Any) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def cmd_reconstruct(a: argparse.Namespace) -> int:
    from .cli_inputs import check_photo, check_settings
    from .io.layout import resolve_model_folder

    check_settings(a)  # flags in range, before anything else
    models_dir = Path(a.models)
    # image and mask open and decode, the background model file is there (or fetched with --download)
    photo_inputs = check_photo(a.image, a.mask, background=a.background_model, model_roots=[models_dir],
                               download=a.download)
    _check_output(a.output, a, save_views=getattr(a, "save_views", False))  # writable, room, names: before compute
    if a.download:
        from .io.download import download

        download(models_dir)
    resolve_model_folder(models_dir)
    photo = photo_inputs.cut_out()  # background removal + framing (no person / too small: refused here)
    image = photo.rgba
    from .io.verify import check_before_run

    check_before_run(models_dir)  # configs typed, headers, shapes, prompt embeddings: before any model loads
    summary = _reconstruct(a, image, models_dir, Path(a.output), tier_from_args(a),
                           save_views=getattr(a, "save_views", False))
    _out(json.dumps(summary, indent=2))
    return 0


def cmd_smoke(a: argparse.Namespace) -> int:
    from .cli_inputs import check_settings
    from .demo import example_person
    from .io.tiny import write_tiny_checkpoint

    check_settings(a)  # flags in range before the checkpoint is written

    out_dir = Path(a.output)
    _check_output(out_dir / "smoke.glb", a, save_views=True, tiny_checkpoint=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    _out("SMOKE MODE: tiny RANDOM weights and a synthetic example person. The result is not a human; "
         "this run only proves that the whole chain works on this machine.")
    image = example_person(512)
    if not (out_dir / "example_person.png").exists():  # the same image every run; never replaces a file
        from .export.writer import write_file

        write_file(out_dir, "example_person", ".png", _png_bytes(image), what="-o/--output")
    # a checkpoint folder of this run only (two smoke runs into one folder never mix their weights), removed
    # when the run ends, fails or is interrupted
    with tempfile.TemporaryDirectory(prefix=".smoke-checkpoint-", dir=out_dir) as ckpt:
        write_tiny_checkpoint(Path(ckpt), seed=a.seed)
        summary = _reconstruct(a, image, Path(ckpt), out_dir / "smoke.glb",
                               tier_from_args(a).with_(precision="fp32"), save_views=True)
    summary["mode"] = "smoke (random weights)"
    _out(json.dumps(summary, indent=2))
    return 0


def cmd_download(a: argparse.Namespace) -> int:
    """Fetch what the model folder lacks, then check it: exit 0 when complete, 1 when the check finds problems,
    2 on an error (network, disk, layout); the one download command every error message names."""
    from .io.download import download
    from .io.verify import verify_model_folder

    mf = download(Path(a.models), a.component, text_encoder=a.text_encoder, revision=a.revision)
    from .cli_inputs import download_background_models

    download_background_models(a, Path(a.models))  # rembg's u2net (what `reconstruct photo.jpg` uses) / --rembg
    report = verify_model_folder(mf, a.component)
    _out(report.summary())
    if not report.ok:
        try:
            report.raise_for_problems()
        except SyncHumanError as e:
            sys.stderr.write(f"error: {e}\n")
        return 1
    _out(f"model files are in {mf.base}")
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    """Verify every file a run opens (configs typed, headers, keys/shapes, every tensor finite unless
    ``--quick``, prompt embeddings); print one line per component; exit 0 when sound, 1 on any problem."""
    from .io.verify import verify_model_folder

    report = verify_model_folder(Path(a.models), getattr(a, "component", None), deep=not getattr(a, "quick", False))
    _out(report.summary())
    if not report.ok:
        sys.stderr.write(f"error: the model folder {a.models} has problems (listed above); download the damaged "
                         f"files again: python -m synchuman_core download --models {a.models}\n")
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .cli_inputs import add_photo_arguments, add_rembg_download_argument
    from .io.layout import default_models_root
    from .io.registry import COMPONENTS

    ap = argparse.ArgumentParser(prog="python -m synchuman_core", description=__doc__.split("\n\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--seed", type=int, default=43, help="seed of both stages (official 43)")
        p.add_argument("--steps1", type=int, default=None, help="stage-1 steps (official 50)")
        p.add_argument("--steps2", type=int, default=None, help="stage-2 steps (official 25)")
        p.add_argument("--texture-size", type=int, default=1024,
                       help="texture size in pixels (official 1024; the bake accepts 64..4096)")
        p.add_argument("--color", choices=("texture", "vertex", "none"), default="texture",
                       help="bake a texture from the views, use vertex colours, or geometry only")
        p.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda if available)")
        p.add_argument("--recipe", choices=("official", "fast"), default="official",
                       help="texture recipe. official: min-cut clean-up over 1000 views, texture optimised over the 5 "
                            "views + 95 renders of the Gaussians (minutes on a GPU, long on a CPU); fast: projection "
                            "of the 5 views (seconds)")
        p.add_argument("--turntable", type=int, default=0, metavar="FRAMES",
                       help="also write <output>_turntable.gif: FRAMES renders of the Gaussians around the subject")
        p.add_argument("--memory-tier", choices=("high", "balanced", "low"), default=None,
                       help="high: fastest, every model stays on the GPU (~11.5 GB est.); balanced: CFG halves in "
                            "sequence, models offloaded between stages (~6.8 GB); low: also tiled VAE, chunked "
                            "attention, one model on the GPU at a time (~4.7 GB). See docs/PERFORMANCE.md")

    p = sub.add_parser("reconstruct", help="image -> textured mesh with the real weights")
    p.add_argument("image", help="photo of one person (JPEG/PNG/...; its background is removed unless it has "
                                 "transparency or --mask is given)")
    p.add_argument("-o", "--output", default="synchuman.glb", help="output .glb, .obj or .ply")
    add_photo_arguments(p)
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
    p.set_defaults(func=cmd_smoke, steps1=None, steps2=None, recipe="fast")

    p = sub.add_parser("download", help="download the official weights + DINOv2 (resumable; only what is missing)")
    p.add_argument("--models", default=str(default_models_root()),
                   help="model folder (default: $SYNCHUMAN_MODELS or ~/.cache/synchuman)")
    p.add_argument("--component", action="append", default=None, choices=sorted(COMPONENTS), metavar="NAME",
                   help=f"only this component (repeatable): {', '.join(COMPONENTS)}")
    te = p.add_mutually_exclusive_group()
    te.add_argument("--text-encoder", dest="text_encoder", action="store_const", const=True, default=None,
                    help="also fetch the text encoder (default: only when the prompt embeddings must be recomputed)")
    te.add_argument("--no-text-encoder", dest="text_encoder", action="store_const", const=False,
                    help="never fetch the text encoder")
    p.add_argument("--revision", default=None, help="a branch, tag or commit of xishushu/SyncHuman")
    add_rembg_download_argument(p)
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("check", help="verify every model file a run opens, without loading the models")
    p.add_argument("--models", default=str(default_models_root()))
    p.add_argument("--component", action="append", default=None, choices=sorted(COMPONENTS), metavar="NAME",
                   help="only this component (repeatable; default: everything a run needs)")
    p.add_argument("--quick", action="store_true", help="headers, configs and shapes only (no full read of "
                                                        "the weights for NaN/Inf)")
    p.set_defaults(func=cmd_check)

    from .batch.cli import add_batch_parser
    from .comfy_api.cli import add_workflow_parser

    add_batch_parser(sub, common, str(default_models_root()), tuple(_DTYPES) + ("auto",))
    add_workflow_parser(sub)
    return ap


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl+C so that every ``finally`` and output set cleans up."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 a check found problems, 2 our error (message on stderr), 130 interrupted
    (Ctrl+C; 143 for SIGTERM). An interrupted run leaves no partial output (the writer removes it)."""
    import signal

    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: keep the host's handler
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        return int(args.func(args))
    except SyncHumanError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except KeyboardInterrupt as e:
        term = isinstance(e, _Terminated)
        sys.stderr.write(f"{'terminated' if term else 'interrupted'}: stopped; no partial output was left\n")
        return 143 if term else 130
    except OSError as e:
        if e.filename is None:
            raise
        from .export.writer import describe_os_error

        sys.stderr.write(f"error: cannot use {e.filename}: {describe_os_error(e)}\n")
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
