"""The one output writer: every file the pack writes for the user goes through :class:`OutputSet`.

One *result* (a GLB with its Gaussians PLY and views, an OBJ with its MTL and PNG, ...) is a set of files
that share one stem and differ by suffix (``.glb``, ``_gaussians.ply``, ``_color_0.png``). The writer

* cleans the name once (:func:`~.paths.sanitize_name`: separators, control characters, Windows device
  names, at most :data:`~.paths.MAX_NAME_BYTES` UTF-8 bytes), the same way on every surface;
* reserves a stem for which *no* file of the set exists yet: ``name``, then ``name_00001``, ... so companion
  files are numbered together and nothing that exists (the input photo included) is ever replaced. The
  reservation is a hidden ``.<final name>.part`` file per member, created with ``O_EXCL``: two processes
  writing into one folder at once never get the same stem;
* writes each file into its ``.part`` file in the target folder and, when the whole set is written,
  moves every file into place with a hard link (``link`` fails instead of replacing an existing file; on
  file systems without hard links an exclusive create + ``os.replace`` of that fresh file);
* removes every ``.part`` file, every placed file of the set and every folder it created when anything
  fails or is interrupted (``KeyboardInterrupt`` included): a result is all there or not there.

Use::

    with reserve_stem(folder, "person", (".obj", ".mtl", ".png"), what="-o/--output") as out:
        out.write_bytes(".png", png)            # out.path(".png").name is the final name, known up front
        out.write_text(".mtl", f"map_Kd {out.path('.png').name}\\n")
        with out.open(".obj") as fh:
            fh.write(obj)
    out.paths  # the placed files

``what`` names the option the user sets (``-o/--output`` on the CLI, ``filename_prefix`` in ComfyUI) so that
errors speak the surface's words. :func:`check_output_location` does the cheap checks (writable, free space
for a size estimate, name length) before any compute. :func:`replace_atomically` is for the pack's own
files that are *meant* to be replaced (caches): unique temporary name, ``os.replace``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import OutputError
from .paths import sanitize_name

__all__ = [
    "OutputSet",
    "check_output_location",
    "clean_suffix",
    "describe_os_error",
    "estimate_result_bytes",
    "replace_atomically",
    "reserve_stem",
    "write_file",
]

PART = ".part"
_MAX_COUNTER = 99999
_PATH_MAX = 4096  # Linux; longer absolute paths fail with ENAMETOOLONG
_SUFFIX = re.compile(r"[._-][A-Za-z0-9_.\-]{0,59}")  # companion suffixes, e.g. ``_gaussians.ply``


def clean_suffix(suffix: str) -> str:
    """Suffixes come from code, not users (``.glb``, ``_gaussians.ply``); anything else is a bug: refuse it."""
    s = str(suffix)
    if not _SUFFIX.fullmatch(s) or ".." in s or s.endswith(PART):
        raise ValueError(f"output suffix {suffix!r} must start with '.', '_' or '-' and hold only A-Z a-z 0-9 _ - .")
    return s


def describe_os_error(e: OSError) -> str:
    """A short reason a user understands (``disk full``, ``permission denied``, ...)."""
    reasons = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "the file system is read-only",
        errno.ENAMETOOLONG: "the name is too long for this file system",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EISDIR: "it is a folder",
        errno.ENOENT: "no such file or folder",
        errno.EEXIST: "a file with that name appeared",
    }
    return reasons.get(e.errno, e.strerror or type(e).__name__)


def _output_error(action: str, target: Path | str, e: OSError, what: str) -> OutputError:
    reason = describe_os_error(e)
    hint = f"free some space or choose another {what}" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (
        f"choose another {what}")
    err = OutputError(f"cannot {action} {target}: {reason}; nothing was written. Fix: {hint}.")
    err.errno = e.errno
    return err


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _place(part: Path, final: Path) -> None:
    """Move a finished ``part`` file to ``final`` without ever replacing an existing ``final``."""
    try:
        os.link(part, final)
    except FileExistsError:
        raise
    except OSError as e:  # no hard links here (FAT, some network shares): exclusive create, then replace it
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
        try:
            os.replace(part, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(final)  # our empty placeholder of a moment ago
            raise
        return
    os.unlink(part)


class OutputSet:
    """The reserved files of one result (see the module docstring). Use as a context manager."""

    def __init__(self, folder: Path, stem: str, suffixes: tuple[str, ...], what: str, created_dirs: list[Path]):
        self.folder = folder
        self.stem = stem
        self.suffixes = suffixes
        self.what = what
        self.paths: list[Path] = []  # placed files, after commit
        self._written: set[str] = set()
        self._created_dirs = created_dirs
        self._open = True

    # -- names ----------------------------------------------------------------------------------------
    def path(self, suffix: str) -> Path:
        """The final path of ``suffix`` (known before anything is written)."""
        if suffix not in self.suffixes:
            raise KeyError(f"{suffix!r} was not reserved; reserved: {self.suffixes}")
        return self.folder / f"{self.stem}{suffix}"

    def part_path(self, suffix: str) -> Path:
        """The hidden temporary file ``suffix`` is written to (it also holds the reservation)."""
        return self.folder / f".{self.stem}{suffix}{PART}"

    # -- writing --------------------------------------------------------------------------------------
    def _check_open(self, suffix: str) -> None:
        if not self._open:
            raise RuntimeError("this OutputSet was already committed or discarded")
        self.path(suffix)

    @contextlib.contextmanager
    def _writing(self, suffix: str) -> Iterator[Path]:
        """The part file of ``suffix`` to write; any failure discards the whole set (an ``OSError`` becomes
        our ``OutputError`` naming the final file), success marks ``suffix`` written."""
        self._check_open(suffix)
        try:
            yield self.part_path(suffix)
        except OSError as e:
            self.discard()
            raise _output_error("write", self.path(suffix), e, self.what) from None
        except BaseException:
            self.discard()
            raise
        self._written.add(suffix)

    @contextlib.contextmanager
    def open(self, suffix: str) -> Iterator[IO[bytes]]:
        """A binary file to write ``suffix`` into; flushed and synced when the block ends."""
        with self._writing(suffix) as part, open(part, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())

    def write_bytes(self, suffix: str, data: bytes | bytearray | memoryview) -> Path:
        with self.open(suffix) as fh:
            _write_all(fh, data)
        return self.path(suffix)

    def write_text(self, suffix: str, text: str) -> Path:
        return self.write_bytes(suffix, text.encode("utf-8"))

    def write_with(self, suffix: str, writer: Callable[[Path], Any]) -> Path:
        """``writer(part_path)`` writes the file by path (PIL ``save``, plyfile ...); it must create it."""
        with self._writing(suffix) as part:
            writer(part)
            with open(part, "rb+") as fh:
                os.fsync(fh.fileno())
        return self.path(suffix)

    # -- finishing ------------------------------------------------------------------------------------
    def commit(self) -> list[Path]:
        """Place every written file (all or none); release the unused reservations. Returns the paths."""
        if not self._open:
            return self.paths
        placed: list[Path] = []
        try:
            for suffix in self.suffixes:
                if suffix in self._written:
                    final = self.path(suffix)
                    _place(self.part_path(suffix), final)
                    placed.append(final)
        except BaseException as e:
            for p in placed:  # ours: created a moment ago by link/exclusive create
                with contextlib.suppress(OSError):
                    os.unlink(p)
            self.discard()
            if isinstance(e, FileExistsError):
                raise OutputError(
                    f"{e.filename} appeared while this result was being written (another program?); nothing "
                    f"was overwritten and nothing of this result was kept. Run again or choose another {self.what}."
                ) from None
            if isinstance(e, OSError):
                raise _output_error("place", self.folder, e, self.what) from None
            raise
        self._release()
        _fsync_dir(self.folder)
        self.paths = placed
        self._open = False
        return placed

    def _release(self) -> None:
        for suffix in self.suffixes:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.part_path(suffix))

    def discard(self) -> None:
        """Remove every temporary file and the folders this set created; nothing of the result stays."""
        if not self._open:
            return
        self._open = False
        self._release()
        for d in reversed(self._created_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()  # only if empty: never removes anything else

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def __repr__(self) -> str:
        return f"OutputSet({self.folder / self.stem!s}, {list(self.suffixes)})"


def _write_all(fh: IO[bytes], data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` in 16 MiB pieces (tests replace this to simulate a disk that fills up midway)."""
    view = memoryview(data).cast("B")
    for i in range(0, len(view), 1 << 24):
        fh.write(view[i : i + (1 << 24)])


