"""Speed hygiene: no host synchronisation per sampling step, compile flag, attention backend choice."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from synchuman_core.memory import HostSyncCounter, compile_heavy_modules
from synchuman_core.model_source import ModuleSet
from synchuman_core.samplers import SamplerSettings, make_generator
from synchuman_core.stage1.sampling import Stage1Conditioning, sample_joint


def _stand_in_joint(sample, timestep, encoder_hidden_states, class_labels, trellis_x, trellis_t, trellis_cond):
    """Pure tensor arithmetic with the joint model's contract (no syncs of its own)."""
    v2d = sample[:, :4] * 0.1 + sample[:, 4:] * 0.01 + class_labels.mean(-1)[:, None, None, None] * 1e-3
    v3d = trellis_x * 0.1 + trellis_cond.mean((1, 2))[:, None, None, None, None] * 1e-3 + trellis_t * 1e-6
    return v2d, v3d


def _cond(views=5, size=8, g=None):
    g = g or torch.Generator().manual_seed(0)
    return Stage1Conditioning(
        torch.randn(2 * views, 77, 16, generator=g), torch.randn(2 * views, 32, generator=g),
        torch.randn(2 * views, 4, size, size, generator=g), torch.randn(1, 20, 16, generator=g),
    )


@pytest.mark.parametrize("cfg_batching", ["batched", "sequential"])
def test_stage1_sampling_loop_never_syncs(cfg_batching):
    counts = []
    for steps in (2, 6):
        with HostSyncCounter() as syncs:
            sample_joint(_stand_in_joint, _cond(), SamplerSettings.stage1(steps=steps), make_generator(0),
                         cfg_batching=cfg_batching)
        counts.append(syncs.total)
    # only the NaN check after the loop (two bool() calls), independent of the number of steps
    assert counts == [2, 2]
    with HostSyncCounter() as syncs:
        sample_joint(_stand_in_joint, _cond(), SamplerSettings.stage1(steps=3), make_generator(0), check_finite=False)
    assert syncs.total == 0


