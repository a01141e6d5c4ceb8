"""DINOv2 with registers: hub keys, equality with transformers' Dinov2WithRegistersModel, key conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synchuman_core.encoders.dinov2 import DINOV2_VITL14_REG4, DINOv2, DINOv2Config
from synchuman_core.encoders.dinov2_keys import convert_dinov2_state_dict, hf_to_hub_keys, hub_to_hf_keys
from synchuman_core.errors import CheckpointError, ConfigError, InputImageError
from synchuman_core.io.dinov2_files import load_dinov2
from synchuman_core.io.state_dict import load_state_dict_strict

transformers = pytest.importorskip("transformers")

TINY = DINOv2Config(embed_dim=32, depth=4, num_heads=2, patch_size=14, img_size=56, num_register_tokens=4)


def _hf_config(cfg: DINOv2Config):
    return transformers.Dinov2WithRegistersConfig(
        hidden_size=cfg.embed_dim,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.hidden_dim,
        mlp_ratio=int(cfg.mlp_ratio),
        image_size=cfg.img_size,
        patch_size=cfg.patch_size,
        num_register_tokens=cfg.num_register_tokens,
        layer_norm_eps=cfg.layer_norm_eps,
    )


def _random_hub_state_dict(cfg: DINOv2Config, seed: int = 0) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        ref = DINOv2(cfg)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in ref.state_dict().items():
        t = torch.randn(v.shape, generator=g) * 0.2
        if k.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            t = 1.0 + t
        sd[k] = t
    return sd


@pytest.fixture(scope="module")
def pair():
    sd = _random_hub_state_dict(TINY)
    with torch.device("meta"):
        ours = DINOv2(TINY)
    load_state_dict_strict(ours, sd, source="random tiny DINOv2")
    hf = transformers.Dinov2WithRegistersModel(_hf_config(TINY))
    hf.load_state_dict(hub_to_hf_keys(sd), strict=True)
    return ours.eval(), hf.eval(), sd


def test_real_config_keys_and_count():
    with torch.device("meta"):
        m = DINOv2(DINOV2_VITL14_REG4)
    sd = m.state_dict()
    assert sum(v.numel() for v in sd.values()) == 304_372_736
    assert len(sd) == 4 + 2 + 24 * 14 + 2
    assert tuple(sd["pos_embed"].shape) == (1, 37 * 37 + 1, 1024)
    assert tuple(sd["register_tokens"].shape) == (1, 4, 1024)
    assert tuple(sd["mask_token"].shape) == (1, 1024)
    assert tuple(sd["blocks.23.attn.qkv.weight"].shape) == (3072, 1024)
    assert tuple(sd["blocks.0.ls1.gamma"].shape) == (1024,)
    assert tuple(sd["patch_embed.proj.weight"].shape) == (1024, 3, 14, 14)
    assert all(v.device.type == "meta" for v in sd.values())


@pytest.mark.parametrize("size", [(56, 56), (98, 98), (70, 42)])
def test_prenorm_matches_transformers(pair, size):
    ours, hf, _ = pair
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        mine = ours(x)
        ref = hf(pixel_values=x, output_hidden_states=True)
    assert mine.shape == (2, 1 + 4 + (size[0] // 14) * (size[1] // 14), 32)
    torch.testing.assert_close(mine, ref.hidden_states[-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.norm(mine), ref.last_hidden_state, atol=1e-5, rtol=0)


def test_intermediate_layers_match_transformers(pair):
    ours, hf, _ = pair
    x = torch.randn(3, 3, 98, 98)  # 7x7 patches: pos-embed interpolated from 4x4
    with torch.no_grad():
        mine = ours.get_intermediate_layers(x, [0, 1, 3])
        ref = hf(pixel_values=x, output_hidden_states=True).hidden_states
    for i, out in zip([0, 1, 3], mine):
        expect = hf.layernorm(ref[i + 1])[:, 5:]
        assert out.shape == (3, 49, 32)
        torch.testing.assert_close(out, expect, atol=1e-5, rtol=0)
    last2 = ours.get_intermediate_layers(x, 2, norm=False)
    torch.testing.assert_close(last2[1], ref[4][:, 5:], atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        ours.get_intermediate_layers(x, [4])


def test_global_condition(pair):
    ours, hf, _ = pair
    img = np.random.default_rng(0).integers(0, 256, size=(56, 56, 3), dtype=np.uint8)
    cond = ours.global_condition(img)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        pre = hf(pixel_values=(x - mean) / std, output_hidden_states=True).hidden_states[-1]
    expect = F.layer_norm(pre, (32,), eps=1e-5)
    assert cond.shape == (1, 1 + 4 + 16, 32) and cond.dtype == torch.float32
    torch.testing.assert_close(cond, expect, atol=1e-5, rtol=0)
    # same result from a float tensor [B,3,H,W] in [0,1], from a uint8 tensor and from PIL
    torch.testing.assert_close(ours.global_condition(x), cond)
    torch.testing.assert_close(ours.global_condition(torch.from_numpy(img)[None]), cond)
    with pytest.raises(InputImageError):
        ours.global_condition(np.zeros((50, 50, 3), np.uint8))
    with pytest.raises(InputImageError):
        ours.global_condition(np.zeros((56, 56), np.uint8))


def test_multiview_features(pair):
    ours, hf, _ = pair
    views = torch.rand(3, 3, 64, 64)
    feats = ours.multiview_features(views, layers=[1, 3], size=98, slice_size=2)
    assert feats.shape == (3, 7, 7, 64)
    x = F.interpolate(views, size=(98, 98), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        hs = hf(pixel_values=(x - mean) / std, output_hidden_states=True).hidden_states
    expect = torch.cat([hf.layernorm(hs[2])[:, 5:], hf.layernorm(hs[4])[:, 5:]], dim=-1).reshape(3, 7, 7, 64)
    torch.testing.assert_close(feats, expect, atol=1e-5, rtol=0)
    # slicing does not change the result; a [B,V,...] batch keeps its layout
    torch.testing.assert_close(ours.multiview_features(views, layers=[1, 3], size=98, slice_size=1), feats)
    batched = ours.multiview_features(views[None], layers=[1, 3], size=98)
    assert batched.shape == (1, 3, 7, 7, 64)
    torch.testing.assert_close(batched[0], feats)


def test_key_conversion_round_trip(pair):
    _, hf, sd = pair
    for new_names in (True, False):
        hf_sd = hub_to_hf_keys(sd, new_names=new_names)
        back = hf_to_hub_keys(hf_sd)
        assert back.keys() == sd.keys()
        for k in sd:
            assert torch.equal(back[k], sd[k]), k
    # the keys transformers itself produces convert too, also with a model prefix
    prefixed = {f"dinov2_with_registers.{k}": v for k, v in hf.state_dict().items()}
    back = convert_dinov2_state_dict(prefixed)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    # hub checkpoints pass through (also wrapped)
    assert convert_dinov2_state_dict({"model": sd}).keys() == sd.keys()


def test_key_conversion_errors(pair):
    _, _, sd = pair
    hf_sd = hub_to_hf_keys(sd)
    with pytest.raises(CheckpointError):
        hf_to_hub_keys({**hf_sd, "classifier.weight": torch.zeros(2, 2)})
    hf_sd.pop("encoder.layer.1.attention.k_proj.weight")
    with pytest.raises(CheckpointError):
        hf_to_hub_keys(hf_sd)


def test_config_from_official():
    hf = _hf_config(DINOV2_VITL14_REG4).to_dict()
    hf["image_size"] = 518
    assert DINOv2Config.from_official(hf) == DINOV2_VITL14_REG4
    assert DINOv2Config.from_official({"depth": 2, "embed_dim": 64, "num_heads": 4}).depth == 2
    with pytest.raises(ConfigError):
        DINOv2Config.from_official({"use_swiglu_ffn": True})
    with pytest.raises(ConfigError):
        DINOv2Config.from_official({"frobnicate": 1})
    with pytest.raises(ConfigError):
        DINOv2Config(embed_dim=30, num_heads=4)


def test_fp16_module_keeps_dtypes(pair):
    _, _, sd = pair
    with torch.device("meta"):
        m = DINOv2(TINY, dtype=torch.float16)
    load_state_dict_strict(m, sd)
    assert all(p.dtype == torch.float16 for p in m.parameters())
    cond = m.global_condition(torch.rand(1, 3, 56, 56))
    assert cond.dtype == torch.float32 and torch.isfinite(cond).all()
    feats = m.multiview_features(torch.rand(2, 3, 40, 40), layers=[3], size=56)
    assert feats.dtype == torch.float16 and feats.shape == (2, 4, 4, 32)


def test_pos_embed_interpolation_37_to_64_matches_transformers():
    """The real grid sizes (518 -> 37x37 stored, 896 -> 64x64 used) with a narrow embedding."""
    cfg = DINOv2Config(embed_dim=8, depth=1, num_heads=2, img_size=518)
    sd = _random_hub_state_dict(cfg, seed=3)
    with torch.device("meta"):
        ours = DINOv2(cfg)
    load_state_dict_strict(ours, sd)
    hf = transformers.Dinov2WithRegistersModel(_hf_config(cfg))
    hf.load_state_dict(hub_to_hf_keys(sd), strict=True)
    tokens = torch.zeros(1, 1 + 64 * 64, 8)
    ref = hf.embeddings.interpolate_pos_encoding(tokens, 896, 896)
    mine = ours.interpolate_pos_encoding(64, 64, torch.float32)
    assert mine.shape == (1, 1 + 4096, 8)
    torch.testing.assert_close(mine, ref, atol=1e-6, rtol=0)
    assert torch.equal(ours.interpolate_pos_encoding(37, 37, torch.float32), sd["pos_embed"])


def test_load_dinov2_accepts_hub_and_transformers_keys(pair):
    ours, hf, sd = pair
    x = torch.randn(1, 3, 56, 56)
    for source in (sd, hf.state_dict(), {"model": sd}):
        m = load_dinov2(source, TINY)
        assert not m.training and m.dtype == torch.float32
        with torch.no_grad():
            torch.testing.assert_close(m(x), ours(x), atol=0, rtol=0)
    half = load_dinov2(sd, TINY, dtype=torch.float16)
    assert half.dtype == torch.float16
    from synchuman_core.errors import StateDictMismatchError

    with pytest.raises(StateDictMismatchError):
        load_dinov2({k: v for k, v in sd.items() if k != "norm.weight"}, TINY)
