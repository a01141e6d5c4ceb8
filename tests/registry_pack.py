"""The Comfy Registry zip as ``comfy node publish`` / ``comfy node pack`` builds it, and the registry's rules
for ``pyproject.toml``.

Facts from comfy-cli (``comfy_cli/file_utils.py`` ``zip_files``, ``comfy_cli/registry/config_parser.py``)
and https://docs.comfy.org/registry/specifications:

* the zip holds the files ``git ls-files`` lists, minus those a ``.comfyignore`` pattern (gitignore syntax,
  matched with ``pathspec``'s ``gitwildmatch``) matches; each ``[tool.comfy] includes`` entry is then
  walked on disk and added whole (tracked or not), and ``.comfyignore`` does not apply under it;
* ``[project] name`` (the node id): under 100 characters, letters, digits, ``-``, ``_``, ``.``, no two
  special characters in a row, starting with a letter; the docs advise against "ComfyUI" in it;
* ``version``: ``X.Y.Z``; ``license``: ``{file = ...}`` or ``{text = ...}``; ``[project.urls]
  Repository``; ``[tool.comfy] PublisherId``; ``Icon``: an SVG/PNG/JPG/GIF URL, at most 800 x 400;
* classifiers: ``Operating System :: `` + one of Microsoft / POSIX / MacOS / OS Independent, and
  ``Environment :: `` + one of the five accelerators below;
* ``requires-comfyui``: comma-separated ``[operator]X.Y.Z[-suffix]`` parts.

Before the coordinator commits, files that are new are not tracked yet; :func:`packed_files` takes
``git ls-files --cached --others --exclude-standard`` (tracked plus untracked-but-not-ignored) so the zip
is the one the next commit would publish.
"""

from __future__ import annotations

import os
import re
import subprocess
import warnings
import zipfile
from pathlib import Path

import pathspec

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]

NAME_RE = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*$")
SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+$")
VERSION_PART_RE = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")
OS_PREFIXES = ("Microsoft", "POSIX", "MacOS", "OS Independent")
ACCELERATORS = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend",
                "GPU :: Apple Metal"}
ICON_TYPES = {".svg", ".png", ".jpg", ".jpeg", ".gif"}
ICON_MAX = (800, 400)


def pyproject(root: Path = ROOT) -> dict:
    with open(root / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def git_files(root: Path = ROOT) -> list[str]:
    """Tracked files plus untracked files git does not ignore, that exist in the working tree."""
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         check=True, capture_output=True).stdout.decode()
    return sorted({p for p in out.split("\0") if p and (root / p).is_file()})


def ignore_spec(root: Path = ROOT) -> pathspec.PathSpec | None:
    p = root / ".comfyignore"
    if not p.is_file():
        return None
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        return None
    with warnings.catch_warnings():  # comfy-cli matches with "gitwildmatch", deprecated in pathspec 1.x
        warnings.simplefilter("ignore", DeprecationWarning)
        return pathspec.PathSpec.from_lines("gitwildmatch", lines)


def packed_files(root: Path = ROOT) -> list[str]:
    """Archive names of the registry zip, in comfy-cli's order (git files, then ``includes``)."""
    includes = [os.path.normpath(i.lstrip("/")).replace(os.sep, "/")
                for i in pyproject(root).get("tool", {}).get("comfy", {}).get("includes", [])]
    spec = ignore_spec(root)

    def forced(rel: str) -> bool:
        return any(rel == i or rel.startswith(i + "/") for i in includes if i and i != ".")

    def ignored(rel: str) -> bool:
        return bool(spec) and not forced(rel) and spec.match_file(rel)

    names = [f for f in git_files(root) if not ignored(f)]
    seen = set(names)
    for inc in includes:
        base = root / inc
        if base.is_file():
            candidates = [inc]
        else:
            candidates = sorted(str(p.relative_to(root)).replace(os.sep, "/") for p in base.rglob("*") if p.is_file())
        for rel in candidates:
            if rel not in seen and not ignored(rel):
                names.append(rel)
                seen.add(rel)
    return names


def build_zip(target: Path, root: Path = ROOT) -> list[str]:
    names = packed_files(root)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        for n in names:
            z.write(root / n, n)
    return names


