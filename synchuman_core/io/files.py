"""Weight files on disk: find them, check them from their headers, read tensors one at a time.

Everything here works on headers first. A safetensors file is checked without reading a tensor
(8-byte header length, JSON header, every ``data_offsets`` range against the file size), so a git-lfs
pointer, an interrupted download or a file that belongs to another model is reported before any
large allocation. Tensors are then read one by one through :class:`LazyTensor`, whose ``.to()``
reads a single tensor from an open ``safetensors.safe_open`` handle (zero-copy on CPU) and converts
it, so a loader never holds more than the final weights plus one tensor.

``.bin`` files (diffusers/transformers fallbacks) are read only with
``torch.load(weights_only=True, mmap=True)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from .layout import download_command

__all__ = [
    "LFS_POINTER_PREFIX",
    "LazyTensor",
    "TensorInfo",
    "WeightFiles",
    "WeightReader",
    "check_not_lfs_pointer",
    "find_weight_files",
    "is_lfs_pointer",
    "read_safetensors_header",
    "weight_candidates",
]

logger = logging.getLogger(__name__)

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
# A real pointer file is ~130 bytes; anything larger cannot be one.
_LFS_POINTER_MAX_BYTES = 1024
#: Host buffer used to stream a tensor that must be converted or moved (one per open reader).
CHUNK_BYTES = 8 * 1024 * 1024
# A sane upper bound for a safetensors JSON header (the format itself caps it at 100 MB).
_MAX_HEADER_BYTES = 100 * 1024 * 1024

# safetensors dtype string -> (torch dtype, bytes per element)
SAFETENSORS_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
    "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
}


@dataclass(frozen=True)
class TensorInfo:
    """What a file header says about one tensor (no data read)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    file: Path
    offset: int = -1  # absolute byte offset of the data in a safetensors file (-1: not applicable)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


# ---------------------------------------------------------------------------------------------
# Single-file checks
# ---------------------------------------------------------------------------------------------


def is_lfs_pointer(path: str | os.PathLike) -> bool:
    """True if ``path`` is a git-lfs pointer (a small text file) instead of the real weights."""
    p = Path(path)
    try:
        if p.stat().st_size > _LFS_POINTER_MAX_BYTES:
            return False
        with open(p, "rb") as f:
            return f.read(len(LFS_POINTER_PREFIX)) == LFS_POINTER_PREFIX
    except OSError:
        return False


