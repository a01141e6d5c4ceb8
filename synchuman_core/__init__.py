"""synchuman_core: SyncHuman (NeurIPS 2025) single-image human reconstruction in pure PyTorch.

The library never imports ComfyUI. Heavy submodules are imported lazily by the code that needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (  # noqa: F401
    CheckpointError,
    ConfigError,
    InputImageError,
    NumericalError,
    ParityError,
    StateDictMismatchError,
    SyncHumanError,
    WeightsNotFoundError,
)
