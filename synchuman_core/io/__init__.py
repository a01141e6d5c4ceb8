"""Checkpoint files: model folders, downloads, verification, strict loading, tiny checkpoints.

Typical use::

    from synchuman_core.io import SyncHumanModels, download
    folder = download("~/models/synchuman")          # only on request; resumable
    models = SyncHumanModels(folder, device="cuda")   # nothing loaded yet
    unet3d = models.get("joint")                      # checked, then streamed onto the GPU

``python -m synchuman_core download --models FOLDER`` / ``check --models FOLDER`` do the same from a shell.
"""

from .layout import COMFY_FOLDER_NAME, ModelFolder, default_models_root, find_model_folders, resolve_model_folder
from .loading import component_files, load_component, read_component_json
from .model_set import SyncHumanModels
from .registry import COMPONENTS, DEFAULT_COMPONENTS, STAGE1, STAGE2, ComponentSpec, get_spec
from .state_dict import diff_state_dict, expected_entries, group_keys, load_state_dict_strict

__all__ = [
    "COMFY_FOLDER_NAME",
    "COMPONENTS",
    "DEFAULT_COMPONENTS",
    "STAGE1",
    "STAGE2",
    "ComponentSpec",
    "ModelFolder",
    "SyncHumanModels",
    "component_files",
    "default_models_root",
    "diff_state_dict",
    "download",
    "expected_entries",
    "find_model_folders",
    "get_spec",
    "group_keys",
    "load_component",
    "load_prompt_embeds",
    "load_state_dict_strict",
    "read_component_json",
    "resolve_model_folder",
    "verify_model_folder",
]


def __getattr__(name: str):
    # download/verify/prompt functions import huggingface_hub or encoders lazily.
    if name == "download":
        from .download import download

        return download
    if name == "verify_model_folder":
        from .verify import verify_model_folder

        return verify_model_folder
    if name == "load_prompt_embeds":
        from .prompt_cache import load_prompt_embeds

        return load_prompt_embeds
    raise AttributeError(name)
