"""Background removal as the official pipeline does it (``rembg`` with ``u2net``), with a choice of models.

Official behaviour (``SyncHumanOneStagePipeline.preprocess_image``, same in ``SyncHumanTwoStage``): an input
whose alpha channel is 255 everywhere (or that has none) is converted to RGB, downsized so that its longer
side is at most 1024 pixels (``int(side * scale)``, LANCZOS; never upsized) and cut out with
``rembg.remove(image, session=rembg.new_session("u2net"))``. :func:`needs_background_removal` is that test
(generalised: any alpha channel - RGBA, LA, a palette with transparency - counts when not 255 everywhere),
:func:`official_downsize` the resize and :class:`BackgroundRemover` the rembg call.

Model files (``<name>.onnx``) are looked up, in this order, in:

1. the folders given by the caller: ``<models root>/rembg/`` (ComfyUI: ``models/synchuman/rembg/``; CLI:
   ``<--models>/rembg/``), flat (``rembg/u2net.onnx``) or in rembg's own layout
   (``rembg/models/u2net/u2net.onnx``);
2. rembg's own home: ``$U2NET_HOME`` (or ``~/.u2net``) flat, and ``$REMBG_HOME``/``$XDG_DATA_HOME/rembg``/
   ``~/.rembg`` as ``models/<name>/<name>.onnx``.

Nothing is downloaded implicitly: a missing file is a :class:`WeightsNotFoundError` naming the file, the
folders and the command; :func:`download_rembg_model` fetches one on request (rembg's own URL and md5,
through rembg's downloader). rembg is told exactly which file to open (its home is pointed at the folder
holding it and its checksum is skipped for that one call, so a file we found is never replaced or re-fetched),
and the session's model path is checked afterwards.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputImageError, SyncHumanError, WeightsNotFoundError

__all__ = [
    "DEFAULT_REMBG_MODEL",
    "OFFICIAL_MAX_SIDE",
    "REMBG_MODELS",
    "REMBG_SUBDIR",
    "BackgroundRemover",
    "download_rembg_model",
    "find_rembg_model",
    "needs_background_removal",
    "official_downsize",
    "remove_background_official",
    "rembg_search_dirs",
    "write_tiny_rembg_model",
]

logger = logging.getLogger(__name__)

#: The official model first, then the human / general models rembg ships that we offer.
REMBG_MODELS: dict[str, str] = {
    "u2net": "official SyncHuman choice (176 MB)",
    "u2net_human_seg": "U^2-Net trained on people (176 MB)",
    "birefnet-portrait": "BiRefNet portrait matting, finest hair edges, slowest (973 MB)",
    "isnet-general-use": "IS-Net general objects (179 MB)",
}
DEFAULT_REMBG_MODEL = "u2net"
#: Official downsize before background removal: longer side at most this many pixels.
OFFICIAL_MAX_SIDE = 1024
#: Sub-folder of a SyncHuman models root that holds the rembg ``.onnx`` files.
REMBG_SUBDIR = "rembg"
#: How the user asks for a download, per surface (used in the missing-file error).
DOWNLOAD_HINTS = {
    "cli": "add --download to fetch it (or run `python -m synchuman_core download --rembg {name}`); or give "
           "--mask, or an image with a transparent background",
    "comfy": "set 'download_missing' on a SyncHuman Remove Background node, or run `python -m synchuman_core "
             "download --rembg {name} --models <ComfyUI>/models/synchuman`; or connect a person MASK, or load an "
             "image with a transparent background",
}

_ENV_LOCK = threading.Lock()
_SESSIONS: OrderedDict[tuple[str, str], Any] = OrderedDict()
_MAX_SESSIONS = 2


# ---------------------------------------------------------------------------------------------------
# The official has-alpha test and resize
# ---------------------------------------------------------------------------------------------------


def needs_background_removal(alpha: np.ndarray | None) -> bool:
    """The official test: no alpha channel, or an alpha channel that is 255 everywhere."""
    return alpha is None or bool((alpha == 255).all())


def official_downsize(image: Image.Image, max_side: int = OFFICIAL_MAX_SIDE) -> Image.Image:
    """Official resize before rembg: scale ``min(1, max_side / longer side)``, ``int()`` sizes, LANCZOS."""
    scale = min(1.0, max_side / max(image.size))
    if scale >= 1.0:
        return image
    size = (int(image.width * scale), int(image.height * scale))
    logger.info("downsizing %dx%d to %dx%d before background removal (official)", *image.size, *size)
    return image.resize(size, Image.Resampling.LANCZOS)


# ---------------------------------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------------------------------


def check_model_name(name: str, what: str = "the background model") -> str:
    if name not in REMBG_MODELS:
        raise SyncHumanError(f"{what} must be one of {', '.join(REMBG_MODELS)}; got {name!r}")
    return name


def rembg_home_dirs() -> list[Path]:
    """rembg's own folders: ``$U2NET_HOME`` or ``~/.u2net`` (flat) and its per-model home (``models/<name>/``)."""
    dirs = [Path(os.path.expanduser(os.getenv("U2NET_HOME") or
                                    os.path.join(os.getenv("XDG_DATA_HOME", "~"), ".u2net")))]
    xdg = os.getenv("XDG_DATA_HOME")
    home = os.getenv("REMBG_HOME") or (os.path.join(xdg, "rembg") if xdg else os.path.join("~", ".rembg"))
    if not os.getenv("U2NET_HOME"):
        dirs.append(Path(os.path.expanduser(home)))
    return list(dict.fromkeys(dirs))


