"""Issue 14 through the CLI: every output written safely, every output location and model file checked before
compute, interrupts leave nothing. Each case asserts our error (one line), the exit code and that no file was
damaged, overwritten or left partial. The pipeline runs for real on a tiny random checkpoint (models loaded
once per module and reused: only the CLI around them runs per case)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from synchuman_core.cli import main as cli_main
from synchuman_core.demo import example_person
from synchuman_core.export import writer
from synchuman_core.io.tiny import write_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--steps1", "1", "--steps2", "1", "--color", "vertex"]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def no_partial(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(writer.PART) or p.name.startswith(".smoke-checkpoint")]


def one_error_line(err: str, *needles: str) -> str:
    # progress bars (tqdm, cursor escapes) share stderr; the messages are what starts with these words
    clean = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", err)
    lines = re.findall(r"(?:error|interrupted|terminated): [^\r\n]*", clean)
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("safe") / "tiny"
    write_tiny_checkpoint(root, seed=3)
    return root


@pytest.fixture
def cached_models(tiny, monkeypatch):
    """``apply_tier`` loads the tiny models once per module; the CLI around it runs for real."""
    import synchuman_core.memory as memory

    real = memory.apply_tier
    cache = cached_models.__dict__.setdefault("runs", {})

    def apply_once(tier, models, **kw):
        key = (str(models), tier.name)
        if key not in cache:
            cache[key] = real(tier, models, **kw)
        return cache[key]

    monkeypatch.setattr(memory, "apply_tier", apply_once)
    # the subject here is the output path, not the clean-up: skip its 1000-view visibility pass (minutes on CPU)
    import synchuman_core.pipeline.run as run

    real_settings = run.export_settings

    def quick_settings(fmt, color_mode, texture_size, bake_mode, *a, **k):
        return real_settings(fmt, color_mode, texture_size, "fast", remove_invisible=False)

    monkeypatch.setattr(run, "export_settings", quick_settings)
    return tiny


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    example_person(384).save(d / "person.png")
    return d


def no_models(monkeypatch):
    import synchuman_core.memory as memory
    from synchuman_core.io import model_set

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the output was checked")

    monkeypatch.setattr(memory, "apply_tier", refuse)
    monkeypatch.setattr(model_set.SyncHumanModels, "get", refuse)


# -- the data-loss case and numbering --------------------------------------------------------------------------


@pytest.mark.slow
def test_obj_next_to_its_input_photo_never_replaces_it(cached_models, photos, capsys):
    before = snapshot(photos)
    args = ["reconstruct", str(photos / "person.png"), "-o", str(photos / "person.obj"), "--models",
            str(cached_models), "--steps1", "1", "--steps2", "1", "--texture-size", "512"]
    assert cli_main(args) == 0, capsys.readouterr().err
    files = json.loads(capsys.readouterr().out)["files"]
    names = sorted(Path(f).name for f in files)
    assert names == ["person_00001.mtl", "person_00001.obj", "person_00001.png", "person_00001_gaussians.ply"]
    after = snapshot(photos)
    assert {k: after[k] for k in before} == before  # the photo is byte-identical
    mtl = (photos / "person_00001.mtl").read_text()
    assert "map_Kd person_00001.png" in mtl and "mtllib person_00001.mtl" in (photos / "person_00001.obj").read_text()
    # a second run numbers all its companions together and changes nothing of the first
    assert cli_main(args) == 0
    second = sorted(Path(f).name for f in json.loads(capsys.readouterr().out)["files"])
    assert second == [n.replace("_00001", "_00002") for n in names]
    assert {k: v for k, v in snapshot(photos).items() if k in after} == after
    assert no_partial(photos)


@pytest.mark.slow
def test_long_unicode_name_with_newline_gets_one_clean_stem(cached_models, photos, tmp_path, capsys):
    name = "Ünïcødé\nperson:" + "x" * 300 + ".glb"
    rc = cli_main(["reconstruct", str(photos / "person.png"), "-o", str(tmp_path / "out" / name), "--models",
                   str(cached_models), *FAST])
    assert rc == 0, capsys.readouterr().err
    files = [Path(f) for f in json.loads(capsys.readouterr().out)["files"]]
    assert {p.suffix for p in files} == {".glb", ".ply"}
    stems = {p.name.removesuffix("_gaussians.ply").removesuffix(".glb") for p in files}
    assert len(stems) == 1 and "\n" not in stems.pop()
    assert all(len(p.name.encode()) <= 255 and p.is_file() for p in files)


# -- failures while writing --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_disk_full_midway_is_exit_2_and_leaves_nothing(cached_models, photos, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "r.glb").write_bytes(b"a previous result")
    before = snapshot(out)
    calls = {"n": 0}
    real = writer._write_all

    def fails_on_second_file(fh, data):
        calls["n"] += 1
        if calls["n"] == 2:  # the GLB is written; the Gaussians PLY fills the disk halfway
            fh.write(bytes(memoryview(data)[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, data)

    monkeypatch.setattr(writer, "_write_all", fails_on_second_file)
    rc = cli_main(["reconstruct", str(photos / "person.png"), "-o", str(out / "r.glb"), "--models",
                   str(cached_models), *FAST])
    err = capsys.readouterr().err
    assert rc == 2
    one_error_line(err, "error: cannot write", "r_00001_gaussians.ply", "disk is full", "-o/--output")
    assert snapshot(out) == before and no_partial(out)


@pytest.mark.slow
def test_keyboard_interrupt_during_export_is_exit_130_one_line_nothing_left(cached_models, photos, tmp_path,
                                                                            capsys, monkeypatch):
    from synchuman_core.stage2 import gaussians

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(gaussians, "gaussians_ply_bytes", interrupted)  # after the mesh file was staged
    out = tmp_path / "out"
    rc = cli_main(["reconstruct", str(photos / "person.png"), "-o", str(out / "r.glb"), "--models",
                   str(cached_models), *FAST])
    assert rc == 130
    one_error_line(capsys.readouterr().err, "interrupted", "no partial output")
    assert not out.exists() or (snapshot(out) == {} and no_partial(out))


_SIGINT_SCRIPT = textwrap.dedent("""
    import sys, time
    from synchuman_core import cli
    from synchuman_core.export import result

    real = result.check_result_location
    def slow_check(*a, **k):
        folder = real(*a, **k)
        print("READY", flush=True)
        time.sleep(60)  # Ctrl+C arrives here
        return folder
    result.check_result_location = slow_check
    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_is_one_line_no_traceback_nothing_left(tmp_path, sig, code, word):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Ctrl+C given back to the child even when the test runner itself runs with SIGINT ignored (background job)
    proc = subprocess.Popen([sys.executable, "-c", _SIGINT_SCRIPT, "smoke", "-o", str(tmp_path / "s")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    line = ""
    while time.monotonic() < deadline and "READY" not in line:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
    assert "READY" in line, proc.stderr.read()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    one_error_line(err, word, "no partial output")
    assert not (tmp_path / "s").exists() or no_partial(tmp_path / "s")


# -- output checks before any model loads ------------------------------------------------------------------------


@pytest.fixture
def checked_only(photos, tmp_path, monkeypatch):
    """A model folder that resolves; nothing may load (the output must be refused first)."""
    models = tmp_path / "models"
    for d in ("ckpts/OneStage", "ckpts/SecondStage"):
        (models / d).mkdir(parents=True)
    no_models(monkeypatch)
    return photos, models


def _refused(args, capsys, *needles):
    rc = cli_main(args)
    assert rc == 2
    return one_error_line(capsys.readouterr().err, "error: ", *needles)


def _rgba_photo(photos: Path) -> Path:
    return photos / "person.png"  # RGBA cut-out: no background model needed


def test_output_inside_a_file_is_refused_before_compute(checked_only, tmp_path, capsys):
    photos, models = checked_only
    (tmp_path / "afile").write_bytes(b"keep")
    _refused(["reconstruct", str(_rgba_photo(photos)), "-o", str(tmp_path / "afile" / "r.glb"), "--models",
              str(models)], capsys, "is a file, not a folder", "-o/--output")
    assert (tmp_path / "afile").read_bytes() == b"keep"


def test_output_folder_given_as_name_is_refused(checked_only, tmp_path, capsys):
    photos, models = checked_only
    _refused(["reconstruct", str(_rgba_photo(photos)), "-o", str(tmp_path), "--models", str(models)], capsys,
             "-o/--output", "is a folder")


def test_unknown_mesh_format_is_refused(checked_only, tmp_path, capsys):
    photos, models = checked_only
    _refused(["reconstruct", str(_rgba_photo(photos)), "-o", str(tmp_path / "r.stl"), "--models", str(models)],
             capsys, "-o/--output", "unknown mesh format '.stl'")


def test_unwritable_output_is_refused(checked_only, tmp_path, capsys, monkeypatch):
    photos, models = checked_only
    real_open = os.open

    def denied(path, flags, *a):
        if ".synchuman-probe-" in os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", denied)
    _refused(["reconstruct", str(_rgba_photo(photos)), "-o", str(tmp_path / "ro" / "r.glb"), "--models",
              str(models)], capsys, "permission denied", "-o/--output")
    assert not (tmp_path / "ro").exists()


def test_not_enough_space_is_refused(checked_only, tmp_path, capsys, monkeypatch):
    photos, models = checked_only
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1_000_000))
    _refused(["reconstruct", str(_rgba_photo(photos)), "-o", str(tmp_path / "r.glb"), "--models", str(models),
              "--texture-size", "4096"], capsys, "not enough free space", "MB needed", "-o/--output")


