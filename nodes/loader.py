"""Model loader node: pick a SyncHuman checkpoint folder under ``models/synchuman``, choose the precision,
optionally download what is missing."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from comfy_api.latest import io

from synchuman_core.errors import WeightsNotFoundError

from . import comfy_bridge as bridge
from .models import DTYPE_CHOICES, ModelBundle
from .types import CATEGORY, MODELS

log = logging.getLogger(__name__)

#: Name of the folder a download creates under ``models/synchuman`` (always offered in the dropdown).
DOWNLOAD_NAME = "SyncHuman"


def checkpoint_choices() -> dict[str, Path]:
    """``{label: folder}`` of every checkpoint under the registered ``synchuman`` folders.

    The label is the folder relative to its root (``SyncHuman``, ``tiny``); a checkpoint placed directly in
    a root is labelled with that root's name. ``SyncHuman`` is always offered (the download target).
    """
    from synchuman_core.io import find_model_folders

    out: dict[str, Path] = {}
    for root in bridge.model_roots():
        for mf in find_model_folders([root]):
            rel = os.path.relpath(mf.base, root)
            label = Path(root).name if rel == "." else rel.replace(os.sep, "/")
            out.setdefault(label, mf.base)
    if DOWNLOAD_NAME not in out:
        out[DOWNLOAD_NAME] = Path(bridge.default_model_root()) / DOWNLOAD_NAME
    return dict(sorted(out.items()))


def _check_files(folder: Path) -> None:
    """Raise the loader's missing-files error (which files, which folder, how to download) before loading."""
    from synchuman_core.io import DEFAULT_COMPONENTS, resolve_model_folder
    from synchuman_core.io.loading import find_missing, missing_files_error

    help_line = ("\nOr set 'download_missing' to true on the SyncHuman Model Loader node to fetch them into "
                 f"{folder} (about 9 GB).")
    try:
        mf = resolve_model_folder(folder)
    except WeightsNotFoundError as e:
        raise WeightsNotFoundError(f"{e}{help_line}") from None
    missing = find_missing(mf, DEFAULT_COMPONENTS)
    if missing:
        raise WeightsNotFoundError(f"{missing_files_error(mf, missing)}{help_line}")
    # The cheap checks of every file the run will open (configs typed, headers, shapes, prompt embeddings),
    # before anything loads: a damaged file is named here, not as a traceback in a sampler.
    from synchuman_core.io.verify import check_before_run

    check_before_run(mf, DEFAULT_COMPONENTS)


class SyncHumanModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SyncHumanModelLoader",
            display_name="SyncHuman Model Loader",
            category=CATEGORY,
            description="Loads a SyncHuman checkpoint folder from models/synchuman. Components are read when a "
                        "node first needs them and are managed (loaded, offloaded) by ComfyUI.",
            inputs=[
                io.Combo.Input("model", options=list(checkpoint_choices()), default=DOWNLOAD_NAME,
                               tooltip="Checkpoint folder under ComfyUI/models/synchuman (a snapshot of the "
                                       "Hugging Face repository xishushu/SyncHuman, plus dinov2/)."),
                io.Combo.Input("dtype", options=list(DTYPE_CHOICES), default="auto",
                               tooltip="Precision. auto: the official mix on CUDA (fp16 stage 1), fp32 on CPU. "
                                       "fp16/bf16 halve the memory of the large stage-1 models; fp32 uses the most."),
                io.Boolean.Input("download_missing", default=False,
                                 tooltip="Download missing files from Hugging Face into the chosen folder "
                                         "(resumable; only what is missing), and rembg's u2net (background "
                                         "removal) into models/synchuman/rembg. Off: a missing file is an error "
                                         "that lists the files and the download command."),
            ],
            outputs=[MODELS.Output(display_name="models")],
        )

    @classmethod
    def execute(cls, model: str, dtype: str = "auto", download_missing: bool = False) -> io.NodeOutput:
        choices = checkpoint_choices()
        folder = choices.get(model)
        if folder is None:
            raise WeightsNotFoundError(
                f"no SyncHuman checkpoint named {model!r} under {', '.join(bridge.model_roots())}; "
                f"available: {', '.join(choices)}. Refresh the browser after adding a folder."
            )
        if download_missing:
            from synchuman_core.io.download import download

            progress = bridge.fraction_callback(1000)

            def report(desc: str, done: float, total: float) -> None:
                progress(desc, done / total if total else 0.0)

            download(folder, progress=report)
            from synchuman_core.preprocess.background import DEFAULT_REMBG_MODEL, download_rembg_model

            from .background import search_dirs

            # the background model SyncHuman Preprocess uses for photos without transparency (models/synchuman/rembg)
            download_rembg_model(DEFAULT_REMBG_MODEL, search_dirs()[0])
        _check_files(folder)
        return io.NodeOutput(ModelBundle(folder, dtype))

