"""Grid / patch / token reshapes shared by the dense 3D models."""

from __future__ import annotations

import torch

from synchuman_core.modules import grid_to_tokens, patchify3d, pixel_shuffle_3d, tokens_to_grid, unpatchify3d


def test_patchify_roundtrip_and_channel_layout():
    x = torch.randn(2, 3, 4, 6, 8)
    p = patchify3d(x, 2)
    assert p.shape == (2, 24, 2, 3, 4)
    assert torch.equal(unpatchify3d(p, 2), x)
    # channel c*8 + (i*4 + j*2 + k) of patch (X, Y, Z) is voxel (2X+i, 2Y+j, 2Z+k) of channel c
    c, i, j, k, X, Y, Z = 1, 1, 0, 1, 1, 2, 3
    assert p[0, c * 8 + i * 4 + j * 2 + k, X, Y, Z] == x[0, c, 2 * X + i, 2 * Y + j, 2 * Z + k]
    assert torch.equal(patchify3d(x, 1), x)


def test_pixel_shuffle_offsets():
    x = torch.arange(16.0).reshape(1, 16, 1, 1, 1)  # 2 channels x 8 offsets
    y = pixel_shuffle_3d(x, 2)
    assert y.shape == (1, 2, 2, 2, 2)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                for k in range(2):
                    assert y[0, c, i, j, k] == c * 8 + i * 4 + j * 2 + k


def test_token_order_is_row_major_xyz():
    x = torch.randn(1, 5, 3, 4, 6)
    t = grid_to_tokens(x)
    assert t.shape == (1, 72, 5)
    assert torch.equal(t[0, 2 * 24 + 1 * 6 + 5], x[0, :, 2, 1, 5])
    assert torch.equal(tokens_to_grid(t, (3, 4, 6)), x)
