"""Validate and run API-format prompts in-process, following ComfyUI 0.8.0's ``execution.py``.

What is mirrored (each checked against the real server by ``tests/test_comfy_server.py``):

* validation per output node and its ancestors: ``required_input_missing``, ``bad_linked_input``,
  ``return_type_mismatch`` (type strings compared as sets of comma-separated names, ``*`` matches all),
  literal conversion (``int()``, ``float()``, ``str()``, ``bool()``), ``min``/``max`` (skipped for inputs a
  ``validate_inputs`` override declares), combo options, the node's own ``validate_inputs``; unknown input
  names are ignored; a prompt whose every output fails raises :class:`PromptValidationError` with the
  ``node_errors`` the server returns with HTTP 400;
* execution of output nodes and their ancestors inside ``torch.inference_mode()``, V3 nodes through a class
  clone with hidden inputs (``PROMPT``, ``EXTRA_PNGINFO`` for output nodes, ``UNIQUE_ID``), V1 nodes through
  an instance and ``FUNCTION``; optional inputs not given are not passed;
* errors: an exception becomes :class:`PromptExecutionError` with ``exception_message = f"{ex}\\n{tips}"``
  (tips only for ``OOM_EXCEPTION``, after which every model is unloaded); an interrupt becomes
  :class:`PromptInterrupted`;
* progress: ``comfy.utils.ProgressBar`` updates reach a hook that records ``(node_id, value, max)`` and raises
  on interrupt, as the server's hook does.

* caching across prompts (pass the same ``cache`` dict): a node whose class and inputs (literals and, by
  position, its ancestors' signatures) equal a node of the previous prompt is not run again, output nodes
  included (their ``ui`` is reported again); only the last prompt's outputs are kept.

Not modelled: ``IS_CHANGED`` / ``fingerprint_inputs``, lazy inputs, list inputs/outputs, subgraph expansion.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

OOM_TIPS = ("This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you might "
            "have accidentally set the batch_size to a large number.")


class PromptValidationError(Exception):
    """What ``POST /prompt`` answers with HTTP 400: ``error`` and ``node_errors``."""

    def __init__(self, error: dict, node_errors: dict):
        lines = [f"{error['message']}: {error.get('details', '')}"]
        for nid, ne in node_errors.items():
            for e in ne["errors"]:
                lines.append(f"node {nid} ({ne['class_type']}): {e['message']}: {e['details']}")
        super().__init__("\n".join(lines))
        self.error = error
        self.node_errors = node_errors


class PromptExecutionError(Exception):
    """An ``execution_error``: ``node_id``, ``node_type``, ``exception_message``, ``exception_type``."""

    def __init__(self, node_id: str, node_type: str, exc: BaseException, message: str):
        super().__init__(f"node {node_id} ({node_type}): {message}")
        self.node_id, self.node_type, self.exception = node_id, node_type, exc
        self.exception_message = message
        self.exception_type = f"{type(exc).__module__}.{type(exc).__qualname__}"


class PromptInterrupted(Exception):
    """An ``execution_interrupted`` message."""

    def __init__(self, node_id: str):
        super().__init__(f"interrupted in node {node_id}")
        self.node_id = node_id


@dataclass
class PromptResult:
    outputs: dict[str, tuple] = field(default_factory=dict)  # node id -> output values
    ui: dict[str, dict] = field(default_factory=dict)  # node id -> ui dict (what /history shows)
    progress: list[tuple[str, float, float]] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)  # execution order
    seconds: dict[str, float] = field(default_factory=dict)  # node id -> time in its execute
    cached: list[str] = field(default_factory=list)  # node ids served from the cache


# ------------------------------------------------------------------------------------------------ node info


def is_v3(cls: type) -> bool:
    return isinstance(cls, type) and issubclass(cls, io.ComfyNode)


def input_types(cls: type) -> dict:
    return cls.INPUT_TYPES()


def return_types(cls: type) -> list:
    return list(cls.RETURN_TYPES)


def is_output_node(cls: type) -> bool:
    return bool(getattr(cls, "OUTPUT_NODE", False))


def node_info(class_type: str, cls: type) -> dict:
    """One entry of ``GET /object_info`` (as ``server.py`` builds it)."""
    if is_v3(cls):
        return cls.GET_NODE_INFO_V1()
    inputs = cls.INPUT_TYPES()
    info = {
        "input": inputs,
        "input_order": {k: list(v) for k, v in inputs.items()},
        "output": list(cls.RETURN_TYPES),
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES))),
        "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
        "name": class_type,
        "display_name": getattr(cls, "DISPLAY_NAME", class_type),
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": is_output_node(cls),
    }
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
    if getattr(cls, "DEPRECATED", False):
        info["deprecated"] = True
    return info


def object_info(nodes: Mapping[str, type]) -> dict[str, dict]:
    """``GET /object_info`` for ``nodes``; JSON round-tripped (tuples become lists, as over HTTP)."""
    import json

    return json.loads(json.dumps({k: node_info(k, c) for k, c in nodes.items()}))


def _input_info(inputs: dict, name: str) -> tuple[Any, str | None, dict | None]:
    for cat in ("required", "optional", "hidden"):
        if name in inputs.get(cat, {}):
            spec = inputs[cat][name]
            extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return spec[0], cat, extra
    return None, None, None


def _is_link(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


def types_match(received: Any, expected: Any) -> bool:
    """``comfy_execution.validation.validate_node_input`` (non-strict)."""
    if received == expected or received == "*" or expected == "*":
        return True
    if isinstance(received, list) and expected == "COMBO":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    a = {t.strip() for t in received.split(",")}
    b = {t.strip() for t in expected.split(",")}
    return "*" in a or "*" in b or bool(a & b)


def _validate_function(cls: type):
    """The node's own input validator and the argument names it declares (``validate_inputs`` / V1)."""
    if is_v3(cls):
        f = cls.validate_inputs
        if f.__func__ is io.ComfyNode.validate_inputs.__func__:
            return None, [], False
    else:
        f = getattr(cls, "VALIDATE_INPUTS", None)
        if f is None:
            return None, [], False
    spec = inspect.getfullargspec(f)
    return f, spec.args, spec.varkw is not None


