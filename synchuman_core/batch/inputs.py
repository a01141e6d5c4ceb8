"""What a batch reconstructs: inputs from a folder, a glob or a CSV/JSONL manifest, one :class:`BatchItem` each.

* **folder**: every image in it (``.png .jpg .jpeg .webp .bmp .tif .tiff``, not recursive). A file named
  ``<stem>_mask.<ext>`` beside ``<stem>.<ext>`` is that image's person mask, not an input of its own.
* **glob**: ``"photos/**/*.png"`` (quote it so the shell leaves it alone); the same mask pairing.
* **manifest** (``.csv`` with a header row, or ``.jsonl`` with one JSON object per line): one row per input,
  columns :data:`MANIFEST_COLUMNS`; only ``image`` is required. Relative paths are relative to the
  manifest's folder. Empty cells take the batch defaults (the command-line flags).

Each item's output name (``name`` column, else the image's file stem) must be unique: the outputs of the
batch are ``OUT/<name>.<format>``, and the name is how a re-run recognises finished work.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..export.api import RECIPES
from ..export.paths import sanitize_name

__all__ = [
    "IMAGE_SUFFIXES",
    "MANIFEST_COLUMNS",
    "BatchItem",
    "ItemSettings",
    "collect_inputs",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MASK_TAG = "_mask"
COLOR_MODES = ("texture", "vertex", "none")
FORMATS = ("glb", "obj", "ply")

#: Manifest columns: the input, its optional mask and output name, and the per-input settings.
MANIFEST_COLUMNS = ("image", "mask", "name", "seed", "steps1", "steps2", "texture_size", "color", "format",
                    "recipe", "turntable")


@dataclass(frozen=True)
class ItemSettings:
    """Per-input reconstruction settings (the ``reconstruct`` command's flags of the same names).

    ``steps1``/``steps2`` None: the official 50 / 25 steps.
    """

    seed: int = 43
    steps1: int | None = None
    steps2: int | None = None
    texture_size: int = 1024
    color: str = "texture"
    format: str = "glb"
    recipe: str = "official"  # texture recipe: official | fast (``reconstruct --recipe``)
    turntable: int = 0  # frames of a Gaussian turntable GIF, 0 = none (``reconstruct --turntable``)
    save_views: bool = False  # also the 10 views + input framings as PNG (``reconstruct --save-views``)

    def check(self, where: str) -> None:
        """Raise ConfigError naming ``where`` (e.g. ``cast.csv line 3``) for a value ``reconstruct`` refuses
        (the same limits: :mod:`synchuman_core.validation`)."""
        from ..validation import check_choice, check_seed, check_steps, check_texture_size

        check_seed(self.seed, f"{where}: seed")
        check_steps(self.steps1, f"{where}: steps1")
        check_steps(self.steps2, f"{where}: steps2")
        if self.color == "texture":
            check_texture_size(self.texture_size, f"{where}: texture_size")
        check_choice(self.color, f"{where}: color", COLOR_MODES)
        check_choice(self.format, f"{where}: format", FORMATS)
        check_choice(self.recipe, f"{where}: recipe", RECIPES)
        if not isinstance(self.turntable, int) or not 0 <= self.turntable <= 3600:
            raise ConfigError(f"{where}: turntable must be between 0 (off) and 3600 frames, got {self.turntable!r}")


@dataclass(frozen=True)
class BatchItem:
    """One input of a batch: ``name`` (unique, the output stem), the image, an optional mask, settings."""

    name: str
    image: Path
    mask: Path | None = None
    settings: ItemSettings = field(default_factory=ItemSettings)
    source: str = ""  # where the item came from, for error messages ("manifest.csv row 4")

    @property
    def output_name(self) -> str:
        return f"{self.name}.{self.settings.format}"

    def fingerprint(self) -> str:
        """Hash of everything that decides the output bytes except the models: the image and mask bytes
        and the settings. A finished output is reused only when its recorded fingerprint matches."""
        h = hashlib.sha256()
        for p in (self.image, self.mask):
            h.update(b"\0")
            if p is not None:
                try:
                    h.update(p.read_bytes())
                except OSError:
                    h.update(b"<unreadable>")
        h.update(json.dumps(asdict(self.settings), sort_keys=True).encode())
        return h.hexdigest()[:20]


def _is_mask(path: Path) -> bool:
    return path.stem.endswith(MASK_TAG)


def _mask_for(path: Path) -> Path | None:
    for suffix in (path.suffix, *IMAGE_SUFFIXES):
        cand = path.with_name(f"{path.stem}{MASK_TAG}{suffix}")
        if cand.exists():
            return cand
    return None


def _from_paths(paths: list[Path], defaults: ItemSettings, source: str) -> list[BatchItem]:
    images = sorted(p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not _is_mask(p))
    return [BatchItem(name=sanitize_name(p.stem, default="input"), image=p, mask=_mask_for(p), settings=defaults,
                      source=f"{source}: {p.name}") for p in images]


def _int_cell(value: Any, column: str, where: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {column} must be a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{where}: {column} must be a whole number, got {value!r}") from None


def _row_item(row: Mapping[str, Any], base: Path, defaults: ItemSettings, where: str) -> BatchItem:
    unknown = sorted(k for k in row if k not in MANIFEST_COLUMNS)
    if unknown:
        raise ConfigError(f"{where}: unknown column(s) {', '.join(map(repr, unknown))}; "
                          f"known columns: {', '.join(MANIFEST_COLUMNS)}")
    cells = {k: v for k, v in row.items() if v is not None and str(v).strip() != ""}
    if "image" not in cells:
        raise ConfigError(f"{where}: the 'image' column is empty; every row needs an input image")

    def path(col: str) -> Path:
        p = Path(str(cells[col]).strip()).expanduser()
        return p if p.is_absolute() else base / p

    changes: dict[str, Any] = {}
    for col in ("seed", "steps1", "steps2", "texture_size", "turntable"):
        if col in cells:
            changes[col] = _int_cell(cells[col], col, where)
    for col in ("color", "format", "recipe"):
        if col in cells:
            changes[col] = str(cells[col]).strip().lower()
    settings = ItemSettings(**{**asdict(defaults), **changes})
    image = path("image")
    name = sanitize_name(str(cells["name"]).strip() if "name" in cells else image.stem, default="input")
    return BatchItem(name=name, image=image, mask=path("mask") if "mask" in cells else None,
                     settings=settings, source=where)


def _read_manifest(path: Path, defaults: ItemSettings) -> list[BatchItem]:
    base = path.parent
    items: list[BatchItem] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the manifest {path}: {e}") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "image" not in [f.strip() for f in reader.fieldnames]:
            raise ConfigError(f"{path}: the first row must be a header naming the columns, with at least 'image' "
                              f"(known: {', '.join(MANIFEST_COLUMNS)})")
        for i, row in enumerate(reader, start=2):
            if None in row:
                raise ConfigError(f"{path.name} line {i}: more cells than header columns")
            clean = {k.strip(): v for k, v in row.items()}
            if not any(str(v or "").strip() for v in clean.values()):
                continue
            items.append(_row_item(clean, base, defaults, f"{path.name} line {i}"))
    else:
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path.name} line {i} is not JSON ({e.msg}); a .jsonl manifest has one JSON "
                                  'object per line, e.g. {"image": "a.png", "seed": 1}') from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path.name} line {i}: expected a JSON object, got {type(row).__name__}")
            items.append(_row_item(row, base, defaults, f"{path.name} line {i}"))
    return items


def collect_inputs(spec: str | Path, defaults: ItemSettings | None = None) -> list[BatchItem]:
    """The items of a batch from a folder, a glob pattern or a ``.csv``/``.jsonl`` manifest.

    Raises ConfigError (naming the folder, pattern, or manifest line) when nothing matches, a row is
    malformed, a setting is out of range, or two items would write the same output file.
    """
    defaults = defaults or ItemSettings()
    defaults.check("batch defaults")
    spec_s = str(spec)
    path = Path(spec_s).expanduser()
    if path.is_dir():
        items = _from_paths(list(path.iterdir()), defaults, str(path))
        what = f"the folder {path} (images: {' '.join(IMAGE_SUFFIXES)})"
    elif path.is_file() and path.suffix.lower() in (".csv", ".jsonl"):
        items = _read_manifest(path, defaults)
        what = f"the manifest {path}"
    elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        items = _from_paths([path], defaults, str(path.parent))
        what = str(path)
    elif glob.has_magic(spec_s):
        items = _from_paths([Path(p) for p in glob.glob(str(path), recursive=True)], defaults, spec_s)
        what = f"the pattern {spec_s!r}"
    elif path.exists():
        raise ConfigError(f"INPUTS {path} is not a folder, an image, or a .csv/.jsonl manifest")
    else:
        raise ConfigError(f"INPUTS {path} does not exist (give a folder, a quoted glob such as 'photos/*.png', "
                          "or a .csv/.jsonl manifest)")
    if not items:
        raise ConfigError(f"no input images in {what}")
    seen: dict[str, BatchItem] = {}
    for item in items:
        item.settings.check(item.source)
        clash = seen.get(item.output_name.lower())
        if clash is not None:
            raise ConfigError(f"{item.source} and {clash.source} would both write {item.output_name}; give the rows "
                              "different 'name' values")
        seen[item.output_name.lower()] = item
    return items