def check_not_lfs_pointer(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` naming ``path`` if it is a git-lfs pointer file."""
    if is_lfs_pointer(path):
        raise CheckpointError(
            f"{path} is a git-lfs pointer file ({Path(path).stat().st_size} bytes of text), not the weights. "
            "The repository was cloned without git-lfs. Run `git lfs install && git lfs pull` in that clone, "
            f"or download the files with `{download_command('<folder>')}` "
            "(or `hf download xishushu/SyncHuman --local-dir <folder>`)."
        )


def _damaged(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is damaged: {what}. The download was probably interrupted. Delete this file and download it "
        f"again (`{download_command('<folder>')}` resumes and fetches only missing files)."
    )


def read_safetensors_header(path: str | os.PathLike) -> tuple[OrderedDict[str, TensorInfo], dict[str, str]]:
    """Parse a safetensors header without reading tensor data.

    Returns ``({key: TensorInfo}, metadata)``. Raises :class:`CheckpointError` for a git-lfs pointer,
    a file shorter than its header, an unreadable header, an unknown dtype, a byte range that does not
    match the tensor's shape and dtype, or data offsets beyond the end of the file (truncated file).
    """
    p = Path(path)
    check_not_lfs_pointer(p)
    size = p.stat().st_size
    if size < 8:
        raise _damaged(p, f"the file has only {size} bytes (a safetensors file starts with an 8-byte header length)")
    with open(p, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > _MAX_HEADER_BYTES or 8 + n > size:
            raise _damaged(p, f"the header claims {n} bytes but the file has {size} bytes in all")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _damaged(p, f"the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise _damaged(p, "the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_size = size - 8 - n
    out: OrderedDict[str, TensorInfo] = OrderedDict()
    # Sort by offset so that the report names the first tensor that runs past the end.
    items = []
    for key, entry in header.items():
        try:
            dtype_s, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise _damaged(p, f"the header entry of {key!r} is malformed") from None
        if dtype_s not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{p}: tensor {key!r} has dtype {dtype_s}, which this loader does not read.")
        dtype, itemsize = SAFETENSORS_DTYPES[dtype_s]
        expected = math.prod(shape) * itemsize
        if end - start != expected or start < 0:
            raise _damaged(p, f"tensor {key!r} ({dtype_s} {list(shape)}) spans {end - start} bytes, expected {expected}")
        items.append((start, end, key, tuple(int(s) for s in shape), dtype))
    last_end = max((e for _, e, *_ in items), default=0)
    for _start, end, key, *_ in sorted(items):
        if end > data_size:
            raise _damaged(
                p,
                f"tensor {key!r} ends at byte {8 + n + end} but the file has only {size} bytes "
                f"(truncated; {8 + n + last_end - size} bytes missing)",
            )
    for start, _end, key, shape, dtype in items:  # header order
        out[key] = TensorInfo(shape, dtype, p, 8 + n + start)
    return out, dict(metadata)


# ---------------------------------------------------------------------------------------------
# Which files hold a component's weights
# ---------------------------------------------------------------------------------------------


def weight_candidates(stems: Sequence[str], *, allow_bin: bool = True, variants: Sequence[str] = ("", "fp16")) -> list[str]:
    """File names, best first, under which a component's weights may be stored.

    For each stem (``model``, ``diffusion_pytorch_model``, ``pytorch_model``) and variant (``""`` or
    ``fp16`` as in ``model.fp16.safetensors``): the sharded index, then the single file; safetensors
    before ``.bin``.
    """
    out: list[str] = []
    exts = ["safetensors"] + (["bin"] if allow_bin else [])
    for ext in exts:
        for variant in variants:
            for stem in stems:
                name = f"{stem}.{variant}.{ext}" if variant else f"{stem}.{ext}"
                out += [f"{name}.index.json", name]
    return out


@dataclass(frozen=True)
class WeightFiles:
    """The files that hold one component's weights: one file, or the shards named by an index."""

    folder: Path
    files: tuple[Path, ...]
    index: Path | None = None

    @property
    def fmt(self) -> str:
        return "safetensors" if self.files[0].name.endswith(".safetensors") else "bin"

    @property
    def total_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files if f.exists())

    def describe(self) -> str:
        if self.index is not None:
            return f"{self.index} ({len(self.files)} shards)"
        return str(self.files[0])


def _shards_from_index(index: Path) -> tuple[tuple[Path, ...], dict[str, str]]:
    check_not_lfs_pointer(index)
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(
            f"{index} is not a valid shard index (a JSON object with a 'weight_map'). Delete it and download again."
        ) from None
    names = list(OrderedDict.fromkeys(weight_map.values()))
    return tuple(index.parent / n for n in names), weight_map


def find_weight_files(folder: str | os.PathLike, candidates: Sequence[str]) -> WeightFiles | None:
    """First candidate name present in ``folder`` (shards resolved through the index), else None.

    Presence only; :class:`WeightReader` checks the contents.
    """
    folder = Path(folder)
    for name in candidates:
        p = folder / name
        if not p.is_file():
            continue
        if name.endswith(".index.json"):
            shards, _ = _shards_from_index(p)
            return WeightFiles(folder, shards, index=p)
        return WeightFiles(folder, (p,))
    return None


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class LazyTensor:
    """A tensor in a file: ``shape``/``dtype`` from the header, data read by ``.to()``/``.load()``.

    Accepted wherever :func:`synchuman_core.io.state_dict.load_state_dict_strict` expects a tensor,
    so a whole component loads with at most one extra tensor in host memory at a time.
    """

    __slots__ = ("key", "info", "_reader", "_transform")

    def __init__(self, reader: WeightReader, key: str, info: TensorInfo, transform=None):
        self.key, self.info, self._reader, self._transform = key, info, reader, transform

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.info.shape)

    @property
    def dtype(self) -> torch.dtype:
        return self.info.dtype

    def load(self) -> torch.Tensor:
        return self._reader.read(self.key)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None, **kw: Any) -> torch.Tensor:
        """Read and convert. Same dtype on CPU: a zero-copy view of the memory-mapped file. Otherwise
        the result is allocated once (target dtype and device) and filled from the file in small
        chunks, so no second full-size copy and no growing file mapping exist at any time."""
        dev = torch.device(device) if device is not None else torch.device("cpu")
        want = dtype or self.info.dtype
        if dev.type == "cpu" and want == self.info.dtype:
            return self._reader.read(self.key)
        out = torch.empty(self.info.shape, dtype=want, device=dev)
        self._reader.read_into(self.key, out)
        return out

    def __repr__(self) -> str:
        return f"LazyTensor({self.key!r}, shape={list(self.info.shape)}, dtype={self.info.dtype}, file={self.info.file.name})"


class WeightReader:
    """Open weight files (single or sharded, safetensors or ``.bin``) for header-first access.

    Use as a context manager. ``entries()`` gives ``{key: TensorInfo}`` from headers only;
    ``lazy_state_dict()`` gives ``{key: LazyTensor}``; ``read(key)`` reads one tensor.
    """

    def __init__(self, weights: WeightFiles):
        self.weights = weights
        self._stack = ExitStack()
        self._handles: dict[Path, Any] = {}
        self._files: dict[Path, Any] = {}
        self._chunk: torch.Tensor | None = None
        self._bin: dict[str, torch.Tensor] = {}
        self._entries: OrderedDict[str, TensorInfo] | None = None

    # -- headers -----------------------------------------------------------------------------
    def entries(self) -> OrderedDict[str, TensorInfo]:
        if self._entries is None:
            self._entries = self._read_entries()
        return self._entries

    def _read_entries(self) -> OrderedDict[str, TensorInfo]:
        out: OrderedDict[str, TensorInfo] = OrderedDict()
        w = self.weights
        for f in w.files:
            if not f.is_file():
                raise CheckpointError(
                    f"{f} is missing: {w.index} names it as a shard. Download the missing shard again."
                    if w.index
                    else f"{f} is missing."
                )
            if w.fmt == "safetensors":
                entries, _ = read_safetensors_header(f)
            else:
                entries = self._bin_entries(f)
            for k, info in entries.items():
                if k in out:
                    raise CheckpointError(f"tensor {k!r} appears in both {out[k].file} and {f}; the shards overlap.")
                out[k] = info
        if w.index is not None:
            _, weight_map = _shards_from_index(w.index)
            for k, info in out.items():
                if k in weight_map and w.folder / weight_map[k] != info.file:
                    raise CheckpointError(f"{w.index} puts {k!r} in {weight_map[k]} but it is in {info.file.name}.")
            absent = [k for k in weight_map if k not in out]
            if absent:
                raise CheckpointError(
                    f"{w.index} lists {len(absent)} tensors that no shard holds (first: {absent[0]!r}); "
                    "a shard is outdated or damaged. Download the folder again."
                )
        return out

    def _bin_entries(self, f: Path) -> OrderedDict[str, TensorInfo]:
        check_not_lfs_pointer(f)
        sd = _torch_load_weights(f)
        out: OrderedDict[str, TensorInfo] = OrderedDict()
        for k, v in sd.items():
            if not isinstance(v, torch.Tensor):
                raise CheckpointError(f"{f}: entry {k!r} is not a tensor; this is not a plain state-dict file.")
            self._bin[k] = v
            out[k] = TensorInfo(tuple(v.shape), v.dtype, f)
        return out

    # -- data --------------------------------------------------------------------------------
    def _handle(self, f: Path):
        h = self._handles.get(f)
        if h is None:
            from safetensors import safe_open

            try:
                h = self._stack.enter_context(safe_open(str(f), framework="pt", device="cpu"))
            except Exception as e:  # noqa: BLE001 - safetensors raises its own untyped errors
                raise _damaged(f, f"safetensors could not open it ({e})") from e
            self._handles[f] = h
        return h

    def read(self, key: str) -> torch.Tensor:
        """One tensor: a zero-copy view of the memory-mapped safetensors file (or of the ``.bin``)."""
        info = self.entries()[key]
        if self.weights.fmt == "bin":
            return self._bin[key]
        return self._handle(info.file).get_tensor(key)

    def read_into(self, key: str, out: torch.Tensor) -> torch.Tensor:
        """Fill ``out`` (same shape, any dtype/device, contiguous) with tensor ``key``.

        safetensors data is read with plain file I/O through one reusable host buffer of
        :data:`CHUNK_BYTES` and converted/moved chunk by chunk by ``copy_``.
        """
        info = self.entries()[key]
        if tuple(out.shape) != info.shape or not out.is_contiguous():
            raise ValueError(f"read_into({key!r}): out must be contiguous with shape {list(info.shape)}")
        if self.weights.fmt == "bin" or sys.byteorder != "little":
            return out.copy_(self.read(key))
        numel = math.prod(info.shape)
        if numel == 0:
            return out
        itemsize = torch.empty((), dtype=info.dtype).element_size()
        if self._chunk is None:
            self._chunk = torch.empty(CHUNK_BYTES, dtype=torch.uint8)
        buf = self._chunk.numpy()
        f = self._files.get(info.file)
        if f is None:
            f = self._files[info.file] = self._stack.enter_context(open(info.file, "rb"))
        flat = out.view(-1)
        step = CHUNK_BYTES // itemsize
        f.seek(info.offset)
        for start in range(0, numel, step):
            count = min(step, numel - start)
            nbytes = count * itemsize
            if f.readinto(memoryview(buf)[:nbytes]) != nbytes:
                raise _damaged(info.file, f"tensor {key!r} could not be read completely")
            flat[start : start + count].copy_(self._chunk[:nbytes].view(info.dtype))
        return out

    def lazy_state_dict(self, *, rename: Mapping[str, str] | None = None, drop: Iterable[str] = ()) -> OrderedDict[str, LazyTensor]:
        """``{model key: LazyTensor}``; ``rename`` maps file keys to model keys, ``drop`` lists file keys to skip."""
        rename = rename or {}
        dropped = set(drop)
        out: OrderedDict[str, LazyTensor] = OrderedDict()
        for k, info in self.entries().items():
            if k in dropped:
                continue
            out[rename.get(k, k)] = LazyTensor(self, k, info)
        return out

    def close(self) -> None:
        self._stack.close()
        self._handles.clear()
        self._files.clear()
        self._chunk = None
        self._bin.clear()

    def __enter__(self) -> WeightReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries())


def _torch_load_weights(f: Path) -> Mapping[str, Any]:
    """``torch.load`` with ``weights_only=True`` (memory-mapped when the file format allows)."""
    try:
        try:
            sd = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            sd = torch.load(f, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as e:  # noqa: BLE001 - pickle/zip errors have no common base
        raise CheckpointError(
            f"{f} could not be read as a weights-only PyTorch file ({type(e).__name__}: {e}). "
            "Files that need arbitrary code to load are refused; use the .safetensors version."
        ) from e
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{f} does not hold a state dict (found {type(sd).__name__}).")
    return sd
