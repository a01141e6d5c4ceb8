"""Bring the example workflows in line with the current node schemas, keeping every value by its name.

    python tools/refresh_workflows.py                    # schemas of our nodes, built in-process
    python tools/refresh_workflows.py --server URL       # schemas of a running ComfyUI (/object_info)
    python tools/refresh_workflows.py --check            # exit 1 if a workflow would change

A UI workflow stores widget values by position (``widgets_values``), so adding, removing or reordering a
node input shifts every value after it. For each SyncHuman node this tool reads the old values by name
(from the node's ``inputs`` entries that carry a ``widget``), rebuilds ``inputs``, ``outputs`` and
``widgets_values`` in the order the schema gives, fills new widgets with their defaults, keeps links by
input / output name, renumbers the links' slots, and then regenerates ``api_workflows/`` from the result.
Core nodes are left as they are. A new required input that needs a wire cannot be filled in and is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "comfy_standin"))

from nodes import workflow_tool as wt  # noqa: E402

CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
OWN_PREFIX = "SyncHuman"


def _old_widget_values(node: dict) -> dict[str, Any]:
    """``{widget name: value}`` of a saved node, plus ``{name + "#control": value}`` for seed controls."""
    values = list(node.get("widgets_values") or [])
    entries = [i for i in node.get("inputs", []) if i.get("widget")]
    out: dict[str, Any] = {}
    k = 0
    for e in entries:
        if k >= len(values):
            break
        name = e["widget"]["name"]
        out[name] = values[k]
        k += 1
        if e.get("type") == "INT" and k < len(values) and values[k] in CONTROL_VALUES:
            out[name + "#control"] = values[k]
            k += 1
    return out


def _default(typ: Any, opts: dict) -> Any:
    if "default" in opts:
        return opts["default"]
    if typ == "COMBO" or isinstance(typ, list):
        options = opts.get("options", []) if typ == "COMBO" else typ
        return options[0] if options else ""
    return {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False, "STRING": ""}.get(typ, "")


def refresh_node(node: dict, spec: dict, links: dict[int, list], notes: list[str]) -> None:
    """Rewrite one node in place to fit ``spec`` (its ``/object_info`` entry)."""
    where = f"node {node['id']} ({node['type']})"
    old_values = _old_widget_values(node)
    old_sockets = {i["name"]: i for i in node.get("inputs", []) if not i.get("widget")}
    sockets, widgets = [], []
    for cat in ("required", "optional"):
        specs = spec["input"].get(cat, {})
        for name in spec.get("input_order", {}).get(cat, list(specs)):
            ispec = specs[name]
            typ = ispec[0]
            opts = ispec[1] if len(ispec) > 1 and isinstance(ispec[1], dict) else {}
            if wt.is_widget(ispec):
                widgets.append((name, typ, opts))
                continue
            entry = {"localized_name": name, "name": name, **({"shape": 7} if cat == "optional" else {}),
                     "type": typ, "link": None}
            if name in old_sockets and old_sockets[name].get("link") is not None:
                entry["link"] = old_sockets[name]["link"]
            elif cat == "required":
                notes.append(f"{where}: required input {name!r} ({typ}) needs a wire; connect it by hand")
            sockets.append(entry)
    for name in old_sockets:
        if name not in {s["name"] for s in sockets} and old_sockets[name].get("link") is not None:
            notes.append(f"{where}: input {name!r} is gone; its link {old_sockets[name]['link']} was removed")
            links.pop(old_sockets[name]["link"], None)
    values: list[Any] = []
    entries = []
    for name, typ, opts in widgets:
        wtype = "COMBO" if typ == "COMBO" or isinstance(typ, list) else typ
        entries.append({"localized_name": name, "name": name, "type": wtype, "widget": {"name": name}, "link": None})
        if name in old_values and not wt._check_value(where, name, typ, opts, old_values[name]):
            values.append(old_values[name])
        else:
            values.append(_default(typ, opts))
            if name in old_values:
                notes.append(f"{where}: {name}={old_values[name]!r} no longer fits; default {values[-1]!r} used")
            else:
                notes.append(f"{where}: new widget {name}={values[-1]!r} (default)")
        if wt.has_control_widget(name, typ, opts):
            values.append(old_values.get(name + "#control", "fixed"))
    for name in old_values:
        if not name.endswith("#control") and name not in {w[0] for w in widgets}:
            notes.append(f"{where}: widget {name!r} is gone (value {old_values[name]!r} dropped)")
    node["inputs"] = sockets + entries
    node["widgets_values"] = values
    for k, entry in enumerate(node["inputs"]):
        if entry.get("link") is not None and entry["link"] in links:
            links[entry["link"]][4] = k
    old_outputs = {o["name"]: o for o in node.get("outputs", [])}
    outputs = []
    for k, (typ, name) in enumerate(zip(spec["output"], spec.get("output_name", spec["output"]), strict=True)):
        kept = old_outputs.get(name, {})
        if kept and kept.get("type") != typ:
            notes.append(f"{where}: output {name!r} changed type {kept.get('type')} -> {typ}; its links were removed")
            for lid in kept.get("links") or []:
                links.pop(lid, None)
            kept = {}
        out_links = [lid for lid in (kept.get("links") or []) if lid in links]
        for lid in out_links:
            links[lid][2] = k
        outputs.append({"localized_name": name, "name": name, "type": typ, "slot_index": k, "links": out_links})
    for name, o in old_outputs.items():
        if name not in {x["name"] for x in outputs}:
            for lid in o.get("links") or []:
                notes.append(f"{where}: output {name!r} is gone; its link {lid} was removed")
                links.pop(lid, None)
    node["outputs"] = outputs


def refresh(wf: dict, info: dict[str, dict]) -> tuple[dict, list[str]]:
    """A refreshed copy of a UI workflow and notes on what changed."""
    wf = json.loads(json.dumps(wf))
    links = {link[0]: link for link in wf.get("links", [])}
    notes: list[str] = []
    for node in wf["nodes"]:
        if node["type"].startswith(OWN_PREFIX):
            if node["type"] not in info:
                notes.append(f"node {node['id']}: unknown node type {node['type']}")
                continue
            refresh_node(node, info[node["type"]], links, notes)
    live = set(links)
    for node in wf["nodes"]:  # drop dangling references to removed links
        for i in node.get("inputs", []):
            if i.get("link") is not None and i["link"] not in live:
                i["link"] = None
        for o in node.get("outputs", []):
            o["links"] = [lid for lid in (o.get("links") or []) if lid in live]
    wf["links"] = [links[lid] for lid in sorted(live)]
    return wf, notes


def local_info() -> dict[str, dict]:
    import tempfile

    import folder_paths
    from harness import local_object_info

    folder_paths.set_root(tempfile.mkdtemp(prefix="synchuman-workflows-"))
    return local_object_info()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default=None, help="take the schemas from a running ComfyUI's /object_info")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a workflow would change")
    a = ap.parse_args(argv)
    info = wt.server_object_info(a.server) if a.server else local_info()
    changed = problems = 0
    for path in wt.ui_workflows():
        old = json.loads(path.read_text(encoding="utf-8"))
        new, notes = refresh(old, info)
        for n in notes:
            sys.stdout.write(f"{path.name}: {n}\n")
        errs = wt.check_ui_workflow(new, info)
        for e in errs:
            sys.stderr.write(f"{path.name}: {e}\n")
        problems += bool(errs)
        text = json.dumps(new, indent=2, ensure_ascii=False) + "\n"
        if text != path.read_text(encoding="utf-8"):
            changed += 1
            if not a.check:
                path.write_text(text, encoding="utf-8")
                sys.stdout.write(f"wrote {path.relative_to(ROOT)}\n")
    if not a.check and not problems:
        problems += wt.sync_api_workflows(info)
    return 1 if problems or (a.check and changed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
