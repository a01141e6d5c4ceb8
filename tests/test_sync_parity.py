"""Sync bridges against the official fixtures a_DualCrossAttentionMV / a_DualCrossAttentionSS."""

from __future__ import annotations

import pytest
import torch
from conftest import fixture_dir

from synchuman_core.errors import ConfigError
from synchuman_core.parity import run_fixture
from synchuman_core.stage1.sync import SyncBridgeConfig


@pytest.mark.parametrize("name", ["a_DualCrossAttentionMV", "a_DualCrossAttentionSS"])
def test_bridge_parity(name):
    comps = run_fixture(fixture_dir(name))
    assert comps
    for c in comps:
        assert c.relative_error() <= c.tol == 1e-5, (c.name, c.relative_error())


def test_bridge_config_from_official():
    cfg = SyncBridgeConfig.from_official(
        {"query_dim_MV": 1280, "query_dim_Structure": 1024, "heads": 16, "dim_head": 64, "dropout": 0.1,
         "num_views": 5}
    )
    assert cfg == SyncBridgeConfig(1280, 1024, 16, 64, 5)
    with pytest.raises(ConfigError):
        SyncBridgeConfig.from_official({"query_dim_MV": 64, "query_dim_Structure": 32, "mystery": 1})
    with pytest.raises(ConfigError):
        SyncBridgeConfig.from_official({"query_dim_MV": 64, "query_dim_Structure": 32, "bias": True})


def test_bridge_chunking_is_exact():
    """Row chunking (memory bound) gives the same result as one big call."""
    from synchuman_core.stage1 import sync

    cfg = SyncBridgeConfig(32, 32, 2, 16)
    ss = sync.DualCrossAttentionSS(cfg).eval()
    mv = sync.DualCrossAttentionMV(cfg).eval()
    g = torch.Generator().manual_seed(0)
    img24, img12 = torch.randn(20, 32, 24, 24, generator=g), torch.randn(20, 32, 12, 12, generator=g)
    st = torch.randn(2, 4096, 32, generator=g)
    with torch.no_grad():
        a, b = ss(img24, st), mv(img12, st)
        old = sync._MAX_ROWS
        sync._MAX_ROWS = 1 << 20
        try:
            a1, b1 = ss(img24, st), mv(img12, st)
        finally:
            sync._MAX_ROWS = old
    torch.testing.assert_close(a, a1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(b, b1, rtol=1e-6, atol=1e-6)
