"""One orchestrator: the ComfyUI nodes and the CLI run the same pipeline stage functions, so on the same tiny
checkpoint and seed they give bit-identical views, voxels, mesh and GLB bytes; the nodes' stage 2 runs on the
fastest attention backend; one dtype plan serves nodes and library."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "comfy_standin"))

import harness  # noqa: E402

from synchuman_core.samplers import SamplerSettings  # noqa: E402

comfy_root, tiny_checkpoint, comfy_with_tiny = harness.comfy_root, harness.tiny_checkpoint, harness.comfy_with_tiny

SEED = 7  # not the official 43: nothing may depend on the default


def _settings_inputs(s, steps: int) -> dict:
    """The Sampler Settings node's inputs for ``s`` with ``steps`` steps."""
    return {"sampler": s.sampler, "steps": steps, "guidance": s.guidance, "guidance_form": s.guidance_form,
            "interval_start": s.interval[0], "interval_end": s.interval[1], "rescale_t": s.rescale_t}


def _node_graph(stage2: dict) -> dict:
    """Loader -> LoadImage -> Preprocess -> Joint Sampler -> SLat Sampler -> Feature Injector -> Mesh Decoder ->
    Export, with the settings the CLI uses (official export, vertex colours; 1 + 2 sampler steps)."""
    return {
        "1": {"class_type": "SyncHumanModelLoader", "inputs": {"model": harness.TINY_NAME, "dtype": "auto",
                                                                "download_missing": False}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "person.png"}},
        "3": {"class_type": "SyncHumanPreprocess", "inputs": {"image": ["2", 0], "mask": ["2", 1],
                                                               "mask_type": "LoadImage alpha (1 = background)",
                                                               "remove_background": "off"}},  # it has alpha
        "4": {"class_type": "SyncHumanSamplerSettings", "inputs": _settings_inputs(SamplerSettings.stage1(), 1)},
        "5": {"class_type": "SyncHumanJointSampler", "inputs": {"models": ["1", 0], "input": ["3", 0], "seed": SEED,
                                                                 "cfg_batching": "batched", "settings": ["4", 0]}},
        "6": {"class_type": "SyncHumanSamplerSettings", "inputs": stage2},
        "7": {"class_type": "SyncHumanStructuredLatentSampler",
              "inputs": {"models": ["1", 0], "structure": ["5", 2], "seed": SEED, "offload_stage1": True,
                         "settings": ["6", 0]}},
        "8": {"class_type": "SyncHumanFeatureInjector",
              "inputs": {"models": ["1", 0], "slat": ["7", 0], "color_views": ["5", 0], "normal_views": ["5", 1],
                         "views_mirrored": True}},
        "9": {"class_type": "SyncHumanMeshDecoder", "inputs": {"models": ["1", 0], "features": ["8", 0]}},
        "10": {"class_type": "SyncHumanExport",
               "inputs": {"synchuman_mesh": ["9", 1], "filename_prefix": "same/node", "format": "glb",
                          "color_mode": "vertex", "texture_size": 1024, "bake_mode": "fast", "simplify": 0.7,
                          "fill_holes": True, "remove_floaters": True, "remove_invisible": True}},
    }


class Recorder:
    """Records, per run, the voxels stage 1 finds and everything the export receives (mesh, views), and which
    SyncHuman node (if any) made each attention call through the spy backend."""

    def __init__(self, monkeypatch) -> None:
        import synchuman_core.export as export_pkg
        import synchuman_core.stage1.structure_decoder as sd
        from synchuman_core.attention import AttentionBackend, dispatch

        self.runs: dict[str, dict] = {}
        self.current = "none"
        self.attention: dict[str, set[str]] = {}
        occupancy, export_mesh = sd.occupancy_coords, export_pkg.export_mesh

        def rec_occupancy(*args, **kwargs):
            out = occupancy(*args, **kwargs)
            self.runs.setdefault(self.current, {})["voxels"] = out.clone()
            return out

        def rec_export(vertices, faces, **kwargs):
            keep = ("vertex_colors", "views", "face_view", "normal_views", "face_normal")
            self.runs.setdefault(self.current, {}).update(
                vertices=vertices.clone(), faces=faces.clone(),
                **{k: (kwargs[k].clone() if kwargs.get(k) is not None else None) for k in keep})
            return export_mesh(vertices, faces, **kwargs)

        sdpa = dispatch._REGISTRY["sdpa"]

        def node_of_caller() -> str:
            for frame in inspect.stack(0):
                cls = frame.frame.f_locals.get("cls")
                if frame.function == "execute" and isinstance(cls, type) and cls.__name__.startswith("SyncHuman"):
                    return cls.__name__
            return "library"

        def spy_dense(q, k, v, scale):
            self.attention.setdefault(self.current, set()).add(node_of_caller() + ":dense")
            return sdpa.dense(q, k, v, scale)

        def spy_varlen(q, k, v, ql, kl, scale):
            self.attention.setdefault(self.current, set()).add(node_of_caller() + ":varlen")
            return sdpa.varlen(q, k, v, ql, kl, scale)

        monkeypatch.setattr(sd, "occupancy_coords", rec_occupancy)
        monkeypatch.setattr(export_pkg, "export_mesh", rec_export)
        # "spy" stands in for the fastest backend of this device (flash-attn on a CUDA GPU)
        monkeypatch.delenv("SYNCHUMAN_ATTN_BACKEND", raising=False)
        monkeypatch.setitem(dispatch._REGISTRY, "spy", AttentionBackend("spy", spy_dense, spy_varlen))
        monkeypatch.setattr(dispatch, "best_backend", lambda device, dtype: "spy")


