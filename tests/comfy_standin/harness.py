"""Test harness for the node pack: the stand-in on ``sys.path``, a ComfyUI folder tree, the tiny checkpoint,
example images and the API workflows made small enough for a CPU.

Test modules do ``from harness import ...`` after :func:`ensure_paths` (imported fixtures are used by
pytest like local ones).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import pytest

STANDIN = Path(__file__).resolve().parent
ROOT = STANDIN.parents[1]
WORKFLOWS = ROOT / "example_workflows"  # UI format (templates)
API_WORKFLOWS = ROOT / "api_workflows"
EXAMPLE_INPUTS = ROOT / "example_inputs"
TINY_NAME = "tiny"


def ensure_paths() -> None:
    for p in (str(STANDIN), str(ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)


ensure_paths()


def local_object_info() -> dict[str, dict]:
    """``/object_info`` of our nodes and the stand-in's core nodes, built in-process (the schemas the
    workflow tool converts with when no ComfyUI runs)."""
    from executor import object_info

    return object_info(node_classes())


def node_classes() -> dict[str, type]:
    """Core stand-in nodes + every SyncHuman node, by class type."""
    from core_nodes import CORE_NODES

    from nodes import NODES

    out = dict(CORE_NODES)
    out.update({n.GET_SCHEMA().node_id: n for n in NODES})
    return out


@pytest.fixture
def comfy_root(tmp_path):
    """A fresh ComfyUI folder tree (models/, input/, output/, temp/) with ``models/synchuman`` registered."""
    import comfy.model_management as mm
    import folder_paths

    from nodes.comfy_bridge import register_model_folder

    folder_paths.set_root(str(tmp_path / "comfy"))
    register_model_folder()
    yield tmp_path / "comfy"
    mm.unload_all_models()  # drop the references the model manager keeps, as a server restart would
    mm.interrupt_current_processing(False)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The tiny checkpoint (built once per test process; ~15 s)."""
    from tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("synchuman-tiny") / TINY_NAME)


@pytest.fixture
def comfy_with_tiny(comfy_root, tiny_checkpoint) -> Path:
    """``comfy_root`` whose ``models/synchuman/tiny`` is the tiny checkpoint (a symlink)."""
    link = comfy_root / "models" / "synchuman" / TINY_NAME
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(tiny_checkpoint, target_is_directory=True)
    return comfy_root


def write_example_inputs(input_dir: Path) -> list[Path]:
    """Put the shipped example inputs (``example_inputs/``: the person and four colour views the example
    workflows load) into ``input_dir`` the way ComfyUI's start-up does (``prestartup_script.py``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("synchuman_prestartup", ROOT / "prestartup_script.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.copy_example_inputs(input_dir)


def load_api(name: str) -> dict:
    return json.loads((API_WORKFLOWS / f"{name}.json").read_text(encoding="utf-8"))


def load_ui(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text(encoding="utf-8"))


def workflow_names() -> list[str]:
    return sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def small_prompt(prompt: dict, *, steps1: int = 1, steps2: int = 2, model: str = TINY_NAME,
                 bake_mode: str | None = "fast") -> dict:
    """A copy of an API prompt for the tiny checkpoint on a CPU: model ``tiny`` in fp32, few steps, the
    smallest texture, the fast bake (``bake_mode=None`` keeps the template's own), no decimation of the
    (already tiny) mesh."""
    p = copy.deepcopy(prompt)
    for node in p.values():
        t, i = node["class_type"], node["inputs"]
        if t == "SyncHumanModelLoader":
            i.update(model=model, dtype="fp32", download_missing=False)
        elif t == "SyncHumanSamplerSettings":
            i["steps"] = steps1 if i.get("guidance_form") == "standard" else steps2
        elif t == "SyncHumanExport":
            i.update(texture_size=512, simplify=0.0, remove_invisible=False)
            if bake_mode is not None:
                i["bake_mode"] = bake_mode
    return p


def env_flag(name: str) -> str | None:
    v = os.environ.get(name)
    return v if v else None


if __name__ == "__main__":
    # ``python tests/comfy_standin/harness.py [--check]``: regenerate (or check) api_workflows/*.json from the UI
    # workflows with the in-process schemas, without a running ComfyUI.
    import tempfile

    import folder_paths

    from nodes import workflow_tool

    folder_paths.set_root(tempfile.mkdtemp(prefix="synchuman-workflows-"))
    sys.exit(1 if workflow_tool.sync_api_workflows(local_object_info(), check="--check" in sys.argv[1:]) else 0)
