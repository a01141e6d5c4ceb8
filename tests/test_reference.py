"""The official reference data ships with the repository, and the parity command finds it from a clone."""

from __future__ import annotations

import subprocess
import sys

from conftest import CLIP_BPE, FIXTURES, MANIFESTS, ROOT

from synchuman_core.parity import DEFAULT_TOLERANCE, component_of
from synchuman_core.parity.__main__ import fixture_folders


def test_every_fixture_is_complete_and_has_a_runner():
    folders = sorted(d for d in FIXTURES.iterdir() if d.is_dir())
    assert len(folders) >= 9, folders
    for d in folders:
        for name in ("config.json", "meta.json", "outputs.safetensors", "README.md"):
            assert (d / name).is_file(), d / name
        comp = component_of(d)
        assert comp in DEFAULT_TOLERANCE, comp
        assert (ROOT / "synchuman_core" / "parity" / "components" / f"{comp.lower()}.py").is_file(), comp


def test_manifests_cover_every_official_checkpoint():
    names = {p.stem for p in MANIFESTS.glob("*.json")}
    assert {"SyncHuman_2D3DCrossSpaceDiffusion", "sparse_structure_decoder", "slat_flow", "slat_decoder_mesh",
            "slat_decoder_gs", "vae_AutoencoderKL", "image_encoder_CLIPVisionModelWithProjection",
            "text_encoder_CLIPTextModel"} <= names


def test_clip_vocabulary_ships_with_its_licence():
    assert CLIP_BPE.is_file() and CLIP_BPE.stat().st_size > 1_000_000
    assert "MIT License" in (CLIP_BPE.parent / "LICENSE").read_text()


def test_parity_cli_takes_the_readme_glob_and_folders_of_fixtures():
    listed = sorted(p for p in FIXTURES.iterdir())  # what the shell makes of tests/reference/fixtures/*
    assert any(p.is_file() for p in listed)  # README.md is among them
    got = fixture_folders([str(p) for p in listed])
    assert got == sorted(p for p in listed if p.is_dir())
    assert fixture_folders([str(FIXTURES)]) == got  # the parent folder stands for all of them
    one = FIXTURES / "g_schedules_cfg"
    assert fixture_folders([str(one)]) == [one]


def _parity(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synchuman_core.parity", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_parity_cli_says_what_is_wrong_with_a_path():
    r = _parity("no/such/place/*")  # a glob the shell could not expand reaches us as is
    assert r.returncode != 0
    assert "matched no fixture folder" in r.stderr and "no/such/place" in r.stderr
    assert "no parity runner" not in r.stdout + r.stderr
    r = _parity("tests/reference/fixturez")
    assert r.returncode != 0 and "no fixture folder 'tests/reference/fixturez'" in r.stderr
    r = _parity("tests/reference/fixtures/README.md")
    assert r.returncode != 0 and "expected folders named <letter>_<Component>" in r.stderr


def test_parity_cli_runs_a_fixture_from_the_clone():
    r = _parity("tests/reference/fixtures/g_schedules_cfg")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ok  ") >= 10 and "FAIL" not in r.stdout
