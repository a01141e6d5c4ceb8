"""The parity runner reads every seed, shape and setting from the fixture's own files.

Fixtures made the same way as the official ones but with another seed and other settings (tiny mesh-decoder
and joint-model configs, another pipeline seed) must pass without code changes, and stop passing when the
recorded seed does not match the data. The model fixtures are made here with the fixture generator
(``fixgen``): weights ``fill_model(model, seed)``, checksum files, inputs ``gen_input``, and the reference
outputs of the model so built (what these tests check is the runner's plumbing, not the model: the official
fixtures check the model).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import fixture_dir
from safetensors.torch import load_file, save_file

from synchuman_core.errors import ParityError
from synchuman_core.io.tiny_configs import TINY_JOINT, TINY_MESH_DECODER
from synchuman_core.parity import run_fixture
from synchuman_core.parity.components.synchuman_2d3dcrossspacediffusion import cfg_inputs
from synchuman_core.parity.fixgen import checksums, fill_model, gen_input
from synchuman_core.sparse import SparseTensor
from synchuman_core.stage1.joint import JointModelConfig, SyncHumanJointModel
from synchuman_core.stage1.structure_flow import structure_pos_emb
from synchuman_core.stage2.decoders import SLatMeshDecoder, SLatMeshDecoderConfig


def _write(folder: Path, config: dict, meta: dict, inputs: dict, outputs: dict, sums: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "state_dict_checksums.json").write_text(json.dumps(sums))
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(folder / "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(folder / "outputs.safetensors"))
    return folder


def make_joint_fixture(folder: Path, seed: int, config: dict) -> Path:
    """A ``d_SyncHuman_2D3DCrossSpaceDiffusion``-style fixture for ``config`` and ``seed`` (fixgen rules)."""
    cfg = JointModelConfig.from_official(config)
    with torch.device("meta"):
        model = SyncHumanJointModel(cfg)
    model.to_empty(device="cpu")
    fill_model(model, seed)
    model.pos_emb = structure_pos_emb(cfg.structure)
    model.eval()
    u, s = cfg.unet, cfg.structure
    v, size, r = u.num_views, u.sample_size, s.resolution
    shapes = {
        "latents": (2 * v, u.out_channels, size, size),
        "image_latents_cond": (v, u.in_channels - u.out_channels, size, size),
        "prompt_embeds": (2 * v, 77, u.cross_attention_dim),
        "image_embeds_cond": (v, u.class_embed_input_dim),
        "trellis_latent": (1, s.in_channels, r, r, r),
        "trellis_cond_pos": (1, 7, s.cond_channels),
    }
    inputs = {k: gen_input(k, shape, seed) for k, shape in shapes.items()}
    t = 0.75
    inputs["timestep"] = torch.tensor([1000.0 * t], dtype=torch.float64)
    inputs["trellis_t"] = torch.tensor([1000.0 * t], dtype=torch.float32)
    with torch.no_grad():
        sample_out, trellis_out = model(**cfg_inputs(inputs))
    return _write(folder, config, {"seed": seed, "t": t}, inputs,
                  {"sample_out": sample_out, "trellis_out": trellis_out}, checksums(model.state_dict()))


def make_mesh_decoder_fixture(folder: Path, seed: int, config: dict, num_voxels: int) -> Path:
    """An ``f_slat_mesh_decoder``-style fixture: weights and multiview maps not stored, only their checksums."""
    cfg = SLatMeshDecoderConfig.from_official(config)
    with torch.device("meta"):
        model = SLatMeshDecoder(cfg)
    model.to_empty(device="cpu")
    fill_model(model, seed)
    model = model.float().eval()
    g = torch.Generator().manual_seed(seed)
    res = config["args"]["resolution"]
    flat = torch.randperm(res**3, generator=g)[:num_voxels].sort().values
    coords = torch.stack([torch.zeros_like(flat), flat // res**2, flat // res % res, flat % res], 1).int()
    feats = gen_input("feats", (num_voxels, config["args"]["latent_channels"]), seed)
    mv_shape = (1, 4, res, res, model.input_layer_color.in_features)
    mv = {k: gen_input(k, mv_shape, seed) for k in ("mv_color", "mv_normal")}
    x = SparseTensor(feats, coords)
    with torch.no_grad():
        normal, color = model.condition_mv(x, mv["mv_color"], mv["mv_normal"])
        out = model.forward_features(x, mv["mv_color"], mv["mv_normal"])
    folder = _write(folder, config, {"seed": seed, "num_voxels": num_voxels}, {"feats": feats, "coords": coords},
                    {"cond_mv_normal": normal, "cond_mv_color": color, "out_feats": out.feats,
                     "out_coords": out.coords.int()}, checksums(model.state_dict()))
    (folder / "mv_inputs_checksums.json").write_text(json.dumps(checksums(mv)))
    return folder


def test_reseeded_mesh_decoder_fixture_passes(tmp_path):
    config = json.loads(json.dumps(TINY_MESH_DECODER))
    config["args"]["resolution"] = 16  # other settings: a 16^3 grid, 16x16 multiview maps
    fx = make_mesh_decoder_fixture(tmp_path / "f_slat_mesh_decoder", 11, config, num_voxels=9)
    comps = run_fixture(fx)
    assert {c.name for c in comps} == {"cond_mv_normal", "cond_mv_color", "out_coords", "out_feats"}
    assert all(c.passed for c in comps), [(c.name, c.relative_error()) for c in comps]
    (fx / "meta.json").write_text(json.dumps({"seed": 6}))  # the official fixture's seed
    with pytest.raises(ParityError, match="checksums"):
        run_fixture(fx)


@pytest.fixture(scope="module")
def reseeded_joint(tmp_path_factory) -> Path:
    config = dict(TINY_JOINT, num_blocks=4)  # other settings than the official fixture (and than the tiny default)
    return make_joint_fixture(tmp_path_factory.mktemp("fx") / "d_SyncHuman_2D3DCrossSpaceDiffusion", 9, config)


@pytest.mark.slow  # two forwards of a 2.6 M-parameter joint model with the official sync widths (~10-30 s)
def test_reseeded_joint_fixture_passes(reseeded_joint):
    comps = run_fixture(reseeded_joint)
    assert {c.name for c in comps} >= {"sample_out", "trellis_out"}
    assert all(c.passed for c in comps), [(c.name, c.relative_error()) for c in comps]


@pytest.mark.slow
def test_joint_runner_takes_the_seed_from_meta(reseeded_joint, tmp_path):
    """The same files with another recorded seed: regenerated weights no longer match the checksums."""
    other = tmp_path / reseeded_joint.name
    shutil.copytree(reseeded_joint, other)
    (other / "meta.json").write_text(json.dumps({"seed": 4}))  # the seed the official fixture d was made with
    with pytest.raises(ParityError, match="checksums"):
        run_fixture(other)
    (other / "meta.json").write_text(json.dumps({}))
    with pytest.raises(ParityError, match="seed"):
        run_fixture(other)


def test_schedules_fixture_with_another_pipeline_seed(tmp_path):
    """The pipeline seed comes from the recorded output's name: a copy re-seeded the official way
    (``torch.manual_seed(s); torch.randn(...)``, the first CPU draw) passes; a wrong draw fails."""
    src = fixture_dir("g_schedules_cfg")
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    outputs = load_file(str(dst / "outputs.safetensors"))
    old = outputs.pop("trellis_noise_seed43_first_cpu_draw")
    torch.manual_seed(12)
    outputs["trellis_noise_seed12_first_cpu_draw"] = torch.randn(old.shape)
    save_file(outputs, str(dst / "outputs.safetensors"))
    comps = {c.name: c for c in run_fixture(dst)}
    assert "trellis_noise_seed12_first_cpu_draw" in comps and "trellis_noise_seed43_first_cpu_draw" not in comps
    assert all(c.passed for c in comps.values()), [(n, c.relative_error()) for n, c in comps.items() if not c.passed]

    outputs["trellis_noise_seed12_first_cpu_draw"] = old  # seed 43's draw under seed 12's name
    save_file(outputs, str(dst / "outputs.safetensors"))
    assert not {c.name: c for c in run_fixture(dst)}["trellis_noise_seed12_first_cpu_draw"].passed
