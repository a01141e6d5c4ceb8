"""README's commands are the ones CI runs (.ci/run executes the blocks marked ``<!-- ci:run -->`` verbatim), and the
smoke command's settings pass the CLI's checks (a ``--texture-size 256`` in README failed after minutes of compute)."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks() -> list[str]:
    spec = importlib.util.spec_from_file_location("readme_blocks", ROOT / ".ci" / "readme_blocks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.marked_blocks((ROOT / "README.md").read_text(encoding="utf-8"))


def test_ci_runs_readmes_smoke_and_test_commands():
    blocks = _blocks()
    assert len(blocks) == 2
    assert any(" smoke " in b for b in blocks) and any("pytest" in b for b in blocks)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_blocks.py README.md --expect 2" in ci


def test_readme_smoke_settings_pass_the_cli_checks():
    from synchuman_core.cli import build_parser
    from synchuman_core.cli_inputs import check_settings

    smoke = next(b for b in _blocks() if " smoke " in b)
    words = shlex.split(smoke.split("python -m synchuman_core", 1)[1])
    args = build_parser().parse_args(words)
    check_settings(args)  # raises on an out-of-range setting
    assert args.cmd == "smoke"
