"""Check a model folder before loading: files present, not LFS pointers, not truncated, keys and shapes fit.

Only headers are read. ``verify_model_folder(folder).raise_for_problems()`` raises the most specific
error for what it found (:class:`WeightsNotFoundError` for missing files,
:class:`StateDictMismatchError` for keys/shapes, :class:`CheckpointError` for damaged files), with
every problem of the folder in one message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import CheckpointError, ConfigError, StateDictMismatchError, WeightsNotFoundError
from .files import WeightReader
from .layout import ModelFolder, resolve_model_folder
from .loading import _read_config, build_empty, check_component_keys, component_files, missing_files_error, read_json
from .registry import DEFAULT_COMPONENTS, get_spec

__all__ = ["Problem", "VerifyReport", "verify_component", "verify_model_folder"]

logger = logging.getLogger(__name__)


@dataclass
class Problem:
    """One finding. ``kind``: ``missing``, ``damaged`` (LFS pointer, truncated, unreadable), ``config``, ``mismatch``."""

    component: str
    kind: str
    message: str
    files: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    folder: ModelFolder
    checked: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped_key_check: list[str] = field(default_factory=list)
    total_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [f"SyncHuman folder {self.folder.describe()}: {len(self.checked)} components checked, "
                 f"{self.total_bytes / 1e9:.2f} GB of weights"]
        for p in self.problems:
            lines.append(f"  [{p.kind}] {p.component}: {p.message}")
        if self.skipped_key_check:
            lines.append(f"  (keys not checked, module not available: {', '.join(self.skipped_key_check)})")
        if self.ok:
            lines.append("  all files present and intact")
        return "\n".join(lines)

    def raise_for_problems(self) -> None:
        if self.ok:
            return
        missing = {p.component: p.files for p in self.problems if p.kind == "missing"}
        if missing:
            err = missing_files_error(self.folder, missing)
            others = [p for p in self.problems if p.kind != "missing"]
            if others:
                err = WeightsNotFoundError(str(err) + "\nAlso:\n" + "\n".join(f"  {p.component}: {p.message}" for p in others))
            raise err
        text = "\n".join(f"{p.component}: {p.message}" for p in self.problems)
        if all(p.kind == "mismatch" for p in self.problems):
            raise StateDictMismatchError(text)
        if all(p.kind == "config" for p in self.problems):
            raise ConfigError(text)
        raise CheckpointError(text)


def verify_component(name: str, folder: str | os.PathLike | ModelFolder, *, check_keys: bool = True,
                     report: VerifyReport | None = None) -> VerifyReport:
    """Check one component; findings are appended to ``report`` (a new one if None)."""
    spec = get_spec(name)
    mf = resolve_model_folder(folder)
    report = report if report is not None else VerifyReport(mf)
    report.checked.append(spec.name)
    cf, missing = component_files(spec, mf, raise_missing=False)
    if missing:
        report.problems.append(Problem(spec.name, "missing", "missing " + ", ".join(missing), missing))
        return report
    try:
        if cf.config is not None:
            read_json(cf.config)
        if cf.weights is None:
            return report
        with WeightReader(cf.weights) as reader:
            reader.entries()
            report.total_bytes += cf.weights.total_bytes
            if not check_keys or cf.fmt in ("hf", "hub_pth"):
                return report
            if not spec.available():
                report.skipped_key_check.append(spec.name)
                return report
            module = build_empty(spec, _read_config(cf))
            check_component_keys(spec, module, reader, cf.weights.describe())
    except StateDictMismatchError as e:
        report.problems.append(Problem(spec.name, "mismatch", str(e)))
    except ConfigError as e:
        report.problems.append(Problem(spec.name, "config", str(e)))
    except CheckpointError as e:
        report.problems.append(Problem(spec.name, "damaged", str(e)))
    return report


def verify_model_folder(folder: str | os.PathLike | ModelFolder, components: Iterable[str] | None = None, *,
                        check_keys: bool = True) -> VerifyReport:
    """Check ``components`` (default: everything needed to run both stages) of ``folder``."""
    mf = resolve_model_folder(folder)
    report = VerifyReport(mf)
    for name in components if components is not None else DEFAULT_COMPONENTS:
        verify_component(name, mf, check_keys=check_keys, report=report)
    logger.info("%s", report.summary())
    return report
