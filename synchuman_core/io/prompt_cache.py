"""The fixed view-prompt embeddings of stage 1: find, load, recompute and cache them.

The UNet cross-attends to CLIP text embeddings of 5 fixed prompts per domain (normal, color):
``"a rendering image of 3D human, {view} view, {color|normal} map."`` for the views front, right, back,
left, face (ARCHITECTURE.md §4.5). The official code ships them as two 7-view files in its GitHub
repository (``SyncHuman/data/fixed_prompt_embeds_7view/{normal,clr}_embeds.pt``, not in the HF repo)
and keeps views ``[0, 2, 3, 4, 6]``.

Where they come from, in order:

1. ``<root>/prompt_embeds/synchuman_prompt_embeds.safetensors`` (our cache: ``normal``, ``color``
   ``[5, 77, D]``), unless official files are present and the cache was not made from them;
2. the official ``.pt`` files in ``<root>/prompt_embeds/`` (also accepted:
   ``<root>/fixed_prompt_embeds_7view/``, ``<root>/SyncHuman/data/fixed_prompt_embeds_7view/``), read
   with ``torch.load(weights_only=True)`` and cached;
3. recomputed with the checkpoint's text encoder (``ckpts/OneStage/text_encoder``) and the offline
   tokenizer of :mod:`synchuman_core.encoders.prompts`, then cached.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..errors import CheckpointError, WeightsNotFoundError
from .files import check_not_lfs_pointer, read_safetensors_header
from .layout import ModelFolder, resolve_model_folder

__all__ = [
    "DOMAINS",
    "OFFICIAL_VIEW_INDICES",
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
DOMAINS = ("normal", "color")
OFFICIAL_PT_NAMES = {"normal": "normal_embeds.pt", "color": "clr_embeds.pt"}
#: Views kept from the official 7-view files: front, right, back, left, face.
OFFICIAL_VIEW_INDICES = (0, 2, 3, 4, 6)
_OFFICIAL_URL = "https://github.com/xishuxishu/SyncHuman/tree/main/SyncHuman/data/fixed_prompt_embeds_7view"


def prompt_cache_path(folder: str | os.PathLike | ModelFolder) -> Path:
    return resolve_model_folder(folder).prompt_dir / PROMPT_CACHE_NAME


def find_official_prompt_files(folder: str | os.PathLike | ModelFolder) -> dict[str, Path] | None:
    """The official ``normal_embeds.pt`` / ``clr_embeds.pt`` pair, if the user put it in the folder."""
    mf = resolve_model_folder(folder)
    for d in (mf.prompt_dir, mf.base / "fixed_prompt_embeds_7view", mf.prompt_dir / "fixed_prompt_embeds_7view",
              mf.base / "SyncHuman" / "data" / "fixed_prompt_embeds_7view"):
        files = {dom: d / name for dom, name in OFFICIAL_PT_NAMES.items()}
        if all(f.is_file() for f in files.values()):
            return files
    return None


def _select_views(t: torch.Tensor, source: Path | str) -> torch.Tensor:
    """``[7, 77, D]`` official file -> the 5 views used; ``[5, 77, D]`` is taken as is."""
    if not isinstance(t, torch.Tensor) or t.ndim != 3 or t.shape[1] != 77:
        shape = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise CheckpointError(f"{source}: expected prompt embeddings [7 or 5, 77, D], found {shape}")
    if t.shape[0] == 7:
        return t[list(OFFICIAL_VIEW_INDICES)]
    if t.shape[0] == 5:
        return t
    raise CheckpointError(f"{source}: expected 7 (official file) or 5 views, found {t.shape[0]}")


def save_prompt_embeds(folder: str | os.PathLike | ModelFolder, embeds: dict[str, torch.Tensor], *, source: str) -> Path:
    """Write the cache (``normal``, ``color`` ``[5, 77, D]``); ``source`` is recorded in its metadata."""
    from safetensors.torch import save_file

    path = prompt_cache_path(folder)
    sd = {d: _select_views(embeds[d], source).detach().to("cpu").contiguous() for d in DOMAINS}
    if sd["normal"].shape != sd["color"].shape:
        raise CheckpointError(f"normal and color prompt embeddings differ in shape: {list(sd['normal'].shape)} "
                              f"vs {list(sd['color'].shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(sd, str(tmp), metadata={"source": source, "views": "front,right,back,left,face"})
    os.replace(tmp, path)
    logger.info("cached prompt embeddings (%s) in %s", source, path)
    return path


def _load_official(files: dict[str, Path]) -> dict[str, torch.Tensor]:
    out = {}
    for dom, f in files.items():
        check_not_lfs_pointer(f)
        try:
            t = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - pickle errors have no common base
            raise CheckpointError(f"{f} could not be read as a weights-only tensor file ({e}).") from e
        out[dom] = _select_views(t, f)
    return out


def _load_cache(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    from safetensors.torch import load_file

    entries, meta = read_safetensors_header(path)
    missing = [d for d in DOMAINS if d not in entries]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}; delete it to have it rebuilt.")
    sd = load_file(str(path))
    return {d: _select_views(sd[d], path) for d in DOMAINS}, meta.get("source", "")


def prompt_embeds_available(folder: str | os.PathLike | ModelFolder) -> bool:
    """True if the cache or the official files exist (no text encoder needed)."""
    return prompt_cache_path(folder).is_file() or find_official_prompt_files(folder) is not None


def compute_prompt_embeds(
    folder: str | os.PathLike | ModelFolder,
    device: torch.device | str | None = None,
    *,
    save: bool = True,
) -> dict[str, torch.Tensor]:
    """Recompute the 10 prompt embeddings with the folder's text encoder; cache them if ``save``."""
    from ..encoders import prompts
    from .loading import load_component

    mf = resolve_model_folder(folder)
    encoder = load_component("text_encoder", mf, device)
    with torch.no_grad():
        embeds = prompts.compute_view_prompt_embeds(encoder)
    embeds = {d: embeds[d].to("cpu") for d in DOMAINS}
    del encoder
    if save:
        save_prompt_embeds(mf, embeds, source="recomputed with the checkpoint's text encoder")
    return embeds


