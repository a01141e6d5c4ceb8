"""File formats behind registry entries: loading, checking, error messages and downloads ask the entry's
format object and never which component they handle (DINOv2's own format is one such object)."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from synchuman_core.errors import WeightsNotFoundError
from synchuman_core.io import download as download_module
from synchuman_core.io.download import download
from synchuman_core.io.formats import ComponentFiles, OfficialLayout, read_json, save_safetensors
from synchuman_core.io.layout import ModelFolder
from synchuman_core.io.loading import component_files, load_component, missing_files_error
from synchuman_core.io.registry import COMPONENTS, get_spec
from synchuman_core.io.tiny import tiny_model, tiny_state_dict
from synchuman_core.io.verify import verify_model_folder

ROOT = Path(__file__).resolve().parents[1]


class OneFileFormat(OfficialLayout):
    """A made-up format: ``<base>/extra/<name>.safetensors`` with the config in the file's metadata, stored
    under ``prefix.``-ed keys, fetched from a repository of its own."""

    repo_id = "someone/one-file-models"

    def folder(self, spec, mf):
        return mf.base / "extra"

    def locate(self, spec, mf):
        f = self.folder(spec, mf) / f"{spec.name}.safetensors"
        from synchuman_core.io.files import WeightFiles

        if not f.is_file():
            return ComponentFiles(spec, f.parent, None, None, self), [f"extra/{spec.name}.safetensors"]
        return ComponentFiles(spec, f.parent, None, WeightFiles(f.parent, (f,)), self, "one-file", True), []

    def read_config(self, cf):
        from synchuman_core.io.files import read_safetensors_header

        return json.loads(read_safetensors_header(cf.weights.files[0])[1]["config"])

    def convert_state_dict(self, cf, state_dict):
        return {k.removeprefix("prefix."): v for k, v in state_dict.items()}

    def manual_commands(self, specs, mf):
        return [f"  hf download {self.repo_id} --local-dir {mf.base / 'extra'}"]

    def download(self, specs, mf, fetch):
        fetch(self.repo_id, mf.base / "extra", [f"{s.name}.safetensors" for s in specs])

    def write(self, spec, mf, state_dict, config, variant=None):
        sd = {f"prefix.{k}": v for k, v in state_dict.items()}
        return save_safetensors(sd, self.folder(spec, mf) / f"{spec.name}.safetensors", {"config": json.dumps(config)})


ONE_FILE = OneFileFormat()


@pytest.fixture
def custom_entry(monkeypatch):
    """The structure decoder re-registered with the made-up format (nothing else changes)."""
    spec = dataclasses.replace(get_spec("structure_decoder"), file_format=f"{__name__}:ONE_FILE")
    monkeypatch.setitem(COMPONENTS, spec.name, spec)
    return spec


def _folder(tmp_path) -> ModelFolder:
    (tmp_path / "ckpts" / "OneStage").mkdir(parents=True)
    return ModelFolder(tmp_path, tmp_path / "ckpts")


def test_a_new_format_loads_checks_and_explains_without_code_changes(custom_entry, tmp_path):
    mf = _folder(tmp_path)
    _, missing = component_files(custom_entry, mf, raise_missing=False)
    assert missing == ["extra/structure_decoder.safetensors"]
    msg = str(missing_files_error(mf, {custom_entry.name: missing}))
    assert f"hf download someone/one-file-models --local-dir {tmp_path / 'extra'}" in msg
    assert f"python -m synchuman_core download --models {tmp_path} --component structure_decoder" in msg

    custom_entry.layout().write(custom_entry, mf, tiny_state_dict(custom_entry.name, 3), custom_entry.tiny_config)
    module = load_component(custom_entry.name, mf)
    ref, _ = tiny_model(custom_entry.name, 3)
    for k, v in ref.state_dict().items():
        assert torch.equal(module.state_dict()[k], v), k
    report = verify_model_folder(mf, [custom_entry.name])
    assert report.ok and report.skipped_key_check == [custom_entry.name]  # converted keys: checked on load


def test_download_asks_each_format_once_with_its_missing_components(custom_entry, tmp_path, monkeypatch):
    calls = []

    def fake_snapshot(repo_id, local_dir, patterns, **kwargs):
        calls.append((repo_id, Path(local_dir), sorted(patterns)))
        if repo_id == ONE_FILE.repo_id:
            custom_entry.layout().write(custom_entry, ModelFolder(tmp_path, tmp_path / "ckpts"),
                                        tiny_state_dict(custom_entry.name, 1), custom_entry.tiny_config)

    monkeypatch.setattr(download_module, "_snapshot", fake_snapshot)
    download(tmp_path, [custom_entry.name], text_encoder=False)
    assert calls == [(ONE_FILE.repo_id, tmp_path / "extra", ["structure_decoder.safetensors"])]
    calls.clear()
    download(tmp_path, [custom_entry.name], text_encoder=False)  # complete: nothing fetched
    assert calls == []


def test_missing_after_a_download_is_an_error(custom_entry, tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "_snapshot", lambda *a, **k: None)
    with pytest.raises(WeightsNotFoundError, match="still missing"):
        download(tmp_path, [custom_entry.name], text_encoder=False)


def test_generic_io_modules_never_name_a_component():
    """Loading, checking, downloading and the model set go through registry entries only (no DINOv2 case).
    The one rule that names components is about prompts, not files: the text encoder is fetched or loaded
    only to recompute the joint model's prompt embeddings."""
    names = set(COMPONENTS) - {"joint", "text_encoder"}
    bad = []
    for mod in ("loading", "verify", "download", "model_set", "formats", "layout", "prompt_cache"):
        path = ROOT / "synchuman_core" / "io" / f"{mod}.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                bad.append(f"io/{mod}.py:{node.lineno}: {node.value!r}")
    assert not bad, bad


def test_read_json_rejects_non_objects(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("[1, 2]")
    with pytest.raises(Exception, match="JSON object"):
        read_json(p)
