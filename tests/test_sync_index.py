"""The voxel <-> pixel convention of the sync bridges (stage1.sync.view_ray_index)."""

from __future__ import annotations

import torch

from synchuman_core.stage1.sync import view_ray_index


def _vox(x: int, y: int, z: int, r: int) -> int:
    return x * r * r + y * r + z


def _pix(view: int, row: int, col: int, r: int) -> int:
    return view * r * r + row * r + col


def test_hand_made_example_r3():
    r = 3
    idx = view_ray_index(r)
    assert idx.voxel_to_pixels.shape == (27, 4)
    assert idx.pixel_to_voxels.shape == (4, 3, 3, 3)
    # voxel (x=2, y=0, z=0): bottom image row (2) in every view; column x=2 in views 0/2, y=0 in 1/3
    assert idx.voxel_to_pixels[_vox(2, 0, 0, r)].tolist() == [_pix(0, 2, 2, r), _pix(1, 2, 0, r),
                                                               _pix(2, 2, 2, r), _pix(3, 2, 0, r)]
    # voxel (x=0, y=1, z=2): top row (z is up)
    assert idx.voxel_to_pixels[_vox(0, 1, 2, r)].tolist() == [_pix(0, 0, 0, r), _pix(1, 0, 1, r),
                                                               _pix(2, 0, 0, r), _pix(3, 0, 1, r)]
    # ray of view 0, row 0, col 1: x = 1, z = 2, depth along y
    assert idx.pixel_to_voxels[0, 0, 1].tolist() == [_vox(1, k, 2, r) for k in range(3)]
    # ray of view 1, row 2, col 0: y = 0, z = 0, depth along x
    assert idx.pixel_to_voxels[1, 2, 0].tolist() == [_vox(k, 0, 0, r) for k in range(3)]
    # views 2 / 3 share the rays of views 0 / 1 (mirrored images: same column axis)
    assert torch.equal(idx.pixel_to_voxels[2], idx.pixel_to_voxels[0])
    assert idx.pixel_to_voxels[3, 1, 2].tolist() == [_vox(k, 2, 1, r) for k in range(3)]


def test_both_directions_agree():
    r = 5
    idx = view_ray_index(r)
    rays = idx.pixel_to_voxels.reshape(4 * r * r, r)
    for vox in range(r**3):
        for view in range(4):
            p = int(idx.voxel_to_pixels[vox, view])
            assert p // (r * r) == view
            assert vox in rays[p].tolist()
    # every voxel lies on exactly one ray per view
    counts = torch.bincount(rays.reshape(4, -1).reshape(-1), minlength=r**3)
    assert torch.all(counts == 4)


def test_matches_official_indexing_semantics():
    """The official code indexes ``img[b, view, :, R-1-z, x|y]`` (SS) and
    ``structure[b, :, c, :, R-1-r]`` / ``structure[b, :, :, c, R-1-r]`` (MV); written out with loops here."""
    r = 4
    g = torch.Generator().manual_seed(0)
    img = torch.randn(4, 3, r, r, generator=g)  # [view, C, row, col]
    vol = torch.randn(3, r, r, r, generator=g)  # [C, x, y, z]
    idx = view_ray_index(r)
    pix_tokens = img.permute(0, 2, 3, 1).reshape(4 * r * r, 3)
    vox_tokens = vol.permute(1, 2, 3, 0).reshape(r**3, 3)
    gathered = pix_tokens[idx.voxel_to_pixels]  # [R^3, 4, C]
    ray = vox_tokens[idx.pixel_to_voxels]  # [4, R, R, R, C]
    for x in range(r):
        for y in range(r):
            for z in range(r):
                want = [img[0, :, r - 1 - z, x], img[1, :, r - 1 - z, y], img[2, :, r - 1 - z, x],
                        img[3, :, r - 1 - z, y]]
                assert torch.equal(gathered[_vox(x, y, z, r)], torch.stack(want))
    for row in range(r):
        for c in range(r):
            assert torch.equal(ray[0, row, c], vol[:, c, :, r - 1 - row].T)  # views 0/2: x = c, along y
            assert torch.equal(ray[1, row, c], vol[:, :, c, r - 1 - row].T)  # views 1/3: y = c, along x
