"""Check a model folder before loading: every file the run will open is present, readable and sound.

Per component: files present (not LFS pointers), the config parsed and type-checked by the module's config
reader, the weight headers intact (not truncated), keys and shapes fitting the module; with ``deep`` every
tensor is read and must be finite (no NaN/Inf). The view-prompt embeddings the run will use are opened and
shape-checked against the joint model. Permission and other OS errors become findings naming the file.

``verify_model_folder(folder).raise_for_problems()`` raises the most specific error for what it found
(:class:`WeightsNotFoundError` for missing files, :class:`StateDictMismatchError` for keys/shapes,
:class:`ConfigError` for configs, :class:`CheckpointError` for damaged files), with every problem of the folder
in one message. :func:`check_before_run` is the cheap form the run does before it loads anything.
``report.summary()`` is the readable report ``python -m synchuman_core check`` prints.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from ..errors import CheckpointError, ConfigError, StateDictMismatchError, SyncHumanError, WeightsNotFoundError
from .files import WeightReader
from .layout import ModelFolder, resolve_model_folder
from .loading import build_empty, check_component_keys, component_files, missing_files_error, read_component_config
from .registry import DEFAULT_COMPONENTS, get_spec

__all__ = ["ComponentStatus", "Problem", "VerifyReport", "check_before_run", "verify_component", "verify_model_folder"]

logger = logging.getLogger(__name__)

PROMPTS = "prompt_embeds"  # pseudo-component name of the view-prompt embeddings in reports


@dataclass
class Problem:
    """One finding. ``kind``: ``missing``, ``damaged`` (LFS pointer, truncated, unreadable), ``config``,
    ``mismatch`` (keys/shapes), ``values`` (NaN/Inf weights)."""

    component: str
    kind: str
    message: str
    files: list[str] = field(default_factory=list)


@dataclass
class ComponentStatus:
    """What was checked for one component (one line of the report)."""

    name: str
    title: str = ""
    files: list[str] = field(default_factory=list)
    nbytes: int = 0
    tensors: int = 0
    checks: list[str] = field(default_factory=list)  # e.g. "config", "headers", "keys", "finite"


@dataclass
class VerifyReport:
    folder: ModelFolder
    checked: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped_key_check: list[str] = field(default_factory=list)
    total_bytes: int = 0
    status: dict[str, ComponentStatus] = field(default_factory=dict)
    deep: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """The readable report: one line per component (OK / PROBLEM, files, size, what was checked), then
        every problem with what to do."""
        lines = [f"SyncHuman model folder {self.folder.describe()}"]
        width = max((len(n) for n in self.checked), default=10)
        by_component: dict[str, list[Problem]] = {}
        for p in self.problems:
            by_component.setdefault(p.component, []).append(p)
        for name in self.checked:
            st = self.status.get(name) or ComponentStatus(name)
            probs = by_component.get(name, [])
            mark = "OK     " if not probs else "PROBLEM"
            size = f"{st.nbytes / 1e6:9.1f} MB" if st.nbytes else " " * 12
            what = ", ".join(st.checks) if st.checks else "-"
            where = _files_text(st.files)
            lines.append(f"  {mark} {name:<{width}} {size}  {where}  [{what}]")
            for p in probs:
                text = p.message.replace("\n", "\n              ")
                lines.append(f"            {p.kind}: {text}")
        if self.skipped_key_check:
            lines.append(f"  keys checked on load (files in another key format): {', '.join(self.skipped_key_check)}")
        total = f"{len(self.checked)} components, {self.total_bytes / 1e9:.2f} GB"
        scan = "every tensor read and finite" if self.deep else "headers only (run 'check' for a full scan)"
        if self.ok:
            lines.append(f"all files present and intact: {total}; {scan}")
        else:
            lines.append(f"{len(self.problems)} problem(s) in {len(by_component)} component(s): {total}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

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


def _os_problem(name: str, e: OSError) -> Problem:
    from ..export.writer import describe_os_error

    target = e.filename or "a file"
    return Problem(name, "damaged", f"cannot read {target}: {describe_os_error(e)}. Fix the file's permissions "
                                    f"or download it again.", [str(target)])


def _scan_finite(reader: WeightReader, name: str, report: VerifyReport) -> int:
    """Read every tensor; NaN/Inf become one problem listing the first bad keys. Returns the tensor count."""
    bad: list[str] = []
    n = 0
    for key in reader.entries():
        t = reader.read(key)
        n += 1
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad.append(key)
        del t
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        report.problems.append(Problem(name, "values", f"{len(bad)} tensor(s) hold NaN or Inf values "
                                                       f"({', '.join(bad[:5])}{more}); the file is damaged: "
                                                       "download it again"))
    return n


def verify_component(name: str, folder: str | os.PathLike | ModelFolder, *, check_keys: bool = True,
                     deep: bool = False, report: VerifyReport | None = None) -> VerifyReport:
    """Check one component; findings are appended to ``report`` (a new one if None)."""
    spec = get_spec(name)
    mf = resolve_model_folder(folder)
    report = report if report is not None else VerifyReport(mf, deep=deep)
    report.checked.append(spec.name)
    st = report.status[spec.name] = ComponentStatus(spec.name, getattr(spec, "title", ""))
    cf, missing = component_files(spec, mf, raise_missing=False)
    if missing:
        report.problems.append(Problem(spec.name, "missing", "missing " + ", ".join(missing), missing))
        return report
    try:
        config = None
        if cf.config is not None:
            st.files.append(_rel(mf, cf.config))
            config = read_component_config(cf)  # parsed and type-checked by the module's config reader
            st.checks.append("config")
        if cf.weights is None:
            return report
        st.files += [_rel(mf, f) for f in cf.weights.files]
        with WeightReader(cf.weights) as reader:
            entries = reader.entries()
            st.checks.append("headers")
            st.nbytes = cf.weights.total_bytes
            st.tensors = len(entries)
            report.total_bytes += cf.weights.total_bytes
            if check_keys and spec.is_module:
                if cf.converted:  # stored under other key names; they are checked when loaded
                    report.skipped_key_check.append(spec.name)
                else:
                    module = build_empty(spec, config if config is not None else read_component_config(cf))
                    check_component_keys(spec, module, reader, cf.weights.describe())
                    st.checks.append("keys+shapes")
            if deep:
                _scan_finite(reader, spec.name, report)
                st.checks.append("finite")
    except StateDictMismatchError as e:
        report.problems.append(Problem(spec.name, "mismatch", str(e)))
    except ConfigError as e:
        report.problems.append(Problem(spec.name, "config", str(e)))
    except CheckpointError as e:
        report.problems.append(Problem(spec.name, "damaged", str(e)))
    except OSError as e:
        report.problems.append(_os_problem(spec.name, e))
    return report


def _files_text(files: list[str]) -> str:
    """``a/b/config.json`` or ``a/b/{config.json, model.safetensors}``."""
    if len(files) <= 1:
        return files[0] if files else ""
    folders = {os.path.dirname(f) for f in files}
    if len(folders) == 1:
        d = folders.pop()
        return os.path.join(d, "{" + ", ".join(os.path.basename(f) for f in files) + "}")
    return ", ".join(files)


def _rel(mf: ModelFolder, p: os.PathLike | str) -> str:
    try:
        return os.path.relpath(p, mf.base)
    except ValueError:
        return str(p)


def _joint_context_dim(mf: ModelFolder) -> int | None:
    """The joint model's ``cross_attention_dim`` (what the prompt embeddings must have), when readable."""
    try:
        cf, missing = component_files(get_spec("joint"), mf, raise_missing=False)
        if missing or cf.config is None:
            return None
        dim = cf.layout.read_config(cf).get("cross_attention_dim")
    except (SyncHumanError, OSError, AttributeError):
        return None
    return dim if isinstance(dim, int) and not isinstance(dim, bool) else None


