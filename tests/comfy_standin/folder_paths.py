"""Stand-in of ComfyUI's ``folder_paths`` rooted at $COMFY_STANDIN_ROOT (tests set it)."""

from __future__ import annotations

import os

base_path = os.environ.get("COMFY_STANDIN_ROOT", os.path.join(os.getcwd(), "comfy_standin_root"))
models_dir = os.path.join(base_path, "models")
output_directory = os.path.join(base_path, "output")
input_directory = os.path.join(base_path, "input")
temp_directory = os.path.join(base_path, "temp")
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
supported_pt_extensions = {".ckpt", ".pt", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


def set_root(root: str) -> None:
    global base_path, models_dir, output_directory, input_directory, temp_directory
    base_path = root
    models_dir = os.path.join(root, "models")
    output_directory = os.path.join(root, "output")
    input_directory = os.path.join(root, "input")
    temp_directory = os.path.join(root, "temp")
    folder_names_and_paths.clear()


def add_model_folder_path(folder_name, full_folder_path, is_default=False):
    paths, exts = folder_names_and_paths.setdefault(folder_name, ([], set()))
    if full_folder_path not in paths:
        paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)


def get_folder_paths(folder_name):
    return list(folder_names_and_paths.get(folder_name, ([], set()))[0])


def get_filename_list(folder_name):
    out = []
    for p in get_folder_paths(folder_name):
        if os.path.isdir(p):
            for dirpath, _dirs, files in os.walk(p, followlinks=True):
                for f in files:
                    out.append(os.path.relpath(os.path.join(dirpath, f), p).replace(os.sep, "/"))
    return sorted(set(out))


def get_full_path(folder_name, filename):
    for p in get_folder_paths(folder_name):
        full = os.path.join(p, filename)
        if os.path.exists(full):
            return full
    return None


def get_full_path_or_raise(folder_name, filename):
    full = get_full_path(folder_name, filename)
    if full is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full


def get_output_directory():
    return output_directory


def get_input_directory():
    return input_directory


def get_temp_directory():
    return temp_directory


def get_annotated_filepath(name, default_dir=None):
    return os.path.join(default_dir or input_directory, name)


def get_save_image_path(filename_prefix, output_dir, image_width=0, image_height=0):
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != os.path.abspath(output_dir):
        raise Exception("**** ERROR: Saving image outside the output folder is not allowed.")
    os.makedirs(full_output_folder, exist_ok=True)
    existing = [f for f in os.listdir(full_output_folder) if f.startswith(filename + "_")]
    counter = len(existing) + 1
    return full_output_folder, filename, counter, subfolder, filename_prefix
