"""Background removal through the REAL rembg code path (rembg.new_session + rembg.remove + onnxruntime) with a
tiny ONNX model of u2net's signature that the test writes into a temporary model folder; no network."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from synchuman_core.errors import SyncHumanError, WeightsNotFoundError
from synchuman_core.preprocess import background as bg
from synchuman_core.preprocess import to_rgba
from synchuman_core.preprocess.background import (
    REMBG_MODELS,
    BackgroundRemover,
    download_rembg_model,
    find_rembg_model,
    needs_background_removal,
    official_downsize,
    rembg_search_dirs,
    write_tiny_rembg_model,
)

pytest.importorskip("onnx")
FIGURE = (40, 110, 190)


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Any download attempt fails the test; rembg's own home points into the test folder."""
    import pooch

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args} {kwargs}")

    monkeypatch.setattr(pooch, "retrieve", refuse)
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net_home"))
    monkeypatch.delenv("MODEL_CHECKSUM_DISABLED", raising=False)
    bg._SESSIONS.clear()


@pytest.fixture
def models_root(tmp_path):
    root = tmp_path / "models"
    write_tiny_rembg_model(root / "rembg" / "u2net.onnx")
    return root


def photo(w=600, h=900, box=(200, 100, 400, 800)) -> Image.Image:
    """A blue figure on a white background (what the tiny detector cuts out)."""
    im = Image.new("RGB", (w, h), (255, 255, 255))
    ImageDraw.Draw(im).rectangle(box, fill=FIGURE)
    return im


def test_real_rembg_path_cuts_out_the_figure(models_root):
    remover = BackgroundRemover("u2net", rembg_search_dirs([models_root]))
    assert remover.path == models_root / "rembg" / "u2net.onnx"
    out = remover(photo())
    assert out.mode == "RGBA" and out.size == (600, 900)
    a = np.asarray(out)[..., 3]
    assert a[450, 300] > 128 and a[10, 10] == 0 and a[850, 550] == 0
    ys, xs = np.nonzero(a > 128)
    assert abs(xs.min() - 200) <= 4 and abs(xs.max() - 400) <= 4 and abs(ys.min() - 100) <= 4
    # rembg was told exactly this file, and its environment is restored afterwards
    sess = bg._SESSIONS[("u2net", str(remover.path.resolve()))]
    assert Path(sess.inner_session._model_path).resolve() == remover.path.resolve()
    assert os.environ["U2NET_HOME"].endswith("u2net_home") and "MODEL_CHECKSUM_DISABLED" not in os.environ
    assert remover(photo()) is not None and len(bg._SESSIONS) == 1  # the session is reused


@pytest.mark.parametrize("name", list(REMBG_MODELS))
def test_every_offered_model_runs_through_its_rembg_session(tmp_path, name):
    """Each choice is a real rembg session class (u2net: 320 px input; birefnet/isnet: 1024 px, sigmoid or not)."""
    write_tiny_rembg_model(tmp_path / "m" / "rembg" / f"{name}.onnx")
    cut = BackgroundRemover(name, rembg_search_dirs([tmp_path / "m"]))(photo(300, 450, (100, 50, 200, 400)))
    a = np.asarray(cut)[..., 3]
    assert a[225, 150] > a[10, 10]


def test_official_has_alpha_test_and_downsize(models_root):
    assert needs_background_removal(None)
    assert needs_background_removal(np.full((4, 4), 255, np.uint8))
    assert not needs_background_removal(np.array([[255, 254]], np.uint8))
    big = photo(2400, 3000, (800, 300, 1600, 2700))
    small = official_downsize(big)
    assert small.size == (819, 1024)  # int(2400 * 1024 / 3000) = 819, LANCZOS
    assert official_downsize(photo(300, 200)).size == (300, 200)  # never upsized
    remover = BackgroundRemover("u2net", rembg_search_dirs([models_root]))
    rgba = to_rgba(np.asarray(big), background=remover)  # no alpha -> RGB, <= 1024, rembg (official)
    assert rgba.size == (819, 1024)
    opaque = np.dstack([np.asarray(photo()), np.full((900, 600), 255, np.uint8)])  # alpha 255 everywhere
    assert to_rgba(opaque, background=remover).getchannel("A").getextrema()[0] == 0  # background removed


def test_alpha_and_mask_win_over_background_removal(models_root):
    class Spy(BackgroundRemover):
        calls = 0

        def __call__(self, rgb):
            Spy.calls += 1
            return super().__call__(rgb)

    spy = Spy("u2net", rembg_search_dirs([models_root]))
    cut = np.zeros((90, 60, 4), np.uint8)
    cut[10:80, 20:40] = (*FIGURE, 255)
    rgba = to_rgba(cut, background=spy)  # real alpha: used as it is
    mask = np.zeros((90, 60), np.uint8)
    mask[5:85, 10:50] = 255
    masked = to_rgba(np.asarray(photo(60, 90, (20, 10, 40, 80))), mask, background=spy)  # the mask wins
    assert Spy.calls == 0
    assert np.array_equal(np.asarray(rgba.getchannel("A")), cut[..., 3])
    assert np.array_equal(np.asarray(masked.getchannel("A")), mask)