def registry_problems(data: dict, root: Path = ROOT) -> list[str]:
    """Every way ``pyproject.toml`` breaks the Comfy Registry's rules (empty = publishable)."""
    errs: list[str] = []
    project, comfy = data.get("project", {}), data.get("tool", {}).get("comfy", {})
    name = project.get("name", "")
    if not (0 < len(name) < 100 and NAME_RE.match(name)):
        errs.append(f"[project] name {name!r} is not a valid node id")
    if "comfyui" in name.lower():
        errs.append(f"[project] name {name!r} contains 'ComfyUI' (the registry advises against it)")
    if not SEMVER_RE.match(str(project.get("version", ""))):
        errs.append(f"[project] version {project.get('version')!r} is not X.Y.Z")
    lic = project.get("license")
    if not (isinstance(lic, dict) and (lic.get("file") or lic.get("text"))):
        errs.append('[project] license must be {file = "LICENSE"} or {text = "..."}')
    elif lic.get("file") and not (root / lic["file"]).is_file():
        errs.append(f"[project] license file {lic['file']} does not exist")
    if not project.get("description"):
        errs.append("[project] description is empty")
    repo = project.get("urls", {}).get("Repository", "")
    if not re.match(r"^https://github\.com/[\w.-]+/[\w.-]+$", repo):
        errs.append(f"[project.urls] Repository {repo!r} is not a GitHub repository URL")
    classifiers = project.get("classifiers", [])
    oses = [c.split(" :: ", 1)[1] for c in classifiers if c.startswith("Operating System :: ")]
    if not oses or not all(o.startswith(OS_PREFIXES) for o in oses):
        errs.append(f"classifiers: need valid 'Operating System :: ...' entries, got {oses}")
    accel = [c.split(" :: ", 1)[1] for c in classifiers if c.startswith("Environment ::")]
    if not accel or not set(accel) <= ACCELERATORS:
        errs.append(f"classifiers: need valid 'Environment :: GPU/NPU :: ...' entries, got {accel}")
    if not comfy.get("PublisherId"):
        errs.append("[tool.comfy] PublisherId is missing")
    if not comfy.get("DisplayName"):
        errs.append("[tool.comfy] DisplayName is missing")
    req = comfy.get("requires-comfyui", "")
    if not req or not all(VERSION_PART_RE.match(p.strip()) for p in req.split(",")):
        errs.append(f"[tool.comfy] requires-comfyui {req!r} is not a version specifier")
    for inc in comfy.get("includes", []):
        if not (root / inc.lstrip("/")).exists():
            errs.append(f"[tool.comfy] includes {inc!r} does not exist")
    errs += icon_problems(comfy.get("Icon", ""), repo, root)
    return errs


def icon_file(icon_url: str, repo_url: str, root: Path = ROOT) -> Path | None:
    """The repository file an Icon URL of the form raw.githubusercontent.com/<owner>/<repo>/<ref>/<path>
    points at (None when the URL is not of that form for this repository)."""
    owner_repo = repo_url.removeprefix("https://github.com/")
    m = re.match(rf"^https://raw\.githubusercontent\.com/{re.escape(owner_repo)}/[^/]+/(.+)$", icon_url)
    return root / m.group(1) if m else None


def icon_problems(icon_url: str, repo_url: str, root: Path = ROOT) -> list[str]:
    from PIL import Image

    if not icon_url:
        return ["[tool.comfy] Icon is missing"]
    path = icon_file(icon_url, repo_url, root)
    if path is None:
        return [f"[tool.comfy] Icon {icon_url!r} is not a raw.githubusercontent.com URL of this repository"]
    if path.suffix.lower() not in ICON_TYPES:
        return [f"[tool.comfy] Icon must be one of {sorted(ICON_TYPES)}, got {path.suffix}"]
    if not path.is_file():
        return [f"[tool.comfy] Icon {path.relative_to(root)} is not in the repository"]
    if path.suffix.lower() != ".svg":
        with Image.open(path) as im:
            if im.width > ICON_MAX[0] or im.height > ICON_MAX[1]:
                return [f"[tool.comfy] Icon is {im.width}x{im.height}, the registry allows at most 800x400"]
    return []
