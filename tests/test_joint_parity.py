"""The whole stage-1 joint model against d_SyncHuman_2D3DCrossSpaceDiffusion (1.04 B params; slow)."""

from __future__ import annotations

import pytest
from conftest import fixture_dir

from synchuman_core.parity import run_fixture


@pytest.mark.slow
def test_joint_model_parity_d():
    comps = run_fixture(fixture_dir("d_SyncHuman_2D3DCrossSpaceDiffusion"))
    names = {c.name for c in comps}
    assert {"sample_out", "trellis_out"} <= names
    failed = [(c.name, c.relative_error()) for c in comps if c.relative_error() > c.tol]
    assert not failed, failed
