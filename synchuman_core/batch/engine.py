"""The compute side of a batch: load the models once, then turn many inputs into output files.

:class:`ReconstructionEngine` knows nothing about Ray; the Ray actor (:mod:`synchuman_core.batch.runner`)
holds one. Inputs arrive as bytes and outputs leave as bytes, so a worker on another machine of a Ray
cluster needs no shared folder for inputs and outputs (only the model folder must exist on every node),
and the batch driver is the only process that writes into the output folder.

Each input runs through the same public pipeline call as ``python -m synchuman_core reconstruct``, with
models loaded once per engine: the same image, mask and settings give the same bytes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SyncHumanError

__all__ = ["EngineConfig", "ReconstructionEngine", "WorkPayload"]


@dataclass(frozen=True)
class EngineConfig:
    """What every worker of a batch shares: the model folder and how to run it."""

    models: str
    device: str | None = None  # None: the worker's GPU when Ray gave it one, else CPU
    memory_tier: str = "high"
    dtype: str = "auto"
    threads: int | None = None  # torch CPU threads per worker (None: torch's default)
    background: str | None = "u2net"  # rembg model for inputs without alpha or mask (None: refuse them)


@dataclass(frozen=True)
class WorkPayload:
    """One input as the driver sends it: file bytes (not paths) and the item's settings."""

    name: str
    image: bytes
    image_suffix: str
    mask: bytes | None
    mask_suffix: str
    settings: dict[str, Any]
    source: str = ""  # where the input came from, for error messages


class ReconstructionEngine:
    """Models loaded once (:func:`synchuman_core.memory.apply_tier`); :meth:`run` per input.

    :meth:`run` never raises for a bad input: it returns a record with ``status`` ``failed``, the error
    message and its type, so one input cannot stop a batch.
    """

    def __init__(self, config: EngineConfig, worker: str = "") -> None:
        import torch

        from ..io.layout import resolve_model_folder
        from ..memory import ALL_COMPONENTS, apply_tier, get_tier

        self.config = config
        self.worker = worker or f"pid {os.getpid()}"
        if config.threads:
            torch.set_num_threads(int(config.threads))
        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        t = time.perf_counter()
        resolve_model_folder(Path(config.models))
        tier = get_tier(config.memory_tier)
        if config.dtype != "auto":
            tier = tier.with_(precision=config.dtype)
        self.run_state = apply_tier(tier, Path(config.models), device=self.device)
        if not self.run_state.tier.drop_after_use:
            # load every component now (once per worker): load errors surface when the worker starts, and
            # the first input's timings are not the load time
            source = self.run_state.models.wrapped  # loads without placing (peek would not load)
            for name in ALL_COMPONENTS:
                source.get(name)
        self.load_s = round(time.perf_counter() - t, 2)
        self.done = 0

    def describe(self) -> dict[str, Any]:
        return {"worker": self.worker, "device": str(self.device), "load_s": self.load_s,
                "memory_tier": self.run_state.tier.name, "precision": self.run_state.precision}

    def run(self, payload: WorkPayload) -> dict[str, Any]:
        """Reconstruct one input -> ``{"status": "ok", "files": {filename: bytes}, ...}`` or a failure."""
        t0 = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix="synchuman-batch-"))
        try:
            image, mask = self._photo(payload, tmp)
            s = payload.settings
            out_path = tmp / "out" / f"{payload.name}.{s['format']}"
            out_path.parent.mkdir()
            summary = reconstruct_into(self.run_state, image, mask, out_path, s)
            files = {}
            for f in summary.pop("files"):
                p = Path(f)
                files[p.relative_to(out_path.parent).as_posix()] = p.read_bytes()
            self.done += 1
            return {"status": "ok", "files": files, "worker": self.worker, **summary,
                    "wall_s": round(time.perf_counter() - t0, 2)}
        except Exception as e:  # noqa: BLE001 - one bad input is recorded, never stops the batch
            known = isinstance(e, SyncHumanError)
            return {"status": "failed", "error": str(e) if known else f"{type(e).__name__}: {e}",
                    "error_type": type(e).__name__, "worker": self.worker,
                    "traceback": None if known else traceback.format_exc(limit=8),
                    "wall_s": round(time.perf_counter() - t0, 2)}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _photo(self, payload: WorkPayload, tmp: Path) -> tuple[Any, Any]:
        """The input as ``reconstruct`` prepares it (:func:`synchuman_core.validation.open_photo`: full decode,
        EXIF orientation, mask over alpha, background removal) -> ``(rgba cut-out, None)``."""
        from ..preprocess.background import rembg_search_dirs
        from ..validation import CLI_WORDS, open_photo

        img_path = tmp / f"image{payload.image_suffix}"
        img_path.write_bytes(payload.image)
        mask_path = None
        if payload.mask is not None:
            mask_path = tmp / f"mask{payload.mask_suffix}"
            mask_path.write_bytes(payload.mask)
        words = {**CLI_WORDS, "where": payload.source or payload.name, "image": "the image", "mask": "the mask",
                 "background": "--background-model", "background_off": "--background-model none"}
        photo = open_photo(img_path, mask_path, words=words, background=self.config.background,
                           search_dirs=rembg_search_dirs([self.config.models]), surface="cli")
        return photo.cut_out().rgba, None


def reconstruct_into(run: Any, image: Any, mask: Any, out_path: Path, s: dict[str, Any]) -> dict[str, Any]:
    """One input through the public pipeline call of ``reconstruct`` with already-loaded models."""
    from ..pipeline import reconstruct_to_files

    return reconstruct_to_files(
        run, image, mask, out_path, seed=int(s["seed"]), steps1=s.get("steps1"), steps2=s.get("steps2"),
        texture_size=int(s["texture_size"]), color_mode=s["color"], bake_mode=s["recipe"],
        turntable=int(s["turntable"]), save_views=bool(s["save_views"]),
    )
