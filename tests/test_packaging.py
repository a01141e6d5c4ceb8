"""The published pack: the registry zip's content, pyproject against the registry's rules, requirements.txt
derived from pyproject, the example inputs copied at start-up, and the zip importing on its own."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import registry_pack as rp

ROOT = rp.ROOT
sys.path.insert(0, str(ROOT / "tools"))

import sync_requirements  # noqa: E402


@pytest.fixture(scope="module")
def zipped(tmp_path_factory) -> tuple[Path, list[str]]:
    target = tmp_path_factory.mktemp("registry") / "node.zip"
    return target, rp.build_zip(target)


def test_zip_holds_what_comfyui_and_the_library_need(zipped):
    path, names = zipped
    files = set(names)
    for must in ("__init__.py", "prestartup_script.py", "pyproject.toml", "requirements.txt", "LICENSE", "README.md",
                 "nodes/__init__.py", "synchuman_core/__init__.py"):
        assert must in files, must
    # every module of the pack (tracked or about to be) ships
    for folder in ("nodes", "synchuman_core"):
        for py in rp.git_files():
            if py.startswith(folder + "/") and py.endswith(".py"):
                assert py in files, py
    templates = sorted(p.name for p in (ROOT / "example_workflows").glob("*.json"))
    assert templates and all(f"example_workflows/{t}" in files for t in templates)
    assert all(f"example_workflows/{Path(t).stem}.jpg" in files for t in templates)
    assert all(f"api_workflows/{t}" in files for t in templates)
    inputs = [p.name for p in (ROOT / "example_inputs").iterdir()]
    assert inputs and all(f"example_inputs/{n}" in files for n in inputs)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == sorted(names)
        assert z.testzip() is None


def test_zip_leaves_out_tests_tools_and_build_debris(zipped):
    path, names = zipped
    for n in names:
        top = n.split("/", 1)[0]
        assert top not in {"tests", "benchmarks", ".ci", ".github", "tools", "build", "dist"}, n
        assert "__pycache__" not in n and not n.endswith((".pyc", ".pyo")) and ".egg-info" not in n, n
        assert not n.startswith("docs/images/"), n
    assert path.stat().st_size < 2_000_000, f"registry zip is {path.stat().st_size} bytes"


def test_includes_are_force_included_even_when_ignored(tmp_path):
    """The rule the zip follows for ``includes`` (comfy-cli walks the folder on disk, .comfyignore aside)."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "built.bin").write_bytes(b"\0")
    (tmp_path / ".comfyignore").write_text("extra/\npkg/skip.txt\n")
    (tmp_path / "pkg" / "skip.txt").write_text("no\n")
    (tmp_path / "pyproject.toml").write_text('[tool.comfy]\nincludes = ["extra"]\n')
    (tmp_path / ".gitignore").write_text("extra/\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    names = rp.packed_files(tmp_path)
    assert "pkg/a.py" in names and "extra/built.bin" in names and "pkg/skip.txt" not in names


def test_pyproject_meets_the_registry_rules():
    data = rp.pyproject()
    assert rp.registry_problems(data) == []
    icon = rp.icon_file(data["tool"]["comfy"]["Icon"], data["project"]["urls"]["Repository"])
    assert str(icon.relative_to(ROOT)) in rp.git_files()  # the raw URL resolves once pushed


@pytest.mark.parametrize("change, expect", [
    (lambda d: d["project"].update(name="ComfyUI-SyncHuman"), "contains 'ComfyUI'"),
    (lambda d: d["project"].update(name="3d-human"), "not a valid node id"),
    (lambda d: d["project"].update(name="sync--human"), "not a valid node id"),
    (lambda d: d["project"].update(version="1.0"), "not X.Y.Z"),
    (lambda d: d["project"].update(license="MIT"), "license must be"),
    (lambda d: d["project"]["urls"].pop("Repository"), "Repository"),
    (lambda d: d["project"].update(classifiers=["Operating System :: Linux"]), "Operating System"),
    (lambda d: d["project"].update(classifiers=["Operating System :: OS Independent",
                                                "Environment :: GPU :: NVIDIA"]), "Environment"),
    (lambda d: d["tool"]["comfy"].pop("PublisherId"), "PublisherId"),
    (lambda d: d["tool"]["comfy"].update({"requires-comfyui": ">=0.8"}), "requires-comfyui"),
    (lambda d: d["tool"]["comfy"].update(Icon="https://example.com/icon.png"), "Icon"),
    (lambda d: d["tool"]["comfy"].update(includes=["no_such_folder"]), "includes"),
])
def test_registry_check_catches_mistakes(change, expect):
    data = copy.deepcopy(rp.pyproject())
    change(data)
    assert any(expect in e for e in rp.registry_problems(data)), rp.registry_problems(data)


def test_requirements_txt_is_pyproject_without_torch():
    text = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert text == sync_requirements.render(sync_requirements.dependencies()), "run: python tools/sync_requirements.py"
    reqs = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    names = [sync_requirements.requirement_name(r) for r in reqs]
    assert not {"torch", "torchvision", "torchaudio"} & set(names)
    deps = sync_requirements.dependencies()
    assert len(reqs) == len(deps) - sum(sync_requirements.requirement_name(d) == "torch" for d in deps)


def test_requirement_names_are_normalised():
    rn = sync_requirements.requirement_name
    assert rn("Torch>=2.1") == "torch" and rn("opencv_python.Headless[x]>=4 ; python_version>'3'") == \
        "opencv-python-headless"
    text = sync_requirements.render(["torch>=2.1", "numpy>=1.24", "TorchVision", "rembg[cpu]>=2 ; sys_platform!='x'"])
    assert [ln for ln in text.splitlines() if not ln.startswith("#")] == ["numpy>=1.24", "rembg[cpu]>=2 ; sys_platform!='x'"]


# ------------------------------------------------------------------------------------------------ start-up


def _prestartup(tmp_path: Path, input_dir: Path) -> subprocess.CompletedProcess:
    """Run prestartup_script.py the way ComfyUI 0.8.0 does (module named after its path, folder_paths
    already imported and configured), and report whether torch got imported."""
    fake = tmp_path / "fake_comfy"
    fake.mkdir(exist_ok=True)
    (fake / "folder_paths.py").write_text(f"def get_input_directory():\n    return {str(input_dir)!r}\n")
    script = ROOT / "prestartup_script.py"
    code = textwrap.dedent(f"""
        import importlib.util, logging, sys
        logging.basicConfig(level=logging.INFO)
        sys.path.insert(0, {str(fake)!r})
        import folder_paths
        spec = importlib.util.spec_from_file_location({str(script.with_suffix(''))!r}, {str(script)!r})
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        print("torch imported:", "torch" in sys.modules)
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_prestartup_copies_the_example_inputs_and_never_overwrites(tmp_path):
    shipped = {p.name: p.read_bytes() for p in (ROOT / "example_inputs").iterdir()}
    inp = tmp_path / "input"
    inp.mkdir()
    user_file = inp / "synchuman_example_person.png"
    user_file.write_bytes(b"the user's own picture")
    r = _prestartup(tmp_path, inp)
    assert r.returncode == 0, r.stderr
    assert "torch imported: False" in r.stdout  # runs before ComfyUI imports torch, stays light
    assert user_file.read_bytes() == b"the user's own picture"
    for name, data in shipped.items():
        if name != user_file.name:
            assert (inp / name).read_bytes() == data, name
    assert "copied 4 example input(s)" in r.stderr
    r = _prestartup(tmp_path, inp)  # second start: nothing to do, nothing said
    assert r.returncode == 0 and "copied" not in r.stderr


def test_prestartup_survives_an_unwritable_input_folder(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the input folder should be")
    r = _prestartup(tmp_path, blocker / "input")
    assert r.returncode == 0
    assert "could not copy the example inputs" in r.stderr


def test_every_template_loads_only_shipped_inputs_and_has_a_thumbnail():
    from PIL import Image

    shipped = {p.name for p in (ROOT / "example_inputs").iterdir()}
    for wf_path in sorted((ROOT / "example_workflows").glob("*.json")):
        wf = json.loads(wf_path.read_text(encoding="utf-8"))
        loads = [n["widgets_values"][0] for n in wf["nodes"] if n["type"] == "LoadImage"]
        assert loads and set(loads) <= shipped, (wf_path.name, loads)
        with Image.open(wf_path.with_suffix(".jpg")) as im:
            assert im.format == "JPEG" and im.width >= 256 and im.height >= 256


# ------------------------------------------------------------------------------------------------ the zip alone


def test_the_zip_imports_on_its_own(zipped, tmp_path):
    """Unpacked into a custom_nodes folder, the pack imports with its bundled synchuman_core and registers
    its nodes; nothing comes from tests/, tools/ or benchmarks/ of this checkout (the ComfyUI stand-in
    plays the host)."""
    path, _ = zipped
    pack = tmp_path / "custom_nodes" / "ComfyUI-SyncHuman"
    with zipfile.ZipFile(path) as z:
        z.extractall(pack)
    standin = ROOT / "tests" / "comfy_standin"
    code = textwrap.dedent(f"""
        import asyncio, importlib.util, sys
        from pathlib import Path
        sys.path.insert(0, {str(standin)!r})
        import folder_paths
        folder_paths.set_root({str(tmp_path / 'comfy')!r})
        pack = Path({str(pack)!r})
        spec = importlib.util.spec_from_file_location("ComfyUI-SyncHuman", pack / "__init__.py",
                                                      submodule_search_locations=[str(pack)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        ext = asyncio.run(mod.comfy_entrypoint())
        nodes = asyncio.run(ext.get_node_list())
        ids = sorted(n.GET_SCHEMA().node_id for n in nodes)
        import synchuman_core
        assert Path(synchuman_core.__file__).resolve().is_relative_to(pack.resolve()), synchuman_core.__file__
        repo = Path({str(ROOT)!r}).resolve()
        bad = [m for m, v in list(sys.modules.items()) if getattr(v, "__file__", None)
               and any(Path(v.__file__).resolve().is_relative_to(repo / d) for d in ("tools", "benchmarks"))]
        bad += [m for m, v in list(sys.modules.items()) if getattr(v, "__file__", None)
                and Path(v.__file__).resolve().is_relative_to(repo / "tests")
                and not Path(v.__file__).resolve().is_relative_to(Path({str(standin)!r}).resolve())]
        assert not bad, bad
        print(len(ids), " ".join(ids))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    count = int(r.stdout.split()[0])
    assert count >= 10 and "SyncHumanModelLoader" in r.stdout


def test_readme_gives_one_download_size_and_it_adds_up():
    """README's download size is the component table's sum (estimates from the official parameter counts),
    plus the background-removal model; the sizes earlier READMEs quoted three ways are gone."""
    import re

    from synchuman_core.io.registry import DEFAULT_COMPONENTS, get_spec
    from synchuman_core.preprocess.background import DEFAULT_REMBG_MODEL, REMBG_MODELS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sizes = re.findall(r"Download size: about (\d+(?:\.\d+)?) GB", readme)
    assert len(sizes) == 1, sizes
    rembg_mb = float(re.search(r"(\d+) MB", REMBG_MODELS[DEFAULT_REMBG_MODEL]).group(1))
    total = sum(get_spec(n).approx_bytes for n in DEFAULT_COMPONENTS) + get_spec("text_encoder").approx_bytes
    total_gb = total / 1e9 + rembg_mb / 1e3
    assert round(total_gb) == float(sizes[0]), total_gb
    for stale in ("8.5 GB", "8.7 GB", "~8 GB", "~8 + 1.2 GB"):
        assert stale not in readme, stale