def test_path_too_long_is_refused(checked_only, tmp_path, capsys):
    photos, models = checked_only
    deep = tmp_path.joinpath(*["d" * 200] * 25)
    _refused(["reconstruct", str(_rgba_photo(photos)), "-o", str(deep / "r.glb"), "--models", str(models)],
             capsys, "too long", "-o/--output")


def test_smoke_output_checked_before_the_checkpoint_is_written(tmp_path, capsys, monkeypatch):
    no_models(monkeypatch)
    (tmp_path / "afile").write_bytes(b"")
    rc = cli_main(["smoke", "-o", str(tmp_path / "afile" / "s")])
    assert rc == 2
    one_error_line(capsys.readouterr().err, "is a file, not a folder", "-o/--output")


# -- own folders under concurrency -------------------------------------------------------------------------------


def test_smoke_checkpoint_is_per_run_and_removed(tmp_path, capsys, monkeypatch):
    from synchuman_core import cli

    seen = []

    def fake_reconstruct(a, image, ckpt, out_path, tier, *, save_views=False):
        seen.append(ckpt)
        assert (ckpt / "ckpts").is_dir() and ckpt.parent == tmp_path / "s"
        return {"files": []}

    monkeypatch.setattr(cli, "_reconstruct", fake_reconstruct)
    monkeypatch.setattr("synchuman_core.io.tiny.write_tiny_checkpoint",
                        lambda root, seed: (Path(root) / "ckpts").mkdir(parents=True))
    assert cli_main(["smoke", "-o", str(tmp_path / "s")]) == 0
    assert cli_main(["smoke", "-o", str(tmp_path / "s")]) == 0
    assert len(set(seen)) == 2 and not any(p.exists() for p in seen)
    assert (tmp_path / "s" / "example_person.png").is_file() and no_partial(tmp_path / "s")


