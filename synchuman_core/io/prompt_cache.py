"""The fixed view-prompt embeddings of stage 1 in a model folder: find, load, recompute, cache.

The tensors and their format belong to :mod:`synchuman_core.encoders.prompts` (7-view ``[7, 77, D]`` per
domain, as the official files; the UNet uses views ``[0, 2, 3, 4, 6]``). This module decides where they
come from for a model folder, in this order:

1. the official files ``normal_embeds.pt`` + ``clr_embeds.pt`` (from the official GitHub repository,
   ``SyncHuman/data/fixed_prompt_embeds_7view/``; not in the HF repo) in ``<root>/prompt_embeds/``
   (also accepted: ``<root>/fixed_prompt_embeds_7view/``, ``<root>/SyncHuman/data/fixed_prompt_embeds_7view/``),
   read with ``torch.load(weights_only=True)`` only — bit-identical to the official run;
2. our cache ``<root>/prompt_embeds/synchuman_prompt_embeds.safetensors``;
3. recomputed once with the checkpoint's text encoder (``ckpts/OneStage/text_encoder``, downloaded
   only for this) from the stored token ids, then written to the cache.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..encoders import prompts
from ..errors import WeightsNotFoundError
from .files import check_not_lfs_pointer
from .layout import ModelFolder, resolve_model_folder
from .loading import download_command, load_component

__all__ = [
    "PROMPT_CACHE_NAME",
    "compute_prompt_embeds",
    "find_official_prompt_files",
    "load_prompt_embeds",
    "prompt_cache_path",
    "prompt_embeds_available",
    "save_prompt_embeds",
]

logger = logging.getLogger(__name__)

PROMPT_CACHE_NAME = "synchuman_prompt_embeds.safetensors"
OFFICIAL_URL = "https://github.com/xishuxishu/SyncHuman/tree/main/SyncHuman/data/fixed_prompt_embeds_7view"


def prompt_cache_path(folder: str | os.PathLike | ModelFolder) -> Path:
    return resolve_model_folder(folder).prompt_dir / PROMPT_CACHE_NAME


def find_official_prompt_files(folder: str | os.PathLike | ModelFolder) -> tuple[Path, Path] | None:
    """``(normal_embeds.pt, clr_embeds.pt)`` if the user put the official pair in the folder."""
    mf = resolve_model_folder(folder)
    for d in (mf.prompt_dir, mf.base / "fixed_prompt_embeds_7view", mf.prompt_dir / "fixed_prompt_embeds_7view",
              mf.base / "SyncHuman" / "data" / "fixed_prompt_embeds_7view"):
        n, c = d / prompts.OFFICIAL_FILES["normal"], d / prompts.OFFICIAL_FILES["color"]
        if n.is_file() and c.is_file():
            return n, c
    return None


def prompt_embeds_available(folder: str | os.PathLike | ModelFolder) -> bool:
    """True if the official files or our cache exist (the text encoder is then not needed)."""
    return find_official_prompt_files(folder) is not None or prompt_cache_path(folder).is_file()


def save_prompt_embeds(folder: str | os.PathLike | ModelFolder, normal7: torch.Tensor, color7: torch.Tensor) -> Path:
    """Write the folder's cache (written to a temporary name first, then renamed)."""
    from ..export.writer import replace_atomically

    path = prompt_cache_path(folder)
    # a unique temporary name: two runs computing the cache at once never write into one file
    replace_atomically(path, lambda tmp: prompts.save_prompt_embeds(tmp, normal7, color7))
    logger.info("cached the view-prompt embeddings in %s", path)
    return path


def compute_prompt_embeds(
    folder: str | os.PathLike | ModelFolder, device: torch.device | str | None = None, *, save: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recompute ``(normal7, color7)`` with the folder's text encoder; cache them if ``save``."""

    mf = resolve_model_folder(folder)
    encoder = load_component("text_encoder", mf, device)
    out = [prompts.compute_prompt_embeddings(encoder, prompts.fixed_prompt_token_ids(d)).cpu() for d in prompts.DOMAINS]
    del encoder
    normal7, color7 = out
    if save:
        save_prompt_embeds(mf, normal7, color7)
    return normal7, color7


def load_prompt_embeds(
    folder: str | os.PathLike | ModelFolder,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    *,
    allow_compute: bool = True,
) -> dict[str, torch.Tensor]:
    """``{"normal": [5, 77, D], "color": [5, 77, D]}`` (views front, right, back, left, face).

    ``torch.cat([e["normal"], e["color"]])`` is the stage-1 ``[10, 77, D]`` prompt batch.
    """
    mf = resolve_model_folder(folder)
    official = find_official_prompt_files(mf)
    cache = prompt_cache_path(mf)
    if official is not None:
        for f in official:
            check_not_lfs_pointer(f)
        normal7, color7 = (prompts.load_official_prompt_embeds(f) for f in official)
    elif cache.is_file():
        check_not_lfs_pointer(cache)
        normal7, color7 = prompts.load_prompt_embeds(cache)
    elif allow_compute:
        try:
            normal7, color7 = compute_prompt_embeds(mf, device)
        except WeightsNotFoundError as e:
            raise WeightsNotFoundError(_missing_message(mf) + "\n\nDetails:\n" + str(e)) from e
    else:
        raise WeightsNotFoundError(_missing_message(mf))
    return {
        d: prompts.select_views(t).to(device=device or "cpu", dtype=dtype or t.dtype)
        for d, t in zip(prompts.DOMAINS, (normal7, color7))
    }


def _missing_message(mf: ModelFolder) -> str:
    return (
        f"The view-prompt embeddings are not in {mf.prompt_dir}. Either\n"
        f"  - put the official normal_embeds.pt and clr_embeds.pt ({OFFICIAL_URL}) in {mf.prompt_dir}, or\n"
        f"  - download the text encoder (~0.7 GB) so that they are recomputed once:\n"
        f"      {download_command(mf.base, ['text_encoder'])}"
    )
