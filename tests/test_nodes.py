"""The node pack through the V3 API on the ComfyUI stand-in: schemas, host integration, errors users see."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "comfy_standin"))

import comfy.model_management as mm  # noqa: E402
import comfy.utils  # noqa: E402
import harness  # noqa: E402
from comfy_api.latest import io  # noqa: E402

comfy_root = harness.comfy_root  # fixture


def _run(cls, **kwargs):
    """Execute a node as ComfyUI does: a class clone, inside inference mode."""
    clone = cls.PREPARE_CLASS_CLONE({})
    with torch.inference_mode():
        return clone.EXECUTE_NORMALIZED(**kwargs)


def _node(pack, node_id):
    return next(c for c in pack.NODES if c.GET_SCHEMA().node_id == node_id)


@pytest.fixture
def pack():
    import nodes

    return nodes


# ------------------------------------------------------------------------------------------------ schemas


def test_every_node_is_v3_prefixed_and_documented(pack):
    ids = set()
    for cls in pack.NODES:
        assert issubclass(cls, io.ComfyNode)
        schema = cls.GET_SCHEMA()
        assert schema.node_id.startswith("SyncHuman") and schema.node_id not in ids
        ids.add(schema.node_id)
        assert schema.category == "SyncHuman" and schema.display_name and schema.description
        for inp in schema.inputs:
            assert inp.tooltip, f"{schema.node_id}.{inp.id} has no tooltip"
        for out in schema.outputs:
            assert out.display_name, f"{schema.node_id} output {out.io_type} has no name"
    assert len(ids) == len(pack.NODES) >= 12 and "SyncHumanRemoveBackground" in ids


def test_custom_wires_are_typed_and_joined(pack):
    """Each SYNCHUMAN_* type is produced by exactly one node and consumed by the next stage."""
    produced, consumed = {}, {}
    for cls in pack.NODES:
        s = cls.GET_SCHEMA()
        for o in s.outputs:
            if o.io_type.startswith("SYNCHUMAN_"):
                produced.setdefault(o.io_type, []).append(s.node_id)
        for i in s.inputs:
            if i.io_type.startswith("SYNCHUMAN_"):
                consumed.setdefault(i.io_type, []).append(s.node_id)
    assert set(produced) == set(consumed) == {
        "SYNCHUMAN_MODELS", "SYNCHUMAN_INPUT", "SYNCHUMAN_SAMPLER", "SYNCHUMAN_STRUCTURE", "SYNCHUMAN_SLAT",
        "SYNCHUMAN_FEATURES", "SYNCHUMAN_MESH", "SYNCHUMAN_GAUSSIANS"}
    assert all(len(v) == 1 for v in produced.values())
    # one settings node serves both samplers
    assert sorted(consumed["SYNCHUMAN_SAMPLER"]) == ["SyncHumanJointSampler", "SyncHumanStructuredLatentSampler"]


def test_native_outputs_for_core_nodes(pack):
    info = {c.GET_SCHEMA().node_id: c.GET_NODE_INFO_V1() for c in pack.NODES}
    assert info["SyncHumanJointSampler"]["output"] == ["IMAGE", "IMAGE", "SYNCHUMAN_STRUCTURE", "VOXEL"]
    assert info["SyncHumanMeshDecoder"]["output"] == ["MESH", "SYNCHUMAN_MESH"]
    assert info["SyncHumanExport"]["output"] == ["STRING"] and info["SyncHumanExport"]["output_node"]
    assert info["SyncHumanJointSampler"]["input"]["required"]["seed"][1]["control_after_generate"] is True


def test_import_has_no_side_effects():
    """Importing the pack by path (as ComfyUI does) imports no ComfyUI module and registers nothing."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('pack_under_test', {str(root / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(root)!r}])\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['pack_under_test'] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "assert callable(mod.comfy_entrypoint)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths', 'torch')]\n"
        "assert not bad, bad\n"
        "assert not hasattr(mod, 'NODE_CLASS_MAPPINGS')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_entrypoint_registers_folder_and_lists_nodes(comfy_root, pack):
    import folder_paths

    folder_paths.folder_names_and_paths.clear()  # as on a fresh host: no "synchuman" key yet
    ext = asyncio.run(pack.comfy_entrypoint())
    nodes_ = asyncio.run(ext.get_node_list())
    assert [n.GET_SCHEMA().node_id for n in nodes_] == [n.GET_SCHEMA().node_id for n in pack.NODES]
    assert folder_paths.get_folder_paths("synchuman")[0] == str(comfy_root / "models" / "synchuman")