def _error(kind: str, message: str, details: str, name: str | None = None, **extra) -> dict:
    info = {"input_name": name, **extra} if name is not None else dict(extra)
    return {"type": kind, "message": message, "details": details, "extra_info": info}


def _validate_node(prompt: dict, nid: str, nodes: Mapping[str, type], validated: dict) -> tuple[bool, list]:
    if nid in validated:
        return validated[nid]
    node = prompt[nid]
    cls = nodes[node["class_type"]]
    inputs = node.setdefault("inputs", {})
    class_inputs = input_types(cls)
    vfunc, vargs, vkw = _validate_function(cls)
    errors: list[dict] = []
    valid = True
    names = list(class_inputs.get("required", {})) + list(class_inputs.get("optional", {}))
    for x in names:
        typ, cat, extra = _input_info(class_inputs, x)
        if x not in inputs:
            if cat == "required":
                errors.append(_error("required_input_missing", "Required input is missing", x, x))
            continue
        val = inputs[x]
        if isinstance(val, list):
            if len(val) != 2:
                errors.append(_error("bad_linked_input", "Bad linked input, must be a length-2 list of "
                                     "[node_id, slot_index]", x, x))
                continue
            src = prompt.get(val[0])
            if src is None or src.get("class_type") not in nodes:
                errors.append(_error("bad_linked_input", "Bad linked input", f"{x}: node {val[0]} not found", x))
                continue
            received = return_types(nodes[src["class_type"]])[val[1]]
            if "input_types" not in vargs and not types_match(received, typ):
                errors.append(_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                     f"{x}, received_type({received}) mismatch input_type({typ})", x,
                                     received_type=received, linked_node=val))
                continue
            ok, _ = _validate_node(prompt, val[0], nodes, validated)
            if not ok:
                valid = False
            continue
        if isinstance(val, dict) and "__value__" in val:
            val = val["__value__"]
            inputs[x] = val
        try:
            conv = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}.get(typ) if isinstance(typ, str) else None
            if conv is not None:
                val = conv(val)
                inputs[x] = val
        except Exception as ex:  # noqa: BLE001 (the host reports any conversion failure)
            errors.append(_error("invalid_input_type", f"Failed to convert an input value to a {typ} value",
                                 f"{x}, {val}, {ex}", x))
            continue
        if x in vargs or vkw:
            continue
        if "min" in extra and val < extra["min"]:
            errors.append(_error("value_smaller_than_min", f"Value {val} smaller than min of {extra['min']}", x, x))
            continue
        if "max" in extra and val > extra["max"]:
            errors.append(_error("value_bigger_than_max", f"Value {val} bigger than max of {extra['max']}", x, x))
            continue
        if isinstance(typ, list) or typ == "COMBO":
            options = extra.get("options", []) if typ == "COMBO" else typ
            if val not in options:
                listing = f"(list of length {len(options)})" if len(options) > 20 else str(options)
                errors.append(_error("value_not_in_list", "Value not in list", f"{x}: '{val}' not in {listing}", x))
                continue
    if vfunc is not None and (vargs or vkw):
        given = {k: v for k, v in inputs.items() if not _is_link(v) and (k in vargs or vkw)}
        r = vfunc(**given)
        if r is not True:
            for k in given:
                errors.append(_error("custom_validation_failed", "Custom validation failed for node",
                                     k + (f" - {r}" if r is not False else ""), k))
    result = (valid and not errors, errors)
    validated[nid] = result
    return result


