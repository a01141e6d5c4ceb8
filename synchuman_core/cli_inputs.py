"""The CLI's input side: the arguments about the photo, and every check that runs before compute.

``reconstruct`` (and ``smoke``, ``batch``) call :func:`check_settings` first (seed, steps, texture size: the
words are the CLI flags), then :func:`check_photo` (the image opens and decodes, EXIF orientation, ``--mask``
wins over alpha, background removal as the official pipeline does it when there is no alpha, the person is
found and large enough) - all before a model is loaded. Errors are :class:`~synchuman_core.errors.SyncHumanError`
s; ``cli.main`` prints them as one line and exits 2.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .preprocess.background import DEFAULT_REMBG_MODEL, REMBG_MODELS, REMBG_SUBDIR, rembg_search_dirs
from .validation import CLI_WORDS, PhotoInputs, check_device, check_seed, check_steps, check_texture_size, open_photo

__all__ = [
    "BACKGROUND_NONE",
    "add_photo_arguments",
    "add_rembg_download_argument",
    "check_photo",
    "check_settings",
    "download_background_models",
]

#: ``--background-model none``: never remove the background (the image needs alpha, or ``--mask``).
BACKGROUND_NONE = "none"


def add_photo_arguments(p: argparse.ArgumentParser) -> None:
    """``--mask``, ``--background-model`` and ``--save-views`` (``reconstruct``)."""
    p.add_argument("--mask", default=None,
                   help="mask image, white = person (wins over the image's alpha and background removal)")
    p.add_argument("--background-model", choices=(*REMBG_MODELS, BACKGROUND_NONE), default=DEFAULT_REMBG_MODEL,
                   help="when the image has no transparency and no --mask: remove the background with this rembg "
                        f"model, as the official pipeline does (default {DEFAULT_REMBG_MODEL}; file "
                        f"<--models>/{REMBG_SUBDIR}/<model>.onnx or ~/.u2net; --download fetches it). "
                        f"'{BACKGROUND_NONE}': refuse such images")
    p.add_argument("--save-views", action="store_true",
                   help="also write the 5 colour + 5 normal views and the input framing as PNGs next to the mesh")


def add_rembg_download_argument(p: argparse.ArgumentParser) -> None:
    """``download --rembg NAME`` (repeatable; ``none``: no background model)."""
    p.add_argument("--rembg", action="append", default=None, choices=(*REMBG_MODELS, BACKGROUND_NONE),
                   metavar="MODEL",
                   help=f"background-removal model(s) to fetch into <--models>/{REMBG_SUBDIR}/ (repeatable; "
                        f"{', '.join(REMBG_MODELS)}; '{BACKGROUND_NONE}' for none). Default: "
                        f"{DEFAULT_REMBG_MODEL}, which `reconstruct` uses for photos without transparency, unless "
                        "--component limits the download")


def download_background_models(a: argparse.Namespace, models_dir: Path) -> list[Path]:
    """Fetch the rembg models ``download`` was asked for (see :func:`add_rembg_download_argument`)."""
    from .preprocess.background import download_rembg_model

    names = a.rembg if a.rembg is not None else ([] if a.component else [DEFAULT_REMBG_MODEL])
    names = [n for n in dict.fromkeys(names) if n != BACKGROUND_NONE]
    return [download_rembg_model(n, Path(models_dir) / REMBG_SUBDIR) for n in names]


def check_settings(a: argparse.Namespace) -> None:
    """Seed, steps and texture size in range, named by their flags (``ConfigError`` otherwise)."""
    a.seed = check_seed(a.seed, "--seed")
    if hasattr(a, "device"):
        a.device = check_device(a.device, "--device")
    a.steps1 = check_steps(getattr(a, "steps1", None), "--steps1")
    a.steps2 = check_steps(getattr(a, "steps2", None), "--steps2")
    if getattr(a, "color", "texture") == "texture":
        a.texture_size = check_texture_size(a.texture_size, "--texture-size")


def check_photo(image: str | os.PathLike | Any, mask: str | os.PathLike | None, *, background: str,
                model_roots: Iterable[str | os.PathLike] = (), download: bool = False) -> PhotoInputs:
    """Open and check the photo and mask files and find the background model (cheap; nothing runs yet).
    ``.cut_out()`` on the result removes the background and frames the person
    (:func:`synchuman_core.validation.open_photo`)."""
    return open_photo(
        Path(image) if isinstance(image, (str, os.PathLike)) else image, Path(mask) if mask is not None else None,
        words=CLI_WORDS,
        background=None if background == BACKGROUND_NONE else background,
        search_dirs=rembg_search_dirs(model_roots), download=download, surface="cli",
    )
