"""Example workflows: the UI-format JSON is the source, the API-format JSON is generated from it.

``python -m nodes.workflow_tool --server URL`` (from the repository root) rewrites
``api_workflows/<name>.json`` from every ``example_workflows/<name>.json`` with the node schemas of a running
ComfyUI; ``--check`` only reports differences. The conversion
follows what ComfyUI's frontend (1.35.9) does in "Export (API)": positional ``widgets_values`` are matched
to the node's widget inputs (required, then optional, in ``input_order``), skipping the frontend's extra
widgets (``control_after_generate`` after a seed, the upload button of ``LoadImage``, the 3D viewer of
``SaveGLB`` / ``Preview3D``); links become ``[source_id, slot]``; frontend-only nodes (notes) are dropped.

Node schemas come from an ``/object_info`` dictionary: a running server's (``--server URL``) or a saved
one (``--object-info FILE``). Every function takes that dictionary, so a caller with schemas of its own
uses them directly (the tests build one in-process from the ComfyUI stand-in:
``python tests/comfy_standin/harness.py [--check]`` regenerates the files without a server).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = ROOT / "example_workflows"  # UI format: ComfyUI lists these under Templates
API_DIR = ROOT / "api_workflows"

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
#: Frontend-only node types (no backend class; never part of a prompt).
VIRTUAL_NODES = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")
#: Widgets the frontend appends to some core nodes after their inputs' widgets: the 3D viewer of
#: ``SaveGLB`` / ``Preview3D`` is a widget named ``image`` whose value (``""``) "Export (API)" sends.
EXTRA_WIDGETS: dict[str, tuple[str, ...]] = {"SaveGLB": ("image",), "Preview3D": ("image",)}
SEED_NAMES = ("seed", "noise_seed")


class WorkflowError(ValueError):
    """A workflow that does not fit the node schemas."""


# ------------------------------------------------------------------------------------------------ schemas


def is_widget(spec: list | tuple) -> bool:
    typ, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if opts.get("forceInput"):
        return False
    return isinstance(typ, list) or typ in WIDGET_TYPES


def widget_inputs(info: Mapping[str, Any]) -> list[tuple[str, Any, dict]]:
    """``[(name, type, options)]`` of a node's widget inputs in the frontend's order."""
    out = []
    for cat in ("required", "optional"):
        specs = info["input"].get(cat, {})
        for name in info.get("input_order", {}).get(cat, list(specs)):
            spec = specs[name]
            if is_widget(spec):
                out.append((name, spec[0], spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}))
    return out


def has_control_widget(name: str, typ: Any, opts: dict) -> bool:
    """The frontend adds a ``control_after_generate`` widget after seed-like INT / COMBO widgets."""
    return bool(opts.get("control_after_generate")) or (typ == "INT" and name in SEED_NAMES)


def widget_slots(class_type: str, info: Mapping[str, Any]) -> list[tuple[str | None, Any, dict]]:
    """One entry per ``widgets_values`` position: ``(name, type, opts)``; name None for the frontend's
    unsent widgets (seed control, upload button); type ``EXTRA`` for its sent extras (see EXTRA_WIDGETS)."""
    slots: list[tuple[str | None, Any, dict]] = []
    for name, typ, opts in widget_inputs(info):
        slots.append((name, typ, opts))
        if has_control_widget(name, typ, opts):
            slots.append((None, "CONTROL", {}))
        if opts.get("image_upload") or opts.get("file_upload"):
            slots.append((None, "UPLOAD", {}))
    slots += [(name, "EXTRA", {}) for name in EXTRA_WIDGETS.get(class_type, ())]
    return slots


def server_object_info(url: str) -> dict[str, dict]:
    from urllib.request import urlopen

    with urlopen(url.rstrip("/") + "/object_info", timeout=60) as r:
        return json.loads(r.read())


# ------------------------------------------------------------------------------------------------ checks


def _check_value(where: str, name: str, typ: Any, opts: dict, value: Any) -> list[str]:
    errs = []
    if typ == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{where}: {name} must be an integer, got {value!r}"]
    elif typ == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return [f"{where}: {name} must be a number, got {value!r}"]
    elif typ == "BOOLEAN":
        if not isinstance(value, bool):
            return [f"{where}: {name} must be true/false, got {value!r}"]
    elif typ in ("STRING", "EXTRA"):
        if not isinstance(value, str):
            return [f"{where}: {name} must be a string, got {value!r}"]
    elif typ == "COMBO" or isinstance(typ, list):
        options = opts.get("options", []) if typ == "COMBO" else typ
        dynamic = opts.get("image_upload") or opts.get("file_upload")
        if not dynamic and value not in options:
            errs.append(f"{where}: {name}={value!r} is not one of {options}")
        return errs
    if typ in ("INT", "FLOAT"):
        if "min" in opts and value < opts["min"]:
            errs.append(f"{where}: {name}={value} is below the minimum {opts['min']}")
        if "max" in opts and value > opts["max"]:
            errs.append(f"{where}: {name}={value} is above the maximum {opts['max']}")
    return errs


def check_ui_workflow(wf: Mapping[str, Any], info: Mapping[str, dict]) -> list[str]:
    """Every problem of a UI-format workflow against the node schemas (empty list = fine)."""
    errs: list[str] = []
    if wf.get("version") != 0.4:
        errs.append(f"version must be 0.4 (frontend 1.35.9), got {wf.get('version')!r}")
    nodes = {n["id"]: n for n in wf.get("nodes", [])}
    links = {}
    for link in wf.get("links", []):
        if not (isinstance(link, list) and len(link) == 6):
            errs.append(f"link {link!r} must be [id, src, src_slot, dst, dst_slot, TYPE]")
            continue
        links[link[0]] = link
    for lid, (_, src, sslot, dst, dslot, typ) in links.items():
        if src not in nodes or dst not in nodes:
            errs.append(f"link {lid} joins missing nodes {src} -> {dst}")
            continue
        s, d = nodes[src], nodes[dst]
        outs, ins = s.get("outputs", []), d.get("inputs", [])
        if sslot >= len(outs) or lid not in (outs[sslot].get("links") or []):
            errs.append(f"link {lid}: node {src} output {sslot} does not list it")
        if dslot >= len(ins) or ins[dslot].get("link") != lid:
            errs.append(f"link {lid}: node {dst} input {dslot} does not point back to it")
        if s["type"] in info and sslot < len(info[s["type"]]["output"]) and info[s["type"]]["output"][sslot] != typ:
            errs.append(f"link {lid}: {s['type']} output {sslot} is {info[s['type']]['output'][sslot]}, link says {typ}")
        if dslot < len(ins) and ins[dslot].get("type") != typ and ins[dslot].get("type") != "*":
            errs.append(f"link {lid}: {d['type']} input {ins[dslot].get('name')} is {ins[dslot].get('type')}, "
                        f"link says {typ}")
    for n in nodes.values():
        t = n["type"]
        where = f"node {n['id']} ({t})"
        if t in VIRTUAL_NODES:
            continue
        if t not in info:
            errs.append(f"{where}: unknown node type")
            continue
        if n.get("mode", 0) != 0:
            errs.append(f"{where}: mode {n.get('mode')} (muted/bypassed nodes are not supported in examples)")
        spec = info[t]
        slots = widget_slots(t, spec)
        values = n.get("widgets_values", [])
        if len(values) != len(slots):
            errs.append(f"{where}: {len(values)} widgets_values, the schema has {len(slots)} widget slots "
                        f"({[s[0] or s[1] for s in slots]})")
            continue
        for (name, typ, opts), v in zip(slots, values, strict=True):
            if name is None:
                if typ == "CONTROL" and v not in ("fixed", "increment", "decrement", "randomize"):
                    errs.append(f"{where}: control_after_generate value {v!r}")
                continue
            errs += _check_value(where, name, typ, opts, v)
        by_name = {i["name"]: i for i in n.get("inputs", [])}
        for cat in ("required", "optional"):
            for name, ispec in spec["input"].get(cat, {}).items():
                if is_widget(ispec):
                    continue
                slot = by_name.get(name)
                if slot is None or slot.get("link") is None:
                    if cat == "required":
                        errs.append(f"{where}: required input {name!r} ({ispec[0]}) is not connected")
                    continue
                if slot.get("type") != ispec[0]:
                    errs.append(f"{where}: input {name!r} is {ispec[0]} in the schema, {slot.get('type')} here")
        for k, o in enumerate(n.get("outputs", [])):
            if k >= len(spec["output"]) or o.get("type") != spec["output"][k]:
                errs.append(f"{where}: output {k} type {o.get('type')} does not match {spec['output']}")
    return errs


# ------------------------------------------------------------------------------------------------ conversion


def ui_to_api(wf: Mapping[str, Any], info: Mapping[str, dict]) -> dict[str, dict]:
    """The API-format prompt of a UI-format workflow (raises :class:`WorkflowError` if it does not fit)."""
    errs = check_ui_workflow(wf, info)
    if errs:
        raise WorkflowError("\n".join(errs))
    links = {link[0]: link for link in wf.get("links", [])}
    out: dict[str, dict] = {}
    for n in sorted(wf["nodes"], key=lambda n: n["id"]):
        t = n["type"]
        if t in VIRTUAL_NODES:
            continue
        spec = info[t]
        inputs: dict[str, Any] = {}
        for (name, _typ, _opts), v in zip(widget_slots(t, spec), n.get("widgets_values", []), strict=True):
            if name is not None:
                inputs[name] = {"__value__": v} if isinstance(v, list) else v
        for slot in n.get("inputs", []):
            if slot.get("link") is None:
                continue
            link = links[slot["link"]]
            inputs[slot["name"]] = [str(link[1]), link[2]]
        title = n.get("title") or spec.get("display_name") or t
        out[str(n["id"])] = {"inputs": inputs, "class_type": t, "_meta": {"title": title}}
    return out


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def ui_workflows(folder: Path = WORKFLOW_DIR) -> list[Path]:
    return sorted(folder.glob("*.json"))


def sync_api_workflows(info: Mapping[str, dict], *, check: bool = False) -> int:
    """Rewrite (or with ``check`` only compare) every API workflow from its UI workflow; returns the number
    of workflows that do not fit the schemas or are not up to date."""
    bad = 0
    for path in ui_workflows():
        wf = json.loads(path.read_text(encoding="utf-8"))
        try:
            text = dump(ui_to_api(wf, info))
        except WorkflowError as e:
            sys.stderr.write(f"{path.name}:\n{e}\n")
            bad += 1
            continue
        target = API_DIR / path.name
        if check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                sys.stderr.write(f"{target} is not up to date; run python -m nodes.workflow_tool --server URL\n")
                bad += 1
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            sys.stdout.write(f"wrote {target.relative_to(ROOT)}\n")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nodes.workflow_tool", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only report differences; exit 1 if any")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--server", default="http://127.0.0.1:8188",
                     help="take the node schemas from a running ComfyUI's /object_info (default: %(default)s)")
    src.add_argument("--object-info", type=Path, default=None, help="take them from a saved /object_info JSON file")
    a = ap.parse_args(argv)
    if a.object_info is not None:
        info = json.loads(a.object_info.read_text(encoding="utf-8"))
    else:
        try:
            info = server_object_info(a.server)
        except OSError as e:
            sys.stderr.write(f"no ComfyUI answers at {a.server} ({e}); start one with this pack installed, or pass "
                             "--object-info FILE\n")
            return 2
    return 1 if sync_api_workflows(info, check=a.check) else 0


if __name__ == "__main__":
    raise SystemExit(main())