def test_nodes_keep_no_state(comfy_root, pack):
    before = {c: dict(vars(c)) for c in pack.NODES}
    img = torch.zeros(1, 64, 48, 4)
    img[0, 8:56, 12:36] = torch.tensor([0.8, 0.5, 0.3, 1.0])
    _run(pack.NODES[1], image=img, mask_type="person mask (1 = person)")
    _run(pack.NODES[2])
    after = {c: dict(vars(c)) for c in pack.NODES}
    for c in pack.NODES:  # GET_SCHEMA may cache the schema (as in ComfyUI); nothing else changes
        assert {k for k in after[c] if after[c][k] is not before[c].get(k)} <= {"SCHEMA"}


# ------------------------------------------------------------------------------------------------ loader


def test_loader_dropdown_lists_checkpoint_folders(comfy_root, pack):
    from nodes.loader import checkpoint_choices

    base = comfy_root / "models" / "synchuman"
    (base / "mine" / "ckpts" / "OneStage").mkdir(parents=True)
    (base / "flat" / "OneStage").mkdir(parents=True)
    (base / "dinov2").mkdir(parents=True)
    choices = checkpoint_choices()
    assert set(choices) == {"SyncHuman", "flat", "mine"}
    opts = pack.NODES[0].GET_NODE_INFO_V1()["input"]["required"]["model"][1]["options"]
    assert opts == ["SyncHuman", "flat", "mine"]  # refreshed on every /object_info


def test_missing_weights_error_says_what_and_where(comfy_root, pack):
    from synchuman_core.errors import WeightsNotFoundError

    (comfy_root / "models" / "synchuman" / "SyncHuman" / "ckpts" / "OneStage").mkdir(parents=True)
    with pytest.raises(WeightsNotFoundError) as e:
        _run(pack.NODES[0], model="SyncHuman", dtype="auto", download_missing=False)
    msg = str(e.value)
    assert "SyncHuman_2D3DCrossSpaceDiffusion" in msg and "dinov2" in msg
    assert str(comfy_root / "models" / "synchuman" / "SyncHuman") in msg
    assert "python -m synchuman_core download --models" in msg and "download_missing" in msg


def test_download_missing_fetches_then_loads(comfy_root, pack, monkeypatch):
    """``download_missing`` calls the core downloader for the chosen folder, with progress, then loads."""
    import synchuman_core.io.download as dl

    calls = []

    def fake_download(dest, components=None, *, progress=None, **kw):
        calls.append(Path(dest))
        progress("model.safetensors", 50.0, 100.0)
        raise dl.WeightsNotFoundError("offline: could not reach huggingface.co")

    monkeypatch.setattr(dl, "download", fake_download)
    seen = []
    comfy.utils.set_progress_bar_global_hook(lambda v, t, p, node_id=None: seen.append((v, t)))
    try:
        with pytest.raises(dl.WeightsNotFoundError, match="offline"):
            _run(pack.NODES[0], model="SyncHuman", dtype="auto", download_missing=True)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert calls == [comfy_root / "models" / "synchuman" / "SyncHuman"] and seen == [(500, 1000)]


# ------------------------------------------------------------------------------------------------ preprocess


def _rgba(h=96, w=64):
    img = np.zeros((h, w, 4), np.float32)
    img[8:90, 16:48] = [0.8, 0.4, 0.2, 1.0]
    return torch.from_numpy(img)


def test_preprocess_with_loadimage_mask(comfy_root, pack):
    rgba = _rgba()
    image, mask = rgba[None, ..., :3], 1.0 - rgba[None, ..., 3]  # what core LoadImage gives
    out = _run(pack.NODES[1], image=image, mask=mask, mask_type="LoadImage alpha (1 = background)")
    prepared, views, cond = out.args
    assert views.shape == (5, 768, 768, 3) and views.device == mm.intermediate_device()
    assert cond.shape == (1, 518, 518, 3) and float(cond.max()) <= 1.0
    assert prepared.mv_views.shape == (5, 3, 768, 768)
    # same result from an RGBA IMAGE without a mask, and from a person mask
    alt = _run(pack.NODES[1], image=rgba[None], mask_type="LoadImage alpha (1 = background)").args
    person = _run(pack.NODES[1], image=image, mask=rgba[None, ..., 3], mask_type="person mask (1 = person)").args
    assert torch.equal(alt[1], views) and torch.equal(person[1], views)