def validate_prompt(prompt: dict, nodes: Mapping[str, type]) -> list[str]:
    """Validate like ``execution.validate_prompt``; returns the output node ids that may run."""
    for nid, node in prompt.items():
        if "class_type" not in node:
            raise PromptValidationError({"type": "invalid_prompt", "message": "Cannot execute because a node is "
                                         "missing the class_type property.", "details": f"Node ID '#{nid}'"}, {})
        if node["class_type"] not in nodes:
            raise PromptValidationError({"type": "invalid_prompt", "message": f"Cannot execute because node "
                                         f"{node['class_type']} does not exist.", "details": f"Node ID '#{nid}'"}, {})
    outputs = [nid for nid, n in prompt.items() if is_output_node(nodes[n["class_type"]])]
    if not outputs:
        raise PromptValidationError({"type": "prompt_no_outputs", "message": "Prompt has no outputs",
                                     "details": ""}, {})
    validated: dict = {}
    good, node_errors = [], {}
    for o in outputs:
        ok, _ = _validate_node(prompt, o, nodes, validated)
        if ok:
            good.append(o)
            continue
        for nid, (v, reasons) in validated.items():
            if not v and reasons:
                ne = node_errors.setdefault(nid, {"errors": reasons, "dependent_outputs": [],
                                                  "class_type": prompt[nid]["class_type"]})
                ne["dependent_outputs"].append(o)
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for ne in node_errors.values() for e in ne["errors"])
        raise PromptValidationError({"type": "prompt_outputs_failed_validation",
                                     "message": "Prompt outputs failed validation", "details": details}, node_errors)
    return good


# ------------------------------------------------------------------------------------------------ execution


def _ui_dict(ui: Any) -> dict:
    if ui is None:
        return {}
    if hasattr(ui, "as_dict"):
        return ui.as_dict()
    return dict(ui)


def _call(cls: type, nid: str, kwargs: dict, prompt: dict, extra_data: dict) -> tuple[tuple, dict]:
    if is_v3(cls):
        schema = cls.GET_SCHEMA()
        hidden = {}
        for h in schema.hidden:
            if h == io.Hidden.prompt:
                hidden[h] = prompt
            elif h == io.Hidden.extra_pnginfo:
                hidden[h] = extra_data.get("extra_pnginfo")
            elif h == io.Hidden.unique_id:
                hidden[h] = nid
        clone = cls.PREPARE_CLASS_CLONE(hidden)
        out = clone.execute(**kwargs)
        if inspect.isawaitable(out):
            out = asyncio.run(out)
        from comfy_api.latest._io import _normalize

        out = _normalize(cls, out)
        return tuple(out.args), _ui_dict(out.ui)
    obj = cls()
    hidden_spec = input_types(cls).get("hidden", {})
    for k, v in hidden_spec.items():
        if v == "PROMPT":
            kwargs[k] = prompt
        elif v == "EXTRA_PNGINFO":
            kwargs[k] = extra_data.get("extra_pnginfo")
        elif v == "UNIQUE_ID":
            kwargs[k] = nid
    out = getattr(obj, cls.FUNCTION)(**kwargs)
    if isinstance(out, dict):
        return tuple(out.get("result", ())), dict(out.get("ui", {}))
    return tuple(out), {}


