"""Batch reconstruction of many inputs on Ray: ``python -m synchuman_core batch INPUTS -o OUT``.

* :mod:`.inputs`: a folder, a glob or a CSV/JSONL manifest -> :class:`BatchItem` list;
* :mod:`.engine`: models loaded once, one input at a time through the public pipeline (bytes in, bytes out);
* :mod:`.runner`: one Ray actor per GPU or CPU slot, atomic writes, resumable, results manifest;
* :mod:`.records`: ``batch_results.jsonl`` (what happened to each input) and ``batch_results.json``.

Ray is an optional dependency (``pip install "synchuman[batch]"``), imported only when a batch runs.
"""

from .engine import EngineConfig, ReconstructionEngine, WorkPayload
from .inputs import MANIFEST_COLUMNS, BatchItem, ItemSettings, collect_inputs
from .records import RESULTS_JSONL, RESULTS_SUMMARY, ResultsLog, read_records
from .runner import BatchOptions, BatchSummary, run_batch

__all__ = [
    "MANIFEST_COLUMNS",
    "RESULTS_JSONL",
    "RESULTS_SUMMARY",
    "BatchItem",
    "BatchOptions",
    "BatchSummary",
    "EngineConfig",
    "ItemSettings",
    "ReconstructionEngine",
    "ResultsLog",
    "WorkPayload",
    "collect_inputs",
    "read_records",
    "run_batch",
]
