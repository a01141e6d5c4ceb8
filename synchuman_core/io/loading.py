"""Load SyncHuman components from a model folder: check first, then stream weights into meta modules.

``load_component(name, folder, device, dtype)``:

1. finds the component's files through its registry entry's file format (:mod:`.formats`) and raises
   :class:`WeightsNotFoundError` naming every missing file, the folder and the download command;
2. reads ``config.json`` into the typed config (``Config.from_official``);
3. builds the module with its parameters on the meta device (:func:`empty_weights`; buffers are
   computed normally, so non-persistent buffers are real);
4. compares the module's keys and shapes with the weight files' headers (no tensor read) and raises
   :class:`StateDictMismatchError` with the grouped report before anything large is allocated;
5. streams the tensors one by one into the module at their declared dtype on ``device``
   (:func:`synchuman_core.io.state_dict.load_state_dict_strict` with :class:`.files.LazyTensor`).

The models of one folder, loaded on first use, are :class:`synchuman_core.io.model_set.SyncHumanModels`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, StateDictMismatchError, WeightsNotFoundError
from .files import TensorInfo, WeightReader
from .formats import ComponentFiles, read_json
from .layout import ModelFolder, download_command, resolve_model_folder
from .registry import COMPONENTS, ComponentSpec, get_spec
from .state_dict import diff_state_dict, expected_entries, load_state_dict_strict

__all__ = [
    "ComponentFiles",
    "build_empty",
    "by_file_format",
    "check_component_keys",
    "component_files",
    "component_skeleton",
    "download_command",
    "empty_weights",
    "find_missing",
    "load_component",
    "missing_files_error",
    "read_component_config",
    "read_component_json",
    "read_json",
]

logger = logging.getLogger(__name__)


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


def component_skeleton(name: str | ComponentSpec, folder: str | os.PathLike | ModelFolder,
                       dtype: torch.dtype | None = None) -> nn.Module:
    """Component ``name`` as :func:`load_component` would build it for ``dtype`` (same config, same parameter
    dtypes) but on the meta device: no memory, no weight file opened. For reading its config and dtype."""
    spec = get_spec(name)
    cf, _ = component_files(spec, resolve_model_folder(folder))
    return build_empty(spec, read_component_config(cf), dtype)


# ---------------------------------------------------------------------------------------------
# Files of a component
# ---------------------------------------------------------------------------------------------


def by_file_format(names: Iterable[str]) -> list[tuple[Any, list[ComponentSpec]]]:
    """The registry entries of ``names`` grouped by their file format: ``[(format, [spec, ...])]``."""
    groups: dict[int, tuple[Any, list[ComponentSpec]]] = {}
    for n in names:
        spec = get_spec(n)
        layout = spec.layout()
        groups.setdefault(id(layout), (layout, []))[1].append(spec)
    return list(groups.values())


def missing_files_error(mf: ModelFolder, missing: Mapping[str, list[str]]) -> WeightsNotFoundError:
    """The error for missing files: which files, which folder, and the commands that fetch them."""
    lines = [f"SyncHuman model files are missing in {mf.base}:"]
    for name, files in missing.items():
        spec = COMPONENTS.get(name)
        lines.append(f"  {name}{f' ({spec.title})' if spec else ''}:")
        lines += [f"    {f}" for f in files]
    lines.append("Download them (resumable; only what is missing is fetched):")
    lines.append(f"  {download_command(mf.base, missing)}")
    lines.append("or on a machine with internet access, then copy the folder here:")
    for layout, specs in by_file_format(n for n in missing if n in COMPONENTS):
        lines += layout.manual_commands(specs, mf)
    lines.append("(huggingface_hub < 1.0: `huggingface-cli download`, with all patterns after one --include)")
    return WeightsNotFoundError("\n".join(lines))


def component_files(spec: ComponentSpec | str, folder: str | os.PathLike | ModelFolder, *,
                    raise_missing: bool = True) -> tuple[ComponentFiles, list[str]]:
    """Locate the files of ``spec`` in ``folder``; returns ``(files, missing)``.

    With ``raise_missing`` a non-empty ``missing`` raises :func:`missing_files_error`.
    """
    spec = get_spec(spec)
    mf = resolve_model_folder(folder)
    cf, missing = spec.layout().locate(spec, mf)
    if missing and raise_missing:
        raise missing_files_error(mf, {spec.name: missing})
    return cf, missing


def find_missing(folder: str | os.PathLike | ModelFolder, names: Iterable[str]) -> dict[str, list[str]]:
    """``{component: missing files}`` for the components of ``names`` that lack files (empty: all there)."""
    mf = resolve_model_folder(folder)
    out: dict[str, list[str]] = {}
    for n in names:
        _, missing = component_files(n, mf, raise_missing=False)
        if missing:
            out[n] = missing
    return out


# ---------------------------------------------------------------------------------------------
# Config + key check
# ---------------------------------------------------------------------------------------------


def read_component_config(cf: ComponentFiles) -> dict[str, Any]:
    """The architecture settings of a component (``config.json`` contents), validated by its config reader."""
    data = cf.layout.read_config(cf)
    source = cf.config if cf.config is not None else (cf.weights.files[0] if cf.weights else cf.folder)
    try:
        cf.spec.read_config(data)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from e
    return data


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
            f"`{download_command('<folder>', [spec.name])}`)."
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
    mf = resolve_model_folder(folder)
    cf, _ = component_files(spec, mf)
    assert cf.weights is not None
    module = build_empty(spec, read_component_config(cf), dtype)
    target = torch.device(device) if device is not None else torch.device("cpu")
    with WeightReader(cf.weights) as reader:
        source = cf.weights.describe()
        if cf.converted:  # stored under other key names: convert, then the strict load checks keys and shapes
            sd = cf.layout.convert_state_dict(cf, {k: v.load() for k, v in reader.lazy_state_dict().items()})
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