def _signature(prompt: dict, nid: str, memo: dict) -> str:
    if nid not in memo:
        node = prompt[nid]
        parts = [node["class_type"]]
        for k in sorted(node.get("inputs", {})):
            v = node["inputs"][k]
            parts.append((k, ("ANCESTOR", _signature(prompt, v[0], memo), v[1])) if _is_link(v) else (k, v))
        memo[nid] = repr(parts)
    return memo[nid]


def run_prompt(prompt: dict, nodes: Mapping[str, type], *, extra_data: dict | None = None,
               outputs: Iterable[str] | None = None, cache: dict | None = None) -> PromptResult:
    """Validate, then run the valid output nodes (or ``outputs``) and their ancestors."""
    import copy

    prompt = copy.deepcopy(prompt)
    good = validate_prompt(prompt, nodes)
    wanted = [o for o in good if outputs is None or o in set(outputs)]
    extra_data = extra_data or {}
    result = PromptResult()
    current = {"node": None}
    memo: dict = {}
    used: dict = {}

    def hook(value, total, preview, node_id=None, prompt_id=None):
        result.progress.append((current["node"], float(value), float(total)))
        mm.throw_exception_if_processing_interrupted()

    def run(nid: str, stack: tuple = ()) -> tuple:
        if nid in result.outputs:
            return result.outputs[nid]
        if nid in stack:
            raise PromptValidationError({"type": "invalid_prompt", "message": "cycle", "details": nid}, {})
        node = prompt[nid]
        cls = nodes[node["class_type"]]
        sig = _signature(prompt, nid, memo) if cache is not None else None
        if sig is not None and sig in cache:
            out, ui = cache[sig]
            used[sig] = cache[sig]
            result.outputs[nid] = out
            if ui:
                result.ui[nid] = ui
            result.cached.append(nid)
            return out
        kwargs = {}
        for k, v in node.get("inputs", {}).items():
            typ, cat, _ = _input_info(input_types(cls), k)
            if cat is None:
                continue  # unknown names are ignored by the host
            kwargs[k] = run(v[0], stack + (nid,))[v[1]] if _is_link(v) else v
        current["node"] = nid
        mm.throw_exception_if_processing_interrupted()  # nodes.before_node_execution()
        t0 = time.perf_counter()
        try:
            out, ui = _call(cls, nid, kwargs, prompt, extra_data)
        except mm.InterruptProcessingException as e:
            raise PromptInterrupted(nid) from e
        except Exception as ex:  # noqa: BLE001 - the host turns every exception into execution_error
            tips = ""
            if isinstance(ex, mm.OOM_EXCEPTION):
                tips = OOM_TIPS
                mm.unload_all_models()
            raise PromptExecutionError(nid, node["class_type"], ex, f"{ex}\n{tips}") from ex
        result.seconds[nid] = time.perf_counter() - t0
        if sig is not None:
            used[sig] = (out, ui)
        result.outputs[nid] = out
        if ui:
            result.ui[nid] = ui
        result.executed.append(nid)
        return out

    old_hook = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with torch.inference_mode():
            for o in wanted:
                run(o)
    finally:
        comfy.utils.set_progress_bar_global_hook(old_hook)
        mm.interrupt_current_processing(False)
        if cache is not None:
            cache.clear()
            cache.update(used)
    return result


def history_entry(result: PromptResult) -> dict:
    """What ``/history/<id>`` holds for a successful run (``outputs`` and ``status``)."""
    return {"outputs": result.ui, "status": {"status_str": "success", "completed": True}, **asdict(result)}
