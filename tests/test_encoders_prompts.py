"""Fixed view prompts: token ids, our CLIP BPE, embeddings, official .pt loading, safetensors cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import CLIP_BPE

from synchuman_core.encoders.prompts import (
    BOS_ID,
    DOMAINS,
    EOS_ID,
    KEPT_VIEW_INDICES,
    PAD_ID,
    VIEWS_7,
    ClipBPETokenizer,
    cfg_prompt_batch,
    compute_prompt_embeddings,
    fixed_prompt_token_ids,
    load_official_prompt_embeds,
    load_prompt_embeds,
    save_prompt_embeds,
    select_views,
    stage1_prompt_embeddings,
    view_prompts,
)
from synchuman_core.errors import CheckpointError, WeightsNotFoundError


def _bpe_vocab_path() -> Path:
    """OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (MIT), shipped in tests/reference/clip; $SYNCHUMAN_CLIP_BPE
    points at another copy."""
    env = os.environ.get("SYNCHUMAN_CLIP_BPE")
    return Path(env) if env else CLIP_BPE


def _first_difference(a: torch.Tensor, b: torch.Tensor) -> int:
    return int(torch.nonzero(a != b)[0, 0])


def test_prompt_texts():
    assert view_prompts("normal")[0] == "a rendering image of 3D human, front view, normal map."
    assert view_prompts("color")[6] == "a rendering image of 3D human, face view, color map."
    assert [VIEWS_7[i] for i in KEPT_VIEW_INDICES] == ["front", "right", "back", "left", "face"]
    with pytest.raises(ValueError):
        view_prompts("depth")


def test_fixed_token_ids_layout_matches_the_shipped_embeddings():
    """First differing positions between rows, as measured on the official .pt files (docs/ARCHITECTURE.md §4.5)."""
    n, c = fixed_prompt_token_ids("normal"), fixed_prompt_token_ids("color")
    assert n.shape == (7, 77) and n.dtype == torch.long
    for ids in (n, c):
        assert (ids[:, 0] == BOS_ID).all()
        eos = (ids == EOS_ID).nonzero()
        assert eos[:, 0].tolist() == list(range(7))
        for r, e in eos.tolist():
            assert (ids[r, e + 1 :] == PAD_ID).all()
    single = [0, 2, 3, 4, 6]  # one-token views
    for i in single:
        for j in single:
            if i < j:
                assert _first_difference(n[i], n[j]) == 9
    assert _first_difference(n[0], n[1]) == 10  # front vs front_right
    assert _first_difference(n[0], n[5]) == 10  # front vs front_left
    for i in single:
        assert _first_difference(n[i], c[i]) == 12  # normal vs color
    for i in (1, 5):
        assert _first_difference(n[i], c[i]) == 14  # two-word views: 3 tokens (front _ right)


def _write_hf_tokenizer_files(tok: ClipBPETokenizer, merges: list[tuple[str, str]], folder: Path) -> tuple[Path, Path]:
    vocab = folder / "vocab.json"
    vocab.write_text(json.dumps(tok.encoder), encoding="utf-8")
    m = folder / "merges.txt"
    m.write_text("#version: 0.2\n" + "\n".join(" ".join(x) for x in merges) + "\n", encoding="utf-8")
    return vocab, m


def test_bpe_algorithm_matches_transformers_on_a_synthetic_vocab(tmp_path):
    transformers = pytest.importorskip("transformers")
    merges = [
        ("t", "h"),
        ("th", "e</w>"),
        ("a", "b"),
        ("ab", "c</w>"),
        ("c", "a"),
        ("ca", "b</w>"),
        ("h", "e"),
        ("b", "c"),
        ("bc", "a</w>"),
        ("e", "r</w>"),
        ("a", "b</w>"),
    ]
    ours = ClipBPETokenizer(merges)
    vocab, m = _write_hf_tokenizer_files(ours, merges, tmp_path)
    ref = transformers.CLIPTokenizer(str(vocab), str(m), pad_token="!")
    texts = ["the abc cab", "The  ABC,  bca?", "ab ab ab 3d  x_y", "hethe abcab cabbc 12", "<b> x-y; (cab)"]
    for t in texts:
        want = ref(t, padding="max_length", max_length=77, truncation=True)["input_ids"]
        assert ours(t)[0].tolist() == want, t
    # HF folder files load back to the same tokenizer
    again = ClipBPETokenizer.from_hf_files(vocab, m)
    assert again(texts).tolist() == ours(texts).tolist()


def test_real_vocab_reproduces_fixed_ids(tmp_path):
    path = _bpe_vocab_path()
    assert path.is_file(), f"CLIP vocabulary missing at {path} (tests/reference/clip is part of the repository)"
    tok = ClipBPETokenizer.from_bpe_file(path, check_sha256=True)
    assert len(tok.encoder) == 49408 and tok.encoder["!"] == PAD_ID
    for d in DOMAINS:
        assert torch.equal(tok(view_prompts(d)), fixed_prompt_token_ids(d))
    transformers = pytest.importorskip("transformers")
    text = path.read_bytes()
    import gzip

    merges = [tuple(x.split()) for x in gzip.decompress(text).decode().split("\n")[1 : 49152 - 256 - 2 + 1]]
    vocab, m = _write_hf_tokenizer_files(tok, merges, tmp_path)
    ref = transformers.CLIPTokenizer(str(vocab), str(m), pad_token="!")
    for d in DOMAINS:
        want = ref(view_prompts(d), padding="max_length", max_length=77, truncation=True)["input_ids"]
        assert fixed_prompt_token_ids(d).tolist() == want


def test_tokenizer_truncates_and_decodes():
    merges = [("a", "b</w>")]
    tok = ClipBPETokenizer(merges)
    ids = tok("ab " * 100)
    assert ids.shape == (1, 77) and ids[0, -1] == tok.eos_id and ids[0, 0] == tok.bos_id
    assert tok.decode(tok.encode("ab ab, x")) == "ab ab , x"
    with pytest.raises(WeightsNotFoundError):
        ClipBPETokenizer.from_bpe_file("/nonexistent/bpe.txt.gz")


def test_compute_prompt_embeddings_with_tiny_text_encoder():
    pytest.importorskip("transformers")
    from synchuman_core.encoders.clip import build_clip_text, materialize_buffers
    from synchuman_core.io.state_dict import load_state_dict_strict

    cfg = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "vocab_size": 49408,
        "max_position_embeddings": 77,
        "projection_dim": 8,
    }
    enc = build_clip_text(cfg)
    g = torch.Generator().manual_seed(0)
    load_state_dict_strict(enc, {k: torch.randn(v.shape, generator=g) for k, v in enc.state_dict().items()})
    materialize_buffers(enc)
    ids = fixed_prompt_token_ids("normal")
    emb = compute_prompt_embeddings(enc, ids)
    assert emb.shape == (7, 77, 32) and torch.isfinite(emb).all()
    # causal text transformer: rows agree up to the first differing token (position 9 for front/right)
    torch.testing.assert_close(emb[0, :9], emb[2, :9])
    assert not torch.allclose(emb[0, 9], emb[2, 9])


def test_view_selection_and_batches():
    n7 = torch.arange(7.0).view(7, 1, 1).expand(7, 77, 4)
    c7 = n7 + 10
    assert select_views(n7)[:, 0, 0].tolist() == [0, 2, 3, 4, 6]
    p10 = stage1_prompt_embeddings(n7, c7)
    assert p10[:, 0, 0].tolist() == [0, 2, 3, 4, 6, 10, 12, 13, 14, 16]
    p20 = cfg_prompt_batch(p10)
    assert p20[:, 0, 0].tolist() == [0, 2, 3, 4, 6] * 2 + [10, 12, 13, 14, 16] * 2
    with pytest.raises(CheckpointError):
        select_views(n7[:5])


def test_official_pt_loading(tmp_path):
    good = torch.randn(7, 77, 16).half()
    torch.save(good, tmp_path / "normal_embeds.pt")
    loaded = load_official_prompt_embeds(tmp_path / "normal_embeds.pt")
    assert loaded.dtype == torch.float16 and torch.equal(loaded, good)
    torch.save(torch.randn(5, 77, 16), tmp_path / "bad_shape.pt")
    with pytest.raises(CheckpointError):
        load_official_prompt_embeds(tmp_path / "bad_shape.pt")
    (tmp_path / "lfs.pt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n")
    with pytest.raises(CheckpointError):
        load_official_prompt_embeds(tmp_path / "lfs.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save(Evil(), tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_official_prompt_embeds(tmp_path / "evil.pt")
    with pytest.raises(WeightsNotFoundError):
        load_official_prompt_embeds(tmp_path / "missing.pt")


def test_safetensors_cache_round_trip(tmp_path):
    n7, c7 = torch.randn(7, 77, 16), torch.randn(7, 77, 16)
    save_prompt_embeds(tmp_path / "cache" / "prompts.safetensors", n7, c7)
    n, c = load_prompt_embeds(tmp_path / "cache" / "prompts.safetensors")
    assert torch.equal(n, n7) and torch.equal(c, c7)
    with pytest.raises(CheckpointError):
        save_prompt_embeds(tmp_path / "x.safetensors", n7[:3], c7)
    with pytest.raises(WeightsNotFoundError):
        load_prompt_embeds(tmp_path / "nope.safetensors")
