"""Finding SyncHuman folders (no weights needed)."""

from __future__ import annotations

import pytest

from synchuman_core.errors import WeightsNotFoundError
from synchuman_core.io.layout import find_model_folders, resolve_model_folder


def _ckpt(p, flat=False):
    stages = p if flat else p / "ckpts"
    (stages / "OneStage").mkdir(parents=True)
    (stages / "SecondStage").mkdir(parents=True)
    return p


def test_dropdown_lists_every_checkpoint_and_shares_dinov2(tmp_path):
    root = tmp_path / "models" / "synchuman"
    _ckpt(root / "a")
    _ckpt(root / "b", flat=True)
    (root / "dinov2").mkdir()
    (root / ".cache").mkdir()
    found = find_model_folders([root, tmp_path / "missing"])
    assert [f.name for f in found] == ["a", "b"]
    assert all(f.shared_dir("dinov2") == root / "dinov2" for f in found)
    assert found[1].ckpts == root / "b"
    with pytest.raises(WeightsNotFoundError, match="several SyncHuman checkpoints"):
        resolve_model_folder(tmp_path / "models")
    assert resolve_model_folder(root / "a").ckpts == root / "a" / "ckpts"


def test_own_dinov2_wins_over_shared(tmp_path):
    root = tmp_path / "synchuman"
    _ckpt(root / "a")
    (root / "dinov2").mkdir()
    (root / "a" / "dinov2").mkdir()
    assert resolve_model_folder(root).shared_dir("dinov2") == root / "a" / "dinov2"


def test_snapshot_root_and_models_dir(tmp_path):
    _ckpt(tmp_path / "models" / "synchuman")
    mf = resolve_model_folder(tmp_path / "models")
    assert mf.base == tmp_path / "models" / "synchuman" and mf.shared_dir("dinov2") == mf.base / "dinov2"
    assert resolve_model_folder(mf) is mf
