"""The CLI checks everything about its input before computing: each bad input is one line on stderr, exit code 2,
and no model is loaded; a plain RGB JPEG works (background removal with the tiny ONNX model)."""

from __future__ import annotations

import json

import pytest
from PIL import Image, ImageDraw

from synchuman_core.cli import main as cli_main
from synchuman_core.preprocess import background as bg
from synchuman_core.preprocess.background import write_tiny_rembg_model

pytest.importorskip("onnx")


@pytest.fixture(autouse=True)
def no_network_no_models(monkeypatch, tmp_path):
    import pooch

    import synchuman_core.memory as memory
    from synchuman_core.io import model_set

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded / the network was used before the input was checked")

    monkeypatch.setattr(pooch, "retrieve", refuse)
    monkeypatch.setattr(memory, "apply_tier", refuse)
    monkeypatch.setattr(model_set.SyncHumanModels, "get", refuse)
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net_home"))
    bg._SESSIONS.clear()


@pytest.fixture
def files(tmp_path):
    """A model folder that resolves (no weights needed: nothing may load), a tiny rembg model and input files."""
    models = tmp_path / "models"
    for d in ("ckpts/OneStage", "ckpts/SecondStage"):
        (models / d).mkdir(parents=True)
    write_tiny_rembg_model(models / "rembg" / "u2net.onnx")
    photo = Image.new("RGB", (80, 120), (255, 255, 255))
    ImageDraw.Draw(photo).rectangle((25, 10, 55, 110), fill=(40, 110, 190))
    photo.save(tmp_path / "photo.jpg", quality=95)
    Image.new("RGB", (80, 120), (255, 255, 255)).save(tmp_path / "white.png")
    tiny = Image.new("RGBA", (80, 120), (0, 0, 0, 0))
    tiny.putpixel((10, 10), (255, 0, 0, 255))
    tiny.save(tmp_path / "tiny_person.png")
    Image.new("L", (50, 50), 255).save(tmp_path / "square_mask.png")
    (tmp_path / "notes.png").write_text("not an image")
    data = (tmp_path / "photo.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return tmp_path, models


CASES = [
    ("steps1 0", ["photo.jpg", "--steps1", "0"], "--steps1 must be a whole number from 1 to 1000, got 0"),
    ("steps2 0", ["photo.jpg", "--steps2", "0"], "--steps2 must be"),
    ("seed < 0", ["photo.jpg", "--seed", "-1"], "--seed must be a whole number from 0 to"),
    ("seed > 2^64-1", ["photo.jpg", "--seed", str(2**64)], "--seed must be"),
    ("texture 16", ["photo.jpg", "--texture-size", "16"], "--texture-size: texture_size must be between"),
    ("texture 99999", ["photo.jpg", "--texture-size", "99999"], "--texture-size: "),
    ("device gpu", ["photo.jpg", "--device", "gpu"], "--device must be a device such as cpu, cuda"),
    ("missing image", ["nope.png"], "IMAGE: "),
    ("not an image", ["notes.png"], "is not an image"),
    ("truncated", ["truncated.jpg"], "damaged or truncated"),
    ("folder", ["."], "is a folder"),
    ("missing mask", ["photo.jpg", "--mask", "nope.png"], "--mask: "),
    ("mask shape", ["photo.jpg", "--mask", "square_mask.png"], "--mask: the mask is 50x50 pixels"),
    ("no alpha, removal off", ["photo.jpg", "--background-model", "none"], "--background-model none"),
    ("rembg model missing", ["photo.jpg", "--background-model", "isnet-general-use"],
     "isnet-general-use.onnx"),
    ("no person", ["white.png"], "no person"),
    ("tiny person", ["tiny_person.png"], "covers only 1x1 pixels"),
]


@pytest.mark.parametrize("case,args,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_before_any_model(files, capsys, monkeypatch, case, args, expected):
    tmp, models = files
    monkeypatch.chdir(tmp)
    rc = cli_main(["reconstruct", *args, "-o", str(tmp / "out" / "x.glb"), "--models", str(models)])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert "Traceback" not in err and not (tmp / "out").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_this_machine_lacks_is_refused_at_once(files, capsys):
    tmp, models = files
    rc = cli_main(["reconstruct", str(tmp / "photo.jpg"), "--device", "cuda:1", "--models", str(models)])
    assert rc == 2 and "--device 'cuda:1': this machine (this PyTorch build) has no cuda device" in capsys.readouterr().err


def test_smoke_refuses_a_bad_texture_size_at_once(tmp_path, capsys):
    rc = cli_main(["smoke", "-o", str(tmp_path / "s"), "--texture-size", "99999"])
    assert rc == 2 and "--texture-size: " in capsys.readouterr().err
    assert not (tmp_path / "s" / "tiny_checkpoint").exists()


@pytest.mark.slow
def test_reconstruct_a_plain_rgb_jpeg(tmp_path, capsys, monkeypatch):
    """`reconstruct photo.jpg` just works: background removal (tiny ONNX u2net in <models>/rembg), tiny checkpoint."""
    import importlib

    import trimesh

    from synchuman_core.io.tiny import write_tiny_checkpoint

    monkeypatch.undo()  # models must load here
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net_home"))
    import pooch

    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: (_ for _ in ()).throw(AssertionError("network")))
    importlib.import_module("synchuman_core.memory")
    models = tmp_path / "tiny"
    write_tiny_checkpoint(models, seed=5)
    write_tiny_rembg_model(models / "rembg" / "u2net.onnx")
    photo = Image.new("RGB", (300, 450), (250, 250, 250))
    ImageDraw.Draw(photo).rounded_rectangle((100, 30, 200, 420), radius=30, fill=(40, 110, 190))
    ImageDraw.Draw(photo).ellipse((125, 30, 175, 90), fill=(224, 172, 140))
    photo.save(tmp_path / "photo.jpg", quality=92)
    out = tmp_path / "out" / "person.glb"
    rc = cli_main(["reconstruct", str(tmp_path / "photo.jpg"), "-o", str(out), "--models", str(models),
                   "--steps1", "1", "--steps2", "1", "--device", "cpu", "--color", "vertex"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out[captured.out.index("{"):])
    glb = [f for f in summary["files"] if f.endswith(".glb")]
    assert glb and trimesh.load(glb[0]).geometry
