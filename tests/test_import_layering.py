"""The import structure of the shipped code, read from the source (tests/import_graph.py; nothing is imported).

* no import cycles (lazy imports inside functions count);
* layers: a module imports only its own layer or lower ones (blocks never import stages, models never import
  the loaders, nothing below the orchestrator imports it, ``synchuman_core`` never imports ``nodes``);
* shipped code never imports development code: ``synchuman_core.parity`` and ``tests/`` (nor puts ``tests/``
  on ``sys.path``), and ``synchuman_core`` never imports ComfyUI;
* every library file stays under 600 lines.

``python tests/import_graph.py`` prints the graph this checks.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from import_graph import ROOT, ImportGraph, build_graph, in_any  # noqa: E402

#: Layers, lowest first. A module not listed belongs to the orchestration layer (below ``nodes`` only).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("synchuman_core", "synchuman_core.errors", "synchuman_core.model_source")),
    ("blocks", ("synchuman_core.attention", "synchuman_core.modules", "synchuman_core.sparse")),
    ("parts", ("synchuman_core.samplers", "synchuman_core.geometry", "synchuman_core.preprocess",
               "synchuman_core.encoders")),
    ("stages", ("synchuman_core.stage1", "synchuman_core.stage2", "synchuman_core.export")),
    ("loading", ("synchuman_core.io",)),
    ("orchestration", ()),
    ("nodes", ("nodes",)),
)
DEV_ONLY = ("synchuman_core.parity",)
COMFY_MODULES = ("comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "execution", "latent_preview")
MAX_LINES = 600


def layer_of(module: str) -> int:
    best, best_len = LAYERS.index(("orchestration", ())), -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            # the package ``synchuman_core`` itself is "base"; its submodules match longer prefixes
            exact_only = p == "synchuman_core"
            if (module == p or (not exact_only and module.startswith(p + "."))) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return build_graph()


def _shipped(graph: ImportGraph) -> list[str]:
    return [m for m in graph.modules if not in_any(m, DEV_ONLY)]


def test_the_walk_sees_the_package(graph):
    # guards the checks below against an empty or broken walk
    assert "synchuman_core.pipeline" in graph.modules and "nodes.loader" in graph.modules
    assert "synchuman_core.io.loading" in graph.imports("synchuman_core.io.verify")
    lazy = graph.imports("synchuman_core.cli")  # cli imports most of its commands inside functions
    assert "synchuman_core.io.download" in lazy


def test_no_import_cycles(graph):
    cycles = graph.cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_layers(graph):
    names = [n for n, _ in LAYERS]
    bad = []
    for m in _shipped(graph):
        lm = layer_of(m)
        for t, lines in graph.edges[m].items():
            if in_any(t, DEV_ONLY):
                continue  # reported by test_shipped_code_never_imports_development_code
            lt = layer_of(t)
            if lt > lm:
                bad.append(f"{m} ({names[lm]}) imports {t} ({names[lt]}) at line {lines[0]}")
    assert not bad, "a lower layer imports a higher one:\n" + "\n".join(bad)


def test_blocks_never_import_stages(graph):
    blocks = LAYERS[1][1]
    stages = ("synchuman_core.stage1", "synchuman_core.stage2", "synchuman_core.pipeline", "synchuman_core.memory")
    bad = [(m, t) for m in graph.modules if in_any(m, blocks) for t in graph.edges[m] if in_any(t, stages)]
    assert not bad, bad


def test_shipped_code_never_imports_development_code(graph):
    # tests/comfy_standin also holds stand-ins named like ComfyUI's modules; those names are the host's
    test_modules = {p.stem for p in (ROOT / "tests").rglob("*.py")} - {"__init__"} - set(COMFY_MODULES)
    bad = []
    for m in _shipped(graph):
        bad += [f"{m} imports {t}" for t in graph.edges[m] if in_any(t, DEV_ONLY)]
        bad += [f"{m} imports {e} (a module of tests/)" for e in graph.external[m] if e in test_modules or e == "tests"]
    assert not bad, "\n".join(bad)


def test_shipped_code_never_touches_sys_path(graph):
    """Putting tests/ (or anything) on sys.path from a library module is how test code leaks in."""
    bad = []
    for m in _shipped(graph):
        tree = ast.parse(graph.modules[m].read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                    and node.value.id == "sys"):
                bad.append(f"{m}:{node.lineno}")
    assert not bad, "sys.path used in shipped modules: " + ", ".join(bad)


def test_core_never_imports_comfyui_or_nodes(graph):
    bad = []
    for m in graph.modules:
        if not in_any(m, ("synchuman_core",)):
            continue
        bad += [f"{m} imports {e}" for e in graph.external[m] if e in COMFY_MODULES]
        bad += [f"{m} imports {t}" for t in graph.edges[m] if in_any(t, ("nodes",))]
    assert not bad, bad


def test_library_files_stay_small(graph):
    big = {str(p.relative_to(ROOT)): n for p in graph.modules.values()
           if (n := len(p.read_text(encoding="utf-8").splitlines())) >= MAX_LINES}
    assert not big, f"files of {MAX_LINES}+ lines: {big}"


def test_layering_rules_catch_violations(tmp_path):
    """The checks above are only as good as the walk: a tiny package with each mistake must be caught."""
    pkg = tmp_path / "synchuman_core"
    (pkg / "attention").mkdir(parents=True)
    (pkg / "stage1").mkdir()
    (pkg / "parity").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "attention" / "__init__.py").write_text("def f():\n    from ..stage1 import joint\n")
    (pkg / "stage1" / "__init__.py").write_text("")
    (pkg / "stage1" / "joint.py").write_text("from ..attention import f\nfrom ..parity import x\n")
    (pkg / "parity" / "__init__.py").write_text("x = 1\n")
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "__init__.py").write_text("")
    g = build_graph(tmp_path)
    assert g.cycles() == [["synchuman_core.attention", "synchuman_core.stage1.joint"]]
    assert layer_of("synchuman_core.attention") < layer_of("synchuman_core.stage1.joint")
    assert "synchuman_core.stage1.joint" in g.imports("synchuman_core.attention")  # the lazy import counts
    assert "synchuman_core.parity" in g.imports("synchuman_core.stage1.joint")
    assert g.path("synchuman_core.attention", DEV_ONLY) == [
        "synchuman_core.attention", "synchuman_core.stage1.joint", "synchuman_core.parity"]

