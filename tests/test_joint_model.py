"""The joint 2D-3D model on a tiny config: wiring, batch layouts, sync placement, errors."""

from __future__ import annotations

import pytest
import torch

from synchuman_core.errors import ConfigError, NumericalError
from synchuman_core.io.state_dict import load_state_dict_strict
from synchuman_core.parity.fixgen import fill_model
from synchuman_core.stage1.joint import (
    JointModelConfig,
    StructureSegment,
    SyncHumanJointModel,
    SyncPoint,
)
from synchuman_core.stage1.structure_flow import (
    SparseStructureFlowConfig,
    SparseStructureFlowModel,
    structure_pos_emb,
)
from synchuman_core.stage1.unet import MultiviewUNet, UNetConfig

V = 5


def tiny_config(**kw) -> JointModelConfig:
    """Same layout as the real model, small: 3 UNet levels (24 -> 12 -> 6), 8^3 structure, 3 DiT blocks."""
    unet = UNetConfig(
        sample_size=24, in_channels=8, out_channels=4, block_out_channels=(32, 64, 64),
        down_block_types=("CrossAttnDownBlockMV2D", "CrossAttnDownBlockMV2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlockMV2D", "CrossAttnUpBlockMV2D"),
        layers_per_block=1, num_attention_heads=(1, 2, 2), cross_attention_dim=16, class_embed_input_dim=16,
    )
    structure = SparseStructureFlowConfig(
        resolution=8, in_channels=8, model_channels=64, cond_channels=16, out_channels=8, num_blocks=3,
        num_heads=2, mlp_ratio=1, patch_size=1, qk_rms_norm=True,
    )
    args = dict(
        unet=unet, structure=structure, sync_heads=2, sync_head_dim=16,
        sync_points=(SyncPoint("after_down", 0, "ss", 0), SyncPoint("after_down", 1, "mv", 0),
                     SyncPoint("before_up", 0, "mv", 1), SyncPoint("before_up", 1, "ss", 1)),
        structure_segments=(StructureSegment("before_down", 0, 1), StructureSegment("after_mid", 1, 2),
                            StructureSegment("after_up", 2, 3)),
    )
    args.update(kw)
    return JointModelConfig(**args)


def build(cfg: JointModelConfig, seed: int = 0) -> SyncHumanJointModel:
    with torch.device("meta"):
        model = SyncHumanJointModel(cfg)
    model.to_empty(device="cpu")
    fill_model(model, seed)
    model.pos_emb = structure_pos_emb(cfg.structure)
    return model.eval()


