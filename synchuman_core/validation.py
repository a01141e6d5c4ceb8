"""Checks shared by the CLI, the batch runner and the nodes, run before anything heavy is loaded.

Every check takes the name the *surface* gives the value (``--steps1`` on the CLI, ``'steps'`` on a node),
so the error speaks the user's language; each failure is a :class:`~synchuman_core.errors.SyncHumanError`
(``InputImageError`` for images) with what to do. Nothing here loads a model or touches the GPU.

* settings: :func:`check_steps`, :func:`check_seed`, :func:`check_texture_size`, :func:`check_choice`;
* the input photo: :func:`prepare_photo` (open the files, EXIF orientation, mask wins over alpha, the
  official background removal when there is no alpha, the framing of both branches - so a missing person
  or a too small one is refused before the models load);
* view batches of any size and aspect: :func:`fit_views` (pad to square on the view background, resize).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, InputImageError, SyncHumanError

__all__ = [
    "CLI_WORDS",
    "MAX_STEPS",
    "SEED_MAX",
    "PhotoInputs",
    "PreparedPhoto",
    "check_choice",
    "check_device",
    "check_seed",
    "check_steps",
    "check_texture_size",
    "fit_views",
    "open_photo",
    "prepare_photo",
    "view_background",
]

logger = logging.getLogger(__name__)

#: Largest step count we accept (the official runs use 50 and 25; more than this is a typo).
MAX_STEPS = 1000
#: Seeds: 0 .. 2**64 - 1 (``torch.Generator.manual_seed``'s range, ComfyUI's seed widget range).
SEED_MAX = 0xFFFF_FFFF_FFFF_FFFF
#: Smallest side a view may have before it is resized (below this it carries no usable detail).
MIN_VIEW_SIDE = 16

#: How the CLI names each input and setting.
CLI_WORDS: dict[str, str] = {
    "where": "",
    "image": "IMAGE",
    "mask": "--mask",
    "background": "--background-model",
    "background_off": "--background-model none",
    "download": "--download",
    "seed": "--seed",
    "steps1": "--steps1",
    "steps2": "--steps2",
    "texture_size": "--texture-size",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_steps(value: Any, name: str) -> int | None:
    """``None`` (use the official default) or an integer in ``1..MAX_STEPS``."""
    if value is None:
        return None
    if not _is_int(value) or not 1 <= int(value) <= MAX_STEPS:
        raise ConfigError(f"{name} must be a whole number from 1 to {MAX_STEPS}, got {value!r}")
    return int(value)


def check_seed(value: Any, name: str) -> int:
    """An integer in ``0..SEED_MAX``."""
    if not _is_int(value) or not 0 <= int(value) <= SEED_MAX:
        raise ConfigError(f"{name} must be a whole number from 0 to {SEED_MAX}, got {value!r}")
    return int(value)


def check_texture_size(value: Any, name: str) -> int:
    """A texture size the bake accepts (:meth:`synchuman_core.geometry.bake.BakeSettings.validate` is the one
    rule), refused at once, not after the stages."""
    from .geometry.bake import BakeSettings

    if not _is_int(value):
        raise ConfigError(f"{name} must be a whole number of pixels, got {value!r} (official: 1024)")
    try:
        BakeSettings(texture_size=int(value)).validate()
    except ConfigError as e:
        raise ConfigError(f"{name}: {e} (official: 1024)") from None
    return int(value)


def check_device(value: Any, name: str) -> str | None:
    """``None`` (automatic) or a device string torch understands and this machine has (``cpu``, ``cuda``,
    ``cuda:1``, ``mps``, ``xpu``...); returns it normalised."""
    if value is None or value == "":
        return None
    try:
        dev = torch.device(str(value))
    except (RuntimeError, ValueError):
        raise ConfigError(f"{name} must be a device such as cpu, cuda, cuda:1 or mps; got {value!r}") from None
    if dev.type == "cpu":
        return str(dev)
    backend = {"cuda": torch.cuda, "mps": getattr(torch.backends, "mps", None),
               "xpu": getattr(torch, "xpu", None)}.get(dev.type)
    if backend is None:
        raise ConfigError(f"{name} {value!r}: SyncHuman runs on cpu, cuda, mps or xpu devices")
    if not backend.is_available():
        raise ConfigError(f"{name} {value!r}: this machine (this PyTorch build) has no {dev.type} device; "
                          "use --device cpu or leave it out")
    count = getattr(backend, "device_count", None)
    if dev.index is not None and callable(count) and dev.index >= count():
        raise ConfigError(f"{name} {value!r}: there is no {dev.type} device {dev.index} ({count()} found)")
    return str(dev)


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    opts = list(choices)
    if value not in opts:
        raise ConfigError(f"{name} must be one of {', '.join(opts)}; got {value!r}")
    return str(value)


# ---------------------------------------------------------------------------------------------------
# The input photo
# ---------------------------------------------------------------------------------------------------


@dataclass
class PreparedPhoto:
    """The checked input: ``rgba`` cut-out (PIL RGBA, alpha = person), ``prepared`` (the official framing at
    768, :class:`~synchuman_core.preprocess.PreparedInput`), where the cut-out came from (``source``: ``"mask"``,
    ``"alpha"`` or ``"background removal (<model>)"``) and the seconds background removal took (0 if none)."""

    rgba: Any
    prepared: Any
    source: str
    background_seconds: float = 0.0


def _has_usable_alpha(image: Any) -> bool:
    """The official has-alpha test on the image's own alpha (any container, mode or layout)."""
    from .preprocess.background import needs_background_removal
    from .preprocess.image import image_alpha

    return not needs_background_removal(image_alpha(image))


