"""What background removal adds to a run: open + EXIF, the official downsize, rembg, framing, per photo size.

    python benchmarks/bench_background.py                          # tiny ONNX model (u2net signature), CPU
    python benchmarks/bench_background.py --model-dir ~/.u2net     # the real u2net.onnx if you have it
    python benchmarks/bench_background.py --sizes 4000x3000 1080x1920 --repeat 5

Each photo is a synthetic figure on a light background saved as JPEG. Wall clock and process CPU time are
printed (on a shared machine the CPU time is the steadier figure); the first call also pays for creating
the onnxruntime session, reported separately.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from synchuman_core.preprocess import prepare_input
from synchuman_core.preprocess.background import (
    REMBG_MODELS,
    BackgroundRemover,
    official_downsize,
    write_tiny_rembg_model,
)
from synchuman_core.preprocess.image import to_rgba
from synchuman_core.preprocess.loading import open_image


def _photo(path: Path, w: int, h: int) -> Path:
    im = Image.new("RGB", (w, h), (235, 235, 230))
    d = ImageDraw.Draw(im)
    d.rounded_rectangle((w * 0.4, h * 0.1, w * 0.6, h * 0.95), radius=int(w * 0.03), fill=(40, 110, 190))
    d.ellipse((w * 0.45, h * 0.02, w * 0.55, h * 0.12), fill=(224, 172, 140))
    im.save(path, quality=92)
    return path


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="u2net", choices=list(REMBG_MODELS))
    ap.add_argument("--model-dir", default=None, help="folder holding <model>.onnx (default: a tiny model)")
    ap.add_argument("--sizes", nargs="+", default=["4000x3000", "1080x1920", "768x1024"])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        if a.model_dir is None:
            write_tiny_rembg_model(tmp_p / "rembg" / f"{a.model}.onnx")
            dirs, label = [tmp_p / "rembg"], f"tiny ONNX ({a.model} signature)"
        else:
            dirs, label = [Path(a.model_dir).expanduser()], str(Path(a.model_dir) / f"{a.model}.onnx")
        remover = BackgroundRemover(a.model, dirs)
        warm = _photo(tmp_p / "warm.jpg", 64, 96)
        _, w0, c0 = _timed(lambda: remover(Image.open(warm).convert("RGB")))
        sys.stdout.write(f"model: {label}\nfirst call (session creation + run on 64x96): {w0:.3f} s wall, "
                         f"{c0:.3f} s CPU\n")
        sys.stdout.write(f"{'photo':>10} | {'open+EXIF':>10} | {'downsize':>9} | {'rembg':>9} | "
                         f"{'framing':>9} | {'bg removal total':>16}   (median wall s of {a.repeat}; CPU s)\n")
        for size in a.sizes:
            w, h = (int(v) for v in size.lower().split("x"))
            path = _photo(tmp_p / f"photo_{w}x{h}.jpg", w, h)
            rows = []
            for _ in range(a.repeat):
                img, t_open, _ = _timed(lambda path=path: open_image(path, "photo"))
                small, t_down, c_down = _timed(lambda img=img: official_downsize(img.convert("RGB")))
                _, t_rembg, c_rembg = _timed(lambda small=small: remover(small))
                rgba, t_all, c_all = _timed(lambda img=img: to_rgba(img, background=remover))
                _, t_frame, _ = _timed(lambda rgba=rgba: prepare_input(rgba))
                rows.append((t_open, t_down, t_rembg, t_frame, t_all, c_down + c_rembg))
            med = [statistics.median(r[i] for r in rows) for i in range(6)]
            sys.stdout.write(f"{size:>10} | {med[0]:>10.3f} | {med[1]:>9.3f} | {med[2]:>9.3f} | {med[3]:>9.3f} | "
                             f"{med[4]:>16.3f}   (CPU {med[5]:.3f})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
