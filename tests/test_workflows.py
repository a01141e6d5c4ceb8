"""Example workflows: UI format checked against the node schemas, API format generated from it, and every
API workflow executed end to end on the tiny checkpoint through the ComfyUI stand-in."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "comfy_standin"))

import harness  # noqa: E402
from harness import (  # noqa: E402
    API_WORKFLOWS,
    ROOT,
    load_api,
    load_ui,
    local_object_info,
    node_classes,
    small_prompt,
    workflow_names,
    write_example_inputs,  # noqa: E402
)

from nodes import workflow_tool as wt  # noqa: E402

NAMES = workflow_names()
comfy_root, tiny_checkpoint, comfy_with_tiny = harness.comfy_root, harness.tiny_checkpoint, harness.comfy_with_tiny


@pytest.fixture(scope="module")
def info():
    return local_object_info()


def test_the_three_examples_exist():
    assert {"synchuman_image_to_textured_mesh", "synchuman_stage_by_stage", "synchuman_custom_views"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_fits_the_schemas(name, info):
    assert wt.check_ui_workflow(load_ui(name), info) == []


@pytest.mark.parametrize("name", NAMES)
def test_committed_api_is_generated_from_ui(name, info):
    expected = wt.dump(wt.ui_to_api(load_ui(name), info))
    committed = (API_WORKFLOWS / f"{name}.json").read_text(encoding="utf-8")
    assert committed == expected, "run: python tools/refresh_workflows.py"


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_describe_the_same_graph(name, info):
    ui, api = load_ui(name), load_api(name)
    real = {str(n["id"]): n for n in ui["nodes"] if n["type"] not in wt.VIRTUAL_NODES}
    assert set(api) == set(real)
    for nid, n in real.items():
        assert api[nid]["class_type"] == n["type"]
        linked = {i["name"] for i in n.get("inputs", []) if i.get("link") is not None}
        slots = wt.widget_slots(n["type"], info[n["type"]])
        widgets = {s[0]: v for s, v in zip(slots, n["widgets_values"], strict=True) if s[0] and s[0] not in linked}
        literals = {k: v for k, v in api[nid]["inputs"].items() if not isinstance(v, list)}
        assert literals == widgets
    ui_links = {(str(src), sslot, str(dst), real[str(dst)]["inputs"][dslot]["name"])
                for (_id, src, sslot, dst, dslot, _t) in ui["links"]}
    api_links = {(v[0], v[1], nid, k) for nid, node in api.items() for k, v in node["inputs"].items()
                 if isinstance(v, list)}
    assert ui_links == api_links


def test_workflow_check_catches_mistakes(info):
    wf = load_ui("synchuman_image_to_textured_mesh")
    bad = json.loads(json.dumps(wf))
    sampler = next(n for n in bad["nodes"] if n["type"] == "SyncHumanSamplerSettings")
    sampler["widgets_values"][1] = 0  # steps below min
    loader = next(n for n in bad["nodes"] if n["type"] == "SyncHumanModelLoader")
    loader["widgets_values"][1] = "fp8"  # not an option
    bad["links"][0][5] = "MASK"  # wrong wire type
    errs = "\n".join(wt.check_ui_workflow(bad, info))
    assert "below the minimum 1" in errs and "'fp8' is not one of" in errs and "link says MASK" in errs
    with pytest.raises(wt.WorkflowError):
        wt.ui_to_api(bad, info)


def test_templates_folder_is_recognised_once():
    """ComfyUI serves ``<pack>/<folder>/*.json`` as templates for one of these folder names; only
    ``example_workflows`` (the name it asks for) exists and holds only UI-format files, each with a same-name
    ``.jpg`` thumbnail; the API-format copies live outside every recognised folder."""
    recognised = ["example_workflows", "example", "examples", "workflow", "workflows"]
    present = [f for f in recognised if (ROOT / f).exists()]
    assert present == ["example_workflows"]
    for path in (ROOT / "example_workflows").glob("*.json"):
        wf = json.loads(path.read_text(encoding="utf-8"))
        assert wf.get("version") == 0.4 and "nodes" in wf and "links" in wf, path.name
        assert path.with_suffix(".jpg").is_file(), f"{path.name} has no thumbnail"
    assert not list((ROOT / "example_workflows").glob("*/"))  # nothing nested under the template route
    assert sorted(p.name for p in (ROOT / "api_workflows").glob("*.json")) == \
        sorted(p.name for p in (ROOT / "example_workflows").glob("*.json"))


# ------------------------------------------------------------------------------------------------ end to end


