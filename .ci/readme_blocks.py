"""Print the README's fenced code blocks marked for CI (an HTML comment ``<!-- ci:run ... -->`` on the line
before the opening fence), one per line of output, so .ci/run executes exactly what README shows.

Exits 1 when a marker is not followed by a fenced block, or when fewer blocks than ``--expect`` are marked
(README and CI must not drift apart silently).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def marked_blocks(text: str) -> list[str]:
    lines = text.splitlines()
    blocks: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].strip().startswith("<!-- ci:run"):
            if i + 1 >= len(lines) or not lines[i + 1].startswith("```"):
                raise SystemExit(f"README line {i + 1}: a ci:run marker must be followed by a fenced code block")
            j = i + 2
            body = []
            while j < len(lines) and not lines[j].startswith("```"):
                body.append(lines[j])
                j += 1
            if j >= len(lines):
                raise SystemExit(f"README line {i + 2}: unterminated code block")
            blocks.append("\n".join(body))
            i = j
        i += 1
    return blocks


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("readme", type=Path)
    ap.add_argument("--expect", type=int, default=1)
    ap.add_argument("--index", type=int, default=None, help="print only this block (0-based)")
    a = ap.parse_args()
    blocks = marked_blocks(a.readme.read_text(encoding="utf-8"))
    if len(blocks) < a.expect:
        sys.stderr.write(f"{a.readme}: {len(blocks)} ci:run block(s), expected {a.expect}\n")
        return 1
    if a.index is not None:
        sys.stdout.write(blocks[a.index] + "\n")
    else:
        sys.stdout.write(str(len(blocks)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
