"""Input nodes on the ComfyUI stand-in: Remove Background, Preprocess's background mode (a plain photo works out
of the box; a MASK from another node wins), views of any size, and bad inputs answered in node words before
any SyncHuman model loads."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "comfy_standin"))

import harness  # noqa: E402

from synchuman_core.errors import InputImageError, SyncHumanError, WeightsNotFoundError  # noqa: E402
from synchuman_core.preprocess import background as bg  # noqa: E402
from synchuman_core.preprocess.background import write_tiny_rembg_model  # noqa: E402

pytest.importorskip("onnx")
comfy_root = harness.comfy_root  # fixture
LOADIMAGE = "LoadImage alpha (1 = background)"
PERSON = "person mask (1 = person)"


@pytest.fixture(autouse=True)
def no_network_no_models(monkeypatch, tmp_path):
    """No download and no SyncHuman model may load in these tests."""
    import pooch

    from synchuman_core.io import model_set

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(pooch, "retrieve", refuse)
    monkeypatch.setattr(model_set.SyncHumanModels, "get", lambda *a, **k: refuse())
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net_home"))
    bg._SESSIONS.clear()


def _node(node_id):
    import nodes

    return next(c for c in nodes.NODES if c.GET_SCHEMA().node_id == node_id)


def _run(node_id, **kwargs):
    clone = _node(node_id).PREPARE_CLASS_CLONE({})
    with torch.inference_mode():
        return clone.EXECUTE_NORMALIZED(**kwargs)


def _photo(h=120, w=80):
    """ComfyUI IMAGE [1, H, W, 3]: a blue figure on white (what LoadImage gives for a JPEG)."""
    img = torch.ones(1, h, w, 3)
    img[0, 10:110, 25:55] = torch.tensor([40, 110, 190]) / 255.0
    return img


@pytest.fixture
def rembg_model(comfy_root):
    return write_tiny_rembg_model(comfy_root / "models" / "synchuman" / "rembg" / "u2net.onnx")


def test_remove_background_node_gives_rgba_and_person_mask(rembg_model):
    image, mask = _run("SyncHumanRemoveBackground", image=_photo().repeat(2, 1, 1, 1), model="u2net").args
    assert image.shape == (2, 120, 80, 4) and mask.shape == (2, 120, 80)
    assert float(mask[0, 60, 40]) > 0.5 and float(mask[0, 2, 2]) == 0.0
    assert torch.equal(image[..., 3], mask)


def test_remove_background_node_missing_model_and_download(comfy_root, monkeypatch):
    with pytest.raises(WeightsNotFoundError) as e:
        _run("SyncHumanRemoveBackground", image=_photo(), model="u2net_human_seg")
    msg = str(e.value)
    assert "u2net_human_seg.onnx" in msg and str(Path("models") / "synchuman" / "rembg") in msg
    assert "download_missing" in msg
    import pooch

    def fake(url, known_hash, fname, path, progressbar=True):
        write_tiny_rembg_model(Path(path) / fname)
        return str(Path(path) / fname)

    monkeypatch.setattr(pooch, "retrieve", fake)
    out = _run("SyncHumanRemoveBackground", image=_photo(), model="u2net_human_seg", download_missing=True)
    assert out.args[1].shape == (1, 120, 80)
    assert list((comfy_root / "models" / "synchuman" / "rembg").rglob("u2net_human_seg.onnx"))


@pytest.mark.parametrize("loadimage_mask", ["jpeg", "opaque-png"])
def test_preprocess_removes_the_background_of_a_plain_photo_by_default(rembg_model, loadimage_mask):
    """What LoadImage gives for a JPEG (64x64 zero MASK) or an opaque PNG (full-size zero MASK): the official
    no-alpha branch runs (u2net)."""
    mask = torch.zeros(1, 64, 64) if loadimage_mask == "jpeg" else torch.zeros(1, 120, 80)
    prepared, views, cond = _run("SyncHumanPreprocess", image=_photo(), mask=mask, mask_type=LOADIMAGE).args
    assert views.shape == (5, 768, 768, 3) and cond.shape == (1, 518, 518, 3)
    a = np.asarray(prepared.rgba.getchannel("A"))
    assert a[60, 40] > 128 and a[2, 2] == 0


def test_a_mask_from_another_node_wins(comfy_root):
    """No rembg model is installed here: a connected person MASK is used and background removal never runs."""
    person = torch.zeros(1, 120, 80)
    person[0, 10:110, 25:55] = 1.0
    prepared = _run("SyncHumanPreprocess", image=_photo(), mask=person, mask_type=PERSON).args[0]
    assert np.array_equal(np.asarray(prepared.rgba.getchannel("A"))[10:110, 25:55] > 0, np.ones((100, 30), bool))


def test_old_workflows_without_the_new_input_still_validate(rembg_model):
    """The new input is appended last with a default, so a saved workflow without it runs the official mode."""
    schema = _node("SyncHumanPreprocess").GET_SCHEMA()
    assert [i.id for i in schema.inputs][-1] == "remove_background"
    assert _run("SyncHumanPreprocess", image=_photo()).args[1].shape == (5, 768, 768, 3)


@pytest.mark.parametrize("case,kwargs,pattern", [
    ("batch", {"image": torch.rand(2, 80, 60, 3)}, r"^SyncHuman Preprocess takes one image"),
    ("two masks", {"image": _photo(), "mask": torch.ones(2, 120, 80), "mask_type": PERSON},
     r"^SyncHuman Preprocess: the 'mask' input holds 2 masks"),
    ("mask shape", {"image": _photo(), "mask": torch.ones(1, 50, 50), "mask_type": PERSON},
     r"^SyncHuman Preprocess: the 'mask' input: the mask is 50x50 pixels but the image is 80x120"),
    ("empty mask", {"image": _photo(), "mask": torch.zeros(1, 120, 80), "mask_type": PERSON},
     r"^SyncHuman Preprocess: the 'mask' input: the mask is empty"),
    ("no alpha, off", {"image": _photo(), "remove_background": "off"},
     r"^SyncHuman Preprocess: the 'image' input has no alpha channel.*'remove_background' is 'off'"),
    ("bad choice", {"image": _photo(), "remove_background": "magic"},
     r"^SyncHuman Preprocess: 'remove_background' must be one of"),
    ("missing model", {"image": _photo()}, r"^SyncHuman Preprocess: the background-removal model u2net\.onnx"),
    ("tiny person", {"image": _photo(), "mask": torch.nn.functional.pad(torch.ones(1, 3, 3), (0, 77, 0, 117)),
                     "mask_type": PERSON}, r"covers only 3x3 pixels"),
    ("nan", {"image": torch.full((1, 60, 40, 4), float("nan"))}, r"NaN"),
])
def test_preprocess_bad_inputs_are_one_line_errors_in_node_words(comfy_root, case, kwargs, pattern):
    with pytest.raises(SyncHumanError, match=pattern) as e:
        _run("SyncHumanPreprocess", **kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("sizes", [[(384, 384)] * 4, [(1024, 1024)] * 4, [(1024, 768)] * 4,
                                   [(768, 768), (384, 384), (1024, 768), (512, 700)]])
def test_view_batch_accepts_views_of_any_size(comfy_root, sizes):
    views = [torch.ones(1, h, w, 3) * 0.9 for h, w in sizes]
    face = torch.ones(1, 300, 200, 3) * 0.9
    out = _run("SyncHumanViewBatch", front=views[0], right=views[1], back=views[2], left=views[3], face=face)[0]
    side = max(sizes[0])
    assert out.shape == (5, side, side, 3)
    assert torch.allclose(out, torch.full_like(out, 0.9), atol=1e-4)  # padded on the view background


def test_feature_injector_fits_views_to_the_stage1_size():
    from nodes.decoding import check_views, stage1_view_size

    class _S:
        color_views = torch.zeros(5, 3, 64, 64)

    class _Slat:
        structure = _S()

    assert stage1_view_size(_Slat()) == 64 and stage1_view_size(object()) == 768
    colors = check_views("color_views", torch.rand(5, 1024, 768, 3), 64)
    normals = check_views("normal_views", torch.rand(4, 384, 384, 3), 64)
    assert colors.shape == (5, 3, 64, 64) and normals.shape == (4, 3, 64, 64)
    with pytest.raises(InputImageError, match=r"^SyncHuman Feature Injector: 'normal_views' holds 2 image"):
        check_views("normal_views", torch.rand(2, 64, 64, 3), 64)


def test_loader_download_missing_also_fetches_u2net(comfy_root, monkeypatch):
    import pooch

    import synchuman_core.io.download as dl

    monkeypatch.setattr(dl, "download", lambda folder, **kw: None)  # the Hugging Face part is tested elsewhere
    monkeypatch.setattr(pooch, "retrieve", lambda url, known_hash, fname, path, progressbar=True:
                        str(write_tiny_rembg_model(Path(path) / fname)))
    with pytest.raises(WeightsNotFoundError):  # the (empty) checkpoint folder is still incomplete
        _run("SyncHumanModelLoader", model="SyncHuman", dtype="auto", download_missing=True)
    assert list((comfy_root / "models" / "synchuman" / "rembg").rglob("u2net.onnx"))