@pytest.fixture
def both_runs(comfy_with_tiny, monkeypatch, tmp_path):
    from executor import run_prompt

    from synchuman_core.cli import main as cli_main
    from synchuman_core.demo import example_person
    from synchuman_core.io import SyncHumanModels
    from synchuman_core.pipeline import stage2_defaults

    rec = Recorder(monkeypatch)
    folder = comfy_with_tiny / "models" / "synchuman" / harness.TINY_NAME
    person = comfy_with_tiny / "input" / "person.png"
    person.parent.mkdir(parents=True, exist_ok=True)
    example_person(384).save(person)
    s2 = stage2_defaults(SyncHumanModels(folder))[0]  # the checkpoint's pipeline.json, as the CLI reads it
    stage2 = _settings_inputs(s2, 2)

    rec.current = "nodes"
    result = run_prompt(_node_graph(stage2), harness.node_classes())
    exp = result.ui["10"]["3d"][0]
    node_glb = comfy_with_tiny / "output" / exp["subfolder"] / exp["filename"]

    rec.current = "cli"
    cli_glb = tmp_path / "cli" / "person.glb"
    code = cli_main(["reconstruct", str(person), "-o", str(cli_glb), "--models", str(folder), "--seed", str(SEED),
                     "--steps1", "1", "--steps2", "2", "--color", "vertex", "--recipe", "fast", "--device", "cpu", "--memory-tier", "high"])
    assert code == 0
    return rec, node_glb, cli_glb


@pytest.mark.slow
def test_nodes_and_cli_give_identical_bytes_and_nodes_use_the_fastest_backend(both_runs):
    rec, node_glb, cli_glb = both_runs
    nodes, cli = rec.runs["nodes"], rec.runs["cli"]
    assert set(nodes) == set(cli) >= {"voxels", "vertices", "faces", "views", "normal_views"}
    assert nodes["voxels"].shape[0] > 0 and nodes["faces"].shape[0] > 0
    for key in nodes:  # views (4 body + face, colour and normal), voxels, mesh, vertex colours: bit-identical
        a, b = nodes[key], cli[key]
        assert (a is None) == (b is None), key
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), key
    node_bytes, cli_bytes = node_glb.read_bytes(), cli_glb.read_bytes()
    assert node_bytes[:4] == b"glTF" and node_bytes == cli_bytes

    # every model stage in the nodes ran on the fastest backend (the spy stands in for flash-attn)
    used = rec.attention["nodes"]
    assert {"SyncHumanStructuredLatentSampler:varlen", "SyncHumanJointSampler:dense",
            "SyncHumanMeshDecoder:varlen"} <= used
    assert "library:varlen" not in used  # no stage-2 attention outside a node's execute
    assert {"library:dense", "library:varlen"} <= rec.attention["cli"]


def test_one_dtype_plan_for_nodes_and_library(comfy_with_tiny, monkeypatch):
    """The loader's dtype choice builds the models with the library's plan (no second plan in nodes/)."""
    import nodes.models as nm
    from synchuman_core.memory import dtype_plan

    assert getattr(nm, "dtype_plan", dtype_plan) is dtype_plan  # imported, not a second definition
    for choice in ("auto", "fp16", "bf16", "fp32"):
        bundle = nm.ModelBundle(comfy_with_tiny / "models" / "synchuman" / harness.TINY_NAME, choice)
        assert bundle.models.dtypes == dtype_plan(choice, nm.bridge.load_device())
        assert bundle.tier.precision == choice
    monkeypatch.setattr(nm.bridge, "load_device", lambda: torch.device("cuda"))
    auto = dtype_plan("auto", "cuda")
    assert auto["joint"] == auto["dinov2"] == torch.float16 and auto["slat_flow"] is None  # DINOv2: measured, fp16


def test_bundle_is_a_model_source(comfy_with_tiny):
    import nodes.models as nm
    from synchuman_core.model_source import ModelSource

    bundle = nm.ModelBundle(comfy_with_tiny / "models" / "synchuman" / harness.TINY_NAME, "fp32")
    assert isinstance(bundle, ModelSource)
    assert nm.STAGE1_ONLY == ("joint", "structure_decoder", "vae", "image_encoder")
    assert bundle.device_dtype("vae") == (nm.bridge.load_device(), torch.float32)
