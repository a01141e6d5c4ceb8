"""How a component's files sit in a model folder, how they are read, fetched and (for tests) written.

Each registry entry names its file format (``ComponentSpec.file_format``, ``"module:attribute"``). The
default, :data:`OFFICIAL`, is the layout of the SyncHuman Hugging Face repository: ``<ckpts>/<subdir>/``
with a ``config.json`` (or another settings file) and the weights under the official file names. A
component published elsewhere brings its own format object (DINOv2: :mod:`.dinov2_files`), so loading,
checking, downloading and the tiny-checkpoint writer never ask which component they handle.

A format object provides:

* ``folder(spec, mf)`` and ``locate(spec, mf) -> (ComponentFiles, missing)``: the files, or what is missing;
* ``read_config(cf)``: the architecture settings (``config.json`` contents);
* ``convert_state_dict(cf, sd)``: file keys -> our keys when ``cf.converted`` (else keys are used as stored,
  through the entry's ``drop_keys``/``rename_keys``);
* ``manual_commands(specs, mf)``: shell lines that fetch the files on another machine;
* ``download(specs, mf, fetch)``: fetch the missing files with ``fetch(repo_id, local_dir, patterns)``;
* ``write(spec, mf, state_dict, variant)``: write a component in this format (tiny checkpoints, conversions).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import CheckpointError, WeightsNotFoundError
from .files import WeightFiles, check_not_lfs_pointer, find_weight_files
from .layout import HF_REPO_ID, ModelFolder

if TYPE_CHECKING:
    from .registry import ComponentSpec

__all__ = ["OFFICIAL", "ComponentFiles", "Fetch", "OfficialLayout", "read_json", "save_safetensors", "write_json"]

#: ``fetch(repo_id, local_dir, allow_patterns)``: one ``snapshot_download`` (see :mod:`.download`).
Fetch = Callable[[str, Path, list[str]], None]


def read_json(path: Path) -> dict[str, Any]:
    """Read a config file; an LFS pointer or invalid JSON raises :class:`CheckpointError`."""
    check_not_lfs_pointer(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}). Delete it and download it again.") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object.")
    return data


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def save_safetensors(state_dict: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None) -> int:
    """Write ``state_dict`` to ``path`` through a temporary name (never a partial file); returns its size."""
    from safetensors.torch import save_file

    from ..export.writer import replace_atomically

    tensors = {k: v.contiguous() for k, v in state_dict.items()}
    meta = {"format": "pt", **(metadata or {})}
    replace_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))  # unique temporary name
    return path.stat().st_size


@dataclass
class ComponentFiles:
    """The resolved files of one component.

    ``variant`` names which of its format's file sets was found (``"official"``; DINOv2: ``"ours"``, ``"hf"``,
    ``"hub_pth"``); ``converted`` is true when the stored keys are not ours and ``layout.convert_state_dict``
    must map them (the key check against the file headers is then skipped: names differ until converted).
    """

    spec: ComponentSpec
    folder: Path
    config: Path | None
    weights: WeightFiles | None
    layout: OfficialLayout
    variant: str = "official"
    converted: bool = False


def relative(mf: ModelFolder, p: Path) -> str:
    try:
        return str(p.relative_to(mf.base))
    except ValueError:
        return str(p)


class OfficialLayout:
    """A component of the SyncHuman repository (``xishushu/SyncHuman``), kept in its layout."""

    repo_id = HF_REPO_ID

    def folder(self, spec: ComponentSpec, mf: ModelFolder) -> Path:
        return mf.path(spec.subdir)

    # -- finding -----------------------------------------------------------------------------
    def locate(self, spec: ComponentSpec, mf: ModelFolder) -> tuple[ComponentFiles, list[str]]:
        d = self.folder(spec, mf)
        cfg = d / spec.config_file if spec.config_file else None
        missing = [relative(mf, d / f) for f in spec.required_files() if not (d / f).is_file()]
        weights = None
        if spec.has_weights:
            weights = find_weight_files(d, spec.weight_names())
            if weights is None:
                alt = " (or .bin, or sharded with .index.json)" if spec.allow_bin else ""
                missing.append(relative(mf, d / (spec.default_weight_name() or "")) + alt)
            else:
                missing += [relative(mf, f) for f in weights.files if not f.is_file()]
        return ComponentFiles(spec, d, cfg, weights, self), missing

    def read_config(self, cf: ComponentFiles) -> dict[str, Any]:
        if cf.config is None:
            raise CheckpointError(f"{cf.spec.name} has no settings file")
        return read_json(cf.config)

    def convert_state_dict(self, cf: ComponentFiles, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(state_dict)

    # -- fetching ----------------------------------------------------------------------------
    @staticmethod
    def repo_prefix(spec: ComponentSpec) -> str:
        """Path prefix of the component inside the repository (its ``ckpts/`` folder)."""
        return f"ckpts/{spec.subdir}"

    def include_pattern(self, spec: ComponentSpec) -> str:
        """One ``--include`` glob for ``hf download`` (the component's folder, or its single file)."""
        if spec.has_weights or "/" in spec.subdir:
            return f"{self.repo_prefix(spec)}/*"
        return f"{self.repo_prefix(spec)}/{spec.config_file}"

    def download_patterns(self, spec: ComponentSpec, *, bin_files: bool = False) -> list[str]:
        """``allow_patterns`` for ``snapshot_download``: the settings files and the weights.

        Safetensors only (single file, index and shards) unless ``bin_files``, which asks for the ``.bin``
        variants instead (the fallback when a folder turns out to have no safetensors).
        """
        prefix = self.repo_prefix(spec)
        out = [f"{prefix}/{f}" for f in spec.required_files()]
        if bin_files and not spec.allow_bin:
            return out
        ext = "bin" if bin_files else "safetensors"
        for stem in spec.weight_stems:
            out += [f"{prefix}/{stem}.{ext}", f"{prefix}/{stem}.{ext}.index.json", f"{prefix}/{stem}-*-of-*.{ext}"]
        return out

    def manual_commands(self, specs: Sequence[ComponentSpec], mf: ModelFolder) -> list[str]:
        inc = " ".join(f'--include "{self.include_pattern(s)}"' for s in specs)
        return [
            f"  hf download {self.repo_id} --local-dir {mf.base} {inc}",
            f"  (or the whole repository, ~8.7 GB: hf download {self.repo_id} --local-dir {mf.base})",
        ]

    def download(self, specs: Sequence[ComponentSpec], mf: ModelFolder, fetch: Fetch) -> None:
        """Fetch the components' files (safetensors first, ``.bin`` for folders published without them)."""
        if mf.ckpts != mf.base / "ckpts":
            raise WeightsNotFoundError(
                f"{mf.base} uses the flat layout (OneStage/ without ckpts/); downloads keep the repository layout. "
                f"Download into a new folder, or move {mf.base}/OneStage and {mf.base}/SecondStage into "
                f"{mf.base}/ckpts/."
            )
        patterns = sorted({p for s in specs for p in self.download_patterns(s)} | {"README.md", "LICENSE*"})
        fetch(self.repo_id, mf.base, patterns)
        still = [s for s in specs if s.allow_bin and self.locate(s, mf)[1]]
        if still:
            fetch(self.repo_id, mf.base, sorted({p for s in still for p in self.download_patterns(s, bin_files=True)}))

    # -- writing -----------------------------------------------------------------------------
    def write(self, spec: ComponentSpec, mf: ModelFolder, state_dict: Mapping[str, torch.Tensor] | None,
              config: Mapping[str, Any] | None, variant: str | None = None) -> int:
        """Write the settings file and (for a model) the weights under the official names; bytes of weights."""
        if variant not in (None, "official"):
            raise ValueError(f"{spec.name}: the official layout has no variant {variant!r}")
        d = self.folder(spec, mf)
        if spec.config_file and config is not None:
            write_json(d / spec.config_file, dict(config))
        if state_dict is None:
            return 0
        return save_safetensors(state_dict, d / str(spec.default_weight_name()))


#: The layout of every component of the SyncHuman repository.
OFFICIAL = OfficialLayout()

