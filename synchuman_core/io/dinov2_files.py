"""DINOv2's files: not part of the SyncHuman repository, so they have a format of their own.

In ``<root>/dinov2/`` (shared by the checkpoints below a ComfyUI ``models/synchuman`` root) one of:

* ``"ours"``: ``dinov2_vitl14_reg4.safetensors`` with torch.hub key names and the architecture in its
  safetensors metadata (``config``), or in a ``config.json`` beside it; what :func:`download` writes;
* ``"hf"``: the transformers files of ``facebook/dinov2-with-registers-large`` (``config.json`` +
  ``model.safetensors``), keys converted on load (:mod:`synchuman_core.encoders.dinov2_keys`);
* ``"hub_pth"``: torch.hub's ``dinov2_vitl14_reg4_pretrain.pth`` (read with ``weights_only=True``).

The registry entry ``dinov2`` names :data:`DINOV2_FILES`; nothing else in the loader knows about DINOv2.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..encoders.dinov2 import DINOv2, DINOv2Config
from ..encoders.dinov2_keys import convert_dinov2_state_dict, hub_to_hf_keys
from ..errors import CheckpointError
from .files import WeightFiles, find_weight_files, read_safetensors_header
from .formats import ComponentFiles, Fetch, OfficialLayout, read_json, relative, save_safetensors, write_json
from .layout import ModelFolder
from .state_dict import load_state_dict_strict

if TYPE_CHECKING:
    from .registry import ComponentSpec

__all__ = ["DINOV2_FILES", "DINOV2_HF_REPO_ID", "DINOv2Files", "hf_dinov2_config", "load_dinov2"]

DINOV2_HF_REPO_ID = "facebook/dinov2-with-registers-large"
#: The shared folder (:meth:`ModelFolder.shared_dir`) the files live in.
FOLDER = "dinov2"
OUR_FILE = "dinov2_vitl14_reg4.safetensors"
HUB_PTH = "dinov2_vitl14_reg4_pretrain.pth"
HF_FILES = ("config.json", "model.safetensors")
#: Fields of :class:`DINOv2Config` stored in our file's metadata.
_STORED_FIELDS = ("embed_dim", "depth", "num_heads", "patch_size", "img_size", "num_register_tokens", "mlp_ratio",
                  "layer_norm_eps")


def hf_dinov2_config(cfg: DINOv2Config) -> dict[str, Any]:
    """A transformers ``Dinov2WithRegistersConfig`` dict for our config (as published on the HF hub)."""
    return {
        "architectures": ["Dinov2WithRegistersModel"],
        "model_type": "dinov2_with_registers",
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "mlp_ratio": cfg.mlp_ratio,
        "patch_size": cfg.patch_size,
        "image_size": cfg.img_size,
        "num_register_tokens": cfg.num_register_tokens,
        "num_channels": cfg.in_chans,
        "qkv_bias": cfg.qkv_bias,
        "layer_norm_eps": cfg.layer_norm_eps,
        "hidden_act": "gelu",
        "layerscale_value": 1.0,
        "drop_path_rate": 0.0,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "use_swiglu_ffn": False,
        "torch_dtype": "float32",
    }


def load_dinov2(state_dict: Mapping[str, torch.Tensor], config: DINOv2Config, *, device: Any = None,
                dtype: torch.dtype | None = None, source: str = "DINOv2 checkpoint") -> DINOv2:
    """A :class:`DINOv2` from an in-memory state dict (hub or transformers keys), built on the meta device and
    loaded strictly; parameters in ``dtype`` (default fp32) on ``device`` (default CPU), eval mode."""
    with torch.device("meta"):
        model = DINOv2(config, dtype=dtype or torch.float32)
    load_state_dict_strict(model, convert_dinov2_state_dict(state_dict), source=source, device=device)
    return model.eval()


class DINOv2Files(OfficialLayout):
    """The file format of the ``dinov2`` registry entry (see the module docstring)."""

    repo_id = DINOV2_HF_REPO_ID

    def folder(self, spec: ComponentSpec, mf: ModelFolder) -> Path:
        return mf.shared_dir(FOLDER)

    def locate(self, spec: ComponentSpec, mf: ModelFolder) -> tuple[ComponentFiles, list[str]]:
        d = self.folder(spec, mf)
        beside = d / "config.json"
        ours = find_weight_files(d, spec.weight_names())
        if ours is not None:
            return ComponentFiles(spec, d, beside if beside.is_file() else None, ours, self, "ours"), []
        if all((d / f).is_file() for f in HF_FILES):
            return ComponentFiles(spec, d, beside, WeightFiles(d, (d / "model.safetensors",)), self, "hf", True), []
        if (d / HUB_PTH).is_file():
            cfg = beside if beside.is_file() else None
            return ComponentFiles(spec, d, cfg, WeightFiles(d, (d / HUB_PTH,)), self, "hub_pth", True), []
        missing = (f"{relative(mf, d / OUR_FILE)}  (or the transformers files {' + '.join(HF_FILES)} of "
                   f"{DINOV2_HF_REPO_ID}, or torch.hub's {HUB_PTH}, in {relative(mf, d)})")
        return ComponentFiles(spec, d, None, None, self, "ours"), [missing]

    def read_config(self, cf: ComponentFiles) -> dict[str, Any]:
        """Our file's ``config`` metadata, else a ``config.json`` beside it (ours or transformers'), else ``{}``
        (the ViT-L/14-reg4 defaults)."""
        if cf.variant == "ours" and cf.weights is not None and cf.weights.fmt == "safetensors":
            _, meta = read_safetensors_header(cf.weights.files[0])
            if "config" in meta:
                try:
                    data = json.loads(meta["config"])
                except json.JSONDecodeError:
                    raise CheckpointError(f"{cf.weights.files[0]}: the 'config' metadata is not valid JSON") from None
                if isinstance(data, dict):
                    return data
        return read_json(cf.config) if cf.config is not None else {}

    def convert_state_dict(self, cf: ComponentFiles, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return convert_dinov2_state_dict(state_dict)

    def manual_commands(self, specs: Sequence[ComponentSpec], mf: ModelFolder) -> list[str]:
        d = mf.shared_dir(FOLDER)
        return [f"  hf download {self.repo_id} {' '.join(HF_FILES)} --local-dir {d}"]

    def download(self, specs: Sequence[ComponentSpec], mf: ModelFolder, fetch: Fetch) -> None:
        """Fetch the transformers files and convert them to our file (hub keys, architecture in metadata)."""
        dest = mf.base / FOLDER
        tmp = dest / ".download"
        fetch(self.repo_id, tmp, list(HF_FILES))
        for spec in specs:
            self.convert_download(spec, tmp, dest)
        shutil.rmtree(tmp, ignore_errors=True)

    def convert_download(self, spec: ComponentSpec, src: Path, dest: Path) -> Path:
        """transformers DINOv2 files in ``src`` -> ``dest/dinov2_vitl14_reg4.safetensors`` (hub keys)."""
        from safetensors.torch import load_file

        cfg = DINOv2Config.from_official(read_json(src / "config.json"))
        sd = convert_dinov2_state_dict(load_file(str(src / "model.safetensors")))
        out = dest / OUR_FILE
        save_safetensors(sd, out, self._metadata(cfg))
        return out

    @staticmethod
    def _metadata(cfg: DINOv2Config) -> dict[str, str]:
        return {"config": json.dumps({f: getattr(cfg, f) for f in _STORED_FIELDS}), "source": DINOV2_HF_REPO_ID}

    def write(self, spec: ComponentSpec, mf: ModelFolder, state_dict: Mapping[str, torch.Tensor] | None,
              config: Mapping[str, Any] | None, variant: str | None = None) -> int:
        """Write into ``<base>/dinov2/`` (see :meth:`write_dir`)."""
        return self.write_dir(spec, mf.base / FOLDER, state_dict, config, variant)

    def write_dir(self, spec: ComponentSpec, d: Path, state_dict: Mapping[str, torch.Tensor] | None,
                  config: Mapping[str, Any] | None, variant: str | None = None) -> int:
        """``variant`` ``"ours"`` (default; the architecture in the metadata) or ``"hf"`` (transformers files)."""
        if state_dict is None:
            raise ValueError("DINOv2 files need weights")
        if variant == "hf":
            cfg = spec.read_config(dict(config or {}))
            write_json(d / "config.json", hf_dinov2_config(cfg))
            return save_safetensors(hub_to_hf_keys(dict(state_dict)), d / "model.safetensors")
        if variant not in (None, "ours"):
            raise ValueError(f"DINOv2 files: unknown variant {variant!r} (ours, hf)")
        return save_safetensors(state_dict, d / OUR_FILE, {"config": json.dumps(dict(config or {}))})


#: The ``file_format`` of the ``dinov2`` registry entry.
DINOV2_FILES = DINOv2Files()
