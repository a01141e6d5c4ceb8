import pytest
import torch
from torch import nn

from synchuman_core.errors import StateDictMismatchError
from synchuman_core.io.state_dict import group_keys, load_state_dict_strict


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
        self.h16 = nn.Linear(4, 2).half()


def test_group_keys_collapses_indices():
    g = group_keys(["blocks.0.w", "blocks.1.w", "blocks.12.w", "x.y"])
    assert g == {"blocks.*.w": 3, "x.y": 1}


def test_strict_load_on_meta_keeps_declared_dtypes():
    src = Net()
    sd = {k: v.float() for k, v in src.state_dict().items()}
    with torch.device("meta"):
        dst = Net()
    load_state_dict_strict(dst, sd)
    assert dst.h16.weight.dtype == torch.float16 and dst.h16.weight.device.type == "cpu"
    torch.testing.assert_close(dst.blocks[2].weight, src.blocks[2].weight)


def test_mismatch_report_is_grouped():
    sd = Net().state_dict()
    sd.pop("blocks.0.bias")
    sd.pop("blocks.1.bias")
    sd["extra.0.w"] = torch.zeros(1)
    sd["h16.weight"] = torch.zeros(3, 4)
    with pytest.raises(StateDictMismatchError) as e:
        load_state_dict_strict(Net(), sd, source="test.safetensors")
    msg = str(e.value)
    assert "blocks.*.bias  x2" in msg and "extra.*.w" in msg and "h16.weight: model expects [2, 4]" in msg
