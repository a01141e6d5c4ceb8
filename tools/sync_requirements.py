"""Write ``requirements.txt`` from ``pyproject.toml`` (the one list of dependencies).

    python tools/sync_requirements.py            # rewrite requirements.txt
    python tools/sync_requirements.py --check    # exit 1 if it is not what pyproject.toml gives

ComfyUI-Manager and git-clone installs run ``pip install -r requirements.txt``; pip installs of the library
read ``[project].dependencies``. The file is that list, in the same order and with the same markers,
without the packages ComfyUI installs and manages itself (torch, torchvision, torchaudio: the Manager
reverts any change to them, and a requirement could pull a different CUDA build).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
REQUIREMENTS = ROOT / "requirements.txt"
#: Packages the host owns; never in requirements.txt.
HOST_PACKAGES = frozenset({"torch", "torchvision", "torchaudio"})
HEADER = (
    "# Generated from pyproject.toml [project].dependencies by tools/sync_requirements.py: edit pyproject.toml.\n"
    "# ComfyUI-Manager and git-clone installs read this file. torch, torchvision and torchaudio are never listed:\n"
    "# ComfyUI keeps its own build (the Manager reverts any change to them).\n"
)


def requirement_name(req: str) -> str:
    """The normalised project name of a PEP 508 requirement (``Foo_Bar[x]>=1`` -> ``foo-bar``)."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    if not m:
        raise ValueError(f"not a requirement: {req!r}")
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


def dependencies(pyproject: Path = PYPROJECT) -> list[str]:
    with open(pyproject, "rb") as f:
        return list(tomllib.load(f)["project"].get("dependencies", []))


def render(deps: list[str]) -> str:
    lines = [d.strip() for d in deps if requirement_name(d) not in HOST_PACKAGES]
    return HEADER + "".join(f"{line}\n" for line in lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 if requirements.txt differs")
    a = ap.parse_args(argv)
    text = render(dependencies())
    current = REQUIREMENTS.read_text(encoding="utf-8") if REQUIREMENTS.is_file() else None
    if a.check:
        if current != text:
            sys.stderr.write("requirements.txt does not match pyproject.toml; run python tools/sync_requirements.py\n")
            return 1
        return 0
    if current != text:
        REQUIREMENTS.write_text(text, encoding="utf-8")
        sys.stdout.write(f"wrote {REQUIREMENTS.name}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
