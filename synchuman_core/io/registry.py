"""Declarative registry of the SyncHuman model components: one :class:`ComponentSpec` per component.

An entry says where the component sits in the official layout, which files it needs, how its
``config.json`` is read (``Config.from_official``), which class builds it (``Model(config, *,
device, dtype)``), how the file keys map onto the module (keys dropped or renamed on purpose), what
to download, and a tiny official-format config for :mod:`synchuman_core.io.tiny`. Classes are named
by ``"module:attribute"`` strings and imported only when used, so the registry loads without torch
models. Where the files sit and how they are read is the entry's ``file_format`` (:mod:`.formats`).

Adding a component = adding one entry to ``COMPONENTS``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .files import weight_candidates
from .tiny_configs import (
    OFFICIAL_PREPROCESSOR_CONFIG,
    OFFICIAL_STAGE1_PIPELINE,
    OFFICIAL_STAGE2_PIPELINE,
    TINY_DINOV2,
    TINY_GS_DECODER,
    TINY_IMAGE_ENCODER,
    TINY_JOINT,
    TINY_MESH_DECODER,
    TINY_SLAT_FLOW,
    TINY_STRUCTURE_DECODER,
    TINY_TEXT_ENCODER,
    TINY_VAE,
)

__all__ = [
    "COMPONENTS",
    "ComponentSpec",
    "STAGE1",
    "STAGE2",
    "DEFAULT_COMPONENTS",
    "HALF_MODES",
    "RUN_COMPONENTS",
    "STEPS",
    "ComponentSize",
    "components_for",
    "get_spec",
    "import_object",
    "model_names",
]

_TRELLIS = ("model",)
_DIFFUSERS = ("diffusion_pytorch_model",)
_TRANSFORMERS = ("model", "pytorch_model")


def import_object(path: str) -> Any:
    """Import ``"package.module:attr"``."""
    mod, _, attr = path.partition(":")
    return getattr(importlib.import_module(mod), attr)


#: The pipeline's steps in run order, each with the stage event that closes it (the ``on_stage_done``
#: names of :mod:`synchuman_core.pipeline`). A component's ``steps`` say where it runs; the memory tiers,
#: the estimate and the nodes derive which components to load, keep or offload from them.
STEPS: dict[str, str] = {
    "conditioning": "conditioning",
    "stage1_sampling": "stage1",
    "stage1_decode": "stage1",
    "stage2_slat": "stage2",
    "stage2_features": "stage2",
    "stage2_gaussians": "stage2",
    "stage2_mesh": "stage2",
}

#: Half-precision behaviour of a model component (``ComponentSpec.half``):
#: ``"cast"``: built entirely in the run's half dtype (fp16/bf16) when the run is in half precision;
#: ``"mixed"``: the official TRELLIS constructor mix whatever the run's dtype (``use_fp16``: fp16 torso,
#: fp32 norms and I/O layers); in fp32 runs every component is fp32.
HALF_MODES = ("cast", "mixed")


@dataclass(frozen=True)
class ComponentSize:
    """Parameter elements of one model component at real size: ``params`` in total, of which
    ``half_params`` are fp16 in the official constructor (TRELLIS ``use_fp16``), plus ``buffers``
    elements of persistent buffers (they follow the module dtype). Counts from the official
    checkpoints' safetensors headers (``docs/ARCHITECTURE.md``)."""

    params: int
    half_params: int = 0
    buffers: int = 0