@pytest.mark.parametrize("mask", [None, torch.zeros(1, 64, 64)], ids=["no-mask", "loadimage-no-alpha"])
def test_preprocess_without_cutout_is_a_clear_error(comfy_root, pack, mask):
    from synchuman_core.errors import InputImageError

    kwargs = {} if mask is None else {"mask": mask}
    with pytest.raises(InputImageError, match="no alpha channel.*'remove_background' is 'off'"):
        _run(pack.NODES[1], image=torch.rand(1, 80, 60, 3), remove_background="off", **kwargs)


def test_preprocess_rejects_batches(comfy_root, pack):
    from synchuman_core.errors import InputImageError

    with pytest.raises(InputImageError, match="one image"):
        _run(pack.NODES[1], image=torch.rand(2, 80, 60, 4))


# ------------------------------------------------------------------------------------------------ wires


def test_sampler_settings_node_builds_core_settings(pack):
    from synchuman_core.samplers import SamplerSettings

    s = _run(pack.NODES[2], sampler="heun", steps=7, guidance=5.0, guidance_form="trellis", interval_start=0.5,
             interval_end=1.0, rescale_t=3.0)[0]
    assert s == SamplerSettings(sampler="heun", steps=7, guidance=5.0, guidance_form="trellis",
                                interval=(0.5, 1.0), rescale_t=3.0)
    assert _run(pack.NODES[2])[0] == SamplerSettings.stage1()


def test_voxel_output_is_upright_for_core_viewer():
    from nodes.sampling import occupancy_voxel

    coords = torch.tensor([[0, 10, 20, 60]], dtype=torch.int32)  # x=10, y=20 (depth), z=60 (top)
    v = occupancy_voxel(coords)
    assert v.shape == (1, 64, 64, 64) and float(v.sum()) == 1.0
    d, h, w = torch.argwhere(v[0])[0].tolist()
    assert (d, h, w) == (63 - 20, 60, 10)  # core reads (w, h, d) as (x, y-up, z)


def test_view_batch_and_feature_injector_validation(pack):
    from nodes.decoding import check_views
    from synchuman_core.errors import InputImageError

    views = [torch.rand(1, 32, 32, 3) for _ in range(4)]
    batch = _run(pack.NODES[5], front=views[0], right=views[1], back=views[2], left=views[3],
                 mirror_back_left=True, face=torch.rand(1, 64, 64, 3))[0]
    assert batch.shape == (5, 32, 32, 3)
    assert torch.allclose(batch[2], views[2][0].flip(1)) and torch.allclose(batch[1], views[1][0])
    with pytest.raises(InputImageError, match="holds 3 image"):
        check_views("color_views", torch.rand(3, 128, 128, 3))
    with pytest.raises(InputImageError, match="at least"):
        check_views("normal_views", torch.rand(4, 8, 8, 3))
    assert check_views("x", torch.rand(5, 64, 64, 4), 64).shape == (5, 3, 64, 64)
    assert check_views("x", torch.rand(4, 128, 96, 3), 64).shape == (4, 3, 64, 64)  # any aspect: padded, resized


# ------------------------------------------------------------------------------------------------ host services


def test_progress_bar_and_interrupt_inside_sampler_callback():
    from nodes.comfy_bridge import step_callback

    seen = []
    comfy.utils.set_progress_bar_global_hook(lambda v, t, p, node_id=None: seen.append((v, t)))
    try:
        cb = step_callback(3)
        cb(1, 3, None)
        mm.interrupt_current_processing(True)
        with pytest.raises(mm.InterruptProcessingException):
            cb(2, 3, None)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    assert seen[:2] == [(1, 3), (2, 3)]