def rembg_search_dirs(model_roots: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """``<root>/rembg`` for every SyncHuman models root, then rembg's own home folders."""
    ours = [Path(r).expanduser() / REMBG_SUBDIR for r in model_roots]
    return list(dict.fromkeys(ours + rembg_home_dirs()))


def _candidates(folder: Path, name: str) -> list[Path]:
    # rembg's own order: its per-model folder first, then the flat (legacy) file
    return [folder / "models" / name / f"{name}.onnx", folder / f"{name}.onnx"]


def find_rembg_model(name: str, search_dirs: Iterable[str | os.PathLike]) -> Path | None:
    """The first existing ``<name>.onnx`` in ``search_dirs`` (flat or rembg layout), or None."""
    check_model_name(name)
    for d in search_dirs:
        for p in _candidates(Path(d), name):
            if p.is_file() and p.stat().st_size > 0:
                return p
    return None


def missing_model_error(name: str, search_dirs: list[Path], surface: str = "cli") -> WeightsNotFoundError:
    """One line: the file, the folders looked in, where to put it and the command that fetches it."""
    where = ", ".join(str(d) for d in search_dirs) or "(no folder)"
    hint = DOWNLOAD_HINTS.get(surface, DOWNLOAD_HINTS["cli"]).format(name=name)
    target = search_dirs[0] if search_dirs else Path(REMBG_SUBDIR)
    return WeightsNotFoundError(
        f"the background-removal model {name}.onnx ({REMBG_MODELS[name]}) is not in {where}; put it into "
        f"{target}, or {hint}"
    )


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0]


def _session_class(name: str) -> type:
    try:
        from rembg.sessions import sessions_class
    except ImportError as e:  # rembg is a dependency; a broken install gets a clear message
        raise SyncHumanError(
            f"background removal needs the rembg package ({e}); install it with `pip install rembg onnxruntime` "
            "(or onnxruntime-gpu), or give an image with a transparent background or a mask"
        ) from None
    for cls in sessions_class:
        if cls.name() == name:
            return cls
    raise SyncHumanError(f"this rembg version has no model {name!r}; upgrade rembg (pip install -U rembg)")


@contextmanager
def _rembg_env(home: Path, *, checksum: bool) -> Iterator[None]:
    """Point rembg's home at ``home`` (and optionally skip its checksum) for one call; restored after."""
    keys = ("U2NET_HOME", "MODEL_CHECKSUM_DISABLED")
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in keys}
        os.environ["U2NET_HOME"] = str(home)
        if checksum:
            os.environ.pop("MODEL_CHECKSUM_DISABLED", None)
        else:
            os.environ["MODEL_CHECKSUM_DISABLED"] = "1"
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _home_for(path: Path, name: str) -> Path:
    """The ``U2NET_HOME`` under which rembg finds ``path``: its folder (flat) or the root of ``models/<name>/``."""
    if path.parent.name == name and path.parent.parent.name == "models":
        return path.parent.parent.parent
    return path.parent


def download_rembg_model(name: str = DEFAULT_REMBG_MODEL, folder: str | os.PathLike | None = None) -> Path:
    """Fetch ``<name>.onnx`` into ``folder`` (default rembg's home) with rembg's own URL and md5 check.

    Returns the file's path; an existing file is kept (no network access). Network failures become a
    :class:`WeightsNotFoundError` naming the file and the folder.
    """
    check_model_name(name)
    target = Path(folder).expanduser() if folder is not None else rembg_home_dirs()[0]
    found = find_rembg_model(name, [target])
    if found is not None:
        return found
    target.mkdir(parents=True, exist_ok=True)
    cls = _session_class(name)
    try:
        with _rembg_env(target, checksum=True):
            got = Path(cls.download_models())
    except Exception as e:  # noqa: BLE001 - pooch/requests raise many types; all mean "not fetched"
        raise WeightsNotFoundError(
            f"downloading the background-removal model {name}.onnx into {target} failed "
            f"({type(e).__name__}: {e}); download it on another machine and copy it there"
        ) from None
    found = find_rembg_model(name, [target])
    if found is None:
        raise WeightsNotFoundError(f"rembg reported {got} but {name}.onnx is not in {target}")
    logger.info("downloaded %s", found)
    return found


