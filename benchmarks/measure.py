"""Wall time, call counts and peak memory of pipeline stages and model components (for the benchmarks).

:class:`Monitor` samples the process RSS in a background thread (every 2 ms) and reads the CUDA
allocator's counters; :class:`Recorder` turns ``with rec.stage(name)`` blocks and wrapped component
methods (:func:`instrument`) into :class:`Stat` rows:

* ``host_MiB``: peak RSS during the stage / call above the RSS right before it;
* ``device_MiB``: CUDA ``max_memory_allocated`` during it above ``memory_allocated`` right before it;
* ``device_peak_MiB`` / ``reserved_peak_MiB`` (stages): the absolute CUDA peaks (allocated, reserved by the
  caching allocator) during the stage, i.e. what a card must hold at that moment.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch

MiB = 2**20

#: Callables timed per component (instance attributes wrap the bound methods).
TIMED = {
    "image_encoder": ("forward",),
    "vae": ("encode", "decode", "tiled_decode"),
    "dinov2": ("global_condition", "multiview_features"),
    "joint": ("forward",),
    "structure_decoder": ("forward",),
    "slat_flow": ("forward",),
    "gs_decoder": ("forward",),
    "mesh_decoder": ("forward_features", "to_representation"),
}


class Monitor:
    """Background sampler of the process RSS (every ``interval`` s) and CUDA allocator peaks."""

    def __init__(self, device: torch.device, interval: float = 0.002) -> None:
        self.device = torch.device(device)
        self.proc = psutil.Process()
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop:
            self.samples.append((time.perf_counter(), self.proc.memory_info().rss))
            time.sleep(self.interval)

    def start(self) -> Monitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True
        self._thread.join()

    def rss(self) -> int:
        return self.proc.memory_info().rss

    def peak_between(self, t0: float, t1: float) -> int:
        """Peak RSS sampled in ``[t0, t1]`` (the current RSS counts too: a call shorter than the interval)."""
        return max([r for t, r in self.samples if t0 <= t <= t1] + [self.rss()])

    def peak_rss(self) -> int:
        return max([r for _, r in self.samples] or [self.rss()])

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def cuda_allocated(self) -> int:
        return torch.cuda.memory_allocated(self.device) if self.cuda else 0

    def cuda_reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def cuda_peak(self) -> int:
        return torch.cuda.max_memory_allocated(self.device) if self.cuda else 0

    def cuda_reserved_peak(self) -> int:
        return torch.cuda.max_memory_reserved(self.device) if self.cuda else 0


@dataclass
class Stat:
    calls: int = 0
    seconds: float = 0.0
    host_peak: int = 0  # bytes above the level right before the call / stage
    device_peak: int = 0
    device_abs_peak: int = 0  # absolute CUDA peaks (stages only)
    reserved_abs_peak: int = 0

    def row(self) -> dict[str, Any]:
        return {"calls": self.calls, "s": round(self.seconds, 3), "host_MiB": round(self.host_peak / MiB),
                "device_MiB": round(self.device_peak / MiB), "device_peak_MiB": round(self.device_abs_peak / MiB),
                "reserved_peak_MiB": round(self.reserved_abs_peak / MiB)}


@dataclass
class Recorder:
    mon: Monitor
    stages: dict[str, Stat] = field(default_factory=dict)
    components: dict[str, Stat] = field(default_factory=dict)
    _depth: int = 0

    def reset(self) -> None:
        """Forget the recorded rows and RSS samples (a new run in the same process)."""
        self.stages.clear()
        self.components.clear()
        self.mon.samples.clear()
        self.mon.cuda_reset_peak()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        gc.collect()
        self.mon.sync()
        base, dbase = self.mon.rss(), self.mon.cuda_allocated()
        self.mon.cuda_reset_peak()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.mon.sync()
            t1 = time.perf_counter()
            st = self.stages.setdefault(name, Stat())
            st.calls += 1
            st.seconds += t1 - t0
            st.host_peak = max(st.host_peak, self.mon.peak_between(t0, t1) - base)
            st.device_peak = max(st.device_peak, self.mon.cuda_peak() - dbase)
            st.device_abs_peak = max(st.device_abs_peak, self.mon.cuda_peak())
            st.reserved_abs_peak = max(st.reserved_abs_peak, self.mon.cuda_reserved_peak())

    def wrap(self, label: str, fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:  # nested component call: counted by the outer one
                return fn(*args, **kwargs)
            self.mon.sync()
            base, dbase = self.mon.rss(), self.mon.cuda_allocated()
            t0 = time.perf_counter()
            self._depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                self.mon.sync()
                t1 = time.perf_counter()
                st = self.components.setdefault(label, Stat())
                st.calls += 1
                st.seconds += t1 - t0
                st.host_peak = max(st.host_peak, self.mon.peak_between(t0, t1) - base)
                st.device_peak = max(st.device_peak, self.mon.cuda_peak() - dbase)

        return timed

    def instrument(self, name: str, module: Any) -> Any:
        """Wrap the :data:`TIMED` methods of component ``name`` on this instance (idempotent)."""
        if getattr(module, "_bench_instrumented", False):
            return module
        for m in TIMED.get(name, ()):
            if hasattr(module, m):
                label = name if m == "forward" else f"{name}.{m}"
                object.__setattr__(module, m, self.wrap(label, getattr(module, m)))
        object.__setattr__(module, "_bench_instrumented", True)
        return module


def instrument(models: Any, rec: Recorder) -> None:
    """Wrap the timed methods of every component of an eagerly built models object."""
    for name in TIMED:
        rec.instrument(name, getattr(models, name))
