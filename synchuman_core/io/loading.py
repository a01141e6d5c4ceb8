"""Load SyncHuman components from a model folder: check first, then stream weights into meta modules.

``load_component(name, folder, device, dtype)``:

1. finds the component's files in the official layout (:mod:`.layout`, :mod:`.registry`) and raises
   :class:`WeightsNotFoundError` naming every missing file, the folder and the download commands;
2. reads ``config.json`` into the typed config (``Config.from_official``);
3. builds the module with its parameters on the meta device (:func:`empty_weights`; buffers are
   computed normally, so non-persistent buffers are real);
4. compares the module's keys and shapes with the weight files' headers (no tensor read) and raises
   :class:`StateDictMismatchError` with the grouped report before anything large is allocated;
5. streams the tensors one by one into the module at their declared dtype on ``device``
   (:func:`synchuman_core.io.state_dict.load_state_dict_strict` with :class:`.files.LazyTensor`).

:class:`SyncHumanModels` holds the components of one folder and loads each on first use.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, StateDictMismatchError, WeightsNotFoundError
from .files import (
    TensorInfo,
    WeightFiles,
    WeightReader,
    check_not_lfs_pointer,
    find_weight_files,
    read_safetensors_header,
)
from .layout import ModelFolder, resolve_model_folder
from .registry import COMPONENTS, DINOV2_HF_REPO_ID, HF_REPO_ID, ComponentSpec, get_spec
from .state_dict import diff_state_dict, expected_entries, load_state_dict_strict

__all__ = [
    "ComponentFiles",
    "SyncHumanModels",
    "build_empty",
    "check_component_keys",
    "component_files",
    "empty_weights",
    "load_component",
    "missing_files_error",
    "read_json",
]

logger = logging.getLogger(__name__)

DINOV2_OURS = "dinov2_vitl14_reg4.safetensors"
DINOV2_HUB_PTH = "dinov2_vitl14_reg4_pretrain.pth"
DINOV2_HF_FILES = ("config.json", "model.safetensors")


# ---------------------------------------------------------------------------------------------
# Building without allocating
# ---------------------------------------------------------------------------------------------


@contextmanager
def empty_weights() -> Iterator[None]:
    """Create every ``nn.Parameter`` on the meta device; buffers are created normally.

    Parameter initialisers then run on meta tensors (free). Buffers that a module computes in its
    constructor (position tables, constants, non-persistent buffers) stay real, so after loading the
    weights nothing is left on the meta device.
    """
    original = nn.Module.register_parameter

    def register_parameter(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(self, name, param)
        p = self._parameters.get(name)
        if p is not None and p.device.type != "meta":
            self._parameters[name] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

    nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def build_empty(spec: ComponentSpec, official: dict[str, Any], dtype: torch.dtype | None = None) -> nn.Module:
    """Instantiate ``spec``'s module for the config.json contents ``official`` with meta parameters."""
    with empty_weights():
        return spec.build(official, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Files of a component
# ---------------------------------------------------------------------------------------------


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


@dataclass
class ComponentFiles:
    """Resolved files of one component. ``fmt``: ``"ours"``, ``"hf"`` or ``"hub_pth"`` (DINOv2 only) else ``"official"``."""

    spec: ComponentSpec
    folder: Path
    config: Path | None
    weights: WeightFiles | None
    fmt: str = "official"


def _component_dir(spec: ComponentSpec, mf: ModelFolder) -> Path:
    return mf.dinov2_dir if spec.location == "dinov2" else mf.path(spec.subdir)


def _rel(mf: ModelFolder, p: Path) -> str:
    try:
        return str(p.relative_to(mf.base))
    except ValueError:
        return str(p)


def missing_files_error(mf: ModelFolder, missing: Mapping[str, list[str]]) -> WeightsNotFoundError:
    """The error for missing files: which files, which folder, and the commands that fetch them."""
    lines = [f"SyncHuman model files are missing in {mf.base}:"]
    includes: list[str] = []
    want_dino = False
    for name, files in missing.items():
        spec = COMPONENTS.get(name)
        title = f" ({spec.title})" if spec else ""
        lines.append(f"  {name}{title}:")
        lines += [f"    {f}" for f in files]
        if spec is not None and spec.location == "dinov2":
            want_dino = True
        elif spec is not None:
            includes.append(spec.cli_include())
    lines.append("Download them (resumable; only what is missing is fetched):")
    flags = "".join(f" --component {n}" for n in missing)
    lines.append(f"  python -m synchuman_core.io download {mf.base}{flags}")
    lines.append("or on a machine with internet access, then copy the folder here:")
    if includes:
        inc = " ".join(f'--include "{i}"' for i in includes)
        lines.append(f"  hf download {HF_REPO_ID} --local-dir {mf.base} {inc}")
        lines.append(f"  (or the whole repository, ~8.7 GB: hf download {HF_REPO_ID} --local-dir {mf.base})")
    if want_dino:
        lines.append(
            f"  hf download {DINOV2_HF_REPO_ID} config.json model.safetensors --local-dir {mf.dinov2_dir}"
        )
    lines.append("(huggingface_hub < 1.0: `huggingface-cli download`, with all patterns after one --include)")
    return WeightsNotFoundError("\n".join(lines))


def component_files(spec: ComponentSpec | str, folder: str | os.PathLike | ModelFolder, *, raise_missing: bool = True) -> tuple[ComponentFiles, list[str]]:
    """Locate the files of ``spec`` in ``folder``; returns ``(files, missing)``.

    With ``raise_missing`` a non-empty ``missing`` raises :func:`missing_files_error`.
    """
    spec = get_spec(spec)
    mf = resolve_model_folder(folder)
    d = _component_dir(spec, mf)
    missing: list[str] = []
    if spec.location == "dinov2":
        cf = _dinov2_files(spec, d)
        if cf is None:
            missing.append(
                f"{_rel(mf, d / DINOV2_OURS)}  (or the transformers files {' + '.join(DINOV2_HF_FILES)} "
                f"of {DINOV2_HF_REPO_ID}, or torch.hub's {DINOV2_HUB_PTH}, in {_rel(mf, d)})"
            )
            cf = ComponentFiles(spec, d, None, None, "ours")
    else:
        cfg = d / spec.config_file if spec.config_file else None
        for f in spec.required_files():
            if not (d / f).is_file():
                missing.append(_rel(mf, d / f))
        weights = None
        if spec.has_weights:
            weights = find_weight_files(d, spec.weight_names())
            if weights is None:
                alt = " (or .bin, or sharded with .index.json)" if spec.allow_bin else ""
                missing.append(_rel(mf, d / (spec.default_weight_name() or "")) + alt)
            else:
                missing += [_rel(mf, f) for f in weights.files if not f.is_file()]
        cf = ComponentFiles(spec, d, cfg, weights)
    if missing and raise_missing:
        raise missing_files_error(mf, {spec.name: missing})
    return cf, missing


def _dinov2_files(spec: ComponentSpec, d: Path) -> ComponentFiles | None:
    ours = find_weight_files(d, spec.weight_names())
    if ours is not None:
        cfg = d / "config.json"
        return ComponentFiles(spec, d, cfg if cfg.is_file() else None, ours, "ours")
    if all((d / f).is_file() for f in DINOV2_HF_FILES):
        return ComponentFiles(spec, d, d / "config.json", WeightFiles(d, (d / "model.safetensors",)), "hf")
    if (d / DINOV2_HUB_PTH).is_file():
        cfg = d / "config.json"
        return ComponentFiles(spec, d, cfg if cfg.is_file() else None, WeightFiles(d, (d / DINOV2_HUB_PTH,)), "hub_pth")
    return None


# ---------------------------------------------------------------------------------------------
# Config + key check
# ---------------------------------------------------------------------------------------------


def _read_config(cf: ComponentFiles) -> dict[str, Any]:
    """The config.json contents of a component (validated by its config reader)."""
    if cf.spec.location == "dinov2":
        data = _dinov2_config(cf)
        source: Path | str = cf.weights.files[0] if cf.weights is not None else cf.folder
    else:
        assert cf.config is not None
        data, source = read_json(cf.config), cf.config
    try:
        cf.spec.read_config(data)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from e
    return data


def _dinov2_config(cf: ComponentFiles) -> dict[str, Any]:
    """Architecture of a DINOv2 file: the ``config`` entry of our file's safetensors metadata, else a
    ``config.json`` beside it (ours or transformers'), else ``{}`` (the ViT-L/14-reg4 default)."""
    if cf.fmt == "ours" and cf.weights is not None and cf.weights.fmt == "safetensors":
        _, meta = read_safetensors_header(cf.weights.files[0])
        if "config" in meta:
            try:
                data = json.loads(meta["config"])
            except json.JSONDecodeError:
                raise CheckpointError(f"{cf.weights.files[0]}: the 'config' metadata is not valid JSON") from None
            if isinstance(data, dict):
                return data
    if cf.config is not None:
        return read_json(cf.config)
    return {}


def _header_entries(spec: ComponentSpec, reader: WeightReader) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    entries = reader.entries()
    mapping, dropped = spec.map_keys(entries)
    if dropped:
        logger.debug("%s: dropping %d file keys the official loader ignores: %s", spec.name, len(dropped), dropped)
    return {mapping[k]: entries[k] for k in mapping}, mapping


def check_component_keys(spec: ComponentSpec, module: nn.Module, reader: WeightReader, source: str) -> None:
    """Compare the module's keys/shapes with the file headers; raise the grouped report on mismatch."""
    actual, _ = _header_entries(spec, reader)
    diff = diff_state_dict(expected_entries(module), {k: (v.shape, v.dtype) for k, v in actual.items()})
    if not diff.ok:
        raise StateDictMismatchError(
            f"{source} does not fit {type(module).__name__} ({spec.name}):\n{diff.report()}\n"
            "The file belongs to another model or another version of it, or the config.json beside it does not "
            "match it. Check that the folder holds the official SyncHuman files (re-download them with "
            "`python -m synchuman_core.io download <folder>`)."
        )


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_component(
    name: str | ComponentSpec,
    folder: str | os.PathLike | ModelFolder,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Build component ``name`` from ``folder`` and load its weights onto ``device``.

    ``dtype`` is passed to the model constructor: ``None`` keeps the official per-parameter dtypes
    (fp16 blocks where the official config says ``use_fp16``); the file's dtype never matters.
    The module is returned in eval mode with ``requires_grad`` off.
    """
    spec = get_spec(name)
    if not spec.is_module:
        raise ConfigError(f"{spec.name!r} is a settings file, not a model; read it with read_component_json()")
    if not spec.available():
        raise ConfigError(f"component {spec.name!r} is not implemented in this version of synchuman_core")
    mf = resolve_model_folder(folder)
    cf, _ = component_files(spec, mf)
    assert cf.weights is not None
    module = build_empty(spec, _read_config(cf), dtype)
    target = torch.device(device) if device is not None else torch.device("cpu")
    with WeightReader(cf.weights) as reader:
        source = cf.weights.describe()
        if cf.fmt in ("hf", "hub_pth"):
            sd = _dinov2_converted(cf, reader)
            load_state_dict_strict(module, sd, source=source, device=target)
        else:
            check_component_keys(spec, module, reader, source)
            _, mapping = _header_entries(spec, reader)
            lazy = reader.lazy_state_dict()
            sd = {mapping[k]: lazy[k] for k in mapping}
            load_state_dict_strict(module, sd, source=source, device=target)
    _finish(module, target, spec)
    logger.info("loaded %s from %s", spec.name, cf.folder)
    return module


def _finish(module: nn.Module, device: torch.device, spec: ComponentSpec) -> None:
    """Recreate/move the non-persistent buffers on ``device``; eval mode, no grad."""
    spec.finish(module, device)
    for mod in module.modules():
        for bname, buf in list(mod._buffers.items()):
            if buf is not None and buf.device != device and buf.device.type != "meta":
                mod._buffers[bname] = buf.to(device)
    leftover = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.device.type == "meta"]
    if leftover:
        raise CheckpointError(
            f"{spec.name}: {len(leftover)} tensors were not set by the checkpoint (first: {leftover[0]}); "
            "this is a bug in synchuman_core, please report it."
        )
    module.eval()
    module.requires_grad_(False)


def _dinov2_converted(cf: ComponentFiles, reader: WeightReader) -> dict[str, torch.Tensor]:
    """Read a transformers-format or torch.hub ``.pth`` DINOv2 file into our (hub) key names."""
    from ..encoders.dinov2 import convert_dinov2_state_dict

    return convert_dinov2_state_dict({k: v.load() for k, v in reader.lazy_state_dict().items()})


# ---------------------------------------------------------------------------------------------
# Settings files
# ---------------------------------------------------------------------------------------------


def read_component_json(name: str, folder: str | os.PathLike | ModelFolder) -> dict[str, Any]:
    """Contents of a settings component's file (``pipeline_stage2`` -> ``SecondStage/pipeline.json``)."""
    spec = get_spec(name)
    cf, _ = component_files(spec, folder)
    if cf.config is None:
        raise ConfigError(f"{spec.name!r} has no settings file")
    return read_json(cf.config)


# ---------------------------------------------------------------------------------------------
# Container
# ---------------------------------------------------------------------------------------------


class SyncHumanModels:
    """The components of one SyncHuman folder, each loaded on first access.

    ``models.joint``, ``models.structure_decoder``, ``models.vae``, ``models.image_encoder``,
    ``models.dinov2``, ``models.slat_flow``, ``models.mesh_decoder``, ``models.gs_decoder`` (and
    ``models.text_encoder``, only when asked for). ``unload(name)`` drops one; ``loaded`` lists them.
    """

    COMPONENTS = ("joint", "structure_decoder", "vae", "image_encoder", "dinov2", "slat_flow", "mesh_decoder",
                  "gs_decoder", "text_encoder")

    def __init__(
        self,
        folder: str | os.PathLike | ModelFolder,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        dtypes: Mapping[str, torch.dtype | None] | None = None,
    ) -> None:
        self.folder = resolve_model_folder(folder)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.dtypes = dict(dtypes or {})
        self._modules: dict[str, nn.Module] = {}
        self._prompts: dict[str, torch.Tensor] | None = None

    def get(self, name: str) -> nn.Module:
        if name not in self.COMPONENTS:
            raise ConfigError(f"unknown component {name!r}; known: {', '.join(self.COMPONENTS)}")
        if name not in self._modules:
            self._modules[name] = load_component(name, self.folder, self.device, self.dtypes.get(name, self.dtype))
        return self._modules[name]

    def __getattr__(self, name: str) -> nn.Module:
        if name.startswith("_") or name not in type(self).COMPONENTS:
            raise AttributeError(name)
        return self.get(name)

    @property
    def loaded(self) -> list[str]:
        return list(self._modules)

    def unload(self, name: str | None = None) -> None:
        """Forget one component (or all) so that its memory can be freed."""
        if name is None:
            self._modules.clear()
            self._prompts = None
        else:
            self._modules.pop(name, None)

    def check(self, names: Iterable[str] | None = None):
        """Verify the folder's files for ``names`` (default: everything needed to run); see :mod:`.verify`."""
        from .verify import verify_model_folder

        return verify_model_folder(self.folder, names)

    def prompt_embeds(self) -> dict[str, torch.Tensor]:
        """The stage-1 view-prompt embeddings ``{"normal", "color"}`` ``[5, 77, D]`` (see :mod:`.prompt_cache`)."""
        if self._prompts is None:
            from .prompt_cache import load_prompt_embeds

            self._prompts = load_prompt_embeds(self.folder, self.device)
        return self._prompts

    def settings(self, name: str) -> dict[str, Any]:
        return read_component_json(name, self.folder)

    def __repr__(self) -> str:
        return f"SyncHumanModels({self.folder.describe()!r}, device={self.device}, loaded={self.loaded})"