def _glb_ok(path: Path) -> bool:
    data = path.read_bytes()
    return data[:4] == b"glTF" and int.from_bytes(data[8:12], "little") == len(data)


@pytest.mark.slow
def test_api_workflows_run_end_to_end_on_tiny_checkpoint(comfy_with_tiny):
    """All example workflows, in one session as a user would queue them (ComfyUI's cache reuses the shared
    upstream nodes between prompts): files written, previews, the textured GLB."""
    from executor import run_prompt

    write_example_inputs(comfy_with_tiny / "input")
    out = comfy_with_tiny / "output"
    nodes = node_classes()
    cache: dict = {}

    r = run_prompt(small_prompt(load_api("synchuman_image_to_textured_mesh")), nodes, cache=cache)
    exp = next(v for v in r.ui.values() if "3d" in v)["3d"][0]
    glb = out / exp["subfolder"] / exp["filename"]
    assert exp["type"] == "output" and _glb_ok(glb)
    preview = next(v for v in r.ui.values() if "result" in v)["result"]
    assert preview[0] == f"{exp['subfolder']}/{exp['filename']}"
    joint = next(k for k, v in load_api("synchuman_image_to_textured_mesh").items()
                 if v["class_type"] == "SyncHumanJointSampler")
    colors, normals, structure, voxel = r.outputs[joint]
    assert colors.shape == normals.shape == (5, 192, 192, 3) and voxel.data.shape == (1, 64, 64, 64)
    assert any(p[0] == joint for p in r.progress)  # the sampler reported progress

    r = run_prompt(small_prompt(load_api("synchuman_stage_by_stage")), nodes, cache=cache)
    assert r.cached  # the shared stage-1 / stage-2 nodes were not run again
    images = [u for v in r.ui.values() for u in v.get("images", [])]
    frames = next(n["inputs"]["frames"] for n in load_api("synchuman_stage_by_stage").values()
                  if n["class_type"] == "SyncHumanRenderGaussians")
    assert len(images) == 15 + frames  # preprocessed, colour and normal views (5 each), the Gaussians' turntable
    glbs = [u for v in r.ui.values() for u in v.get("3d", [])]
    assert {g["filename"].rsplit("_", 2)[0] for g in glbs} == {"structure", "geometry", "mesh"}
    assert all(_glb_ok(out / g["subfolder"] / g["filename"]) for g in glbs)
    ply = next(v for v in r.ui.values() if "ply" in v)["ply"][0]
    assert (out / ply["subfolder"] / ply["filename"]).read_bytes().startswith(b"ply")

    r = run_prompt(small_prompt(load_api("synchuman_custom_views")), nodes, cache=cache)
    exp = next(v for v in r.ui.values() if "3d" in v)["3d"][0]
    assert _glb_ok(out / exp["subfolder"] / exp["filename"])


def test_templates_export_with_the_official_recipe(info):
    """Every template that exports a textured mesh asks for the paper's recipe and feeds Export the decoded
    Gaussians it needs (without them the official recipe refuses to run)."""
    for name in NAMES:
        api = load_api(name)
        exports = [n for n in api.values() if n["class_type"] == "SyncHumanExport"]
        for n in exports:
            assert n["inputs"]["bake_mode"] == "official" and n["inputs"]["color_mode"] == "texture", name
            src = n["inputs"].get("gaussians")
            assert isinstance(src, list) and api[src[0]]["class_type"] == "SyncHumanGaussianDecoder", name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["synchuman_image_to_textured_mesh", "synchuman_custom_views"])
def test_template_runs_its_official_bake(name, comfy_with_tiny, monkeypatch):
    """The template as shipped (bake_mode official, Gaussians wired) runs the official recipe on the tiny
    checkpoint: the same steps, with fewer visibility views, Gaussian renders and optimisation steps than the
    real recipe so that it runs in seconds on a CPU. The bake sees the 5 views plus the Gaussian renders."""
    import synchuman_core.pipeline as pipeline
    from executor import run_prompt

    from synchuman_core.export import ExportSettings

    real_recipe = ExportSettings.recipe.__func__

    def scaled(cls, recipe_name):
        s = real_recipe(cls, recipe_name)
        if recipe_name == "official":
            s.cleanup.visibility_views, s.cleanup.visibility_resolution = 12, 96
            s.observations.gaussian_views, s.observations.resolution = 3, 96
            s.bake.opt_steps = 10
        return s

    seen = []
    real_export = pipeline.export_reconstruction

    def spy(*a, **k):
        res = real_export(*a, **k)
        seen.append((k["settings"], k.get("gaussians"), int(k["color_views"].shape[0]), res))
        return res

    monkeypatch.setattr(ExportSettings, "recipe", classmethod(scaled))
    monkeypatch.setattr(pipeline, "export_reconstruction", spy)
    write_example_inputs(comfy_with_tiny / "input")
    r = run_prompt(small_prompt(load_api(name), bake_mode=None), node_classes())
    exp = next(v for v in r.ui.values() if "3d" in v)["3d"][0]
    assert _glb_ok(comfy_with_tiny / "output" / exp["subfolder"] / exp["filename"])
    (settings, gaussians, n_views, res), = seen
    assert settings.bake.mode == "opt" and settings.cleanup.invisible_method == "mincut"
    assert gaussians is not None and res.mesh.texture is not None
    # 4 body views (+ the face close-up where the template has one: custom views leaves it open) + 3 renders
    assert n_views == (5 if name == "synchuman_image_to_textured_mesh" else 4)
    assert res.mesh.stats["views"] == n_views + 3