@dataclass(frozen=True)
class ComponentSpec:
    """One model component (or one settings file) of the official checkpoint.

    ``subdir`` is relative to the folder that holds ``OneStage/`` and ``SecondStage/`` (the HF repo's
    ``ckpts/``). ``file_format`` (``"module:attribute"``) names the object that finds, reads, fetches
    and writes the files (:mod:`.formats`; default: the official repository layout).
    ``weight_stems``: weight file stems, searched as safetensors (single or sharded) and, when
    ``allow_bin``, as ``.bin``. ``files``: other files that must exist (besides ``config_file``).
    The module is built either by ``model_class(config_class.from_official(json), device=, dtype=)``
    or by ``builder(json, device=, dtype=)``; ``post_load(module, device)`` runs after the weights are
    in (recreating non-persistent buffers that a meta build leaves empty).
    ``drop_keys``/``rename_keys``: regular expressions over file keys for keys that the official
    loader drops or renames (each documented on the entry); nothing else is tolerated.

    How a run uses a model (the one component table the loaders, memory tiers, estimate and nodes derive
    their lists from): ``steps`` (names of :data:`STEPS`) it runs in; ``half`` (:data:`HALF_MODES`) its
    half-precision behaviour; ``offload_after``: the stage events after which the ``offload`` residency
    moves it off the GPU; ``size``: its real parameter counts (:class:`ComponentSize`).
    """

    name: str
    title: str
    subdir: str
    stage: int
    config_file: str | None = "config.json"
    weight_stems: tuple[str, ...] = ()
    allow_bin: bool = False
    files: tuple[str, ...] = ()
    config_class: str | None = None
    model_class: str | None = None
    builder: str | None = None
    post_load: str | None = None
    optional: bool = False
    file_format: str = "synchuman_core.io.formats:OFFICIAL"
    drop_keys: tuple[str, ...] = ()
    rename_keys: tuple[tuple[str, str], ...] = ()
    approx_bytes: int = 0
    tiny_config: dict[str, Any] | None = None
    tiny_weight_name: str | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # -- how a run uses it (models only) -----------------------------------------------------
    steps: tuple[str, ...] = ()
    half: str | None = None
    offload_after: tuple[str, ...] = ()
    size: ComponentSize | None = None

    def __post_init__(self) -> None:
        bad = [s for s in self.steps if s not in STEPS]
        if bad or (self.half is not None and self.half not in HALF_MODES):
            raise ConfigError(f"component {self.name!r}: unknown steps {bad} or half mode {self.half!r}")
        if self.offload_after and not set(self.offload_after) <= set(STEPS.values()):
            raise ConfigError(f"component {self.name!r}: offload_after names unknown stage events {self.offload_after}")

    # -- files -------------------------------------------------------------------------------
    @property
    def has_weights(self) -> bool:
        return bool(self.weight_stems)

    @property
    def is_module(self) -> bool:
        return self.model_class is not None or self.builder is not None

    def weight_names(self) -> list[str]:
        return weight_candidates(self.weight_stems, allow_bin=self.allow_bin) if self.weight_stems else []

    def required_files(self) -> list[str]:
        out = [self.config_file] if self.config_file else []
        return out + list(self.files)

    def default_weight_name(self) -> str | None:
        """The file name the official repo uses (and the tiny generator writes)."""
        if self.tiny_weight_name:
            return self.tiny_weight_name
        return f"{self.weight_stems[0]}.safetensors" if self.weight_stems else None

    def layout(self) -> Any:
        """The file-format object of this component (:class:`synchuman_core.io.formats.OfficialLayout` or a subclass)."""
        return import_object(self.file_format)

    # -- classes -----------------------------------------------------------------------------
    def read_config(self, official: dict[str, Any]) -> Any:
        """The typed config for ``official`` (config.json contents); builders validate their own."""
        if self.config_class is None:
            return official
        cfg = import_object(self.config_class)
        return cfg.from_official(official) if hasattr(cfg, "from_official") else cfg(official)

    def build(self, official: dict[str, Any], *, device: Any = None, dtype: Any = None) -> Any:
        """Instantiate the module for the config.json contents ``official``."""
        if self.builder is not None:
            return import_object(self.builder)(official, device=device, dtype=dtype)
        if self.model_class is None:
            raise ConfigError(f"component {self.name!r} is a settings file, not a model")
        return import_object(self.model_class)(self.read_config(official), device=device, dtype=dtype)

    def finish(self, module: Any, device: Any) -> None:
        """Run ``post_load`` (if any) on a loaded module."""
        if self.post_load is not None:
            import_object(self.post_load)(module, device)

    # -- key maps ----------------------------------------------------------------------------
    def map_keys(self, file_keys: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """``({file key: model key}, dropped file keys)`` by ``rename_keys`` and ``drop_keys``."""
        drops = [re.compile(p) for p in self.drop_keys]
        renames = [(re.compile(a), b) for a, b in self.rename_keys]
        mapping: dict[str, str] = {}
        dropped: list[str] = []
        for k in file_keys:
            if any(d.fullmatch(k) for d in drops):
                dropped.append(k)
                continue
            new = k
            for pat, rep in renames:
                new = pat.sub(rep, new)
            mapping[k] = new
        return mapping, dropped


# ---------------------------------------------------------------------------------------------
# The components
# ---------------------------------------------------------------------------------------------

_GB = 1_000_000_000

COMPONENTS: dict[str, ComponentSpec] = {}


def _add(spec: ComponentSpec) -> None:
    COMPONENTS[spec.name] = spec


_add(ComponentSpec(
    name="joint",
    title="2D-3D joint diffusion model (multiview UNet + structure flow + sync attention)",
    subdir="OneStage/SyncHuman_2D3DCrossSpaceDiffusion",
    stage=1,
    weight_stems=_DIFFUSERS,
    allow_bin=True,
    config_class="synchuman_core.stage1.joint:JointModelConfig",
    model_class="synchuman_core.stage1.joint:SyncHumanJointModel",
    approx_bytes=int(3.41 * _GB),
    tiny_config=TINY_JOINT,
    notes="diffusers ModelMixin layout; EMA weights (step 42,500); 1,397 keys incl. the pos_emb buffer.",
    steps=("stage1_sampling",), half="cast", offload_after=("stage1",),
    size=ComponentSize(1_699_469_580, 0, 4_194_304),  # + pos_emb buffer [4096, 1024]
))
_add(ComponentSpec(
    name="structure_decoder",
    title="sparse-structure decoder (16^3 latent -> 64^3 occupancy)",
    subdir="OneStage/sparse_structure_decoder",
    stage=1,
    weight_stems=_TRELLIS,
    config_class="synchuman_core.stage1.structure_decoder:SparseStructureDecoderConfig",
    model_class="synchuman_core.stage1.structure_decoder:SparseStructureDecoder",
    approx_bytes=int(0.15 * _GB),
    tiny_config=TINY_STRUCTURE_DECODER,
    steps=("stage1_decode",), half="mixed", offload_after=("stage1",),
    size=ComponentSize(73_671_201, 73_549_696),
))
_add(ComponentSpec(
    name="vae",
    title="VAE (Stable Diffusion 2.1 AutoencoderKL)",
    subdir="OneStage/vae",
    stage=1,
    weight_stems=_DIFFUSERS,
    allow_bin=True,
    builder="synchuman_core.encoders.vae:build_vae",
    approx_bytes=int(0.17 * _GB),
    # diffusers' _convert_deprecated_attention_blocks: old mid-block attention names -> new names.
    rename_keys=(
        (r"^((?:en|de)coder\.mid_block\.attentions\.0)\.query\.", r"\1.to_q."),
        (r"^((?:en|de)coder\.mid_block\.attentions\.0)\.key\.", r"\1.to_k."),
        (r"^((?:en|de)coder\.mid_block\.attentions\.0)\.value\.", r"\1.to_v."),
        (r"^((?:en|de)coder\.mid_block\.attentions\.0)\.proj_attn\.", r"\1.to_out.0."),
    ),
    tiny_config=TINY_VAE,
    tiny_weight_name="diffusion_pytorch_model.safetensors",
    steps=("conditioning", "stage1_decode"), half="cast", offload_after=("stage1",),
    size=ComponentSize(83_653_863),
))
_add(ComponentSpec(
    name="image_encoder",
    title="CLIP ViT-H/14 image encoder (SD 2.1 unCLIP)",
    subdir="OneStage/image_encoder",
    stage=1,
    weight_stems=_TRANSFORMERS,
    allow_bin=True,
    builder="synchuman_core.encoders.clip:build_clip_vision",
    post_load="synchuman_core.encoders.clip:materialize_buffers",
    approx_bytes=int(1.26 * _GB),
    # position_ids became a non-persistent buffer in transformers 4.31; older files still carry it.
    drop_keys=(r"vision_model\.embeddings\.position_ids",),
    tiny_config=TINY_IMAGE_ENCODER,
    tiny_weight_name="model.safetensors",
    steps=("conditioning",), half="cast", offload_after=("conditioning",),
    size=ComponentSize(632_076_800),
))
_add(ComponentSpec(
    name="feature_extractor",
    title="CLIP image processor settings",
    subdir="OneStage/feature_extractor",
    stage=1,
    config_file="preprocessor_config.json",
    approx_bytes=1_000,
    tiny_config=OFFICIAL_PREPROCESSOR_CONFIG,
))
_add(ComponentSpec(
    name="text_encoder",
    title="CLIP text encoder (only to recompute the 5 view-prompt embeddings)",
    subdir="OneStage/text_encoder",
    stage=1,
    weight_stems=_TRANSFORMERS,
    allow_bin=True,
    builder="synchuman_core.encoders.clip:build_clip_text",
    post_load="synchuman_core.encoders.clip:materialize_buffers",
    optional=True,
    approx_bytes=int(0.68 * _GB),
    drop_keys=(r"text_model\.embeddings\.position_ids",),
    tiny_config=TINY_TEXT_ENCODER,
    tiny_weight_name="model.safetensors",
    half="cast", size=ComponentSize(340_387_840),
))
_add(ComponentSpec(
    name="pipeline_stage1",
    title="stage-1 pipeline settings",
    subdir="OneStage",
    stage=1,
    config_file="pipeline_config.json",
    approx_bytes=1_000,
    tiny_config=OFFICIAL_STAGE1_PIPELINE,
))
_add(ComponentSpec(
    name="dinov2",
    title="DINOv2 ViT-L/14 with registers (image conditioning, both stages)",
    subdir="dinov2",
    file_format="synchuman_core.io.dinov2_files:DINOV2_FILES",
    stage=0,
    config_file=None,
    weight_stems=("dinov2_vitl14_reg4",),
    config_class="synchuman_core.encoders.dinov2:DINOv2Config",
    model_class="synchuman_core.encoders.dinov2:DINOv2",
    approx_bytes=int(1.22 * _GB),
    tiny_config=TINY_DINOV2,
    notes="Not in the SyncHuman repository. Our file: dinov2/dinov2_vitl14_reg4.safetensors (torch.hub key "
    "names); also accepted: the transformers files of facebook/dinov2-with-registers-large (model.safetensors + "
    "config.json) and torch.hub's dinov2_vitl14_reg4_pretrain.pth.",
    tiny_weight_name="dinov2_vitl14_reg4.safetensors",
    steps=("conditioning", "stage2_slat", "stage2_features"), offload_after=("conditioning", "stage2"),
    # fp16 in half-precision runs (official stage 1): on the tiny checkpoint its fp16 output differs from fp32 by
    # 1.5e-3 relative L2 (bf16: 9.5e-3), see docs/PERFORMANCE.md "DINOv2 precision".
    half="cast",
    size=ComponentSize(304_372_736),
))
_add(ComponentSpec(
    name="slat_flow",
    title="structured-latent flow transformer",
    subdir="SecondStage/ckpts/slat_flow",
    stage=2,
    weight_stems=_TRELLIS,
    config_class="synchuman_core.stage2.slat_flow:SLatFlowConfig",
    model_class="synchuman_core.stage2.slat_flow:SLatFlowModel",
    approx_bytes=int(1.21 * _GB),
    tiny_config=TINY_SLAT_FLOW,
    steps=("stage2_slat",), half="mixed", offload_after=("stage2",),
    size=ComponentSize(600_432_520, 599_014_144),
))
_add(ComponentSpec(
    name="mesh_decoder",
    title="multiview-guided mesh decoder",
    subdir="SecondStage/ckpts/decoder_Mesh",
    stage=2,
    weight_stems=_TRELLIS,
    config_class="synchuman_core.stage2.decoders:SLatMeshDecoderConfig",
    model_class="synchuman_core.stage2.decoders:SLatMeshDecoder",
    approx_bytes=int(0.92 * _GB),
    tiny_config=TINY_MESH_DECODER,
    steps=("stage2_mesh",), half="mixed", offload_after=("stage2",),
    size=ComponentSize(457_976_421, 449_566_560),
))
_add(ComponentSpec(
    name="gs_decoder",
    title="multiview-guided Gaussian decoder",
    subdir="SecondStage/ckpts/decoder_GS",
    stage=2,
    weight_stems=_TRELLIS,
    config_class="synchuman_core.stage2.decoders:SLatGaussianDecoderConfig",
    model_class="synchuman_core.stage2.decoders:SLatGaussianDecoder",
    approx_bytes=int(0.91 * _GB),
    tiny_config=TINY_GS_DECODER,
    steps=("stage2_gaussians",), half="mixed", offload_after=("stage2",),
    size=ComponentSize(452_418_752, 443_676_672, 96),  # + offset_perturbation [32, 3]
))
_add(ComponentSpec(
    name="pipeline_stage2",
    title="stage-2 pipeline settings (sampler, latent normalisation)",
    subdir="SecondStage",
    stage=2,
    config_file="pipeline.json",
    approx_bytes=2_000,
    tiny_config=OFFICIAL_STAGE2_PIPELINE,
))

# Components (models and settings files) each stage needs, from the entries' ``stage`` (0: both stages).
STAGE1 = tuple(n for n, s in COMPONENTS.items() if s.stage in (0, 1) and not s.optional)
STAGE2 = tuple(n for n, s in COMPONENTS.items() if s.stage in (0, 2) and not s.optional)
# What "everything needed to run" means (the text encoder only when prompt embeddings are recomputed).
DEFAULT_COMPONENTS = tuple(dict.fromkeys(STAGE1 + STAGE2))


def model_names() -> tuple[str, ...]:
    """Every component that is a model (not a settings file), in registry order."""
    return tuple(n for n, s in COMPONENTS.items() if s.is_module)


#: The models a reconstruction runs (every model that some pipeline step uses), in registry order.
RUN_COMPONENTS = tuple(n for n, s in COMPONENTS.items() if s.is_module and s.steps)


def components_for(*steps: str) -> tuple[str, ...]:
    """The models that run in any of ``steps`` (names of :data:`STEPS`), in registry order."""
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ConfigError(f"unknown pipeline steps {unknown}; known: {', '.join(STEPS)}")
    return tuple(n for n in RUN_COMPONENTS if set(COMPONENTS[n].steps) & set(steps))


def get_spec(name: str | ComponentSpec) -> ComponentSpec:
    if isinstance(name, ComponentSpec):
        return name
    try:
        return COMPONENTS[name]
    except KeyError:
        raise ConfigError(f"unknown SyncHuman component {name!r}; known: {', '.join(COMPONENTS)}") from None
