"""Download the weights on request with ``huggingface_hub`` (resumable, with progress, only what we need).

Each component's file format (:mod:`.formats`) says what to fetch, from which repository:

* SyncHuman: ``snapshot_download("xishushu/SyncHuman", local_dir=<root>, allow_patterns=...)`` with the
  exact files of the requested components (safetensors first; ``.bin`` only for a folder that has no
  safetensors). The snapshot layout is kept (``<root>/ckpts/...``). The text encoder is fetched only
  if asked for, or when the prompt embeddings must be recomputed (no cache, no official files).
* DINOv2 (:mod:`.dinov2_files`): the transformers checkpoint ``facebook/dinov2-with-registers-large``,
  converted to our (torch.hub) key names and saved as ``<root>/dinov2/dinov2_vitl14_reg4.safetensors``.

From a shell: ``python -m synchuman_core download --models FOLDER`` (:func:`synchuman_core.cli.cmd_download`).

Nothing here runs unless called: loading never downloads. Offline or on failure,
:class:`WeightsNotFoundError` names the files still missing, the folder and the commands that fetch
them on another machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, WeightsNotFoundError
from .layout import HF_REPO_ID, ModelFolder, default_models_root
from .loading import by_file_format, component_files, download_command, find_missing, missing_files_error
from .prompt_cache import compute_prompt_embeds, prompt_embeds_available
from .registry import DEFAULT_COMPONENTS, get_spec

__all__ = ["ProgressCallback", "download"]

logger = logging.getLogger(__name__)

#: ``callback(description, done, total)``; bytes for file transfers.
ProgressCallback = Callable[[str, float, float], None]


def _hub():
    try:
        import huggingface_hub
    except ImportError as e:
        raise WeightsNotFoundError(
            "Downloading needs the huggingface_hub package (pip install huggingface_hub), or download the files "
            f"on another machine: hf download {HF_REPO_ID} --local-dir <folder> (see `{download_command('<folder>')}`)"
        ) from e
    return huggingface_hub


def _tqdm_class(callback: ProgressCallback | None):
    """A tqdm class that forwards progress to ``callback`` (None: huggingface_hub's own bars)."""
    if callback is None:
        return None
    from tqdm.auto import tqdm

    class _Forward(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            out = super().update(n)
            callback(str(self.desc or ""), float(self.n), float(self.total or 0))
            return out

    return _Forward


def _snapshot(repo_id: str, local_dir: Path, patterns: list[str], *, revision: str | None, token: str | bool | None,
              progress: ProgressCallback | None) -> None:
    hub = _hub()
    kwargs: dict[str, Any] = {"local_dir": str(local_dir), "allow_patterns": patterns}
    if revision is not None:
        kwargs["revision"] = revision
    if token is not None:
        kwargs["token"] = token
    tq = _tqdm_class(progress)
    if tq is not None:
        kwargs["tqdm_class"] = tq
    logger.info("downloading %s (%d patterns) into %s", repo_id, len(patterns), local_dir)
    hub.snapshot_download(repo_id, **kwargs)


def _hub_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [OSError]
    try:
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

        errs += [EntryNotFoundError, HfHubHTTPError]
    except ImportError:
        pass
    return tuple(errs)


def _remove_damaged(mf: ModelFolder, names: Iterable[str]) -> list[str]:
    """Delete LFS pointers and truncated safetensors files so that the download fetches them again."""
    from .files import is_lfs_pointer, read_safetensors_header

    removed: list[str] = []
    for n in names:
        cf, _ = component_files(n, mf, raise_missing=False)
        files = list(cf.weights.files) if cf.weights is not None else []
        if cf.config is not None:
            files.append(cf.config)
        for f in files:
            if not f.is_file():
                continue
            bad = is_lfs_pointer(f)
            if not bad and f.name.endswith(".safetensors"):
                try:
                    read_safetensors_header(f)
                except CheckpointError:
                    bad = True
            if bad:
                f.unlink()
                removed.append(str(f))
    if removed:
        logger.warning("removed damaged files (they will be downloaded again): %s", removed)
    return removed


def download(
    dest: str | os.PathLike | None = None,
    components: Iterable[str] | None = None,
    *,
    text_encoder: bool | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    progress: ProgressCallback | None = None,
    repair: bool = True,
) -> ModelFolder:
    """Fetch what ``components`` (default: all needed to run) lack in ``dest`` and return the folder.

    ``text_encoder``: True/False forces it in/out; None (default) fetches it only when no prompt
    embeddings are available. ``repair`` deletes LFS pointers and truncated files first. Files already
    complete are not fetched again (and with everything present no network access happens).
    """
    base = Path(dest).expanduser() if dest is not None else default_models_root()
    base.mkdir(parents=True, exist_ok=True)
    mf = ModelFolder(base, base / "ckpts")
    if (base / "OneStage").is_dir() and not (base / "ckpts").is_dir():
        mf = ModelFolder(base, base)  # a folder in the flat layout: complete it in place
    names = list(dict.fromkeys(components if components is not None else DEFAULT_COMPONENTS))
    for n in names:
        get_spec(n)
    if text_encoder is None:
        text_encoder = "text_encoder" in names or ("joint" in names and not prompt_embeds_available(mf))
    if text_encoder and "text_encoder" not in names:
        names.append("text_encoder")
    elif not text_encoder and "text_encoder" in names:
        names.remove("text_encoder")

    if repair:
        _remove_damaged(mf, names)
    missing = find_missing(mf, names)
    errors = _hub_errors()

    def fetch(repo_id: str, local_dir: Path, patterns: list[str]) -> None:
        _snapshot(repo_id, local_dir, patterns, revision=revision if repo_id == HF_REPO_ID else None, token=token,
                  progress=progress)

    for layout, specs in by_file_format(missing):
        try:
            layout.download(specs, mf, fetch)
        except errors as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise WeightsNotFoundError(
                f"Downloading from huggingface.co ({layout.repo_id}) failed ({type(e).__name__}: {first}).\n"
                + str(missing_files_error(mf, find_missing(mf, names) or missing))
            ) from e

    left = find_missing(mf, names)
    if left:
        raise WeightsNotFoundError(
            "The download finished but files are still missing (the repository layout may have changed).\n"
            + str(missing_files_error(mf, left))
        )
    if "text_encoder" in names and "joint" in names and not prompt_embeds_available(mf):
        try:
            compute_prompt_embeds(mf)
        except ImportError as e:
            logger.warning("prompt embeddings not computed yet (%s); they will be computed on first use", e)
    return mf
