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
WORKFLOWS = ROOT / "workflows"
TINY_NAME = "tiny"


def ensure_paths() -> None:
    for p in (str(STANDIN), str(ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)


ensure_paths()


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


def write_example_inputs(input_dir: Path, size: int = 384) -> None:
    """The files the example workflows load: the person and four colour views."""
    from PIL import Image

    from synchuman_core.demo import example_person

    input_dir.mkdir(parents=True, exist_ok=True)
    person = example_person(size)
    person.save(input_dir / "synchuman_example_person.png")
    for k, view in enumerate(("front", "right", "back", "left")):
        img = Image.new("RGB", (size // 2, size // 2), (255, 255, 255))
        img.paste(person.resize((size // 3, size // 2)), (size // 12, 0), person.resize((size // 3, size // 2)))
        if k % 2:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img.save(input_dir / f"synchuman_view_{view}.png")


def load_api(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text(encoding="utf-8"))


def load_ui(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text(encoding="utf-8"))


def workflow_names() -> list[str]:
    return sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def small_prompt(prompt: dict, *, steps1: int = 1, steps2: int = 2, model: str = TINY_NAME) -> dict:
    """A copy of an API prompt for the tiny checkpoint on a CPU: model ``tiny`` in fp32, few steps, the
    smallest texture, the fast bake, no decimation of the (already tiny) mesh."""
    p = copy.deepcopy(prompt)
    for node in p.values():
        t, i = node["class_type"], node["inputs"]
        if t == "SyncHumanModelLoader":
            i.update(model=model, dtype="fp32", download_missing=False)
        elif t == "SyncHumanSamplerSettings":
            i["steps"] = steps1 if i.get("guidance_form") == "standard" else steps2
        elif t == "SyncHumanExport":
            i.update(texture_size=512, bake_mode="fast", simplify=0.0, remove_invisible=False)
    return p


def env_flag(name: str) -> str | None:
    v = os.environ.get(name)
    return v if v else None
