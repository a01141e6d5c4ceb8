"""Stage-1 multiview UNet layers: key names / math against diffusers, attention patterns against loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from synchuman_core.stage1.unet import MultiviewUNet, UNetConfig
from synchuman_core.stage1.unet_layers import (
    Downsample2D,
    GEGLUFeedForward,
    JointDomainSelfAttention,
    PromptCrossAttention,
    ResnetBlock2D,
    RowwiseMultiviewAttention,
    TimestepEmbedding,
    Upsample2D,
    blend_face_into_front,
    sinusoidal_timestep_embedding,
)


def _randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(1, p[0].numel() if p.ndim > 1 else 10)))
    return module


def _same_as_diffusers(ours: torch.nn.Module, theirs: torch.nn.Module, *args) -> None:
    assert list(ours.state_dict()) == list(theirs.state_dict()) or set(ours.state_dict()) == set(theirs.state_dict())
    _randomize(ours)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        a, b = ours(*args), theirs(*args)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_resnet_sampling_ff_embedding_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    from diffusers.models.attention import FeedForward
    from diffusers.models.embeddings import TimestepEmbedding as DTimestepEmbedding
    from diffusers.models.embeddings import get_timestep_embedding
    from diffusers.models.resnet import Downsample2D as DDown
    from diffusers.models.resnet import ResnetBlock2D as DRes
    from diffusers.models.resnet import Upsample2D as DUp

    assert diffusers is not None
    x = torch.randn(2, 64, 6, 6)
    temb = torch.randn(2, 32)
    _same_as_diffusers(ResnetBlock2D(64, 32, 32, groups=32, eps=1e-5),
                       DRes(in_channels=64, out_channels=32, temb_channels=32, groups=32, eps=1e-5), x, temb)
    _same_as_diffusers(ResnetBlock2D(64, 64, 32), DRes(in_channels=64, out_channels=64, temb_channels=32, eps=1e-5), x, temb)
    _same_as_diffusers(Downsample2D(64), DDown(64, use_conv=True, out_channels=64, padding=1, name="op"), x)
    _same_as_diffusers(Upsample2D(64), DUp(64, use_conv=True, out_channels=64), x)
    _same_as_diffusers(GEGLUFeedForward(32), FeedForward(32), torch.randn(3, 5, 32))
    _same_as_diffusers(TimestepEmbedding(16, 32), DTimestepEmbedding(16, 32), torch.randn(4, 16))
    t = torch.tensor([0.0, 1.0, 923.0769230769231, 999.0], dtype=torch.float64)
    torch.testing.assert_close(
        sinusoidal_timestep_embedding(t, 320, flip_sin_to_cos=True, freq_shift=0),
        get_timestep_embedding(t, 320, flip_sin_to_cos=True, downscale_freq_shift=0),
        rtol=0, atol=0,
    )


def _softmax_attn(q, k, v, heads):
    """Reference: ``q [Lq, C]``, ``k, v [Lk, C]`` -> ``[Lq, C]`` with ``heads`` heads."""
    lq, c = q.shape
    d = c // heads
    qh, kh, vh = (t.reshape(t.shape[0], heads, d).transpose(0, 1) for t in (q, k, v))
    w = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(d), dim=-1)
    return (w @ vh).transpose(0, 1).reshape(lq, c)


def test_joint_domain_attention_pairs_domains_and_blends_face():
    torch.manual_seed(0)
    groups, views, h, w, c, heads = 2, 5, 6, 6, 8, 2
    attn = _randomize(JointDomainSelfAttention(c, heads, c // heads, views)).eval()
    x = torch.randn(2 * groups * views, h * w, c)
    with torch.no_grad():
        ours = attn(x, (h, w))
        half = groups * views
        ref = torch.empty_like(x)
        for i in range(half):
            joint = torch.cat([x[i], x[half + i]])  # normal tokens then color tokens
            o = _softmax_attn(attn.to_q(joint), attn.to_k(joint), attn.to_v(joint), heads)
            o = attn.to_out[0](o)
            ref[i], ref[half + i] = o[: h * w], o[h * w:]
        # face blend: view 0 region rows [0,2), cols [2,4) <- 0.5 * itself + 0.5 * face resized to 2x2
        for b in range(2 * groups):
            front, face = ref[b * views], ref[b * views + views - 1]
            small = F.interpolate(face.T.reshape(1, c, h, w), size=(2, 2), mode="bilinear", align_corners=False)
            grid = front.reshape(h, w, c)
            grid[0:2, 2:4] = 0.5 * grid[0:2, 2:4] + 0.5 * small[0].permute(1, 2, 0)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_face_blend_touches_only_the_front_region():
    views, h, c = 5, 9, 3
    out = torch.zeros(2 * views, h * h, c)
    out.view(2, views, h, h, c)[:, views - 1] = 4.0  # face view constant 4
    res = blend_face_into_front(out, (h, h), views).view(2, views, h, h, c)
    expected = torch.zeros(2, views, h, h, c)
    expected[:, views - 1] = 4.0
    expected[:, 0, 0:3, 3:6] = 2.0
    assert torch.equal(res, expected)
    assert torch.count_nonzero(out.view(2, views, h, h, c)[:, 0]) == 0  # input untouched
    with pytest.raises(ValueError):
        blend_face_into_front(torch.zeros(5, 8 * 8, 1), (8, 8), 5)


def test_rowwise_attention_connects_same_rows_of_body_views():
    torch.manual_seed(1)
    groups, vb, h, w, c, heads = 2, 4, 3, 5, 8, 2
    attn = _randomize(RowwiseMultiviewAttention(c, heads, c // heads, vb)).eval()
    x = torch.randn(groups * vb, h * w, c)
    with torch.no_grad():
        ours = attn(x, (h, w))
        ref = torch.empty_like(x)
        grid = x.view(groups, vb, h, w, c)
        for gi in range(groups):
            for r in range(h):
                seq = grid[gi, :, r].reshape(vb * w, c)  # row r of every view
                o = attn.to_out[0](_softmax_attn(attn.to_q(seq), attn.to_k(seq), attn.to_v(seq), heads))
                ref.view(groups, vb, h, w, c)[gi, :, r] = o.view(vb, w, c)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_prompt_cross_attention_is_per_image():
    torch.manual_seed(2)
    attn = _randomize(PromptCrossAttention(8, 2, 4, kv_dim=6)).eval()
    x, ctx = torch.randn(3, 10, 8), torch.randn(3, 7, 6)
    with torch.no_grad():
        ours = attn(x, ctx)
        ref = torch.stack([attn.to_out[0](_softmax_attn(attn.to_q(x[i]), attn.to_k(ctx[i]), attn.to_v(ctx[i]), 2))
                           for i in range(3)])
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def _tiny_unet_config() -> UNetConfig:
    return UNetConfig(
        sample_size=24, in_channels=8, out_channels=4, block_out_channels=(32, 64, 64),
        down_block_types=("CrossAttnDownBlockMV2D", "CrossAttnDownBlockMV2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlockMV2D", "CrossAttnUpBlockMV2D"),
        layers_per_block=1, num_attention_heads=(1, 2, 2), cross_attention_dim=16, class_embed_input_dim=16,
    )


def test_tiny_unet_forward_and_keys():
    cfg = _tiny_unet_config()
    unet = _randomize(MultiviewUNet(cfg)).eval()
    keys = unet.state_dict().keys()
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn_mv.to_out.0.bias" in keys
    assert "down_blocks.0.attentions.0.transformer_blocks.0.norm_mv.weight" in keys
    assert "up_blocks.0.resnets.0.conv_shortcut.weight" in keys  # up-block resnets take skip channels
    assert "down_blocks.2.downsamplers.0.conv.weight" not in keys  # last level does not downsample
    # heads quirk: level 1 has 2 heads of 64/2 = 32 channels
    assert unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.dim_head == 32
    x = torch.randn(20, 8, 24, 24)
    with torch.no_grad():
        out = unet(x, 500.0, torch.randn(20, 7, 16), torch.randn(20, 16))
    assert out.shape == (20, 4, 24, 24) and torch.isfinite(out).all()
    with pytest.raises(ValueError):
        unet(torch.randn(15, 8, 24, 24), 500.0, torch.randn(15, 7, 16), torch.randn(15, 16))


@pytest.mark.parametrize("shape", [(2, 8, 5, 7), (1, 4, 1, 1), (3, 16, 12, 12)])
def test_upsample_phase_kernels_equal_interpolate_then_conv(shape):
    """Upsample2D runs nearest x2 + 3x3 conv as one 2x2 conv with four output phases on the
    low-resolution input: in float64 it equals the textbook interpolate + conv to rounding, for odd,
    non-square and 1x1 maps (zero padding at every border), with or without an explicit x2 size."""
    up = _randomize(Upsample2D(shape[1]), seed=shape[2]).double()
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = up.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        torch.testing.assert_close(up(x), ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(up(x, (2 * shape[2], 2 * shape[3])), ref, rtol=1e-12, atol=1e-12)
        odd = (2 * shape[2] + 1, 2 * shape[3] + 1)  # not x2: the plain path
        torch.testing.assert_close(up(x, odd), up.conv(F.interpolate(x, size=odd, mode="nearest")))
    # half precision: the folded kernel is summed in fp32, then rounded once
    half = Upsample2D(shape[1]).to(torch.bfloat16)
    half.load_state_dict(up.state_dict())
    with torch.no_grad():
        got = half(x.to(torch.bfloat16)).double()
    assert (got - ref).abs().max() <= 0.05 * ref.abs().max()
