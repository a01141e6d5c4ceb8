"""Input preprocessing: official framing pixels (MV 768 + face, DINO 518), input forms and user errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from synchuman_core.errors import InputImageError
from synchuman_core.preprocess import (
    FACE_BOX,
    dino_input,
    multiview_input,
    prepare_input,
    to_rgba,
)
from synchuman_core.preprocess.framing import dino_crop_box, multiview_canvas

COLOR = (200, 100, 50)


def _block_rgba(h=64, w=64, box=(10, 5, 29, 44), color=COLOR) -> np.ndarray:
    """Opaque ``color`` block on transparent black; ``box`` = inclusive (x0, y0, x1, y1)."""
    a = np.zeros((h, w, 4), np.uint8)
    x0, y0, x1, y1 = box
    a[y0 : y1 + 1, x0 : x1 + 1] = (*color, 255)
    return a


def test_multiview_framing_reproduces_the_pil_off_by_one():
    rgba = to_rgba(_block_rgba())
    canvas = np.asarray(multiview_canvas(rgba))
    # block is 20x40 (inclusive); PIL's exclusive crop keeps 19x39 -> scale 768/39 -> 374x768 at x = 197
    cols = np.flatnonzero(canvas[..., 3].any(axis=0))
    rows = np.flatnonzero(canvas[..., 3].any(axis=1))
    assert (cols[0], cols[-1]) == (197, 197 + 374 - 1)
    assert (rows[0], rows[-1]) == (0, 767)
    assert (canvas[:, 197:571, 3] == 255).all()

    views = multiview_input(rgba)
    assert views.shape == (5, 3, 768, 768) and views.dtype == torch.float32
    assert torch.equal(views[0], views[3])
    expect = torch.tensor(COLOR, dtype=torch.float32) / 255
    torch.testing.assert_close(views[0][:, 400, 300], expect)
    assert (views[0][:, :, :197] == 1).all() and (views[0][:, :, 571:] == 1).all()  # white background
    # view 4 = bicubic close-up of the canvas box (256, 0, 512, 256), composited on white
    face = Image.fromarray(canvas).crop(FACE_BOX).resize((768, 768), Image.Resampling.BICUBIC)
    f = np.asarray(face).astype(np.float32) / 255
    ref = f[..., :3] * f[..., 3:4] + (1 - f[..., 3:4])
    torch.testing.assert_close(views[4], torch.from_numpy(ref).permute(2, 0, 1))


def test_dino_framing_square_margin_and_premultiplied_black_background():
    a = _block_rgba()
    a[20, 15, 3] = 128  # one half-transparent pixel inside
    rgba = to_rgba(a)
    # centre (19.5, 24.5), side int(39 * 1.2) = 46 -> (-3.5, 1.5, 42.5, 47.5); PIL rounds half to even
    assert dino_crop_box(rgba) == (-3.5, 1.5, 42.5, 47.5)
    out = dino_input(rgba)
    assert out.shape == (518, 518, 3) and out.dtype == np.uint8
    assert (out[:5, :5] == 0).all() and (out[-5:, -5:] == 0).all()  # black outside the person
    assert tuple(out[259, 259]) == COLOR  # opaque inside: colour unchanged
    ref = Image.fromarray(a).crop((-4, 2, 42, 48)).resize((518, 518), Image.Resampling.LANCZOS)
    r = np.asarray(ref).astype(np.float32) / 255
    np.testing.assert_array_equal(out, ((r[..., :3] * r[..., 3:4]) * 255).astype(np.uint8))


def test_dino_threshold_uses_alpha_above_80_percent():
    a = _block_rgba()
    a[5:45, 10:30, 3] = 200  # 200 <= 0.8*255: not part of the DINO box
    a[30:40, 12:20, 3] = 255
    box = dino_crop_box(to_rgba(a))
    cx, cy = (12 + 19) / 2, (30 + 39) / 2
    side = int(9 * 1.2)
    assert box == (cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2)
    a[30:40, 12:20, 3] = 204  # exactly 0.8*255 is not above the threshold
    with pytest.raises(InputImageError, match="0.8"):
        dino_input(to_rgba(a))


def _forms(a: np.ndarray):
    """The same RGBA cut-out in every supported container / mode."""
    rgb, alpha = a[..., :3], a[..., 3]
    f = torch.from_numpy(rgb).float()[None] / 255  # ComfyUI IMAGE [1,H,W,3]
    comfy_mask = 1.0 - torch.from_numpy(alpha).float()[None] / 255  # LoadImage MASK = 1 - alpha
    yield "PIL RGBA", (Image.fromarray(a, "RGBA"),), {}
    yield "numpy RGBA", (a,), {}
    yield "torch CHW uint8", (torch.from_numpy(a).permute(2, 0, 1),), {}
    yield "numpy uint16 RGBA", (a.astype(np.uint16) * 257,), {}
    yield "numpy float RGBA", (a.astype(np.float64) / 255,), {}
    yield "PIL RGB + L mask", (Image.fromarray(rgb), Image.fromarray(alpha, "L")), {}
    yield "ComfyUI IMAGE + inverted MASK", (f, comfy_mask), {"mask_is_inverted": True}
    yield "float IMAGE + bool-ish mask", (f[0], torch.from_numpy(alpha)), {}
    yield "PIL RGBa premultiplied", (Image.fromarray(a, "RGBA").convert("RGBa"),), {}


def test_input_forms_give_identical_results():
    a = _block_rgba()
    ref = prepare_input(a)
    for name, args, kw in _forms(a):
        got = prepare_input(*args, **kw)
        assert torch.equal(got.mv_views, ref.mv_views), name
        np.testing.assert_array_equal(got.dino_image, ref.dino_image, err_msg=name)


def test_gray_palette_and_16_bit_inputs():
    a = _block_rgba(color=(90, 90, 90))
    gray, alpha = a[..., 0], a[..., 3]
    ref = prepare_input(a)
    la = Image.fromarray(np.dstack([gray, alpha]), "LA")
    assert torch.equal(prepare_input(la).mv_views, ref.mv_views)
    assert torch.equal(prepare_input(Image.fromarray(gray, "L"), alpha).mv_views, ref.mv_views)
    i16 = Image.fromarray(gray.astype(np.uint16) * 257).convert("I;16")
    assert i16.mode == "I;16"
    assert torch.equal(prepare_input(i16, alpha).mv_views, ref.mv_views)
    assert torch.equal(prepare_input(gray.astype(np.uint16) * 257, alpha > 0).mv_views, ref.mv_views)
    # palette image with a transparent index
    p = Image.fromarray(a[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    idx = np.asarray(p).copy()
    idx[alpha == 0] = 3
    pal = p.getpalette()[:12]
    pal[9:12] = [0, 0, 0]
    p2 = Image.fromarray(idx, "P")
    p2.putpalette(pal)
    p2.info["transparency"] = 3
    assert torch.equal(prepare_input(p2).mv_views, ref.mv_views)


def test_mask_of_another_size():
    a = _block_rgba(128, 64, box=(10, 10, 50, 120))
    half_mask = np.asarray(Image.fromarray(a[..., 3]).resize((32, 64), Image.Resampling.NEAREST))
    out = prepare_input(a[..., :3], half_mask)  # same aspect ratio: resized
    assert out.mv_views.shape == (5, 3, 768, 768)
    with pytest.raises(InputImageError, match="32x32"):
        prepare_input(a[..., :3], np.ones((32, 32), np.float32) * 0.5)


@pytest.mark.parametrize(
    "args, kw, match",
    [
        ((np.full((32, 32, 3), 128, np.uint8),), {}, "no alpha channel"),
        ((np.full((32, 32, 4), 255, np.uint8),), {}, "fully opaque"),
        ((np.zeros((32, 32, 4), np.uint8),), {}, "empty"),
        ((np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32))), {}, "empty"),
        ((np.zeros((32, 32, 3), np.uint8), np.zeros((1, 32, 32))), {"mask_is_inverted": True}, "fully opaque"),
        ((np.zeros((2, 32, 32, 3), np.float32),), {}, "batch of 2"),
        ((np.full((8, 8, 4), np.nan, np.float32),), {}, "NaN"),
        ((np.zeros((8, 8, 5), np.uint8),), {}, "channels"),
        ((np.zeros((8, 8, 4), np.float32) + 300,), {}, "0..1"),
        (("image.png",), {}, "PIL image"),
        ((np.zeros((0, 5, 4), np.uint8),), {}, "empty"),
        ((_block_rgba(box=(3, 3, 6, 40)),), {}, "pixels"),
    ],
)
def test_user_errors(args, kw, match):
    with pytest.raises(InputImageError, match=match):
        prepare_input(*args, **kw)


def test_error_message_tells_what_to_do():
    with pytest.raises(InputImageError) as e:
        prepare_input(Image.new("RGB", (64, 64), (10, 20, 30)))
    msg = str(e.value)
    assert "alpha" in msg and "mask" in msg and "background removal" in msg


def test_crop_before_downsize_keeps_the_official_framing():
    """A canvas above MAX_SIDE is cropped to the person first; the framing is byte-identical to the uncropped
    image (odd subject offsets included: crops start at even coordinates)."""
    big = np.zeros((300, 5001, 4), np.uint8)
    big[37:251, 1001:1080] = (10, 200, 30, 255)
    big[60:90, 1020:1060, 3] = 128  # soft alpha inside: both DINO threshold and MV box matter
    a, b = prepare_input(big), prepare_input(big[:, :4096])  # b: not above MAX_SIDE, so not cropped
    assert to_rgba(big).size == (84, 219)  # the person (79x214) + margins, not 5001 wide
    assert torch.equal(a.mv_views, b.mv_views) and np.array_equal(a.dino_image, b.dino_image)


def test_soft_mask_below_dino_threshold_is_reported():
    a = _block_rgba()
    a[..., 3] = np.where(a[..., 3] > 0, 150, 0)
    rgba = to_rgba(a)
    assert multiview_input(rgba).shape == (5, 3, 768, 768)  # the MV branch only needs alpha > 0
    with pytest.raises(InputImageError, match="opaque"):
        dino_input(rgba)


def test_huge_and_tiny_images():
    big = np.zeros((5000, 300, 4), np.uint8)
    big[100:4900, 50:250] = (10, 200, 30, 255)
    rgba = to_rgba(big)
    assert max(rgba.size) == 4096
    out = prepare_input(big)
    assert out.mv_views.shape == (5, 3, 768, 768) and out.dino_image.shape == (518, 518, 3)
    tiny = np.zeros((32, 10, 4), np.uint8)
    tiny[0:32, 1:10] = 255
    out = prepare_input(tiny)  # 9x32 person in a 10x32 image works (the smallest accepted)
    tiny[0:31] = 0
    with pytest.raises(InputImageError, match="covers only 9x1 pixels, too small"):
        prepare_input(tiny)
    assert out.mv_views.shape == (5, 3, 768, 768)
