"""Validate and run API-format prompts against V3 node classes, the way ComfyUI 0.8.0 does.

Only what our tests need: input presence, link type checks, widget ranges and combo options,
execution of output nodes and their ancestors inside ``torch.inference_mode()``.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import torch


class PromptValidationError(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"node {k}: {', '.join(v)}" for k, v in errors.items()))
        self.node_errors = errors


class PromptExecutionError(Exception):
    def __init__(self, node_id: str, class_type: str, exc: BaseException):
        super().__init__(f"node {node_id} ({class_type}): {type(exc).__name__}: {exc}")
        self.node_id, self.class_type, self.exception = node_id, class_type, exc


def _is_link(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


def validate_prompt(prompt: dict, nodes: dict[str, type]) -> None:
    errors: dict[str, list[str]] = {}
    for nid, node in prompt.items():
        cls = nodes.get(node.get("class_type"))
        errs = errors.setdefault(nid, [])
        if cls is None:
            errs.append(f"unknown class_type {node.get('class_type')!r}")
            continue
        schema = cls.GET_SCHEMA()
        given = node.get("inputs", {})
        for inp in schema.inputs:
            v = given.get(inp.id)
            if v is None:
                if not inp.optional:
                    errs.append(f"required input {inp.id!r} missing")
                continue
            if _is_link(v):
                src = prompt.get(v[0])
                if src is None:
                    errs.append(f"input {inp.id!r} links to missing node {v[0]}")
                    continue
                src_schema = nodes[src["class_type"]].GET_SCHEMA()
                if v[1] >= len(src_schema.outputs):
                    errs.append(f"input {inp.id!r} links to missing output {v[1]} of node {v[0]}")
                    continue
                out_t = src_schema.outputs[v[1]].get_io_type()
                in_t = inp.get_io_type()
                if in_t not in ("*", out_t) and out_t != "*":
                    errs.append(f"input {inp.id!r} expects {in_t}, linked to {out_t}")
                continue
            if isinstance(v, dict) and "__value__" in v:
                v = v["__value__"]
            t = inp.get_io_type()
            if t == "COMBO" and v not in inp.options:
                errs.append(f"value {v!r} for {inp.id!r} not in {inp.options}")
            elif t in ("INT", "FLOAT"):
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    errs.append(f"{inp.id!r} must be a number, got {v!r}")
                    continue
                lo, hi = inp.opts.get("min"), inp.opts.get("max")
                if lo is not None and v < lo or hi is not None and v > hi:
                    errs.append(f"{inp.id!r}={v} outside [{lo}, {hi}]")
            elif t == "BOOLEAN" and not isinstance(v, bool):
                errs.append(f"{inp.id!r} must be a boolean")
            elif t == "STRING" and not isinstance(v, str):
                errs.append(f"{inp.id!r} must be a string")
        unknown = set(given) - {i.id for i in schema.inputs}
        if unknown:
            errs.append(f"unknown inputs {sorted(unknown)}")
    errors = {k: v for k, v in errors.items() if v}
    if errors:
        raise PromptValidationError(errors)


def run_prompt(prompt: dict, nodes: dict[str, type]) -> dict[str, dict]:
    """Run every output node and its ancestors. Returns ``{node_id: {"outputs": tuple, "ui": dict}}``."""
    validate_prompt(prompt, nodes)
    results: dict[str, dict] = {}

    def run(nid: str, stack: tuple = ()) -> tuple:
        if nid in results:
            return results[nid]["outputs"]
        if nid in stack:
            raise PromptValidationError({nid: ["cycle"]})
        node = prompt[nid]
        cls = nodes[node["class_type"]]
        kwargs = {}
        for k, v in node.get("inputs", {}).items():
            if _is_link(v):
                kwargs[k] = run(v[0], stack + (nid,))[v[1]]
            else:
                kwargs[k] = v["__value__"] if isinstance(v, dict) and "__value__" in v else v
        try:
            with torch.inference_mode():
                out = cls.execute(**kwargs)
                if inspect.isawaitable(out):
                    out = asyncio.run(out)
        except Exception as e:  # the host reports it as execution_error
            raise PromptExecutionError(nid, node["class_type"], e) from e
        results[nid] = {"outputs": tuple(out.args), "ui": out.ui or {}}
        return results[nid]["outputs"]

    for nid, node in prompt.items():
        if nodes[node["class_type"]].GET_SCHEMA().is_output_node:
            run(nid)
    return results