def load_prompt_embeds(
    folder: str | os.PathLike | ModelFolder,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    *,
    allow_compute: bool = True,
) -> dict[str, torch.Tensor]:
    """``{"normal": [5, 77, D], "color": [5, 77, D]}`` (views front, right, back, left, face)."""
    mf = resolve_model_folder(folder)
    cache = prompt_cache_path(mf)
    official = find_official_prompt_files(mf)
    embeds: dict[str, torch.Tensor] | None = None
    if cache.is_file():
        embeds, source = _load_cache(cache)
        if official is not None and source != "official":
            embeds = None  # official files beat a recomputed cache
    if embeds is None and official is not None:
        embeds = _load_official(official)
        try:
            save_prompt_embeds(mf, embeds, source="official")
        except OSError as e:
            logger.warning("could not write the prompt-embedding cache %s: %s", cache, e)
    if embeds is None:
        if not allow_compute:
            raise WeightsNotFoundError(_missing_message(mf))
        try:
            embeds = compute_prompt_embeds(mf, device)
        except WeightsNotFoundError as e:
            raise WeightsNotFoundError(_missing_message(mf) + "\n\n" + str(e)) from e
    return {d: t.to(device=device or "cpu", dtype=dtype or t.dtype) for d, t in embeds.items()}


def _missing_message(mf: ModelFolder) -> str:
    return (
        f"The view-prompt embeddings are not in {mf.prompt_dir}. Either\n"
        f"  - put the official normal_embeds.pt and clr_embeds.pt ({_OFFICIAL_URL}) in {mf.prompt_dir}, or\n"
        f"  - download the text encoder so that they can be recomputed once:\n"
        f"      python -m synchuman_core.io download {mf.base} --component text_encoder"
    )