def verify_prompt_embeds(folder: str | os.PathLike | ModelFolder, report: VerifyReport) -> VerifyReport:
    """Open the view-prompt embeddings the run will use (official ``.pt`` pair, else our cache), check their
    shape ``[7, 77, D]`` with ``D`` = the joint model's context size, finite values. Without them the text
    encoder must be there to recompute them (then it is checked instead)."""
    from ..encoders import prompts
    from .prompt_cache import find_official_prompt_files, prompt_cache_path

    mf = resolve_model_folder(folder)
    report.checked.append(PROMPTS)
    st = report.status[PROMPTS] = ComponentStatus(PROMPTS, "view-prompt embeddings")
    official = find_official_prompt_files(mf)
    cache = prompt_cache_path(mf)
    try:
        if official is not None:
            st.files = [_rel(mf, f) for f in official]
            tensors = [prompts.load_official_prompt_embeds(f) for f in official]
        elif cache.is_file():
            st.files = [_rel(mf, cache)]
            tensors = list(prompts.load_prompt_embeds(cache))
        else:
            st.checks.append("not there: recomputed once from the text encoder (checked next)")
            return verify_component("text_encoder", mf, deep=report.deep, report=report)
        st.nbytes = sum(os.path.getsize(os.path.join(mf.base, f)) for f in st.files)
        st.tensors = len(tensors)
        st.checks += ["opened", "[7, 77, D]", "finite"]
        dim = _joint_context_dim(mf)
        if dim is not None:
            got = {int(t.shape[-1]) for t in tensors}
            if got != {dim}:
                raise CheckpointError(f"{', '.join(str(mf.base / f) for f in st.files)}: prompt embeddings of width {sorted(got)} do not fit "
                                      f"the joint model (cross_attention_dim {dim}); delete them so that they are "
                                      "recomputed, or put the files of this checkpoint there")
            st.checks.append(f"D = {dim} fits the joint model")
    except CheckpointError as e:
        report.problems.append(Problem(PROMPTS, "damaged", str(e), st.files))
    except WeightsNotFoundError as e:
        report.problems.append(Problem(PROMPTS, "missing", str(e), st.files))
    except OSError as e:
        report.problems.append(_os_problem(PROMPTS, e))
    return report


def verify_model_folder(folder: str | os.PathLike | ModelFolder, components: Iterable[str] | None = None, *,
                        check_keys: bool = True, deep: bool = False, prompts: bool | None = None) -> VerifyReport:
    """Check ``components`` (default: everything needed to run both stages, plus the prompt embeddings) of
    ``folder``. ``deep``: read every tensor and require finite values (slow: reads all weights).
    ``prompts``: also check the view-prompt embeddings (default: when ``components`` is the default set or
    names ``joint``)."""
    mf = resolve_model_folder(folder)
    report = VerifyReport(mf, deep=deep)
    names = list(components) if components is not None else list(DEFAULT_COMPONENTS)
    for name in names:
        verify_component(name, mf, check_keys=check_keys, deep=deep, report=report)
    if prompts if prompts is not None else (components is None or "joint" in names):
        verify_prompt_embeds(mf, report)
    logger.info("%s", report.summary())
    return report


def check_before_run(folder: str | os.PathLike | ModelFolder, components: Iterable[str] | None = None) -> VerifyReport:
    """The cheap checks the run does before loading anything (configs typed, headers, keys and shapes,
    prompt embeddings opened): raises the specific error naming every problem; returns the report."""
    report = verify_model_folder(folder, components, deep=False)
    report.raise_for_problems()
    return report
