"""Download the weights on request with ``huggingface_hub`` (resumable, with progress, only what we need).

* SyncHuman: ``snapshot_download("xishushu/SyncHuman", local_dir=<root>, allow_patterns=...)`` with the
  exact files of the requested components (safetensors first; ``.bin`` only for a folder that has no
  safetensors). The snapshot layout is kept (``<root>/ckpts/...``). The text encoder is fetched only
  if asked for, or when the prompt embeddings must be recomputed (no cache, no official files).
* DINOv2: the transformers checkpoint ``facebook/dinov2-with-registers-large`` (``config.json`` +
  ``model.safetensors``), converted to our (torch.hub) key names and saved as
  ``<root>/dinov2/dinov2_vitl14_reg4.safetensors``.

Nothing here runs unless called: loading never downloads. Offline or on failure,
:class:`WeightsNotFoundError` names the files still missing, the folder and the commands that fetch
them on another machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, SyncHumanError, WeightsNotFoundError
from .layout import DINOV2_DIR, ModelFolder, default_models_root
from .loading import DINOV2_OURS, component_files, missing_files_error
from .registry import COMPONENTS, DEFAULT_COMPONENTS, DINOV2_HF_REPO_ID, HF_REPO_ID, get_spec

__all__ = ["ProgressCallback", "convert_dinov2_download", "download", "main"]

logger = logging.getLogger(__name__)

#: ``callback(description, done, total)``; bytes for file transfers.
ProgressCallback = Callable[[str, float, float], None]


def _hub():
    try:
        import huggingface_hub
    except ImportError as e:
        raise WeightsNotFoundError(
            "Downloading needs the huggingface_hub package (pip install huggingface_hub), or download the files "
            f"on another machine: hf download {HF_REPO_ID} --local-dir <folder>"
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


def _missing_components(mf: ModelFolder, names: Iterable[str]) -> dict[str, list[str]]:
    out = {}
    for n in names:
        _, missing = component_files(n, mf, raise_missing=False)
        if missing:
            out[n] = missing
    return out


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


def convert_dinov2_download(src: Path, dest_dir: Path) -> Path:
    """transformers DINOv2 files in ``src`` -> ``dest_dir/dinov2_vitl14_reg4.safetensors`` (hub keys)."""
    from safetensors.torch import load_file, save_file

    from ..encoders.dinov2 import DINOv2Config, convert_dinov2_state_dict
    from .loading import read_json

    cfg_json = read_json(src / "config.json")
    cfg = DINOv2Config.from_official(cfg_json)
    sd = convert_dinov2_state_dict(load_file(str(src / "model.safetensors")))
    ours = {f: getattr(cfg, f) for f in ("embed_dim", "depth", "num_heads", "patch_size", "img_size",
                                         "num_register_tokens", "mlp_ratio", "layer_norm_eps")}
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / DINOV2_OURS
    tmp = out.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp),
              metadata={"format": "pt", "config": json.dumps(ours), "source": DINOV2_HF_REPO_ID})
    os.replace(tmp, out)
    logger.info("converted %s to %s", src, out)
    return out


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
    from .prompt_cache import compute_prompt_embeds, prompt_embeds_available

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
    missing = _missing_components(mf, names)
    hf_names = [n for n in missing if COMPONENTS[n].location == "ckpts"]
    errors = _hub_errors()
    if hf_names:
        if mf.ckpts != base / "ckpts":
            raise WeightsNotFoundError(
                f"{base} uses the flat layout (OneStage/ without ckpts/); downloads keep the repository layout. "
                f"Download into a new folder, or move {base}/OneStage and {base}/SecondStage into {base}/ckpts/."
            )
        patterns = sorted({p for n in hf_names for p in COMPONENTS[n].download_patterns()} | {"README.md", "LICENSE*"})
        try:
            _snapshot(HF_REPO_ID, base, patterns, revision=revision, token=token, progress=progress)
            still = _missing_components(mf, hf_names)
            bin_names = [n for n in still if COMPONENTS[n].allow_bin]
            if bin_names:  # folders published with .bin weights only
                pats = sorted({p for n in bin_names for p in COMPONENTS[n].download_patterns(bin_files=True)})
                _snapshot(HF_REPO_ID, base, pats, revision=revision, token=token, progress=progress)
        except errors as e:
            left = _missing_components(mf, names)
            raise WeightsNotFoundError(
                f"Downloading from huggingface.co failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}).\n"
                + str(missing_files_error(mf, left or missing))
            ) from e

    if "dinov2" in missing:
        tmp = mf.base / DINOV2_DIR / ".download"
        try:
            _snapshot(DINOV2_HF_REPO_ID, tmp, ["config.json", "model.safetensors"], revision=None, token=token,
                      progress=progress)
        except errors as e:
            raise WeightsNotFoundError(
                f"Downloading {DINOV2_HF_REPO_ID} failed ({type(e).__name__}).\n"
                + str(missing_files_error(mf, _missing_components(mf, names)))
            ) from e
        convert_dinov2_download(tmp, mf.base / DINOV2_DIR)
        shutil.rmtree(tmp, ignore_errors=True)

    left = _missing_components(mf, names)
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


def main(argv: Sequence[str] | None = None) -> int:
    from .verify import verify_model_folder

    ap = argparse.ArgumentParser(prog="python -m synchuman_core.io", description="SyncHuman model files")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="download the weights (resumable; only what is missing)")
    d.add_argument("folder", nargs="?", type=Path, default=None,
                   help="model folder (default: $SYNCHUMAN_MODELS or ~/.cache/synchuman)")
    d.add_argument("--component", action="append", choices=sorted(COMPONENTS), help="only these (repeatable)")
    te = d.add_mutually_exclusive_group()
    te.add_argument("--text-encoder", dest="text_encoder", action="store_const", const=True, default=None,
                    help="also fetch the text encoder (default: only if the prompt embeddings must be recomputed)")
    te.add_argument("--no-text-encoder", dest="text_encoder", action="store_const", const=False,
                    help="never fetch the text encoder")
    d.add_argument("--revision", default=None)
    c = sub.add_parser("check", help="verify a model folder (headers only, no tensor reads)")
    c.add_argument("folder", nargs="?", type=Path, default=None)
    c.add_argument("--component", action="append", choices=sorted(COMPONENTS))
    c.add_argument("--no-keys", action="store_true", help="skip the key/shape check")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = args.folder or default_models_root()
    try:
        if args.cmd == "download":
            mf = download(folder, args.component, text_encoder=args.text_encoder,
                          revision=args.revision)
            folder = mf.base
        report = verify_model_folder(folder, args.component, check_keys=not getattr(args, "no_keys", False))
    except SyncHumanError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    sys.stdout.write(report.summary() + "\n")
    if not report.ok:
        try:
            report.raise_for_problems()
        except SyncHumanError as e:
            sys.stderr.write(f"\n{e}\n")
        return 1
    return 0
