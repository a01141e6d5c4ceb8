"""Property tests: any image/mask combination gives documented shapes and ranges, or InputImageError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from synchuman_core.errors import InputImageError
from synchuman_core.preprocess import dino_input, multiview_input, prepare_input, to_rgba

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SMALL = 96  # small output sizes keep each example fast; the framing code is size-agnostic
SMALL_FACE = (32, 0, 64, 32)
SMALL_DINO = 56

CONTAINERS = [
    "pil_rgba",
    "pil_la",
    "pil_rgb+mask",
    "pil_l+mask",
    "pil_p",
    "pil_i16+mask",
    "pil_f+mask",
    "np_uint8_rgba",
    "np_uint16_rgba",
    "np_float_rgba",
    "np_gray_alpha",
    "torch_bhwc+mask_inverted",
    "torch_chw_rgba",
    "np_int32+mask",
    "rgba+mask_other_size",
]


@st.composite
def cases(draw):
    h = draw(st.integers(1, 80))
    w = draw(st.integers(1, 80))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["empty", "full", "rect", "noise", "soft", "rect_soft_edge"]))
    alpha = np.zeros((h, w), np.uint8)
    if kind == "full":
        alpha[:] = 255
    elif kind in ("rect", "rect_soft_edge"):
        y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        y1, x1 = draw(st.integers(y0, h - 1)), draw(st.integers(x0, w - 1))
        alpha[y0 : y1 + 1, x0 : x1 + 1] = 255
        if kind == "rect_soft_edge":
            alpha[y0, x0 : x1 + 1] = 100
    elif kind == "noise":
        alpha = (rng.random((h, w)) > 0.5).astype(np.uint8) * 255
    elif kind == "soft":
        alpha = rng.integers(0, 200, (h, w), dtype=np.uint8)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    container = draw(st.sampled_from(CONTAINERS))
    return container, rgb, alpha


def _build(container: str, rgb: np.ndarray, alpha: np.ndarray):
    rgba = np.dstack([rgb, alpha])
    gray = rgb[..., 0]
    if container == "pil_rgba":
        return (Image.fromarray(rgba, "RGBA"),), {}
    if container == "pil_la":
        return (Image.fromarray(np.dstack([gray, alpha]), "LA"),), {}
    if container == "pil_rgb+mask":
        return (Image.fromarray(rgb, "RGB"), Image.fromarray(alpha, "L")), {}
    if container == "pil_l+mask":
        return (Image.fromarray(gray, "L"), alpha.astype(bool)), {}
    if container == "pil_p":
        return (Image.fromarray(rgba, "RGBA").convert("P"),), {}
    if container == "pil_i16+mask":
        return (Image.fromarray(gray.astype(np.uint16) * 257).convert("I;16"), alpha / 255.0), {}
    if container == "pil_f+mask":
        return (Image.fromarray(gray.astype(np.float32) / 255, "F"), alpha), {}
    if container == "np_uint8_rgba":
        return (rgba,), {}
    if container == "np_uint16_rgba":
        return (rgba.astype(np.uint16) * 257,), {}
    if container == "np_float_rgba":
        return (rgba.astype(np.float32) / 255,), {}
    if container == "np_gray_alpha":
        return (np.dstack([gray, alpha]),), {}
    if container == "torch_bhwc+mask_inverted":
        img = torch.from_numpy(rgb).float()[None] / 255
        return (img, 1 - torch.from_numpy(alpha).float()[None] / 255), {"mask_is_inverted": True}
    if container == "torch_chw_rgba":
        return (torch.from_numpy(rgba).permute(2, 0, 1).contiguous(),), {}
    if container == "np_int32+mask":
        return (rgb.astype(np.int32),), {"mask": torch.from_numpy(alpha)}
    if container == "rgba+mask_other_size":
        h, w = alpha.shape
        other = np.asarray(Image.fromarray(alpha).resize((max(1, w // 2), max(1, h // 2))))
        return (rgb, other), {}
    raise AssertionError(container)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_any_input_gives_documented_outputs_or_input_error(case):
    container, rgb, alpha = case
    args, kw = _build(container, rgb, alpha)
    try:
        rgba = to_rgba(*args, **kw)
    except InputImageError:
        return
    assert rgba.mode == "RGBA" and rgba.size[0] >= 1 and rgba.size[1] >= 1
    a = np.asarray(rgba)[..., 3]
    assert a.any() and not (a == 255).all()
    try:
        views = multiview_input(rgba, size=SMALL, face_box=SMALL_FACE)
    except InputImageError:
        views = None
    if views is not None:
        assert views.shape == (5, 3, SMALL, SMALL) and views.dtype == torch.float32
        assert views.min() >= 0 and views.max() <= 1 and torch.isfinite(views).all()
    try:
        d = dino_input(rgba, size=SMALL_DINO)
    except InputImageError:
        return
    assert d.shape == (SMALL_DINO, SMALL_DINO, 3) and d.dtype == np.uint8


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_full_size_prepare_input(case):
    container, rgb, alpha = case
    args, kw = _build(container, rgb, alpha)
    try:
        out = prepare_input(*args, **kw)
    except InputImageError as e:
        assert str(e)  # every refusal explains itself
        return
    assert out.mv_views.shape == (5, 3, 768, 768) and out.mv_views.dtype == torch.float32
    assert 0 <= float(out.mv_views.min()) and float(out.mv_views.max()) <= 1
    assert out.dino_image.shape == (518, 518, 3) and out.dino_image.dtype == np.uint8


@settings(max_examples=40, deadline=None)
@given(
    st.integers(32, 60),
    st.integers(8, 60),
    st.integers(0, 40),
    st.integers(0, 40),
    st.integers(1, 60),
    st.integers(1, 60),
)
def test_opaque_rectangle_always_works(bh, bw, y0, x0, pad_y, pad_x):
    """A solid opaque person box of at least 8 pixels wide and 32 tall inside a larger transparent image never fails."""
    # the image always holds the whole box (a box cut by the border is a smaller person, refused by its own test)
    h, w = y0 + bh + pad_y, x0 + bw + pad_x
    a = np.zeros((h, w, 4), np.uint8)
    a[y0 : y0 + bh, x0 : x0 + bw] = (50, 60, 70, 255)
    rgba = to_rgba(a)
    views = multiview_input(rgba, size=SMALL, face_box=SMALL_FACE)
    # the longer side of the (cropped) box spans the canvas
    canvas_alpha = (views[0] < 1).any(dim=0)
    rows = torch.nonzero(canvas_alpha.any(dim=1)).flatten()
    cols = torch.nonzero(canvas_alpha.any(dim=0)).flatten()
    # (int(scale * side) may lose one pixel to float rounding, as in the official code)
    assert rows[0] == 0 and rows[-1] >= SMALL - 2 or cols[0] == 0 and cols[-1] >= SMALL - 2
    d = dino_input(rgba, size=SMALL_DINO)
    assert tuple(d[SMALL_DINO // 2, SMALL_DINO // 2]) == (50, 60, 70)  # opaque centre keeps its colour
