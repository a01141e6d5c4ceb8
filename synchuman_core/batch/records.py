"""The results manifest of a batch: ``OUT/batch_results.jsonl``, one JSON record per event, appended.

Every record names the input (``name``), its ``status`` and the ``fingerprint`` of the input bytes and
settings (:meth:`BatchItem.fingerprint`). Statuses:

* ``ok``: the outputs were written (``files``, ``timings_s``, ``worker``, ``voxels``, ``faces``);
* ``failed``: the input could not be reconstructed (``error``: the message, ``error_type``); the batch
  went on with the others, and a re-run tries the input again;
* ``skipped``: a finished output with the same fingerprint was already there (``reason``).

Records are appended and flushed one by one by the only writer (the batch driver), so a batch killed at
any moment leaves a readable file (at worst without a torn last line, which :func:`read_records`
ignores). The latest record of a name is its current state; ``batch_results.json`` (written atomically
when a batch ends) is that state for every input of the last run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["PART_SUFFIX", "RESULTS_JSONL", "RESULTS_SUMMARY", "ResultsLog", "read_records", "write_atomic",
           "write_json_atomic"]

RESULTS_JSONL = "batch_results.jsonl"
PART_SUFFIX = ".part"  # temporary files (export.writer): ".<final name>.<pid>-<random>.part" beside it
RESULTS_SUMMARY = "batch_results.json"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a results file (a torn last line from a killed batch is left out)."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "name" in rec and "status" in rec:
            out.append(rec)
    return out


def write_atomic(path: str | Path, data: bytes) -> Path:
    """``data`` to a temporary name beside ``path``, then renamed onto it
    (:func:`synchuman_core.export.writer.replace_atomically`): a reader, or a re-run after a kill, sees the
    old file or the whole new one, never a part. For files the batch owns and may replace."""
    from ..export.writer import replace_atomically

    return replace_atomically(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(path: str | Path, data: Any) -> None:
    """JSON through :func:`write_atomic`."""
    write_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode("utf-8"))


class ResultsLog:
    """Appends records to ``OUT/batch_results.jsonl`` and answers "is this input finished?"."""

    def __init__(self, out_dir: str | Path, filename: str = RESULTS_JSONL) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / filename
        self.latest: dict[str, dict[str, Any]] = {}
        for rec in read_records(self.path):
            self.latest[rec["name"]] = rec
        self._run: dict[str, dict[str, Any]] = {}

    def finished(self, name: str, fingerprint: str, output: Path) -> str | None:
        """Why the input needs no work (a reason string), or None when it must be reconstructed.

        Finished means the output file exists and the last ``ok`` record of the name has the same
        fingerprint. An output with no record at all (made by hand, or by a batch whose log was deleted)
        is also kept: this command never overwrites a file it cannot account for; ``--overwrite`` redoes it.
        """
        if not output.exists():
            return None
        rec = self.latest.get(name)
        if rec is None:
            return f"{output.name} exists (no record of how it was made; --overwrite redoes it)"
        if rec.get("fingerprint") == fingerprint and rec["status"] in ("ok", "skipped"):
            return f"{output.name} is done (same input and settings)"
        return None

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}
        line = json.dumps(rec, sort_keys=False, default=str)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.latest[rec["name"]] = rec
        self._run[rec["name"]] = rec
        return rec

    def run_records(self) -> list[dict[str, Any]]:
        """The records written by this run, in order of completion."""
        return list(self._run.values())

    def write_summary(self, names: Iterable[str], extra: dict[str, Any]) -> Path:
        """``<log name>.json`` (``batch_results.json``): counts, ``extra`` and the current record per input."""
        recs = [self.latest[n] for n in names if n in self.latest]
        counts: dict[str, int] = {}
        for r in recs:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        path = self.path.with_suffix(".json")
        write_json_atomic(path, {**extra, "counts": counts, "results": recs})
        return path