def _make_dirs(folder: Path, what: str) -> list[Path]:
    """Create ``folder`` and missing parents; returns the ones created (deepest last)."""
    missing: list[Path] = []
    p = folder
    try:
        while not p.exists():
            missing.append(p)
            if p.parent == p:
                break
            p = p.parent
    except OSError as e:
        raise _output_error("write into", folder, e, what) from None
    if p.exists() and not p.is_dir():
        raise OutputError(f"cannot write into {folder}: {p} is a file, not a folder. Choose another {what}.")
    created: list[Path] = []
    for d in reversed(missing):
        try:
            d.mkdir()
            created.append(d)
        except FileExistsError:
            if not d.is_dir():
                raise OutputError(
                    f"cannot write into {folder}: {d} is a file, not a folder. Choose another {what}.") from None
        except OSError as e:
            for c in reversed(created):
                with contextlib.suppress(OSError):
                    c.rmdir()
            raise _output_error("create the folder", d, e, what) from None
    return created


def reserve_stem(
    folder: str | os.PathLike,
    name: str,
    suffixes: Iterable[str],
    *,
    what: str = "output name",
    default: str = "output",
) -> OutputSet:
    """Reserve the first free stem ``name``, ``name_00001``, ... in ``folder`` for all ``suffixes``.

    ``name`` is cleaned (:func:`sanitize_name`); a known suffix already on it (``person.glb`` with ``.glb``)
    is dropped. Free means: neither the final file nor its ``.part`` reservation exists for any suffix.
    Missing folders are created (and removed again if the set is discarded). Raises :class:`OutputError`.
    """
    sufs = tuple(dict.fromkeys(clean_suffix(s) for s in suffixes))
    if not sufs:
        raise ValueError("reserve_stem needs at least one suffix")
    raw = str(name)
    for s in sorted(sufs, key=len, reverse=True):
        if s.startswith(".") and raw.lower().endswith(s.lower()) and len(raw) > len(s):
            raw = raw[: -len(s)]
            break
    stem = sanitize_name(raw, default=default)
    root = Path(folder).expanduser()
    created = _make_dirs(root, what)
    try:
        for counter in range(_MAX_COUNTER + 1):
            candidate = stem if counter == 0 else f"{stem}_{counter:05d}"
            got = _try_reserve(root, candidate, sufs, what)
            if got:
                return OutputSet(root, candidate, sufs, what, created)
        raise OutputError(f"{root} already holds {_MAX_COUNTER} results named {stem!r}; choose another {what}.")
    except BaseException:
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _try_reserve(root: Path, stem: str, sufs: tuple[str, ...], what: str) -> bool:
    if any(os.path.lexists(root / f"{stem}{s}") for s in sufs):
        return False
    made: list[Path] = []
    try:
        for s in sufs:
            part = root / f".{stem}{s}{PART}"
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            os.close(fd)
            made.append(part)
        if any(os.path.lexists(root / f"{stem}{s}") for s in sufs):  # placed meanwhile by another writer
            raise FileExistsError
    except FileExistsError:
        for p in made:
            with contextlib.suppress(OSError):
                os.unlink(p)
        return False
    except OSError as e:
        for p in made:
            with contextlib.suppress(OSError):
                os.unlink(p)
        raise _output_error("write into", root, e, what) from None
    except BaseException:
        for p in made:
            with contextlib.suppress(OSError):
                os.unlink(p)
        raise
    return True


