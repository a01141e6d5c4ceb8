"""``benchmarks/gpu_check.py`` in its CPU dry mode, so the one-command GPU check cannot rot; and the real
preset's configs against the official manifests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_mode_runs_tests_tiers_and_compile(tmp_path):
    out = tmp_path / "gpu_check.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--preset", "tiny",
           "--steps1", "1", "--steps2", "1", "--tiers", "low", "--no-export", "--budget", "3000",
           "--tests-k", "test_attention_in_half_precision_matches_fp32", "--tests-timeout", "900", "--json", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "SYNCHUMAN_TEST_DEVICE"}
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=2400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["environment"]["device"] == "cpu"
    assert report["tests"]["ok"] and "1 passed" in report["tests"]["summary"]
    runs = report["runs"]
    assert [(r["tier"], r["compiled"]) for r in runs] == [("low", False), ("low", True)]
    for r in runs:
        assert set(r["stages"]) == {"preprocess", "conditioning", "stage1", "stage2"}
        assert r["voxels"] == 300 and r["mesh_faces"] > 0 and r["steps"] == [1, 1]
        assert r["total_s"] > 0 and all(v["calls"] == 1 for v in r["stages"].values())
        assert r["components"]["joint"]["calls"] == 2  # low tier: CFG halves in sequence, 1 step
    assert runs[1]["compile_backend"] == "eager"
    # the table: one row per run, the stage columns
    assert "== seconds per stage ==" in res.stdout
    assert "low +compile" in res.stdout and "conditio" in res.stdout


def test_gpu_check_refuses_cuda_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--no-tests"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert "no CUDA device" in res.stdout and "--device cpu" in res.stdout


def test_real_configs_are_the_official_ones():
    """benchmarks/real_configs.json (what the real preset builds) equals the official manifests."""
    from conftest import MANIFESTS

    cfg = json.loads((ROOT / "benchmarks" / "real_configs.json").read_text())
    names = {"joint": "SyncHuman_2D3DCrossSpaceDiffusion", "vae": "vae_AutoencoderKL",
             "image_encoder": "image_encoder_CLIPVisionModelWithProjection",
             "structure_decoder": "sparse_structure_decoder", "slat_flow": "slat_flow",
             "mesh_decoder": "slat_decoder_mesh", "gs_decoder": "slat_decoder_gs"}
    for key, name in names.items():
        path = MANIFESTS / f"{name}.json"
        if not path.is_file():
            pytest.fail(f"manifest {path} missing (tests/reference is part of the repository)")
        manifest = json.loads(path.read_text())
        assert cfg[key] == manifest["config"], key
        assert cfg["parameters"][key] == manifest["total_parameters"], key


def test_real_preset_builds_the_released_shapes():
    """The real preset's models have the released parameter counts (built on the meta device: no memory)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from benchmarks.presets import real_configs
    from synchuman_core.io.registry import get_spec

    cfg = real_configs()
    for key in ("joint", "slat_flow", "mesh_decoder", "gs_decoder", "structure_decoder", "vae", "image_encoder"):
        with torch.device("meta"):
            module = get_spec(key).build(cfg[key], device="meta", dtype=None)
        n = sum(p.numel() for p in module.parameters())
        assert n == cfg["parameters"][key], key


def test_real_preset_exports_a_body_sized_mesh():
    """At real size the export gets a smooth body of the requested size (random decoder weights give a ~1M-face
    noise surface); small presets export the decoder's own mesh; the choice reaches the per-run subprocess."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import bench_pipeline as bp

    real = bp.resolve_args(bp.parser().parse_args(["--preset", "real", "--device", "cpu"]))
    tiny = bp.resolve_args(bp.parser().parse_args(["--preset", "tiny"]))
    assert (real.export_mesh, real.export_faces, tiny.export_mesh) == ("body", 200_000, "decoded")
    forced = bp.resolve_args(bp.parser().parse_args(["--preset", "real", "--export-mesh", "decoded",
                                                     "--export-faces", "50000"]))
    again = bp.resolve_args(bp.parser().parse_args(bp.passthrough(forced)))
    assert (again.export_mesh, again.export_faces) == ("decoded", 50_000)
    for n in (20_000, 60_000):
        v, f, c = bp.body_mesh(n, "cpu")
        assert 0.8 * n <= f.shape[0] <= 1.2 * n and c.shape == v.shape
        assert float(v.abs().max()) <= 0.5 and 0.0 <= float(c.min()) and float(c.max()) <= 1.0
    with pytest.raises(SystemExit):
        bp.resolve_args(bp.parser().parse_args(["--export-faces", "10"]))
