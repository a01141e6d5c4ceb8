"""Exception types of synchuman_core.

Every error a user can cause (bad input, missing or damaged weights, a wrong wire) is one of these
types and its message says what to do. Internal invariants may still use ``assert``.
"""

from __future__ import annotations


class SyncHumanError(Exception):
    """Base class of every error raised on purpose by synchuman_core."""


class InputImageError(SyncHumanError, ValueError):
    """The input image or mask cannot be used (wrong mode, no person, empty mask, ...)."""


class ConfigError(SyncHumanError, ValueError):
    """A model configuration is invalid or has keys we do not understand."""


class OutputError(SyncHumanError, OSError):
    """An output cannot be written (folder not writable, disk full, name taken while writing, ...).

    Nothing was overwritten and no partial file was left; the message names the file or folder and the
    option to change.
    """


class WeightsNotFoundError(SyncHumanError, FileNotFoundError):
    """Model files are missing; the message names the files, the folder and how to download them."""


class CheckpointError(SyncHumanError, RuntimeError):
    """A checkpoint file exists but is damaged (LFS pointer, truncated) or does not fit the model."""


class StateDictMismatchError(CheckpointError):
    """Keys or shapes of a state dict do not match the module; the message groups them by prefix."""


class NumericalError(SyncHumanError, FloatingPointError):
    """NaN or Inf appeared during sampling (the official code calls exit(); we raise)."""


class ParityError(SyncHumanError, AssertionError):
    """An output differs from an official fixture by more than the tolerance."""
