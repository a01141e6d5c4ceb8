"""Comments cite only what the repository holds: ``docs/ARCHITECTURE.md §x`` sections that exist, no machine paths."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
SOURCES = [p for d in ("synchuman_core", "nodes", "benchmarks", "tests") for p in sorted((ROOT / d).rglob("*.py"))
           if p != Path(__file__).resolve()]  # this file's own examples
CITE = re.compile(r"(\S*)ARCHITECTURE(?:\.md)?\s*((?:§[\d.]*\d(?:\s*(?:step|steps)\s*[\d-]+)?(?:,\s*)?)+)")
MACHINE_PATH = re.compile(r"(?<![\w.])(/work/|/home/[a-z]|/root/|\.\./shared/)")


def doc_sections(text: str) -> set[str]:
    """Section numbers of the doc: headings ``## 3.`` / ``### 3.4`` and bold list labels ``**12.9**``."""
    found = set(re.findall(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", text, flags=re.M))
    found |= set(re.findall(r"\*\*(\d+(?:\.\d+)+)\*\*", text))
    return found


def citations(text: str) -> list[tuple[str, list[str]]]:
    return [(m.group(1), re.findall(r"§([\d.]*\d)", m.group(2))) for m in CITE.finditer(text)]


def test_citation_parser():
    assert citations("see docs/ARCHITECTURE.md §3.4, §12.9") == [("docs/", ["3.4", "12.9"])]
    assert citations("(ARCHITECTURE §1.1 steps 4-6, §8)") == [("(", ["1.1", "8"])]
    assert doc_sections("## 3. Sync\n### 3.4 Geometry\n- **12.9** mirror\n") == {"3", "3.4", "12.9"}


def test_every_architecture_citation_points_into_docs_architecture():
    sections = doc_sections(DOC.read_text(encoding="utf-8"))
    assert {"1.1", "3.4", "5.2", "8.6", "12.9"} <= sections
    bad = []
    for path in SOURCES:
        for prefix, nums in citations(path.read_text(encoding="utf-8")):
            where = path.relative_to(ROOT)
            if not prefix.endswith("docs/"):
                bad.append(f"{where}: cites ARCHITECTURE without docs/ (a file the repository does not hold)")
            bad += [f"{where}: §{n} is not a section of docs/ARCHITECTURE.md" for n in nums if n not in sections]
    assert not bad, "\n".join(bad)


def test_no_machine_paths_in_library_code():
    bad = []
    for path in SOURCES:
        if path.parts[len(ROOT.parts)] not in ("synchuman_core", "nodes"):
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if MACHINE_PATH.search(line):
                bad.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)
