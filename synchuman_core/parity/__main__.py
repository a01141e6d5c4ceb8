"""``python -m synchuman_core.parity DIR [DIR ...]``: compare our modules with official fixtures."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from . import run_fixture


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synchuman_core.parity", description=__doc__)
    ap.add_argument("dirs", nargs="+", help="fixture folders named <letter>_<Component>")
    ap.add_argument("--tol", type=float, default=None, help="override the relative tolerance")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    failed = 0
    for d in args.dirs:
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