def write_file(folder: str | os.PathLike, name: str, suffix: str, data: bytes, *, what: str = "output name") -> Path:
    """One file, one call: reserve, write, place. Returns the final path."""
    with reserve_stem(folder, name, (suffix,), what=what) as out:
        out.write_bytes(suffix, data)
    return out.paths[0]


def replace_atomically(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """For the pack's own files that are meant to be replaced (caches): ``writer(tmp)`` writes a unique
    temporary file next to ``path``, then ``os.replace`` swaps it in. Concurrent writers never share a
    temporary file, readers see the old or the new file, never a mix; the temporary file is removed on
    any failure."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}{PART}")
    try:
        writer(tmp)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return final


def estimate_result_bytes(*, texture_size: int = 0, faces: int = 300_000, gaussians: int = 0, views: int = 0,
                          view_size: int = 768) -> int:
    """A rough upper estimate of one result's size on disk, for the free-space check before compute.

    Mesh: vertices (position, normal, uv: 32 B) ~ faces/2 + uint32 indices (12 B per face); texture: an
    uncompressed-size bound of its PNG; Gaussians PLY: 17 floats each; views: PNG bound per view.
    """
    mesh = faces * 12 + (faces // 2 + 1) * 32
    tex = 3 * texture_size * texture_size
    return mesh + tex + gaussians * 17 * 4 + views * 4 * view_size * view_size + (1 << 20)


def check_output_location(
    folder: str | os.PathLike,
    name: str,
    suffixes: Iterable[str],
    *,
    estimate_bytes: int = 0,
    what: str = "output name",
    default: str = "output",
) -> Path:
    """Cheap checks before compute: the folder (or its nearest existing parent) is a writable folder with
    ``estimate_bytes`` free, and the final names fit the file system. Creates nothing that stays. Returns
    the folder. Raises :class:`OutputError` naming the folder and ``what``."""
    root = Path(folder).expanduser()
    sufs = tuple(clean_suffix(s) for s in suffixes)
    stem = sanitize_name(str(name), default=default)
    longest = max((len(f".{stem}_{_MAX_COUNTER}{s}{PART}".encode()) for s in sufs), default=0)
    full = len(os.fsencode(os.path.abspath(root))) + 1 + longest
    if longest > 255 or full >= _PATH_MAX:
        raise OutputError(f"the output path {root / stem} is too long for this file system "
                          f"({full} bytes, limit {_PATH_MAX}); choose a shorter {what}.")
    try:
        base = root
        while not base.exists():
            if base.parent == base:
                break
            base = base.parent
    except OSError as e:
        raise _output_error("write into", root, e, what) from None
    if not base.is_dir():
        raise OutputError(f"cannot write into {root}: {base} is a file, not a folder. Choose another {what}.")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {root}: {base} is not writable (permission denied). "
                          f"Choose another {what}.")
    try:  # the real test (read-only mounts, ACLs): create and remove a probe file
        probe = base / f".synchuman-probe-{os.getpid()}-{secrets.token_hex(4)}{PART}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as e:
        raise _output_error("write into", root, e, what) from None
    free = shutil.disk_usage(base).free
    if estimate_bytes and free < estimate_bytes:
        raise OutputError(
            f"not enough free space in {base}: about {estimate_bytes / 1e6:.0f} MB needed, "
            f"{free / 1e6:.0f} MB free. Fix: free some space or choose another {what}."
        )
    try:
        name_max = os.pathconf(base, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    if longest > name_max:
        raise OutputError(f"the file names for {stem!r} are too long for the file system of {base} "
                          f"(limit {name_max} bytes); choose a shorter {what}.")
    return root