def test_out_of_memory_names_the_setting():
    from nodes.comfy_bridge import SyncHumanOutOfMemoryError, oom_hint

    with pytest.raises(SyncHumanOutOfMemoryError) as e:
        with oom_hint("the joint sampler", "set dtype to fp16"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
    assert isinstance(e.value, mm.OOM_EXCEPTION)  # ComfyUI still unloads models and adds its tip
    assert "set dtype to fp16" in str(e.value) and "2 GiB" in str(e.value)


def test_models_are_managed_by_comfy(comfy_root):
    """Components go through ModelPatcher + load_models_gpu (ComfyUI may load them partially: see
    tests/test_comfy_memory.py), and unload moves them off."""
    from nodes.comfy_bridge import ManagedModule, load_patchers, make_patcher, unload_patchers

    class WithDeviceProperty(torch.nn.Module):  # like diffusers / transformers / our DINOv2
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        @property
        def device(self):
            return self.lin.weight.device

    mm.load_calls.clear()
    p = make_patcher(WithDeviceProperty())
    assert isinstance(p.model, ManagedModule)
    load_patchers([p], memory_required=123)
    assert mm.load_calls[-1]["force_full_load"] is False and mm.load_calls[-1]["memory_required"] == 123
    assert any(lm.model is p for lm in mm.current_loaded_models)
    unload_patchers([p])  # the host sets .device on the holder; the property of the component is untouched
    assert not any(lm.model is p for lm in mm.current_loaded_models)


def test_export_node_writes_into_output_folder(comfy_root, pack):
    from nodes.types import DecodedMesh
    from synchuman_core.geometry import synthetic

    v, f = synthetic.synthetic_body(8)
    mesh = DecodedMesh(vertices=v.float(), faces=f.long(), vertex_colors=torch.rand(v.shape[0], 3),
                       color_views=None, normal_views=None)
    out = _run(_node(pack, "SyncHumanExport"), synchuman_mesh=mesh, filename_prefix="synchuman/test", format="glb",
               color_mode="vertex", texture_size=512, bake_mode="fast", simplify=0.0, fill_holes=False,
               remove_floaters=False, remove_invisible=False)
    rel = out.args[0]
    assert rel == "synchuman/test_00001_.glb"
    assert (comfy_root / "output" / rel).is_file()
    assert out.ui == {"3d": [{"filename": "test_00001_.glb", "subfolder": "synchuman", "type": "output"}]}
    with pytest.raises(Exception, match="outside the output folder"):
        _run(_node(pack, "SyncHumanExport"), synchuman_mesh=mesh, filename_prefix="../escape", color_mode="none")



def test_git_clone_install_finds_the_bundled_core(tmp_path):
    """ComfyUI-Manager / git clone install only requirements.txt: the pack must find the synchuman_core
    bundled in its own folder (simulated with ``python -S``: no site-packages, so no installed copy)."""
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[1]
    pack = tmp_path / "custom_nodes" / "ComfyUI-SyncHuman"
    pack.mkdir(parents=True)
    shutil.copy(root / "__init__.py", pack / "__init__.py")
    for sub in ("nodes", "synchuman_core"):
        shutil.copytree(root / sub, pack / sub, ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('ComfyUI-SyncHuman', {str(pack / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(pack)!r}])\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['ComfyUI-SyncHuman'] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "import synchuman_core\n"
        "print(synchuman_core.__file__)\n"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], check=True, timeout=120, capture_output=True, text=True)
    assert out.stdout.strip() == str(pack / "synchuman_core" / "__init__.py")


def test_loader_names_a_damaged_file_before_loading(comfy_root, pack, tmp_path):
    """The Model Loader runs the cheap file checks (configs typed, headers) before anything loads: a wrong-type
    value in a config.json is our error naming the file and the key, not a traceback later in a sampler."""
    import json

    from synchuman_core.errors import SyncHumanError
    from synchuman_core.io.tiny import write_tiny_checkpoint

    folder = comfy_root / "models" / "synchuman" / "SyncHuman"
    write_tiny_checkpoint(folder, seed=3)
    _run(pack.NODES[0], model="SyncHuman", dtype="auto", download_missing=False)  # healthy: loads
    cfg = folder / "ckpts" / "SecondStage" / "ckpts" / "slat_flow" / "config.json"
    data = json.loads(cfg.read_text())
    data["args"]["num_blocks"] = "2"
    cfg.write_text(json.dumps(data))
    with pytest.raises(SyncHumanError) as e:
        _run(pack.NODES[0], model="SyncHuman", dtype="auto", download_missing=False)
    assert "num_blocks" in str(e.value) and "config.json" in str(e.value)
