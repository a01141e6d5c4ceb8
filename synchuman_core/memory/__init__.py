"""Memory and speed settings of a run, in small modules:

* :mod:`.tiers`: :class:`MemoryTier` presets (``high``, ``balanced``, ``low``), the ONE dtype plan
  (:func:`dtype_plan`) and the stage keyword arguments of a tier (:func:`stage_kwargs`);
* :mod:`.residency`: :class:`ManagedModels`, which models sit on the GPU;
* :mod:`.apply`: :func:`apply_tier` (tier + models -> :class:`TierRun`), :func:`compile_heavy_modules`;
* :mod:`.estimate`: the analytic peak-memory estimate (:func:`estimate_peak_memory`);
* :mod:`.diagnostics`: :class:`HostSyncCounter`.

Every component list here is derived from the component table (:mod:`synchuman_core.io.registry`).
"""

from .apply import TierRun, apply_tier, compile_heavy_modules
from .diagnostics import HostSyncCounter
from .estimate import (
    GB,
    REAL_COMPONENT_SIZES,
    REAL_SHAPES,
    STAGES,
    ComponentSize,
    PipelineShapes,
    estimate_peak_memory,
    format_estimate_table,
    memory_breakdown,
    resident_components,
    weight_bytes,
)
from .residency import OFFLOAD_AFTER, ManagedModels
from .tiers import (
    ALL_COMPONENTS,
    HALF_COMPONENTS,
    PRECISIONS,
    RESIDENCIES,
    TIERS,
    MemoryTier,
    dtype_plan,
    get_tier,
    resolve_precision,
    stage_kwargs,
)

__all__ = [
    "ALL_COMPONENTS",
    "GB",
    "HALF_COMPONENTS",
    "OFFLOAD_AFTER",
    "PRECISIONS",
    "REAL_COMPONENT_SIZES",
    "REAL_SHAPES",
    "RESIDENCIES",
    "STAGES",
    "TIERS",
    "ComponentSize",
    "HostSyncCounter",
    "ManagedModels",
    "MemoryTier",
    "PipelineShapes",
    "TierRun",
    "apply_tier",
    "compile_heavy_modules",
    "dtype_plan",
    "estimate_peak_memory",
    "format_estimate_table",
    "get_tier",
    "memory_breakdown",
    "resident_components",
    "resolve_precision",
    "stage_kwargs",
    "weight_bytes",
]
