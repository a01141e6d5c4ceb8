import json

import torch
import torch.nn.functional as F
from conftest import manifest_path

from synchuman_core.modules import ModulatedTransformerCrossBlock, convert_to_fp16
from synchuman_core.sparse import (
    FP16_SPARSE_MODULE_TYPES,
    ModulatedSparseTransformerCrossBlock,
    SparseFeedForwardNet,
    SparseTensor,
    SparseTransformerBlock,
)


def _random_sparse(counts, channels, res=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b, n in enumerate(counts):
        cells = torch.randperm(res**3, generator=g)[:n]
        xyz = torch.stack([cells // (res * res), (cells // res) % res, cells % res], 1)
        coords.append(torch.cat([torch.full((n, 1), b), xyz], 1))
    coords = torch.cat(coords).int()
    return SparseTensor(torch.randn(coords.shape[0], channels, generator=g), coords)


def _randomized(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module


def _manifest_entries(name, prefix):
    sd = json.loads(manifest_path(name).read_text())["state_dict"]
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _entries(module):
    return {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in module.state_dict().items()}


def test_feed_forward_net():
    x = _random_sparse([6, 4], 8)
    ff = _randomized(SparseFeedForwardNet(8, 2.0))
    assert set(ff.state_dict()) == {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}
    ref = F.linear(F.gelu(F.linear(x.feats, ff.mlp[0].weight, ff.mlp[0].bias), approximate="tanh"),
                   ff.mlp[2].weight, ff.mlp[2].bias)
    torch.testing.assert_close(ff(x).feats, ref)


def test_modulated_cross_block_matches_manifest_keys_shapes_dtypes():
    expected = _manifest_entries("slat_flow", "blocks.0.")
    with torch.device("meta"):
        block = ModulatedSparseTransformerCrossBlock(1024, 1024, 16, 4, qk_rms_norm=True)
    convert_to_fp16(block, FP16_SPARSE_MODULE_TYPES)  # TRELLIS use_fp16 on the torso
    assert _entries(block) == expected


def test_transformer_block_matches_decoder_manifest_trunk():
    expected = _manifest_entries("slat_decoder_mesh", "blocks.1.")
    expected = {k: v for k, v in expected.items() if not k.startswith("mv_condition")}  # helper-F's addition
    with torch.device("meta"):
        block = SparseTransformerBlock(768, 12, 4, attn_mode="swin", window_size=8, shift_window=4)
    convert_to_fp16(block, FP16_SPARSE_MODULE_TYPES)
    assert _entries(block) == expected


def test_modulated_cross_block_equals_dense_block_on_equal_items():
    # two items with the same number of voxels: the sparse block must equal the dense DiT block
    x = _random_sparse([20, 20], 32)
    sparse_block = _randomized(ModulatedSparseTransformerCrossBlock(32, 24, 4, 2.0, qk_rms_norm=True)).eval()
    dense_block = ModulatedTransformerCrossBlock(32, 24, 4, 2.0, qk_rms_norm=True).eval()
    dense_block.load_state_dict(sparse_block.state_dict())
    mod = torch.randn(2, 32)
    ctx = torch.randn(2, 7, 24)
    with torch.no_grad():
        out = sparse_block(x, mod, ctx)
        ref = dense_block(x.feats.view(2, 20, 32), mod, ctx)
    assert out.coords is x.coords
    torch.testing.assert_close(out.feats, ref.reshape(40, 32), atol=1e-5, rtol=1e-5)


def test_modulated_cross_block_uneven_items_are_independent():
    x = _random_sparse([15, 9], 16)
    block = _randomized(ModulatedSparseTransformerCrossBlock(16, 8, 2)).eval()
    mod, ctx = torch.randn(2, 16), torch.randn(2, 5, 8)
    with torch.no_grad():
        out = block(x, mod, ctx)
        for b in range(2):
            alone = block(x[b], mod[b : b + 1], ctx[b : b + 1])
            torch.testing.assert_close(out.feats[x.layout[b]], alone.feats, atol=1e-5, rtol=1e-5)
        # one modulation row for the whole batch broadcasts (stage-1 style)
        shared = block(x, mod[:1], ctx)
        torch.testing.assert_close(shared.feats[x.layout[0]], out.feats[x.layout[0]])


def test_transformer_block_halves_and_extension():
    x = _random_sparse([30, 18], 16)
    block = _randomized(SparseTransformerBlock(16, 2, 2.0, attn_mode="swin", window_size=4, shift_window=2)).eval()
    with torch.no_grad():
        out = block(x)
        h = x.feats + block.attn(x.replace(F.layer_norm(x.feats, (16,), eps=1e-6))).feats
        ref = h + block.mlp(x.replace(F.layer_norm(h, (16,), eps=1e-6))).feats
    assert out.shape == x.shape
    torch.testing.assert_close(out.feats, ref)

    class WithInjection(SparseTransformerBlock):
        def forward(self, x, extra):
            return self._mlp_part(self._attn_part(x) + extra)

    ext = WithInjection(16, 2, 2.0).eval()
    ext.load_state_dict(block.state_dict())
    with torch.no_grad():
        zero = ext(x, torch.zeros_like(x.feats))
        plain = SparseTransformerBlock(16, 2, 2.0).eval()
        plain.load_state_dict(block.state_dict())
        torch.testing.assert_close(zero.feats, plain(x).feats)


def test_blocks_keep_half_precision():
    x = _random_sparse([12, 7], 16)
    block = _randomized(SparseTransformerBlock(16, 2, attn_mode="swin", window_size=4)).eval()
    block.half()
    with torch.no_grad():
        out = block(x.half())
    assert out.dtype == torch.float16 and torch.isfinite(out.feats).all()