def inputs(groups: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    b = 2 * groups * V
    return dict(
        sample=torch.randn(b, 8, 24, 24, generator=g),
        timestep=torch.tensor(700.0, dtype=torch.float64),
        encoder_hidden_states=torch.randn(b, 7, 16, generator=g),
        class_labels=torch.randn(b, 16, generator=g),
        trellis_x=torch.randn(groups, 8, 8, 8, 8, generator=g),
        trellis_t=torch.tensor([700.0]),
        trellis_cond=torch.randn(groups, 5, 16, generator=g),
    )


@pytest.fixture(scope="module")
def model() -> SyncHumanJointModel:
    return build(tiny_config())


def _select_group(inp: dict, gi: int, groups: int) -> dict:
    out = dict(inp)
    for k in ("sample", "encoder_hidden_states", "class_labels"):
        t = inp[k]
        out[k] = t.view(2, groups, V, *t.shape[1:])[:, gi].reshape(2 * V, *t.shape[1:])
    for k in ("trellis_x", "trellis_cond"):
        out[k] = inp[k][gi : gi + 1]
    return out


def test_forward_shapes_and_determinism(model):
    inp = inputs(2)
    with torch.no_grad():
        v2d, v3d = model(**inp)
        again = model(**inp)
    assert v2d.shape == (20, 4, 24, 24) and v3d.shape == (2, 8, 8, 8, 8)
    assert torch.isfinite(v2d).all() and torch.isfinite(v3d).all()
    assert torch.equal(v2d, again[0]) and torch.equal(v3d, again[1])


def test_cfg_groups_can_run_in_sequence(model):
    """Batch-agnostic: the [uncond, cond] batch equals two single-group calls."""
    inp = inputs(2)
    with torch.no_grad():
        v2d, v3d = model(**inp)
        for gi in range(2):
            a2, a3 = model(**_select_group(inp, gi, 2))
            torch.testing.assert_close(a2, v2d.view(2, 2, V, 4, 24, 24)[:, gi].reshape(2 * V, 4, 24, 24),
                                       rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(a3, v3d[gi : gi + 1], rtol=1e-4, atol=1e-5)


def test_zeroed_bridges_reduce_to_independent_models(model):
    """With the bridges' output layers zero, the joint model is the UNet + the structure flow DiT."""
    cfg = model.config
    m = build(cfg)
    with torch.no_grad():
        for blk in m.dual_CrossAttblocks_SS:
            blk.output_layer_stucture.weight.zero_()
            blk.output_layer_stucture.bias.zero_()
        for blk in m.dual_CrossAttblocks_MV:
            for lin in (blk.output_layer_no, blk.output_layer_clr):
                lin.weight.zero_()
                lin.bias.zero_()
    sd = m.state_dict()
    unet = MultiviewUNet(cfg.unet)
    load_state_dict_strict(unet, {k: v for k, v in sd.items() if k in unet.state_dict()})
    flow = SparseStructureFlowModel(cfg.structure)
    load_state_dict_strict(flow, {k: v for k, v in sd.items() if k in flow.state_dict()})
    inp = inputs(1)
    with torch.no_grad():
        v2d, v3d = m(**inp)
        ref2d = unet.eval()(inp["sample"], inp["timestep"], inp["encoder_hidden_states"], inp["class_labels"])
        ref3d = flow.eval()(inp["trellis_x"], inp["trellis_t"], inp["trellis_cond"])
    torch.testing.assert_close(v2d, ref2d, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v3d, ref3d, rtol=1e-5, atol=1e-5)


def test_sync_points_run_where_configured_and_skips_keep_pre_sync_features(model):
    seen = []
    hooks = [
        blk.register_forward_hook(lambda m, a, o, n=n: seen.append((n, tuple(a[0].shape))))
        for n, blk in [("ss0", model.dual_CrossAttblocks_SS[0]), ("ss1", model.dual_CrossAttblocks_SS[1]),
                       ("mv0", model.dual_CrossAttblocks_MV[0]), ("mv1", model.dual_CrossAttblocks_MV[1])]
    ]
    rec = {}
    hooks.append(model.down_blocks[1].register_forward_hook(lambda m, a, o: rec.update(pre=o[1][-1])))
    hooks.append(model.dual_CrossAttblocks_MV[0].register_forward_hook(lambda m, a, o: rec.update(post=o)))
    # up_blocks[0].resnets[1] consumes the skip written by down_blocks[1]'s downsampler
    hooks.append(model.up_blocks[0].resnets[1].register_forward_pre_hook(lambda m, a: rec.update(cat=a[0])))
    try:
        with torch.no_grad():
            model(**inputs(2))
    finally:
        for h in hooks:
            h.remove()
    assert seen == [("ss0", (20, 32, 12, 12)), ("mv0", (20, 64, 6, 6)), ("mv1", (20, 64, 6, 6)),
                    ("ss1", (20, 64, 12, 12))]
    skip = rec["cat"][:, -64:]
    assert torch.equal(skip, rec["pre"])
    assert not torch.allclose(skip, rec["post"])


def test_face_view_untouched_by_mv_bridge(model):
    mv = model.dual_CrossAttblocks_MV[0]
    x = torch.randn(20, 64, 6, 6)
    h = torch.randn(2, 512, 64)
    with torch.no_grad():
        y = mv(x, h)
    face = torch.zeros(20, dtype=torch.bool).view(2, 2, V)
    face[:, :, V - 1] = True
    face = face.reshape(-1)
    assert torch.equal(y[face], x[face])
    assert not torch.allclose(y[~face], x[~face])


def test_ss_bridge_ignores_color_half_and_face(model):
    ss = model.dual_CrossAttblocks_SS[0]
    x = torch.randn(20, 32, 12, 12)
    h = torch.randn(2, 512, 64)
    x2 = x.clone()
    x2[10:] = torch.randn(10, 32, 12, 12)  # color half
    x2.view(2, 2, V, 32, 12, 12)[0, :, V - 1] = 7.0  # normal face views
    with torch.no_grad():
        assert torch.equal(ss(x, h), ss(x2, h))
        x3 = x.clone()
        x3[0] += 1.0
        assert not torch.allclose(ss(x3, h), ss(x, h))


def test_input_errors(model):
    inp = inputs(2)
    with pytest.raises(ValueError, match="groups"):
        model(**{**inp, "trellis_x": inp["trellis_x"][:1]})
    with pytest.raises(ValueError, match="2 domains"):
        model(**{**inp, "sample": inp["sample"][:15]})
    with pytest.raises(ValueError, match="24x24"):
        model(**{**inp, "sample": torch.randn(20, 8, 48, 48)})
    bad = dict(inp)
    bad["sample"] = inp["sample"].clone()
    bad["sample"][0, 0, 0, 0] = float("nan")
    with pytest.raises(NumericalError):
        with torch.no_grad():
            model(**bad)


def test_config_validation():
    with pytest.raises(ConfigError):
        tiny_config(sync_points=(SyncPoint("after_down", 0, "ss", 1),))  # index 1 without 0
    with pytest.raises(ConfigError):
        tiny_config(sync_points=(SyncPoint("after_down", 7, "ss", 0),))  # no such block
    with pytest.raises(ConfigError):
        tiny_config(structure_segments=(StructureSegment("before_down", 0, 2), StructureSegment("after_mid", 2, 2),
                                        StructureSegment("after_up", 2, 2)))  # does not cover block 2
    cfg = tiny_config(structure_segments=None)  # official split clipped to 3 blocks: [0:3], [3:3], [3:3]
    assert [(s.start, s.stop) for s in cfg.segments] == [(0, 3), (3, 3), (3, 3)]
