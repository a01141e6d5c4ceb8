"""``python -m synchuman_core``: the headless runner (see :mod:`synchuman_core.cli`)."""

import os
import sys

# PyTorch's CPU allocator backs large tensors with transparent huge pages when this is set before torch
# is imported: ~25x fewer page faults and ~7% less time per CPU forward of the joint model (measured,
# docs/PERFORMANCE.md); no effect on GPU memory. An explicit value in the environment wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .cli import main  # noqa: E402

sys.exit(main())
