"""Stand-in of ``comfy.utils.ProgressBar``: records updates and honours interrupts like the host."""

from __future__ import annotations

from . import model_management

PROGRESS_LOG: list[tuple[int, int]] = []


class ProgressBar:
    def __init__(self, total: int, node_id=None):
        self.total = total
        self.current = 0

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        PROGRESS_LOG.append((self.current, self.total))
        model_management.throw_exception_if_processing_interrupted()

    def update(self, value):
        self.update_absolute(self.current + value)
