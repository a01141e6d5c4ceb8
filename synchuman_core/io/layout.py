"""Where the model files live: the official folder layout, found under any folder the user names.

The official Hugging Face repository ``xishushu/SyncHuman`` is used unchanged. A snapshot of it
(``<root>/ckpts/OneStage/...``, ``<root>/ckpts/SecondStage/ckpts/...``) or its ``ckpts`` folder
alone (``<root>/OneStage/...``) both work. Files shared by several checkpoints sit in named folders
beside them (:meth:`ModelFolder.shared_dir`: DINOv2's ``<root>/dinov2/``, see :mod:`.dinov2_files`); the
prompt-embedding cache in ``<root>/prompt_embeds/``.

In ComfyUI the models folder is ``<ComfyUI>/models/synchuman/`` (registered by the node layer under
the key ``synchuman``); the snapshot may sit directly in it or in one sub-folder per checkpoint::

    models/synchuman/ckpts/OneStage/...           one checkpoint, dropped in as is
    models/synchuman/SyncHuman/ckpts/OneStage/... or several, one folder each
    models/synchuman/dinov2/                      DINOv2 shared by all of them

Standalone, the default root is ``$SYNCHUMAN_MODELS`` or ``~/.cache/synchuman``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsNotFoundError

__all__ = [
    "COMFY_FOLDER_NAME",
    "ModelFolder",
    "default_models_root",
    "download_command",
    "find_model_folders",
    "resolve_model_folder",
    "STAGE_DIRS",
]

COMFY_FOLDER_NAME = "synchuman"
STAGE_DIRS = ("OneStage", "SecondStage")
PROMPT_DIR = "prompt_embeds"
HF_REPO_ID = "xishushu/SyncHuman"


def download_command(folder: os.PathLike | str, components: Iterable[str] = ()) -> str:
    """The one command that fetches model files (``python -m synchuman_core download``), for error messages."""
    flags = "".join(f" --component {n}" for n in components)
    return f"python -m synchuman_core download --models {folder}{flags}"


def default_models_root() -> Path:
    """``$SYNCHUMAN_MODELS`` if set, else ``~/.cache/synchuman`` (used outside ComfyUI)."""
    env = os.environ.get("SYNCHUMAN_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "synchuman"


def _has_stage_dirs(p: Path) -> bool:
    return any((p / s).is_dir() for s in STAGE_DIRS)


@dataclass(frozen=True)
class ModelFolder:
    """A SyncHuman checkpoint folder.

    ``base``: the folder the user named (a snapshot of the HF repo, or the folder holding the stages);
    ``ckpts``: the folder holding ``OneStage/`` and ``SecondStage/`` (``base/ckpts`` or ``base``);
    ``search``: further folders whose ``dinov2/`` and ``prompt_embeds/`` are used when ``base`` has
    none (the ComfyUI ``models/synchuman`` root holding several checkpoints).
    """

    base: Path
    ckpts: Path
    search: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        return self.base.name

    def path(self, relative: str) -> Path:
        """A path inside the checkpoint, relative to ``ckpts`` (``"OneStage/vae"``)."""
        return self.ckpts / relative

    def shared_dir(self, name: str) -> Path:
        """``<base>/<name>`` (or the first existing one of ``<ckpts>/<name>``, ``<search>/<name>``): files
        shared by the checkpoints below a root (e.g. ComfyUI's ``models/synchuman/dinov2``)."""
        candidates = [self.base / name]
        if self.ckpts != self.base:
            candidates.append(self.ckpts / name)
        candidates += [s / name for s in self.search]
        for c in candidates:
            if c.is_dir():
                return c
        return candidates[0]

    @property
    def prompt_dir(self) -> Path:
        return self.shared_dir(PROMPT_DIR)

    def describe(self) -> str:
        return str(self.base) if self.ckpts == self.base else f"{self.base} (stages in {self.ckpts})"


def resolve_model_folder(path: str | os.PathLike | ModelFolder, *, search: Iterable[str | os.PathLike] = ()) -> ModelFolder:
    """Find the SyncHuman layout in ``path``.

    Accepts ``<path>/ckpts/{OneStage,SecondStage}``, ``<path>/{OneStage,SecondStage}``, a ComfyUI
    models directory (``<path>/synchuman/...``) and a ``synchuman`` folder holding exactly one
    checkpoint sub-folder. Raises :class:`WeightsNotFoundError` explaining the expected layout.
    """
    if isinstance(path, ModelFolder):
        return path
    p = Path(path).expanduser()
    extra = tuple(Path(s).expanduser() for s in search)
    if not p.is_dir():
        raise WeightsNotFoundError(
            f"The SyncHuman model folder {p} does not exist. Download the weights into it with\n"
            f"  {download_command(p)}\n"
            f"or on another machine with\n  hf download {HF_REPO_ID} --local-dir {p}\nand copy the folder here."
        )
    if (p / "ckpts").is_dir() and _has_stage_dirs(p / "ckpts"):
        return ModelFolder(p, p / "ckpts", extra)
    if _has_stage_dirs(p):
        return ModelFolder(p, p, extra)
    # A ComfyUI models directory (<models>/synchuman/...) or a folder holding one checkpoint per
    # sub-folder (models/synchuman/<name>/ckpts/...).
    comfy = p / COMFY_FOLDER_NAME
    found = find_model_folders([comfy] if p.name != COMFY_FOLDER_NAME and comfy.is_dir() else [p])
    if not found and p.name != COMFY_FOLDER_NAME and comfy.is_dir():
        found = find_model_folders([p])
    if len(found) == 1:
        return ModelFolder(found[0].base, found[0].ckpts, found[0].search + extra)
    if len(found) > 1:
        names = ", ".join(str(f.base) for f in found)
        raise WeightsNotFoundError(f"{p} holds several SyncHuman checkpoints ({names}); name one of them.")
    raise WeightsNotFoundError(
        f"{p} does not hold the SyncHuman files: expected {p}/ckpts/OneStage and {p}/ckpts/SecondStage "
        f"(a snapshot of the Hugging Face repository {HF_REPO_ID}) or {p}/OneStage and {p}/SecondStage.\n"
        f"Download them with\n  {download_command(p)}\n"
        f"or elsewhere with\n  hf download {HF_REPO_ID} --local-dir {p}"
    )


def find_model_folders(roots: Iterable[str | os.PathLike]) -> list[ModelFolder]:
    """Every SyncHuman checkpoint folder at or one/two levels below each root (for a dropdown).

    ``roots`` are e.g. ComfyUI's ``folder_paths.get_folder_paths("synchuman")``. A root's own
    ``dinov2/`` and ``prompt_embeds/`` serve the checkpoints below it.
    """
    out: list[ModelFolder] = []
    seen: set[Path] = set()
    for r in roots:
        root = Path(r).expanduser()
        if not root.is_dir():
            continue
        candidates = [root]
        for child in sorted(root.iterdir()):
            if child.is_dir() and child.name != PROMPT_DIR and not child.name.startswith("."):
                candidates.append(child)
        for c in candidates:
            if (c / "ckpts").is_dir() and _has_stage_dirs(c / "ckpts"):
                mf = ModelFolder(c, c / "ckpts", (root,) if c != root else ())
            elif _has_stage_dirs(c) and c.name != "ckpts":
                mf = ModelFolder(c, c, (root,) if c != root else ())
            elif c.name == "ckpts" and _has_stage_dirs(c):
                continue  # reported through its parent
            else:
                continue
            key = mf.ckpts.resolve()
            if key not in seen:
                seen.add(key)
                out.append(mf)
    return out
