"""``python -m synchuman_core.parity DIR [DIR ...]``: compare our modules with official fixtures."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from . import run_fixture

_GLOB_CHARS = set("*?[")


def fixture_folders(args: list[str]) -> list[Path]:
    """The fixture folders named on the command line, in order.

    A folder holding fixture folders (``tests/reference/fixtures``) stands for all of them; plain files
    that a shell glob picks up beside the folders (``README.md``) are left out. A name that does not exist
    (a mistyped path, or a glob that matched nothing and reached us unexpanded) is an error that says so.
    """
    folders: list[Path] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            subs = sorted(d for d in p.iterdir() if (d / "config.json").is_file() and "_" in d.name)
            folders += [p] if (p / "config.json").is_file() or not subs else subs
        elif p.is_file():
            continue
        elif _GLOB_CHARS & set(a):
            raise SystemExit(f"error: the pattern {a!r} matched no fixture folder "
                             f"(the folder {_glob_base(a)} does not exist or holds nothing that matches)")
        else:
            raise SystemExit(f"error: no fixture folder {a!r} (no such file or directory)")
    if not folders:
        raise SystemExit(f"error: no fixture folder among {' '.join(args)} "
                         "(expected folders named <letter>_<Component>, e.g. tests/reference/fixtures/*_*)")
    return folders


def _glob_base(pattern: str) -> str:
    parts = Path(pattern).parts
    base = parts[: next(i for i, q in enumerate(parts) if _GLOB_CHARS & set(q))]
    return str(Path(*base)) if base else "."


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synchuman_core.parity", description=__doc__)
    ap.add_argument("dirs", nargs="+", help="fixture folders named <letter>_<Component>, or a folder of them")
    ap.add_argument("--tol", type=float, default=None, help="override the relative tolerance")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    failed = 0
    for d in fixture_folders(args.dirs):
        t0 = time.perf_counter()
        try:
            comps = run_fixture(d, args.tol)
        except Exception as e:  # noqa: BLE001 - report and continue with the next fixture
            sys.stdout.write(f"FAIL {d}: {type(e).__name__}: {e}\n")
            failed += 1
            continue
        dt = time.perf_counter() - t0
        for c in comps:
            err = c.relative_error()
            status = "ok  " if err <= c.tol else "FAIL"
            failed += err > c.tol
            note = f"  ({c.note})" if c.note else ""
            sys.stdout.write(f"{status} {d} :: {c.name}: rel err {err:.3e} (tol {c.tol:.0e}){note}\n")
        if not comps:
            sys.stdout.write(f"FAIL {d}: runner compared nothing\n")
            failed += 1
        sys.stdout.write(f"     {d}: {dt:.1f} s\n")
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
