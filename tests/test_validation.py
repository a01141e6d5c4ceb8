"""Inputs as people have them (files of every kind) and the settings checks shared by the CLI and the nodes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from synchuman_core.errors import ConfigError, InputImageError
from synchuman_core.preprocess import background as bg
from synchuman_core.preprocess import to_rgba
from synchuman_core.preprocess.background import write_tiny_rembg_model
from synchuman_core.preprocess.loading import MAX_PIXELS, open_image
from synchuman_core.validation import (
    SEED_MAX,
    check_seed,
    check_steps,
    check_texture_size,
    fit_views,
    open_photo,
    prepare_photo,
)

pytest.importorskip("onnx")


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    import pooch

    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: (_ for _ in ()).throw(AssertionError("network")))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net_home"))
    bg._SESSIONS.clear()


@pytest.fixture
def rembg_dir(tmp_path):
    d = tmp_path / "models" / "rembg"
    write_tiny_rembg_model(d / "u2net.onnx")
    return [d]


def _figure(mode="RGB", w=60, h=90, bg_=(255, 255, 255)):
    im = Image.new("RGB", (w, h), bg_)
    ImageDraw.Draw(im).rectangle((20, 10, 40, 80), fill=(40, 110, 190))
    return im if mode == "RGB" else im.convert(mode)


def _cutout_rgba(w=60, h=90):
    im = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    ImageDraw.Draw(im).rectangle((20, 10, 40, 80), fill=(40, 110, 190, 255))
    return im


def _save(img, path, **kw):
    img.save(path, **kw)
    return path


# ---- every kind of input file: what it gets --------------------------------------------------------------


def _kinds(tmp):
    """(name, path, expected source or error pattern)."""
    out = []
    out.append(("rgb-jpeg", _save(_figure(), tmp / "a.jpg", quality=95), "background removal (u2net)"))
    out.append(("rgba-png", _save(_cutout_rgba(), tmp / "b.png"), "alpha"))
    opaque = _figure().convert("RGBA")
    out.append(("rgba-opaque", _save(opaque, tmp / "c.png"), "background removal (u2net)"))
    la = _cutout_rgba().convert("LA")
    out.append(("LA", _save(la, tmp / "d.png"), "alpha"))
    pal = _cutout_rgba().convert("P")  # palette with a transparent index
    out.append(("P-transparent", _save(pal, tmp / "e.png"), "alpha"))
    out.append(("P-opaque", _save(_figure().convert("P"), tmp / "f.png"), "background removal (u2net)"))
    gray16 = Image.fromarray((np.asarray(_figure("L"), np.uint16) * 257).astype(np.uint16))
    out.append(("I;16", _save(gray16, tmp / "g.png"), "background removal (u2net)"))
    out.append(("CMYK-jpeg", _save(_figure().convert("CMYK"), tmp / "h.jpg"), "background removal (u2net)"))
    out.append(("1-bit", _save(_figure("L").point(lambda v: 255 if v > 128 else 0).convert("1"), tmp / "i.png"),
                "background removal (u2net)"))
    frames = [_cutout_rgba(), Image.new("RGBA", (60, 90), (255, 0, 0, 255))]
    frames[0].save(tmp / "j.gif", save_all=True, append_images=frames[1:], disposal=2)
    out.append(("animated-gif (first frame)", tmp / "j.gif", "alpha"))
    out.append(("webp-rgba", _save(_cutout_rgba(), tmp / "k.webp", lossless=True), "alpha"))
    out.append(("tiff-rgb", _save(_figure(), tmp / "l.tif"), "background removal (u2net)"))
    # refused with our error
    good = io.BytesIO()
    _figure(w=200, h=300).save(good, "PNG")
    (tmp / "trunc.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    out.append(("truncated-png", tmp / "trunc.png", "damaged or truncated"))
    (tmp / "text.png").write_text("hello")
    out.append(("not-an-image", tmp / "text.png", "not an image"))
    (tmp / "empty.jpg").write_bytes(b"")
    out.append(("empty-file", tmp / "empty.jpg", "not an image"))
    out.append(("folder", tmp, "is a folder"))
    out.append(("missing", tmp / "nope.png", "does not exist"))
    out.append(("bomb", _png_claiming(tmp / "bomb.png", 60000, 60000), "megapixels"))
    white = _save(Image.new("RGB", (60, 90), (255, 255, 255)), tmp / "white.png")
    out.append(("no-person (all white)", white, "no person"))
    return out


def _png_claiming(path, w, h):
    """A PNG whose header claims ``w x h`` pixels but holds almost no data (a decompression bomb's header)."""
    raw = zlib.compress(b"\x00" * 16)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


def test_every_input_kind_gets_a_result_or_our_error(tmp_path, rembg_dir):
    table = []
    for name, path, expected in _kinds(tmp_path):
        try:  # open + cut-out only (the framing of a cut-out is tested elsewhere; keeps this test fast)
            inputs = open_photo(path, None, background="u2net", search_dirs=rembg_dir)
            rgba = to_rgba(inputs.image, background=inputs.remover)
            got = "alpha" if inputs.remover is None else f"background removal ({inputs.remover.model})"
            assert rgba.mode == "RGBA" and rgba.size == (60, 90)
        except InputImageError as e:
            got = str(e)
            assert "\n" not in got and "Traceback" not in got
        table.append((name, got))
        assert expected in got, f"{name}: expected {expected!r}, got {got!r}"
    assert len(table) >= 19


def test_mask_file_wins_and_exif_orientation_applies_to_image_and_mask(tmp_path, rembg_dir):
    upright = _figure(w=60, h=90)
    # stored sideways (rotated 90 degrees) with EXIF Orientation 6 ("rotate 90 CW to display")
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    im = open_image(tmp_path / "phone.jpg", "IMAGE")
    assert im.size == (60, 90) and 0x0112 not in im.getexif()
    mask = Image.new("L", (90, 60), 0)  # the mask stored sideways with the same tag
    ImageDraw.Draw(mask).rectangle((10, 20, 80, 40), fill=255)
    mask.save(tmp_path / "mask.jpg", exif=exif.tobytes(), quality=95)
    photo = prepare_photo(tmp_path / "phone.jpg", tmp_path / "mask.jpg", search_dirs=rembg_dir)
    assert photo.source == "mask" and photo.rgba.size == (60, 90)
    # an upright mask for a sideways-stored photo: accepted once the photo is turned upright
    upright_mask = Image.new("L", (60, 90), 0)
    ImageDraw.Draw(upright_mask).rectangle((20, 10, 40, 80), fill=255)
    upright_mask.save(tmp_path / "up.png")
    assert prepare_photo(tmp_path / "phone.jpg", tmp_path / "up.png").rgba.size == (60, 90)


def test_mask_of_another_shape_is_refused_naming_the_input(tmp_path):
    _figure().save(tmp_path / "p.png")
    Image.new("L", (100, 100), 255).save(tmp_path / "m.png")
    with pytest.raises(InputImageError, match=r"^--mask: the mask is 100x100 pixels but the image is 60x90"):
        prepare_photo(tmp_path / "p.png", tmp_path / "m.png")


def test_background_off_and_missing_model_are_reported_before_compute(tmp_path):
    _figure().save(tmp_path / "p.jpg")
    with pytest.raises(InputImageError, match="no alpha channel.*--background-model none"):
        open_photo(tmp_path / "p.jpg", background=None)
    with pytest.raises(Exception, match=r"u2net\.onnx.*--download"):
        open_photo(tmp_path / "p.jpg", search_dirs=[tmp_path / "empty"])


def test_small_person_on_huge_canvas_keeps_its_pixels():
    """Framing crops to the person before any downsizing (a 5000 px wide canvas, a 300 px tall person)."""
    canvas = np.zeros((400, 6000, 4), np.uint8)
    canvas[50:350, 5000:5100] = (40, 110, 190, 255)
    photo = prepare_photo(canvas)
    assert photo.rgba.size[1] >= 300  # not shrunk by 6000 -> 4096 first
    tiny = np.zeros((400, 6000, 4), np.uint8)
    tiny[100:104, 10:13] = 255
    with pytest.raises(InputImageError, match="covers only 3x4 pixels"):
        prepare_photo(tiny)


def test_max_pixels_is_pillows_bomb_limit():
    assert MAX_PIXELS == 2 * Image.MAX_IMAGE_PIXELS or Image.MAX_IMAGE_PIXELS is None or MAX_PIXELS > 1e8


# ---- settings ----------------------------------------------------------------------------------------------


def test_settings_ranges_name_the_surface():
    assert check_steps(None, "--steps1") is None and check_steps(3, "--steps1") == 3
    for bad in (0, -1, 1001, 2.5, True, "7"):
        with pytest.raises(ConfigError, match="--steps1 must be a whole number from 1 to 1000"):
            check_steps(bad, "--steps1")
    assert check_seed(0, "--seed") == 0 and check_seed(SEED_MAX, "seed") == SEED_MAX
    torch.Generator().manual_seed(SEED_MAX)  # the upper bound is valid for the generator
    for bad in (-1, SEED_MAX + 1, 1.0):
        with pytest.raises(ConfigError, match="'seed' must be"):
            check_seed(bad, "'seed'")
    assert check_texture_size(1024, "--texture-size") == 1024
    for bad in (0, -512, 10**6, 512.0, "1024"):
        with pytest.raises(ConfigError, match="^--texture-size"):
            check_texture_size(bad, "--texture-size")


def test_texture_size_check_is_the_bakes_rule():
    from synchuman_core.geometry.bake import BakeSettings

    for size in (1, 32, 63, 64, 256, 511, 512, 4096, 4097, 8192):
        try:
            BakeSettings(texture_size=size).validate()
            ok = True
        except ConfigError:
            ok = False
        if ok:
            assert check_texture_size(size, "--texture-size") == size
        else:
            with pytest.raises(ConfigError, match="^--texture-size: .*official: 1024"):
                check_texture_size(size, "--texture-size")


# ---- views of any size ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("h,w", [(384, 384), (1024, 1024), (1024, 768), (500, 900)])
def test_views_of_any_size_are_padded_on_their_background_and_resized(h, w):
    views = torch.ones(4, h, w, 3)
    views[:, h // 4: 3 * h // 4, w // 2 - w // 8: w // 2 + w // 8] = torch.tensor([0.2, 0.4, 0.6])
    out = fit_views(views, 64, "color_views")
    assert out.shape == (4, 3, 64, 64)
    assert torch.allclose(out[:, :, 0, 0], torch.ones(4, 3))  # padding is the (white) view background
    assert torch.allclose(out[0, :, 32, 32], torch.tensor([0.2, 0.4, 0.6]), atol=0.05)  # content centred
    normals = torch.full((5, h, w, 3), 0.5)
    assert torch.allclose(fit_views(normals, 64, "normal_views")[:, :, 0, 0], torch.full((5, 3), 0.5))
    with pytest.raises(InputImageError, match="holds 3"):
        fit_views(views[:3], 64, "color_views")


def test_alpha_is_found_in_every_container_without_needing_a_background_model(tmp_path):
    """An image with real alpha never asks for the rembg model (none is installed here), whatever its layout."""
    rgba = np.asarray(_cutout_rgba())
    forms = [rgba, np.moveaxis(rgba, -1, 0), torch.from_numpy(rgba).float()[None] / 255.0,
             (rgba.astype(np.uint16) * 257), _cutout_rgba().convert("LA"), _cutout_rgba().convert("PA")]
    for form in forms:
        photo = prepare_photo(form, search_dirs=[tmp_path / "no_models"])
        assert photo.source == "alpha" and photo.rgba.size == (60, 90)
