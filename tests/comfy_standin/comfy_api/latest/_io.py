"""Stand-in of ``comfy_api.latest._io``: V3 schema objects with the real field names."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


def _prune(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"


class _Input:
    io_type = "*"
    is_widget = False

    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, extra_dict=None, raw_link=None, **kw):
        self.id, self.display_name, self.optional, self.tooltip, self.lazy = id, display_name, optional, tooltip, lazy
        self.extra_dict = extra_dict or {}
        self.default = kw.pop("default", None)
        self.force_input = kw.pop("force_input", None)
        self.opts = kw

    def as_dict(self):
        return _prune({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                       "default": self.default, "forceInput": self.force_input, **self.opts}) | self.extra_dict

    def get_io_type(self):
        return self.io_type


class _Output:
    io_type = "*"

    def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name or id, tooltip, is_output_list

    def get_io_type(self):
        return self.io_type


def _make(io_type: str, widget: bool = False):
    class _T:
        Type = Any

        class Input(_Input):
            pass

        class Output(_Output):
            pass

    _T.Input.io_type = io_type
    _T.Input.is_widget = widget
    _T.Output.io_type = io_type
    _T.io_type = io_type
    return _T


Boolean = _make("BOOLEAN", True)
Int = _make("INT", True)
Float = _make("FLOAT", True)
String = _make("STRING", True)
Image = _make("IMAGE")
Mask = _make("MASK")
Latent = _make("LATENT")
Voxel = _make("VOXEL")
Mesh = _make("MESH")
AnyType = _make("*")


class Combo:
    io_type = "COMBO"

    class Input(_Input):
        io_type = "COMBO"
        is_widget = True

        def __init__(self, id, options=None, display_name=None, optional=False, tooltip=None, lazy=None,
                     default=None, **kw):
            if isinstance(options, type) and issubclass(options, Enum):
                options = [o.value for o in options]
            self.options = list(options or [])
            super().__init__(id, display_name, optional, tooltip, lazy, default=default, **kw)
            if self.default is None and self.options:
                self.default = self.options[0]

        def as_dict(self):
            return super().as_dict() | {"options": self.options}

    class Output(_Output):
        io_type = "COMBO"


_custom: dict[str, type] = {}


def Custom(io_type: str):
    if io_type not in _custom:
        _custom[io_type] = _make(io_type)
    return _custom[io_type]


@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    hidden: list = field(default_factory=list)
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self):
        ids = [i.id for i in self.inputs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate input ids in {self.node_id}")


class NodeOutput:
    def __init__(self, *args: Any, ui: dict | None = None, expand=None, block_execution=None):
        self.args, self.ui, self.expand, self.block_execution = args, ui, expand, block_execution

    @property
    def result(self):
        return self.args if self.args else None

    def __getitem__(self, i):
        return self.args[i]


class _HiddenHolder:
    def __getattr__(self, key):
        return None


class ComfyNode:
    hidden = _HiddenHolder()

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        s = cls.define_schema()
        s.validate()
        return s