_QUICK_SMOKE = textwrap.dedent("""
    import sys
    import synchuman_core.pipeline.run as run
    from synchuman_core import cli

    real = run.export_settings  # the subject is the checkpoint folder, not the clean-up: skip its visibility pass
    run.export_settings = lambda fmt, color, size, mode, *a, **k: real(fmt, color, size, "fast", remove_invisible=False)
    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_two_smoke_runs_into_one_folder_at_once_do_not_mix(tmp_path):
    """Two processes, seeds 1 and 2, one output folder at the same time: each result equals the result of
    its seed run alone (no mixed checkpoint), and the two results have their own stems."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def smoke(out, seed):
        return subprocess.Popen([sys.executable, "-c", _QUICK_SMOKE, "smoke", "-o", str(out), "--seed", str(seed),
                                 *FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def files(proc):
        out, err = proc.communicate(timeout=3600)
        assert proc.returncode == 0, err
        return [Path(f) for f in json.loads(out[out.index("{"):])["files"]]

    reference = files(smoke(tmp_path / "alone", 1))[0].read_bytes()
    both = [smoke(tmp_path / "shared", s) for s in (1, 2)]
    glb1, glb2 = (files(p)[0] for p in both)
    assert glb1.suffix == glb2.suffix == ".glb" and glb1.stem != glb2.stem
    assert glb1.read_bytes() == reference and glb2.read_bytes() != reference
    assert no_partial(tmp_path / "shared")


# -- model files: `check` and the run's cheap checks ----------------------------------------------------------------


@pytest.fixture
def folder(tiny, tmp_path):
    dst = tmp_path / "models"
    shutil.copytree(tiny, dst)
    return dst


SLAT = "ckpts/SecondStage/ckpts/slat_flow"


def _check(folder: Path, capsys, *extra: str) -> tuple[int, str, str]:
    rc = cli_main(["check", "--models", str(folder), *extra])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err and "VerifyReport(" not in cap.out
    return rc, cap.out, cap.err


def _problem_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.strip().startswith("PROBLEM")]


def test_check_healthy_folder_prints_one_line_per_component(folder, capsys):
    rc, out, _ = _check(folder, capsys)
    assert rc == 0
    for name in ("joint", "slat_flow", "mesh_decoder", "gs_decoder", "dinov2", "prompt_embeds"):
        line = next(ln for ln in out.splitlines() if f" {name} " in ln)
        assert line.strip().startswith("OK")
    assert "finite" in out and "keys+shapes" in out and "all files present and intact" in out


def test_wrong_type_config_value_check_exit_1_and_run_exit_2_before_loading(folder, photos, capsys, monkeypatch):
    cfg = folder / SLAT / "config.json"
    data = json.loads(cfg.read_text())
    data["args"]["num_blocks"] = "2"
    cfg.write_text(json.dumps(data))
    before = snapshot(folder)
    rc, out, err = _check(folder, capsys)
    assert rc == 1 and "download" in err
    (line,) = _problem_lines(out)
    assert "slat_flow" in line and "num_blocks='2' (expected int)" in out and str(cfg) in out
    no_models(monkeypatch)
    rc = cli_main(["reconstruct", str(photos / "person.png"), "-o", str(photos / "r.glb"), "--models", str(folder)])
    assert rc == 2
    one_error_line(capsys.readouterr().err, "error: ", "num_blocks='2'", "config.json")
    assert snapshot(folder) == before and not list(photos.glob("r*"))


def test_nan_weights_fail_check(folder, capsys):
    from safetensors.torch import load_file, save_file

    f = folder / SLAT / "model.safetensors"
    sd = load_file(str(f))
    key = sorted(k for k, v in sd.items() if v.is_floating_point())[3]
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = float("nan")
    save_file(sd, str(f))
    rc, out, _ = _check(folder, capsys)
    assert rc == 1
    (line,) = _problem_lines(out)
    assert "slat_flow" in line and "NaN or Inf" in out and key in out
    rc, out, _ = _check(folder, capsys, "--quick")  # headers only: a NaN is not visible there
    assert rc == 0


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong width"])
def test_damaged_prompt_cache_fails_check_and_run(folder, photos, capsys, monkeypatch, damage):
    import torch
    from safetensors.torch import save_file

    cache = folder / "prompt_embeds" / "synchuman_prompt_embeds.safetensors"
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:-100])
    elif damage == "garbage":
        cache.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" + b"\x00" * 64)
    else:
        save_file({"normal": torch.zeros(7, 77, 48), "color": torch.zeros(7, 77, 48)}, str(cache))
    rc, out, _ = _check(folder, capsys)
    assert rc == 1
    (line,) = _problem_lines(out)
    assert "prompt_embeds" in line and str(cache) in out
    no_models(monkeypatch)
    rc = cli_main(["reconstruct", str(photos / "person.png"), "-o", str(photos / "r.glb"), "--models", str(folder)])
    assert rc == 2
    one_error_line(capsys.readouterr().err, "error: ", "prompt_embeds")


def test_official_prompt_files_are_opened(folder, capsys):
    d = folder / "prompt_embeds"
    (d / "normal_embeds.pt").write_bytes(b"not a tensor file")
    (d / "clr_embeds.pt").write_bytes(b"not a tensor file")
    rc, out, _ = _check(folder, capsys)
    assert rc == 1 and "normal_embeds.pt" in out and "prompt_embeds" in _problem_lines(out)[0]


def test_unreadable_weights_file_is_named(folder, capsys, monkeypatch):
    import builtins

    from synchuman_core.io import files

    target = folder / SLAT / "model.safetensors"

    def guarded_open(path, *a, **k):
        if Path(path) == target:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return builtins.open(path, *a, **k)

    monkeypatch.setattr(files, "open", guarded_open, raising=False)
    rc, out, _ = _check(folder, capsys, "--quick")
    assert rc == 1
    assert "slat_flow" in _problem_lines(out)[0] and f"cannot read {target}: permission denied" in out
