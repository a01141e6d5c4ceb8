"""Downloads with ONLY the network call mocked: huggingface_hub.snapshot_download copies from local stand-ins."""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError

from synchuman_core.cli import main
from synchuman_core.errors import WeightsNotFoundError
from synchuman_core.io import load_component
from synchuman_core.io.dinov2_files import DINOV2_HF_REPO_ID
from synchuman_core.io.download import download
from synchuman_core.io.layout import HF_REPO_ID
from synchuman_core.io.registry import COMPONENTS, get_spec
from synchuman_core.io.tiny import tiny_model, write_tiny_dinov2_hf, write_tiny_hub

# A representative subset (TRELLIS, diffusers, transformers folders, settings files, DINOv2) that this
# tree can build; the big decoders and the joint model are covered by test_io_loading.
SUBSET = ("structure_decoder", "slat_flow", "vae", "image_encoder", "feature_extractor", "pipeline_stage1",
          "pipeline_stage2", "dinov2")
RUNNABLE = list(SUBSET)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return write_tiny_hub(tmp_path_factory.mktemp("hub"), seed=5, components=[n for n in RUNNABLE if n != "dinov2"])


class FakeHub:
    """Replacement for huggingface_hub.snapshot_download: copies the matching files of a local repo."""

    def __init__(self, repos: dict[str, Path]):
        self.repos = repos
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, repo_id, *, local_dir, allow_patterns=None, **kwargs):
        self.calls.append((repo_id, list(allow_patterns or [])))
        src = self.repos[repo_id]
        for f in sorted(src.rglob("*")):
            rel = f.relative_to(src).as_posix()
            if f.is_file() and (allow_patterns is None or any(fnmatch.fnmatch(rel, p) for p in allow_patterns)):
                dst = Path(local_dir) / rel
                if not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, dst)
        return str(local_dir)

    def fetched(self, repo_id):
        return [p for r, pats in self.calls if r == repo_id for p in pats]


@pytest.fixture
def fake(monkeypatch, hub):
    f = FakeHub(hub)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", f)
    return f


def test_download_then_load(tmp_path, fake):
    dest = tmp_path / "models" / "synchuman"
    mf = download(dest, RUNNABLE, text_encoder=False)
    assert mf.ckpts == dest / "ckpts"
    pats = fake.fetched(HF_REPO_ID)
    assert pats and not any("text_encoder" in p for p in pats), "text encoder fetched without need"
    assert not any(p.endswith(".bin") for p in pats), "bin files asked for although safetensors exist"
    assert fake.fetched(DINOV2_HF_REPO_ID) == ["config.json", "model.safetensors"]
    # DINOv2 converted to our keys, the transformers download removed.
    assert (dest / "dinov2" / "dinov2_vitl14_reg4.safetensors").is_file()
    assert not (dest / "dinov2" / ".download").exists()
    for name in RUNNABLE:
        spec = get_spec(name)
        if spec.is_module:
            m = load_component(name, dest)
            ref, _ = tiny_model(name, 5)
            for k, v in ref.state_dict().items():
                assert torch.equal(m.state_dict()[k], v), (name, k)
    # Second call: everything present -> no network access at all.
    fake.calls.clear()
    download(dest, RUNNABLE, text_encoder=False)
    assert fake.calls == []


def test_download_only_missing_component_and_repairs_damage(tmp_path, fake):
    dest = tmp_path / "d"
    download(dest, RUNNABLE, text_encoder=False)
    f = dest / "ckpts/OneStage/sparse_structure_decoder/model.safetensors"
    f.write_bytes(f.read_bytes()[:100])  # truncated
    fake.calls.clear()
    download(dest, RUNNABLE, text_encoder=False)
    assert fake.calls and all(r == HF_REPO_ID for r, _ in fake.calls)
    assert all("sparse_structure_decoder" in p for p in fake.fetched(HF_REPO_ID) if p.startswith("ckpts/"))
    load_component("structure_decoder", dest)


