"""Stand-in of ComfyUI 0.8.0's ``folder_paths``, rooted at ``$COMFY_STANDIN_ROOT`` (tests call :func:`set_root`).

Mirrors the functions node packs use, including the real quirks: ``get_folder_paths`` raises ``KeyError``
for a key nobody registered, ``add_model_folder_path(..., is_default=True)`` moves/inserts the path first,
``get_save_image_path`` picks the next ``<name>_<counter:05>_`` counter and refuses paths outside the folder.
"""

from __future__ import annotations

import logging
import os
import time

base_path = os.environ.get("COMFY_STANDIN_ROOT", os.path.join(os.getcwd(), "comfy_standin_root"))
models_dir = os.path.join(base_path, "models")
output_directory = os.path.join(base_path, "output")
input_directory = os.path.join(base_path, "input")
temp_directory = os.path.join(base_path, "temp")
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


def set_root(root: str) -> None:
    """Point every folder at ``root`` (models/, output/, input/, temp/) and forget registered model keys."""
    global base_path, models_dir, output_directory, input_directory, temp_directory
    base_path = str(root)
    models_dir = os.path.join(base_path, "models")
    output_directory = os.path.join(base_path, "output")
    input_directory = os.path.join(base_path, "input")
    temp_directory = os.path.join(base_path, "temp")
    folder_names_and_paths.clear()
    for d in (models_dir, output_directory, input_directory, temp_directory):
        os.makedirs(d, exist_ok=True)


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    if folder_name in folder_names_and_paths:
        paths, _ = folder_names_and_paths[folder_name]
        if full_folder_path in paths:
            if is_default and paths[0] != full_folder_path:
                paths.remove(full_folder_path)
                paths.insert(0, full_folder_path)
        elif is_default:
            paths.insert(0, full_folder_path)
        else:
            paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[folder_name][0][:]


def get_filename_list(folder_name: str) -> list[str]:
    out = set()
    for p in get_folder_paths(folder_name):
        if os.path.isdir(p):
            for dirpath, _dirs, files in os.walk(p, followlinks=True):
                for f in files:
                    out.add(os.path.relpath(os.path.join(dirpath, f), p).replace(os.sep, "/"))
    return sorted(out)


def get_full_path(folder_name: str, filename: str) -> str | None:
    for p in get_folder_paths(folder_name):
        full = os.path.join(p, filename)
        if os.path.isfile(full):
            return full
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full = get_full_path(folder_name, filename)
    if full is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full


def get_output_directory() -> str:
    return output_directory


def get_input_directory() -> str:
    return input_directory


def get_temp_directory() -> str:
    return temp_directory


def annotated_filepath(name: str) -> tuple[str, str | None]:
    for tag, d in (("[output]", output_directory), ("[input]", input_directory), ("[temp]", temp_directory)):
        if name.endswith(tag):
            return name[: -len(tag) - 1], d
    return name, None


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    name, base = annotated_filepath(name)
    return os.path.join(base or default_dir or input_directory, name)


def exists_annotated_filepath(name: str) -> bool:
    return os.path.exists(get_annotated_filepath(name))


def get_save_image_path(filename_prefix: str, output_dir: str, image_width=0, image_height=0):
    if "%" in filename_prefix:
        now = time.localtime()
        for k, v in (("%width%", image_width), ("%height%", image_height), ("%year%", now.tm_year),
                     ("%month%", f"{now.tm_mon:02d}"), ("%day%", f"{now.tm_mday:02d}")):
            filename_prefix = filename_prefix.replace(k, str(v))
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
        err = "**** ERROR: Saving image outside the output folder is not allowed."
        logging.error(err)
        raise Exception(err)
    counter = 1
    if os.path.isdir(full_output_folder):
        for f in os.listdir(full_output_folder):
            stem = f[: len(filename) + 1]
            if stem == filename + "_":
                try:
                    counter = max(counter, int(f[len(filename) + 1:].split("_")[0]) + 1)
                except ValueError:
                    pass
    else:
        os.makedirs(full_output_folder, exist_ok=True)
    return full_output_folder, filename, counter, subfolder, filename_prefix
