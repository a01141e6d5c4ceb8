"""Weight-file checks from headers only: LFS pointers, truncation, bad headers, shards, .bin."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from synchuman_core.errors import CheckpointError
from synchuman_core.io.files import (
    LazyTensor,
    WeightFiles,
    WeightReader,
    find_weight_files,
    is_lfs_pointer,
    read_safetensors_header,
    weight_candidates,
)

LFS_TEXT = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 3407872000\n"
)


@pytest.fixture
def sd():
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(4, 3, generator=g), "b.bias": torch.randn(5, generator=g).half(),
            "c": torch.arange(6, dtype=torch.int64)}


def test_header_matches_tensors(tmp_path, sd):
    p = tmp_path / "m.safetensors"
    save_file(sd, str(p), metadata={"x": "1"})
    entries, meta = read_safetensors_header(p)
    assert meta == {"x": "1"}
    assert {k: (v.shape, v.dtype) for k, v in entries.items()} == {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}
    assert entries["a.weight"].nbytes == 48


def test_lfs_pointer_is_named(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_text(LFS_TEXT)
    assert is_lfs_pointer(p)
    with pytest.raises(CheckpointError, match="git-lfs pointer") as e:
        read_safetensors_header(p)
    assert str(p) in str(e.value) and "git lfs pull" in str(e.value)


def test_truncated_file_names_tensor_and_missing_bytes(tmp_path, sd):
    p = tmp_path / "m.safetensors"
    save_file(sd, str(p))
    data = p.read_bytes()
    p.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="truncated; 10 bytes missing") as e:
        read_safetensors_header(p)
    assert str(p) in str(e.value)


def test_header_longer_than_file(tmp_path, sd):
    p = tmp_path / "m.safetensors"
    save_file(sd, str(p))
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="header claims"):
        read_safetensors_header(p)


def test_tiny_and_garbage_files(tmp_path):
    p = tmp_path / "m.safetensors"
    p.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="only 3 bytes"):
        read_safetensors_header(p)
    p.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_safetensors_header(p)


def test_inconsistent_byte_range(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}).encode()
    p = tmp_path / "m.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + bytes(12))
    with pytest.raises(CheckpointError, match="spans 12 bytes, expected 16"):
        read_safetensors_header(p)


def test_candidates_prefer_safetensors_and_shards():
    names = weight_candidates(["model", "pytorch_model"])
    assert names[:2] == ["model.safetensors.index.json", "model.safetensors"]
    assert names.index("pytorch_model.bin") > names.index("model.fp16.safetensors")
    assert not any(n.endswith(".bin") for n in weight_candidates(["model"], allow_bin=False))


def _write_shards(folder, sd, stem="diffusion_pytorch_model"):
    keys = list(sd)
    parts = [keys[:1], keys[1:]]
    weight_map = {}
    for i, part in enumerate(parts):
        name = f"{stem}-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        save_file({k: sd[k] for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_sharded_reading(tmp_path, sd):
    _write_shards(tmp_path, sd)
    wf = find_weight_files(tmp_path, weight_candidates(["diffusion_pytorch_model"]))
    assert wf is not None and wf.index is not None and len(wf.files) == 2
    with WeightReader(wf) as r:
        assert set(r.entries()) == set(sd)
        for k, v in sd.items():
            torch.testing.assert_close(r.read(k), v)


def test_missing_shard_and_stale_index(tmp_path, sd):
    _write_shards(tmp_path, sd)
    idx = tmp_path / "diffusion_pytorch_model.safetensors.index.json"
    data = json.loads(idx.read_text())
    data["weight_map"]["ghost"] = data["weight_map"]["a.weight"]
    idx.write_text(json.dumps(data))
    wf = find_weight_files(tmp_path, weight_candidates(["diffusion_pytorch_model"]))
    with pytest.raises(CheckpointError, match="no shard holds"):
        WeightReader(wf).entries()
    (tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="names it as a shard"):
        WeightReader(wf).entries()


def test_bin_is_read_weights_only(tmp_path, sd):
    p = tmp_path / "pytorch_model.bin"
    torch.save(sd, p)
    with WeightReader(WeightFiles(tmp_path, (p,))) as r:
        assert {k: v.shape for k, v in r.entries().items()} == {k: tuple(v.shape) for k, v in sd.items()}
        torch.testing.assert_close(r.read("b.bias"), sd["b.bias"])


def test_bin_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "pytorch_model.bin"
    torch.save({"x": Evil()}, p)
    with pytest.raises(CheckpointError, match="weights-only"):
        WeightReader(WeightFiles(tmp_path, (p,))).entries()


def test_lazy_tensor_reads_on_to(tmp_path, sd):
    p = tmp_path / "m.safetensors"
    save_file(sd, str(p))
    with WeightReader(WeightFiles(tmp_path, (p,))) as r:
        lazy = r.lazy_state_dict()
        t = lazy["b.bias"]
        assert isinstance(t, LazyTensor) and t.shape == (5,) and t.dtype == torch.float16
        out = t.to(device="cpu", dtype=torch.float32)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, sd["b.bias"].float())


def test_converting_reads_stream_through_small_chunks(tmp_path, sd, monkeypatch):
    import synchuman_core.io.files as files

    monkeypatch.setattr(files, "CHUNK_BYTES", 16)  # forces several chunks per tensor
    p = tmp_path / "m.safetensors"
    big = {**sd, "big": torch.randn(37, 3, generator=torch.Generator().manual_seed(1))}
    save_file(big, str(p))
    with WeightReader(WeightFiles(tmp_path, (p,))) as r:
        lazy = r.lazy_state_dict()
        for k, v in big.items():
            torch.testing.assert_close(lazy[k].to("cpu", torch.float64), v.double(), rtol=0, atol=0)
        assert r._chunk is not None and r._chunk.numel() == 16