def test_text_encoder_only_when_prompts_missing(tmp_path, monkeypatch):
    """Default: the text encoder comes along with the joint model only if no prompt embeddings exist."""
    hub = write_tiny_hub(tmp_path / "hub", components=["pipeline_stage1", "text_encoder"])
    fake = FakeHub(hub)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    # The joint model's files are faked as present: this test is about the text-encoder decision only.
    dest = tmp_path / "t"
    joint = dest / "ckpts/OneStage/SyncHuman_2D3DCrossSpaceDiffusion"
    joint.mkdir(parents=True)
    (joint / "config.json").write_text("{}")
    (joint / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    download(dest, ["joint", "pipeline_stage1"], repair=False)
    pats = fake.fetched(HF_REPO_ID)
    assert any("text_encoder" in p for p in pats)
    # the recomputed prompt embeddings are cached, so a second folder state needs no text encoder
    from synchuman_core.io.prompt_cache import prompt_embeds_available

    assert prompt_embeds_available(dest)
    shutil.rmtree(dest / "ckpts/OneStage/text_encoder")
    fake.calls.clear()
    download(dest, ["joint", "pipeline_stage1"], repair=False)
    assert fake.calls == []


def test_offline_error_names_files_folder_and_commands(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("Got: ConnectError: [Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    dest = tmp_path / "off"
    with pytest.raises(WeightsNotFoundError) as e:
        download(dest, ["structure_decoder", "slat_flow"], text_encoder=False)
    msg = str(e.value)
    assert f"Downloading from huggingface.co ({HF_REPO_ID}) failed (LocalEntryNotFoundError" in msg
    assert f"python -m synchuman_core download --models {dest} --component structure_decoder" in msg
    assert "ckpts/OneStage/sparse_structure_decoder/model.safetensors" in msg
    assert "ckpts/SecondStage/ckpts/slat_flow/config.json" in msg
    assert f"hf download {HF_REPO_ID} --local-dir {dest}" in msg
    assert '--include "ckpts/SecondStage/ckpts/slat_flow/*"' in msg


def test_offline_dinov2(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(WeightsNotFoundError) as e:
        download(tmp_path / "x", ["dinov2"])
    assert f"hf download {DINOV2_HF_REPO_ID} config.json model.safetensors --local-dir" in str(e.value)


def test_dinov2_hf_and_hub_formats_load(tmp_path):
    root = tmp_path / "r"
    (root / "ckpts" / "OneStage").mkdir(parents=True)
    write_tiny_dinov2_hf(root / "dinov2", seed=2)  # transformers files placed by hand
    ref, _ = tiny_model("dinov2", 2)
    m = load_component("dinov2", root)
    for k, v in ref.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
    # torch.hub .pth (hub keys); config from a config.json beside it would be needed for a non-default size,
    # so check the format detection with the tiny config written as our config.json.
    shutil.rmtree(root / "dinov2")
    (root / "dinov2").mkdir()
    torch.save(ref.state_dict(), root / "dinov2" / "dinov2_vitl14_reg4_pretrain.pth")
    import json

    (root / "dinov2" / "config.json").write_text(json.dumps(COMPONENTS["dinov2"].tiny_config))
    m2 = load_component("dinov2", root)
    for k, v in ref.state_dict().items():
        assert torch.equal(m2.state_dict()[k], v), k


def test_cli_download_and_check(tmp_path, fake, capsys):
    """The one download/check command: ``python -m synchuman_core download|check --models DIR``."""
    dest = tmp_path / "cli"
    args = ["download", "--models", str(dest), "--no-text-encoder"] + [a for n in RUNNABLE for a in ("--component", n)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "all files present and intact" in out and f"model files are in {dest}" in out
    assert main(["check", "--models", str(dest)]) == 1  # the joint model and the big decoders are not there
    (dest / "ckpts/OneStage/sparse_structure_decoder/config.json").unlink()
    fake.calls.clear()
    assert main(args) == 0  # fetches the one missing file again
    assert fake.calls and (dest / "ckpts/OneStage/sparse_structure_decoder/config.json").is_file()


def test_cli_download_offline_names_the_command(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    dest = tmp_path / "off"
    assert main(["download", "--models", str(dest), "--component", "slat_flow"]) == 2
    err = capsys.readouterr().err
    assert f"python -m synchuman_core download --models {dest} --component slat_flow" in err
    assert "python -m synchuman_core.io" not in err
