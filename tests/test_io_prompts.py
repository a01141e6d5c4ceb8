"""View-prompt embeddings in a model folder: official .pt files, our cache, recompute with the text encoder."""

from __future__ import annotations

import pytest
import torch

from synchuman_core.errors import CheckpointError, WeightsNotFoundError
from synchuman_core.io.prompt_cache import load_prompt_embeds, prompt_cache_path, prompt_embeds_available
from synchuman_core.io.tiny import tiny_model, write_tiny_checkpoint

prompts = pytest.importorskip("synchuman_core.encoders.prompts")


@pytest.fixture
def folder(tmp_path):
    comps = ["pipeline_stage1", "text_encoder"]
    write_tiny_checkpoint(tmp_path, components=comps, seed=4, prompt_embeds=False)
    return tmp_path


def test_official_files_are_preferred(folder):
    g = torch.Generator().manual_seed(0)
    n7, c7 = (torch.randn(7, 77, 32, generator=g).half() for _ in range(2))
    d = folder / "prompt_embeds"
    d.mkdir()
    torch.save(n7, d / "normal_embeds.pt")
    torch.save(c7, d / "clr_embeds.pt")
    prompts.save_prompt_embeds(prompt_cache_path(folder), torch.zeros(7, 77, 32), torch.zeros(7, 77, 32))
    e = load_prompt_embeds(folder)
    assert torch.equal(e["normal"], n7[[0, 2, 3, 4, 6]]) and torch.equal(e["color"], c7[[0, 2, 3, 4, 6]])
    assert e["normal"].dtype == torch.float16
    assert torch.equal(torch.cat([e["normal"], e["color"]]), prompts.stage1_prompt_embeddings(n7, c7))


def test_official_files_in_the_repo_layout(folder):
    d = folder / "SyncHuman" / "data" / "fixed_prompt_embeds_7view"
    d.mkdir(parents=True)
    torch.save(torch.ones(7, 77, 32), d / "normal_embeds.pt")
    torch.save(torch.ones(7, 77, 32) * 2, d / "clr_embeds.pt")
    e = load_prompt_embeds(folder, dtype=torch.float32)
    assert float(e["color"].mean()) == 2.0 and e["color"].shape == (5, 77, 32)


def test_pickled_code_is_refused(folder):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    d = folder / "prompt_embeds"
    d.mkdir()
    torch.save(Evil(), d / "normal_embeds.pt")
    torch.save(torch.ones(7, 77, 32), d / "clr_embeds.pt")
    with pytest.raises(CheckpointError):
        load_prompt_embeds(folder)


def test_cache_is_used(folder):
    n7 = torch.full((7, 77, 32), 3.0)
    prompts.save_prompt_embeds(prompt_cache_path(folder), n7, -n7)
    assert prompt_embeds_available(folder)
    e = load_prompt_embeds(folder, allow_compute=False)
    assert torch.equal(e["normal"], n7[:5]) and torch.equal(e["color"], -n7[:5])


def test_recompute_with_text_encoder_and_cache(folder):
    assert not prompt_embeds_available(folder)
    e = load_prompt_embeds(folder)
    enc, _ = tiny_model("text_encoder", 4)
    want = prompts.compute_prompt_embeddings(enc, prompts.fixed_prompt_token_ids("normal"))
    torch.testing.assert_close(e["normal"], prompts.select_views(want))
    assert prompt_cache_path(folder).is_file()
    e2 = load_prompt_embeds(folder, allow_compute=False)
    assert all(torch.equal(e2[d], e[d]) for d in ("normal", "color"))


def test_nothing_available_says_what_to_do(tmp_path):
    write_tiny_checkpoint(tmp_path, components=["pipeline_stage1"], prompt_embeds=False)
    with pytest.raises(WeightsNotFoundError) as e:
        load_prompt_embeds(tmp_path)
    msg = str(e.value)
    assert "normal_embeds.pt and clr_embeds.pt" in msg and "fixed_prompt_embeds_7view" in msg
    assert f"python -m synchuman_core download --models {tmp_path} --component text_encoder" in msg