def test_missing_model_is_a_clear_error_without_network(tmp_path):
    dirs = rembg_search_dirs([tmp_path / "models"])
    with pytest.raises(WeightsNotFoundError) as e:
        BackgroundRemover("u2net_human_seg", dirs)
    msg = str(e.value)
    assert "u2net_human_seg.onnx" in msg and str(tmp_path / "models" / "rembg") in msg and "--download" in msg
    assert "\n" not in msg
    with pytest.raises(WeightsNotFoundError, match="download_missing"):
        BackgroundRemover("u2net", dirs, surface="comfy")
    with pytest.raises(SyncHumanError, match="must be one of"):
        BackgroundRemover("u3net", dirs)


def test_model_found_in_rembg_layouts(tmp_path, monkeypatch):
    flat = tmp_path / "u2net_home"
    write_tiny_rembg_model(flat / "u2net.onnx")  # $U2NET_HOME/u2net.onnx (rembg's legacy flat layout)
    assert find_rembg_model("u2net", rembg_search_dirs([tmp_path / "nothing"])) == flat / "u2net.onnx"
    nested = tmp_path / "models" / "rembg" / "models" / "isnet-general-use" / "isnet-general-use.onnx"
    write_tiny_rembg_model(nested)  # rembg's own per-model layout inside our folder
    remover = BackgroundRemover("isnet-general-use", rembg_search_dirs([tmp_path / "models"]))
    assert remover.path == nested
    assert np.asarray(remover(photo(90, 120, (30, 20, 60, 100))))[..., 3].max() > 0


def test_damaged_model_file_is_our_error(tmp_path):
    p = tmp_path / "m" / "rembg" / "u2net.onnx"
    p.parent.mkdir(parents=True)
    p.write_bytes(b"not an onnx file at all")
    with pytest.raises(SyncHumanError, match="cannot load the background-removal model"):
        BackgroundRemover("u2net", [p.parent])(photo(64, 64, (10, 10, 50, 50)))


def test_download_uses_rembgs_url_and_checksum(tmp_path, monkeypatch):
    import pooch

    calls = []

    def fake_retrieve(url, known_hash, fname, path, progressbar=True):
        calls.append((url, known_hash, fname, path))
        Path(path).mkdir(parents=True, exist_ok=True)
        write_tiny_rembg_model(Path(path) / fname)
        return str(Path(path) / fname)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    target = tmp_path / "models" / "rembg"
    got = download_rembg_model("u2net", target)
    assert got.is_file() and target in got.parents
    url, known_hash, fname, _ = calls[0]
    assert url.endswith("/u2net.onnx") and url.startswith("https://") and known_hash.startswith("md5:")
    assert fname == "u2net.onnx"
    assert download_rembg_model("u2net", target) == got and len(calls) == 1  # present: no second fetch
    # the remover finds the downloaded file; download=True on a missing model goes through the same function
    assert BackgroundRemover("u2net", [target]).path == got
    BackgroundRemover("u2net_human_seg", [target], download=True)
    assert calls[-1][2] == "u2net_human_seg.onnx"


def test_download_failure_is_our_error(tmp_path, monkeypatch):
    import pooch

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(WeightsNotFoundError, match="u2net.onnx.*failed.*ConnectionError"):
        download_rembg_model("u2net", tmp_path / "r")


def test_download_command_fetches_the_background_models(tmp_path, monkeypatch):
    """`download` fetches u2net by default (what `reconstruct photo.jpg` needs), --rembg picks, none skips."""
    import argparse

    import pooch

    from synchuman_core.cli_inputs import download_background_models

    fetched = []

    def fake_retrieve(url, known_hash, fname, path, progressbar=True):
        fetched.append(fname)
        return str(write_tiny_rembg_model(Path(path) / fname))

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    ns = argparse.Namespace
    got = download_background_models(ns(rembg=None, component=None), tmp_path)
    assert fetched == ["u2net.onnx"] and got[0].is_file() and (tmp_path / "rembg") in got[0].parents
    assert download_background_models(ns(rembg=None, component=["dinov2"]), tmp_path) == []
    assert download_background_models(ns(rembg=["none"], component=None), tmp_path) == []
    download_background_models(ns(rembg=["birefnet-portrait", "u2net"], component=None), tmp_path)
    assert fetched == ["u2net.onnx", "birefnet-portrait.onnx"]  # u2net present: not fetched again