@pytest.mark.slow
def test_plain_photo_gets_its_background_removed(comfy_with_tiny):
    """An RGB photo without alpha: without the rembg model the prompt fails in Preprocess naming the file, the
    folder and download_missing; with the (tiny ONNX) u2net in models/synchuman/rembg it runs to a GLB."""
    from executor import PromptExecutionError, run_prompt
    from PIL import Image

    from synchuman_core.demo import example_person
    from synchuman_core.preprocess.background import write_tiny_rembg_model

    person = example_person(384)
    photo = Image.new("RGB", person.size, (255, 255, 255))
    photo.paste(person, mask=person.getchannel("A"))  # a plain photo: the figure on white, no alpha
    photo.save(comfy_with_tiny / "input" / "synchuman_example_person.png")
    prompt = small_prompt(load_api("synchuman_image_to_textured_mesh"))
    with pytest.raises(PromptExecutionError) as e:
        run_prompt(prompt, node_classes())
    assert e.value.node_type == "SyncHumanPreprocess"
    msg = e.value.exception_message
    assert "u2net.onnx" in msg and "rembg" in msg and "download_missing" in msg and msg.endswith("\n")
    pytest.importorskip("onnx")
    write_tiny_rembg_model(comfy_with_tiny / "models" / "synchuman" / "rembg" / "u2net.onnx")
    r = run_prompt(prompt, node_classes())
    exp = next(v for v in r.ui.values() if "3d" in v)["3d"][0]
    assert _glb_ok(comfy_with_tiny / "output" / exp["subfolder"] / exp["filename"])


@pytest.mark.slow
def test_interrupt_stops_the_sampler(comfy_with_tiny):
    """``POST /interrupt`` during sampling: the first progress update after it raises; nothing after runs."""
    import comfy.model_management as mm
    import comfy.utils
    from executor import PromptInterrupted, run_prompt

    write_example_inputs(comfy_with_tiny / "input")
    prompt = small_prompt(load_api("synchuman_image_to_textured_mesh"), steps1=3)
    original = comfy.utils.ProgressBar.update_absolute

    def interrupting(self, value, total=None, preview=None):
        if value == 1:
            mm.interrupt_current_processing(True)
        return original(self, value, total, preview)

    comfy.utils.ProgressBar.update_absolute = interrupting
    try:
        with pytest.raises(PromptInterrupted) as e:
            run_prompt(prompt, node_classes())
    finally:
        comfy.utils.ProgressBar.update_absolute = original
    assert prompt[e.value.node_id]["class_type"] == "SyncHumanJointSampler"
    assert not list((comfy_with_tiny / "output").rglob("*.glb"))


def test_standin_validation_mirrors_the_host(comfy_root):
    """Wrong wires, missing inputs and out-of-range values are refused before anything runs (HTTP 400 on
    the server, with the same error types; ``tests/test_comfy_server.py`` checks the server's answer)."""
    from executor import PromptValidationError, validate_prompt

    prompt = small_prompt(load_api("synchuman_image_to_textured_mesh"))
    joint = next(k for k, n in prompt.items() if n["class_type"] == "SyncHumanJointSampler")
    prompt[joint]["inputs"]["input"] = prompt[joint]["inputs"]["models"]
    settings = next(k for k, n in prompt.items() if n["class_type"] == "SyncHumanSamplerSettings")
    prompt[settings]["inputs"]["steps"] = 0
    del prompt[joint]["inputs"]["models"]
    with pytest.raises(PromptValidationError) as e:
        validate_prompt(prompt, node_classes())
    kinds = {err["type"] for ne in e.value.node_errors.values() for err in ne["errors"]}
    assert {"return_type_mismatch", "value_smaller_than_min", "required_input_missing"} <= kinds
