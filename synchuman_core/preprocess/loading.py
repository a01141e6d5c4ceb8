"""Open an image file as people have them, fully decoded and upright, or refuse it with our error.

:func:`open_image` is the one way the CLI, the batch runner and tests read a photo or a mask from disk:

* the file exists, is a file and is readable (permission errors name the file);
* it is an image Pillow knows (``UnidentifiedImageError`` -> our error naming the formats that work);
* its size is checked from the header *before* decoding: above :data:`MAX_PIXELS` (Pillow's own
  decompression-bomb limit) it is refused, so a 50 kB file that claims 100 000 x 100 000 pixels never
  allocates anything;
* it decodes completely: truncated or corrupt data is refused (Pillow would otherwise fill the missing
  rows with grey and carry on);
* animations and multi-page files: the first frame is used, with a warning naming the frame count;
* EXIF orientation is applied (a phone photo stored sideways comes out upright, and so does its mask).

``what`` names the input in the words of the surface that reads it (``"IMAGE"``, ``"--mask"``, ...).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import InputImageError

__all__ = ["MAX_PIXELS", "exif_upright", "open_image"]

logger = logging.getLogger(__name__)

#: Largest image we decode (pixels): Pillow's decompression-bomb error limit (2 x MAX_IMAGE_PIXELS,
#: about 179 megapixels, e.g. 16 384 x 10 922). Larger real photos are rare; bombs are not.
MAX_PIXELS = 2 * 89_478_485

_FORMATS_HELP = "save it as PNG (with a transparent background) or JPEG"


def exif_upright(img: Image.Image) -> Image.Image:
    """``img`` rotated/flipped as its EXIF Orientation tag says (a copy without the tag; same object if none)."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception as e:  # noqa: BLE001 - a damaged EXIF block must not stop a usable image
        logger.warning("ignoring unreadable EXIF data: %s", e)
        return img
    if orientation in (None, 1):
        return img
    out = ImageOps.exif_transpose(img)
    logger.info("EXIF orientation %s applied (%dx%d -> %dx%d)", orientation, img.width, img.height,
                out.width, out.height)
    return out


def open_image(path: str | os.PathLike, what: str = "the image") -> Image.Image:
    """Open, check and fully decode one image file; see the module docstring. Raises :class:`InputImageError`."""
    p = Path(path)
    if not p.exists():
        raise InputImageError(f"{what}: {p} does not exist")
    if p.is_dir():
        raise InputImageError(f"{what}: {p} is a folder; give an image file")
    if not os.access(p, os.R_OK):
        raise InputImageError(f"{what}: cannot read {p} (permission denied); check the file's permissions")
    try:
        with warnings.catch_warnings():
            # Pillow warns between MAX_IMAGE_PIXELS and 2x; our own limit below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(p)
    except UnidentifiedImageError:
        raise InputImageError(f"{what}: {p} is not an image Pillow can read; {_FORMATS_HELP}") from None
    except Image.DecompressionBombError as e:
        raise InputImageError(
            f"{what}: {p} is larger than {MAX_PIXELS / 1e6:.0f} megapixels, too large to decode safely ({e}); "
            "resize it first (the person needs about 1000 pixels of height)"
        ) from None
    except PermissionError:
        raise InputImageError(f"{what}: cannot read {p} (permission denied); check the file's permissions") from None
    except OSError as e:
        raise InputImageError(f"{what}: {p} is damaged or truncated and cannot be opened ({e}); {_FORMATS_HELP} "
                              "again") from None
    try:
        return _decode(img, p, what)
    finally:
        img.close()


def _decode(img: Image.Image, p: Path, what: str) -> Image.Image:
    w, h = img.size
    if w < 1 or h < 1:
        raise InputImageError(f"{what}: {p} has no pixels ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise InputImageError(
            f"{what}: {p} is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels); the limit is "
            f"{MAX_PIXELS / 1e6:.0f} megapixels. Resize it first (the person needs about 1000 pixels of height)"
        )
    frames = int(getattr(img, "n_frames", 1) or 1)
    if frames > 1:
        logger.warning("%s: %s has %d frames (animation or multi-page file); using the first one", what, p, frames)
        img.seek(0)
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES  # a host may have set it; we want truncation reported
    try:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise InputImageError(
            f"{what}: {p} is damaged or truncated and cannot be decoded completely ({e}); {_FORMATS_HELP} again"
        ) from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    out = exif_upright(img)
    if out is img:
        out = img.copy()  # detach from the file (the caller's handle is closed)
    out.info.pop("exif", None)
    return out
