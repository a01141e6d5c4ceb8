"""ComfyUI runs this file at start-up, before it imports torch or any node pack.

It puts the pack's example inputs (``example_inputs/``: the synthetic person and four views the example
workflows load) into ComfyUI's ``input/`` folder when they are not there, so every template runs as
loaded. A file that already exists is never replaced, whatever it holds. Standard library only; a failure
is logged and never stops ComfyUI.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

EXAMPLE_INPUTS = Path(__file__).resolve().parent / "example_inputs"
_LOG = logging.getLogger("ComfyUI-SyncHuman")


def copy_example_inputs(input_dir: str | os.PathLike, source: Path = EXAMPLE_INPUTS) -> list[Path]:
    """Copy every file of ``source`` into ``input_dir`` that is absent there; returns the files written.

    The destination is opened with exclusive creation, so a file that appears meanwhile (another process,
    the user) is left alone as well.
    """
    dest = Path(input_dir)
    written: list[Path] = []
    if not source.is_dir():
        return written
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")):
        target = dest / src.name
        if target.exists():
            continue
        try:
            with open(src, "rb") as fin, open(target, "xb") as fout:
                shutil.copyfileobj(fin, fout)
        except FileExistsError:
            continue
        except BaseException:
            target.unlink(missing_ok=True)  # never leave a partial file behind
            raise
        written.append(target)
    return written


def _main() -> None:
    try:
        import folder_paths  # ComfyUI's; already configured (--input-directory) when this runs
    except ImportError:
        return
    try:
        written = copy_example_inputs(folder_paths.get_input_directory())
    except OSError as e:
        _LOG.warning("ComfyUI-SyncHuman: could not copy the example inputs into ComfyUI's input folder: %s "
                     "(the example workflows need them; copy %s/* there yourself)", e, EXAMPLE_INPUTS)
        return
    if written:
        _LOG.info("ComfyUI-SyncHuman: copied %d example input(s) into %s: %s", len(written),
                  written[0].parent, ", ".join(p.name for p in written))


# ComfyUI executes this file as a module named after its path (".../<pack>/prestartup_script"); tests load it
# under another name to call copy_example_inputs() alone.
if __name__.endswith("prestartup_script"):
    _main()
