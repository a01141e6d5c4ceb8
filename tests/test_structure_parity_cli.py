"""``python -m synchuman_core.parity`` on the stage-1 structure fixtures: passes on the official
outputs and fails on perturbed ones."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import ROOT, fixture_dir
from safetensors.torch import load_file, save_file


def _parity(*dirs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "synchuman_core.parity", "--threads", "1", *map(str, dirs)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def test_cli_passes_on_b_and_c():
    res = _parity(fixture_dir("b_sparse_structure_decoder"), fixture_dir("c_sparse_structure_flow"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("ok  ") == 4 and "FAIL" not in res.stdout


def test_cli_rejects_perturbed_outputs(tmp_path):
    src = fixture_dir("c_sparse_structure_flow")
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    os.chmod(dst, 0o755)
    out_file = dst / "outputs.safetensors"
    outs = load_file(str(out_file))
    outs["v"] = outs["v"] * 1.01
    os.chmod(out_file, 0o644)
    save_file(outs, str(out_file))
    res = _parity(dst)
    assert res.returncode != 0, res.stdout
    assert "FAIL" in res.stdout and ":: v:" in res.stdout
