"""A tiny SyncHuman checkpoint small enough to run the node workflows end to end on a CPU.

``python tests/comfy_standin/tiny.py OUT_DIR`` (or :func:`build_tiny_checkpoint`) writes helper H's tiny
checkpoint (:func:`synchuman_core.io.tiny.write_tiny_checkpoint`) and makes two changes for speed:

* the joint model's ``sample_size`` becomes 24 (views of 192 px instead of 768; the weights do not depend on
  it, the sync bridges need a latent of 24 -> 12 -> 6 -> 3);
* the structure decoder's output bias is lowered so that only about 0.1 % of the 64^3 grid is occupied
  (random weights otherwise occupy half of it, and stage 2 would decode ~130k voxels).

Everything else (file layout, configs, strict loading) is the real code path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TINY_SAMPLE_SIZE = 24  # latent side -> 192 px views
OCCUPIED_FRACTION = 0.001


def build_tiny_checkpoint(out_dir: str | Path, *, seed: int = 0) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    from synchuman_core.io.loading import load_component
    from synchuman_core.io.tiny import write_tiny_checkpoint

    out = Path(out_dir)
    write_tiny_checkpoint(out, seed=seed, components=None)
    cfg_path = out / "ckpts/OneStage/SyncHuman_2D3DCrossSpaceDiffusion/config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["sample_size"] = TINY_SAMPLE_SIZE
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")

    dec_dir = out / "ckpts/OneStage/sparse_structure_decoder"
    decoder = load_component("structure_decoder", out, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        logits = decoder(torch.randn(1, 8, 16, 16, 16, generator=g)).flatten()
    shift = float(torch.quantile(logits[::5].float(), 1.0 - OCCUPIED_FRACTION))
    weights = dec_dir / "model.safetensors"
    sd = load_file(str(weights))
    sd["out_layer.2.bias"] = sd["out_layer.2.bias"] - shift
    save_file(sd, str(weights), metadata={"format": "pt"})
    return out


if __name__ == "__main__":
    sys.stdout.write(f"tiny checkpoint in {build_tiny_checkpoint(sys.argv[1])}\n")