def _coords(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.randperm(64**3, generator=g)[:n].sort().values
    return torch.stack([torch.zeros_like(xyz), xyz // 4096, (xyz // 64) % 64, xyz % 64], 1).int()


def test_slat_sampling_loop_never_syncs():
    """Stage 2: everything that depends on the voxels only (neighbour maps, the 32³ down-sampled
    coordinates, index, counts and layout) is derived on the first model call and cached on the shared
    coordinates, so further steps add no host sync at all."""
    from synchuman_core.io.tiny import tiny_model
    from synchuman_core.stage2.sampling import sample_slat

    flow, _ = tiny_model("slat_flow")
    flow = flow.float()
    per_steps = {}
    results = {}
    for steps in (2, 4):
        with HostSyncCounter() as syncs:
            results[steps] = sample_slat(flow, _coords(), torch.randn(1, 20, 32, generator=torch.Generator().manual_seed(1)),
                                         SamplerSettings.stage2(steps=steps), make_generator(0))
        per_steps[steps] = syncs
    assert per_steps[4].counts == per_steps[2].counts, (per_steps[2].counts, per_steps[4].counts)
    assert per_steps[4].at("sampling.py") == 2  # setup + NaN check only
    assert per_steps[2].at("sparse/spatial.py") > 0  # the first call derives the coarse grid (counted)
    assert torch.isfinite(results[4].feats).all()


def test_cached_downsample_equals_fresh():
    """The spatial-cache path of SparseDownsample gives the same coarse tensor as a fresh derivation."""
    from synchuman_core.sparse import SparseTensor
    from synchuman_core.sparse.spatial import SparseDownsample

    coords = torch.cat([_coords(150, 1), _coords(90, 2) + torch.tensor([1, 0, 0, 0], dtype=torch.int32)])
    feats = torch.randn(coords.shape[0], 6, generator=torch.Generator().manual_seed(0))
    down = SparseDownsample(2)
    x = SparseTensor(feats, coords)
    first = down(x)
    again = down(x.replace(feats * 2))  # same coordinates: served from the cache
    fresh = down(SparseTensor(feats * 2, coords.clone()))  # new tensor, new cache
    assert torch.equal(again.coords, fresh.coords) and again.layout == fresh.layout
    torch.testing.assert_close(again.feats, fresh.feats, rtol=0, atol=0)
    torch.testing.assert_close(first.feats * 2, again.feats)
    assert [s.stop - s.start for s in fresh.layout] == [int((fresh.coords[:, 0] == b).sum()) for b in range(2)]


def _tiny_joint():
    from synchuman_core.io.tiny import fill_tiny
    from synchuman_core.io.tiny_configs import TINY_JOINT
    from synchuman_core.stage1.joint import JointModelConfig, SyncHumanJointModel

    cfg = JointModelConfig.from_official(
        {**TINY_JOINT, "sample_size": 24, "model_channels": 32, "num_heads": 2, "num_head_channels": 16}
    )
    joint = fill_tiny(SyncHumanJointModel(dataclasses.replace(cfg, sync_heads=2, sync_head_dim=16)), 1).eval()
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(10, 8, 24, 24, generator=g), torch.tensor(500.0), torch.randn(10, 77, 32, generator=g),
            torch.randn(10, 32, generator=g), torch.randn(1, 8, 16, 16, 16, generator=g), torch.tensor([500.0]),
            torch.randn(1, 1374, 32, generator=g))
    return joint, args


@torch.no_grad()
def test_joint_forward_checks_once_and_sampler_defers_it():
    """A direct joint forward checks the UNet features for NaN/Inf (one host sync); inside
    ``sample_joint`` that check is switched off and the sampler checks its result once after the loop,
    so a whole stage-1 run syncs twice whatever the number of steps, and the results are unchanged."""
    joint, args = _tiny_joint()
    with HostSyncCounter() as syncs:
        ref = joint(*args)
    assert syncs.total == 1, syncs.counts
    joint.check_finite = False
    with HostSyncCounter() as syncs:
        out = joint(*args)
    assert syncs.total == 0, syncs.counts
    torch.testing.assert_close(out[0], ref[0], rtol=0, atol=0)
    joint.check_finite = True

    g = torch.Generator().manual_seed(3)
    cond = Stage1Conditioning(torch.randn(10, 77, 32, generator=g), torch.randn(10, 32, generator=g),
                              torch.randn(10, 4, 24, 24, generator=g), torch.randn(1, 1374, 32, generator=g))
    counts = []
    for steps in (1, 3):
        with HostSyncCounter() as syncs:
            sample_joint(joint, cond, SamplerSettings.stage1(steps=steps), make_generator(0))
        counts.append(syncs.total)
    assert counts == [2, 2]
    assert joint.check_finite is True  # restored after the loop


def test_sampler_still_catches_nan_from_the_joint_model():
    from synchuman_core.errors import NumericalError

    joint, _ = _tiny_joint()
    with torch.no_grad():
        joint.conv_out.bias.fill_(float("nan"))
    g = torch.Generator().manual_seed(3)
    cond = Stage1Conditioning(torch.randn(10, 77, 32, generator=g), torch.randn(10, 32, generator=g),
                              torch.randn(10, 4, 24, 24, generator=g), torch.randn(1, 1374, 32, generator=g))
    with pytest.raises(NumericalError, match="NaN"):
        sample_joint(joint, cond, SamplerSettings.stage1(steps=2), make_generator(0))
    assert joint.check_finite is True
    with pytest.raises(NumericalError):
        joint.conv_in.bias.data.fill_(float("nan"))
        with torch.no_grad():
            joint(torch.randn(10, 8, 24, 24), torch.tensor(500.0), cond.prompt_embeds, cond.image_embeds,
                  torch.randn(1, 8, 16, 16, 16), torch.tensor([500.0]), cond.structure_cond)


@pytest.mark.slow
@torch.no_grad()
def test_compile_heavy_modules_keeps_keys_and_results():
    """Regional ``torch.compile`` of the joint model's blocks (dynamo tracing with the eager backend:
    the graphs, not the inductor kernels; inductor compile takes minutes on CPU)."""
    joint, args = _tiny_joint()
    keys = list(joint.state_dict())
    ref = joint(*args)
    models = ModuleSet({"joint": joint}, prompt_embeds=torch.zeros(10, 77, 4))
    names = compile_heavy_modules(models, backend="eager")
    assert "mid_block" in names and "blocks.0" in names
    assert compile_heavy_modules(models) == []  # idempotent
    out = joint(*args)
    assert list(joint.state_dict()) == keys
    torch.testing.assert_close(out[0], ref[0], rtol=0, atol=0)
    torch.testing.assert_close(out[1], ref[1], rtol=0, atol=0)