def _open_session(name: str, path: Path) -> Any:
    """A rembg session on exactly ``path`` (``rembg.new_session``), cached per (name, path)."""
    key = (name, str(path.resolve()))
    with _ENV_LOCK:
        sess = _SESSIONS.get(key)
        if sess is not None:
            _SESSIONS.move_to_end(key)
            return sess
    _session_class(name)  # clear error when rembg is missing or too old
    from rembg import new_session

    try:
        with _rembg_env(_home_for(path, name), checksum=False):
            sess = new_session(name)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
        raise SyncHumanError(
            f"cannot load the background-removal model {path} ({type(e).__name__}: {_first_line(e)}); "
            "delete it and download it again"
        ) from None
    loaded = getattr(getattr(sess, "inner_session", None), "_model_path", None)
    if loaded is not None and Path(loaded).resolve() != path.resolve():
        raise SyncHumanError(f"rembg opened {loaded} instead of {path}; check U2NET_HOME / REMBG_HOME")
    with _ENV_LOCK:
        _SESSIONS[key] = sess
        while len(_SESSIONS) > _MAX_SESSIONS:
            _SESSIONS.popitem(last=False)
    return sess


class BackgroundRemover:
    """``remover(rgb PIL image) -> RGBA cut-out`` with one rembg model; the model file is resolved at once.

    ``search_dirs``: folders to look in (see :func:`rembg_search_dirs`); ``download``: fetch a missing file
    into the first folder instead of raising; ``surface``: ``"cli"`` or ``"comfy"``, the words of the
    missing-file error.
    """

    def __init__(self, model: str = DEFAULT_REMBG_MODEL, search_dirs: Iterable[str | os.PathLike] | None = None,
                 *, download: bool = False, surface: str = "cli") -> None:
        self.model = check_model_name(model)
        dirs = [Path(d) for d in (search_dirs if search_dirs is not None else rembg_search_dirs())]
        path = find_rembg_model(model, dirs)
        if path is None:
            if not download:
                raise missing_model_error(model, dirs, surface)
            path = download_rembg_model(model, dirs[0] if dirs else None)
        self.path = path

    def __repr__(self) -> str:
        return f"BackgroundRemover({self.model!r}, {str(self.path)!r})"

    def __call__(self, rgb: Image.Image) -> Image.Image:
        """RGBA cut-out of ``rgb`` (alpha = the model's mask), as ``rembg.remove`` returns it."""
        import rembg

        sess = _open_session(self.model, self.path)
        try:
            out = rembg.remove(rgb, session=sess)
        except Exception as e:  # noqa: BLE001 - onnxruntime errors (wrong model file) have many types
            raise SyncHumanError(
                f"background removal with {self.path} failed ({type(e).__name__}: {_first_line(e)}); "
                "the file may be damaged or not a rembg model: delete it and download it again"
            ) from None
        return out if out.mode == "RGBA" else out.convert("RGBA")


def remove_background_official(rgb: Image.Image, remover: BackgroundRemover) -> Image.Image:
    """The official no-alpha branch: RGB, downsize to <= 1024 (LANCZOS), rembg -> RGBA cut-out."""
    if not isinstance(remover, BackgroundRemover):
        raise InputImageError(f"background removal needs a BackgroundRemover, got {type(remover).__name__}")
    return remover(official_downsize(rgb.convert("RGB")))


# ---------------------------------------------------------------------------------------------------
# A tiny model with u2net's signature (tests, smoke runs of the workflows; no network)
# ---------------------------------------------------------------------------------------------------


def write_tiny_rembg_model(path: str | os.PathLike, *, threshold: float = 6.5) -> Path:
    """Write a tiny ONNX "person detector" with u2net's signature (``[1, 3, H, W]`` -> ``[1, 1, H, W]``).

    It scores a pixel by how far it is from white: ``relu(threshold - sum of the normalised channels)``
    (rembg normalises with the ImageNet mean/std), so a figure on a light background is cut out. Random
    weights would make no sense here: the file only proves the rembg code path. Needs the ``onnx`` package.
    """
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [-1.0, -1.0, -1.0])
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [float(threshold)])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input.1", "w", "b"], ["score"]),
         helper.make_node("Relu", ["score"], ["d0"])],
        "tiny_person_detector",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("d0", TensorProto.FLOAT, [1, 1, "height", "width"])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="synchuman-tiny")
    model.ir_version = 8
    onnx.checker.check_model(model)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    os.replace(tmp, p)
    return p
