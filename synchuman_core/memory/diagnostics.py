"""Speed diagnostics: :class:`HostSyncCounter` counts the places that make the host wait for the device."""

from __future__ import annotations

from torch.overrides import TorchFunctionMode

__all__ = ["HostSyncCounter"]


class HostSyncCounter(TorchFunctionMode):
    """Counts the tensor operations that make the host wait for the device (``bool(t)``, ``.item()``,
    ``.tolist()``, ``int(t)``, ``.cpu()`` ...) and the ops with data-dependent output sizes
    (``nonzero``, ``unique``, ``masked_select``, ``bincount``: a sync on CUDA), called from Python inside the
    ``with`` block, by ``(op, "file:line")`` of the innermost ``synchuman_core`` frame.

    Works on any device (a ``TorchFunctionMode``: kernels are unchanged); used by the tests and the
    benchmark to keep sampling loops free of per-step syncs.
    """

    OPS = frozenset({"__bool__", "item", "tolist", "__int__", "__float__", "__index__", "nonzero", "unique",
                     "unique_consecutive", "masked_select", "argwhere", "equal", "numpy", "cpu", "bincount"})

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[tuple[str, str], int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = getattr(func, "__name__", "")
        if name in self.OPS:
            import traceback

            where = "?"
            for frame in reversed(traceback.extract_stack()):
                if "synchuman_core" in frame.filename and not frame.filename.endswith("diagnostics.py"):
                    where = f"{frame.filename.rsplit('synchuman_core/', 1)[-1]}:{frame.lineno}"
                    break
            key = (name, where)
            self.counts[key] = self.counts.get(key, 0) + 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def at(self, fragment: str) -> int:
        """Count of the syncs whose location contains ``fragment`` (e.g. ``"stage1/sampling.py"``)."""
        return sum(v for (_, where), v in self.counts.items() if fragment in where)