@dataclass
class PhotoInputs:
    """The opened photo (+ mask) and the background remover it will need, checked but not yet cut out
    (:func:`open_photo`); :meth:`cut_out` runs the background removal and the framing."""

    image: Any
    mask: Any
    mask_is_inverted: bool
    remover: Any
    words: Mapping[str, str]

    def cut_out(self) -> PreparedPhoto:
        """RGBA cut-out + the framing of both branches; a missing or too small person is refused here."""
        from .preprocess import prepare_input, to_rgba

        where = f"{self.words['where']}: " if self.words.get("where") else ""
        t = time.perf_counter()
        try:
            rgba = to_rgba(self.image, self.mask, mask_is_inverted=self.mask_is_inverted, background=self.remover)
            prepared = prepare_input(rgba)
        except InputImageError as e:
            who = self.words.get("mask", "the mask") if self.mask is not None else self.words.get("image", "the image")
            raise InputImageError(f"{where}{who}: {e}") from None
        seconds = time.perf_counter() - t if self.remover is not None else 0.0
        if self.mask is not None:
            source = "mask"
        elif self.remover is None:
            source = "alpha"
        else:
            source = f"background removal ({self.remover.model})"
            logger.info("background removed with %s in %.2f s", self.remover.path, seconds)
        return PreparedPhoto(rgba=rgba, prepared=prepared, source=source, background_seconds=seconds)


def open_photo(
    image: Any,
    mask: Any = None,
    *,
    words: Mapping[str, str] = CLI_WORDS,
    mask_is_inverted: bool = False,
    background: str | None = "u2net",
    search_dirs: Iterable[str | os.PathLike] | None = None,
    download: bool = False,
    surface: str = "cli",
) -> PhotoInputs:
    """The cheap checks of the input photo, in the surface's words (no model runs here).

    ``image`` / ``mask``: a path (opened with :func:`~synchuman_core.preprocess.loading.open_image`:
    complete decode, bombs, animations, EXIF orientation) or an in-memory image (PIL, array, tensor).
    ``background``: the rembg model used when there is no mask and no usable alpha (``None``: never remove
    the background; such an image is refused). Its model file is resolved here (downloaded only when
    ``download``), so a missing file is reported before anything runs.
    """
    from .preprocess.background import BackgroundRemover, check_model_name
    from .preprocess.loading import open_image

    w_img, w_mask = words.get("image", "the image"), words.get("mask", "the mask")
    where = f"{words['where']}: " if words.get("where") else ""
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image, w_img)
    if isinstance(mask, (str, os.PathLike)):
        mask = open_image(mask, w_mask)
    remover = None
    if mask is None and not _has_usable_alpha(image):
        if background is None:
            raise InputImageError(
                f"{where}{w_img} has no alpha channel (no transparent background), no {w_mask} was given and "
                f"background removal is off ({words.get('background_off', 'background removal off')}). Turn "
                f"background removal on, give {w_mask} (white = person), or use a PNG with a transparent background."
            )
        check_model_name(background, where + words.get("background", "the background model"))
        try:
            remover = BackgroundRemover(background, search_dirs, download=download, surface=surface)
        except SyncHumanError as e:
            raise type(e)(f"{where}{e}") from None
    return PhotoInputs(image=image, mask=mask, mask_is_inverted=mask_is_inverted, remover=remover, words=words)


def prepare_photo(image: Any, mask: Any = None, **kwargs: Any) -> PreparedPhoto:
    """:func:`open_photo` then :meth:`PhotoInputs.cut_out`: the input checked and cut out as the run will."""
    return open_photo(image, mask, **kwargs).cut_out()


# ---------------------------------------------------------------------------------------------------
# View batches of any size
# ---------------------------------------------------------------------------------------------------


def view_background(view: torch.Tensor) -> torch.Tensor:
    """``[3]`` colour of a view's background: the median of its one-pixel border (``view``: ``[3, H, W]``)."""
    border = torch.cat([view[:, 0, :], view[:, -1, :], view[:, :, 0], view[:, :, -1]], dim=1)
    return border.median(dim=1).values


def _pad_square(view: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` -> ``[3, S, S]`` (S = max(H, W)), centred, padded with the view's background colour."""
    _, h, w = view.shape
    if h == w:
        return view
    s = max(h, w)
    out = view_background(view)[:, None, None].expand(3, s, s).clone()
    top, left = (s - h) // 2, (s - w) // 2
    out[:, top:top + h, left:left + w] = view
    return out


def fit_views(images: Any, size: int, name: str, *, counts: tuple[int, ...] = (4, 5)) -> torch.Tensor:
    """A view batch of any size/aspect -> ``[B, 3, size, size]`` float32 in [0, 1].

    ``images``: ComfyUI ``IMAGE [B, H, W, C]`` (C = 3, or 4: composited on white, the stage-1 background)
    or a list of such batches / ``[H, W, C]`` images (each may have its own size; the first image of a
    batch is used). Non-square views are centred on a square of their background colour (the median of
    their border), then resized (bilinear, antialiased) to ``size``.
    """
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise InputImageError(f"{name} must be an IMAGE batch [B, H, W, 3], got shape {tuple(images.shape)}")
        items = list(images.unbind(0))
    elif isinstance(images, (list, tuple)):
        items = [v[0] if isinstance(v, torch.Tensor) and v.ndim == 4 else v for v in images]
    else:
        raise InputImageError(f"{name} must be an IMAGE, got {type(images).__name__}")
    if counts and len(items) not in counts:
        raise InputImageError(f"{name} holds {len(items)} image(s); it needs {' or '.join(map(str, counts))}")
    out = []
    for i, v in enumerate(items):
        if not isinstance(v, torch.Tensor) or v.ndim != 3 or v.shape[-1] not in (1, 3, 4):
            raise InputImageError(f"{name}: view {i} must be an image [H, W, 3]; got {getattr(v, 'shape', v)}")
        h, w = int(v.shape[0]), int(v.shape[1])
        if min(h, w) < MIN_VIEW_SIDE:
            raise InputImageError(f"{name}: view {i} is {w}x{h} pixels; give views of at least "
                                  f"{MIN_VIEW_SIDE} pixels each side (stage 1 makes {size}x{size})")
        x = v.detach().float().cpu()
        if not torch.isfinite(x).all():
            raise InputImageError(f"{name}: view {i} contains NaN or infinite values")
        x = x.clamp(0.0, 1.0)
        if x.shape[-1] == 1:
            x = x.expand(h, w, 3)
        elif x.shape[-1] == 4:
            a = x[..., 3:4]
            x = x[..., :3] * a + (1.0 - a)
        chw = _pad_square(x.permute(2, 0, 1).contiguous())
        if chw.shape[-1] != size:
            chw = F.interpolate(chw[None], size=(size, size), mode="bilinear", align_corners=False,
                                antialias=chw.shape[-1] > size)[0]
        out.append(chw.clamp(0.0, 1.0))
    return torch.stack(out, dim=0).contiguous()
