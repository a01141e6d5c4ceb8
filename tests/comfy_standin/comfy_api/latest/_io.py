"""Stand-in of ``comfy_api.latest._io`` (ComfyUI 0.8.0): the V3 schema objects a node pack uses.

Written for CI, where ComfyUI is absent. It mirrors the real module's behaviour where our nodes and tests
depend on it: class and argument names, ``as_dict`` keys (what ``/object_info`` shows), ``Schema.finalize``
(hidden inputs of output nodes, default output ids), ``GET_SCHEMA`` / ``GET_NODE_INFO_V1`` /
``INPUT_TYPES`` / ``RETURN_TYPES``, class cloning with a ``hidden`` holder per call, and ``NodeOutput``.
Dynamic inputs (Autogrow, DynamicCombo, MatchType) are not modelled. ``tests/test_comfy_server.py``
compares what this produces with a real server's ``/object_info``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from comfy_api.latest._util import MESH, VOXEL


def _prune(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class FolderType(str, Enum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(str, Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


# ----------------------------------------------------------------------------------------------- types


class _ComfyType:
    Type = Any
    io_type: str | None = None


def comfytype(io_type: str, **_kwargs):
    """Bind ``io_type`` to a type class and give its Input/Output classes a ``Parent`` link (own copies)."""

    def decorate(cls):
        cls.io_type = io_type
        for name in ("Input", "Output"):
            inner = cls.__dict__.get(name) or getattr(cls, name, None)
            if inner is not None:
                copy = type(inner.__name__, (inner,), {"__module__": inner.__module__})
                copy.Parent = cls
                setattr(cls, name, copy)
        return cls

    return decorate


class _IO_V3:  # noqa: N801 (real name)
    Parent: type[_ComfyType] | None = None

    def validate(self) -> None:
        pass

    @property
    def io_type(self) -> str:
        return self.Parent.io_type

    @property
    def Type(self):  # noqa: N802 (real name)
        return self.Parent.Type


class Input(_IO_V3):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 extra_dict=None, raw_link: bool = None):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict if extra_dict is not None else {}
        self.rawLink = raw_link

    def as_dict(self) -> dict:
        base = _prune({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                       "lazy": self.lazy, "rawLink": self.rawLink})
        return base | _prune(self.extra_dict)

    def get_io_type(self) -> str:
        return self.io_type

    def get_all(self) -> list[Input]:
        return [self]


class WidgetInput(Input):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 default: Any = None, socketless: bool = None, widget_type: str = None, force_input: bool = None,
                 extra_dict=None, raw_link: bool = None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def as_dict(self) -> dict:
        return super().as_dict() | _prune({"default": self.default, "socketless": self.socketless,
                                           "widgetType": self.widget_type, "forceInput": self.force_input})

    def get_io_type(self) -> str:
        return self.widget_type if self.widget_type is not None else super().get_io_type()


class Output(_IO_V3):
    def __init__(self, id: str = None, display_name: str = None, tooltip: str = None, is_output_list=False):
        self.id = id
        self.display_name = display_name if display_name else id
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    def as_dict(self) -> dict:
        return _prune({"display_name": self.display_name or self.id, "tooltip": self.tooltip,
                       "is_output_list": self.is_output_list})

    def get_io_type(self) -> str:
        return self.io_type


class ComfyTypeI(_ComfyType):
    class Input(Input):
        pass


class ComfyTypeIO(ComfyTypeI):
    class Output(Output):
        pass


def Custom(io_type: str) -> type[ComfyTypeIO]:  # noqa: N802 (real name)
    """A new type class for a custom wire type (a new class per call, as in ComfyUI)."""

    @comfytype(io_type=io_type)
    class CustomComfyType(ComfyTypeIO):
        pass

    return CustomComfyType


@comfytype(io_type="BOOLEAN")
class Boolean(ComfyTypeIO):
    Type = bool

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None,
                     lazy: bool = None, default: bool = None, label_on: str = None, label_off: str = None,
                     socketless: bool = None, force_input: bool = None, extra_dict=None, raw_link: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.label_on, self.label_off = label_on, label_off

        def as_dict(self) -> dict:
            return super().as_dict() | _prune({"label_on": self.label_on, "label_off": self.label_off})


@comfytype(io_type="INT")
class Int(ComfyTypeIO):
    Type = int

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None,
                     lazy: bool = None, default: int = None, min: int = None, max: int = None, step: int = None,
                     control_after_generate: bool = None, display_mode: NumberDisplay = None,
                     socketless: bool = None, force_input: bool = None, extra_dict=None, raw_link: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate = control_after_generate
            self.display_mode = display_mode

        def as_dict(self) -> dict:
            return super().as_dict() | _prune({
                "min": self.min, "max": self.max, "step": self.step,
                "control_after_generate": self.control_after_generate,
                "display": self.display_mode.value if self.display_mode else None,
            })


@comfytype(io_type="FLOAT")
class Float(ComfyTypeIO):
    Type = float

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None,
                     lazy: bool = None, default: float = None, min: float = None, max: float = None,
                     step: float = None, round: float = None, display_mode: NumberDisplay = None,
                     socketless: bool = None, force_input: bool = None, extra_dict=None, raw_link: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.min, self.max, self.step, self.round = min, max, step, round
            self.display_mode = display_mode

        def as_dict(self) -> dict:
            return super().as_dict() | _prune({"min": self.min, "max": self.max, "step": self.step,
                                               "round": self.round, "display": self.display_mode})


@comfytype(io_type="STRING")
class String(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None,
                     lazy: bool = None, multiline=False, placeholder: str = None, default: str = None,
                     dynamic_prompts: bool = None, socketless: bool = None, force_input: bool = None,
                     extra_dict=None, raw_link: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

        def as_dict(self) -> dict:
            return super().as_dict() | _prune({"multiline": self.multiline, "placeholder": self.placeholder,
                                               "dynamicPrompts": self.dynamic_prompts})


@comfytype(io_type="COMBO")
class Combo(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, options=None, display_name: str = None, optional=False, tooltip: str = None,
                     lazy: bool = None, default=None, control_after_generate: bool = None,
                     upload: UploadType = None, image_folder: FolderType = None, remote=None,
                     socketless: bool = None, extra_dict=None, raw_link: bool = None):
            if isinstance(options, type) and issubclass(options, Enum):
                options = [v.value for v in options]
            if isinstance(default, Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, None,
                             extra_dict, raw_link)
            self.multiselect = False
            self.options = options
            self.control_after_generate = control_after_generate
            self.upload = upload
            self.image_folder = image_folder
            self.remote = remote

        def as_dict(self) -> dict:
            return super().as_dict() | _prune({
                "multiselect": self.multiselect,
                "options": self.options,
                "control_after_generate": self.control_after_generate,
                **({self.upload.value: True} if self.upload is not None else {}),
                "image_folder": self.image_folder.value if self.image_folder else None,
                "remote": self.remote.as_dict() if self.remote else None,
            })

    class Output(Output):
        def __init__(self, id: str = None, display_name: str = None, options: list[str] = None,
                     tooltip: str = None, is_output_list=False):
            super().__init__(id, display_name, tooltip, is_output_list)
            self.options = options if options is not None else []


def _plain(io_type: str, name: str) -> type[ComfyTypeIO]:
    cls = type(name, (ComfyTypeIO,), {"__module__": __name__})
    return comfytype(io_type=io_type)(cls)


Image = _plain("IMAGE", "Image")
Mask = _plain("MASK", "Mask")
Latent = _plain("LATENT", "Latent")
Conditioning = _plain("CONDITIONING", "Conditioning")
Model = _plain("MODEL", "Model")
Load3DCamera = _plain("LOAD3D_CAMERA", "Load3DCamera")
Voxel = _plain("VOXEL", "Voxel")
Voxel.Type = VOXEL
Mesh = _plain("MESH", "Mesh")
Mesh.Type = MESH
AnyType = _plain("*", "AnyType")


# ----------------------------------------------------------------------------------------------- schema


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    def __init__(self, unique_id=None, prompt=None, extra_pnginfo=None, dynprompt=None,
                 auth_token_comfy_org=None, api_key_comfy_org=None, **_kw):
        self.unique_id, self.prompt, self.extra_pnginfo, self.dynprompt = unique_id, prompt, extra_pnginfo, dynprompt
        self.auth_token_comfy_org, self.api_key_comfy_org = auth_token_comfy_org, api_key_comfy_org

    def __getattr__(self, key):
        return None

    @classmethod
    def from_dict(cls, d: dict | None) -> HiddenHolder:
        d = d or {}
        return cls(**{h.name: d.get(h) for h in Hidden})


@dataclass
class NodeInfoV1:
    input: dict = None
    input_order: dict = None
    output: list = None
    output_is_list: list = None
    output_name: list = None
    output_tooltips: list = None
    output_matchtypes: list = None
    name: str = None
    display_name: str = None
    description: str = None
    python_module: Any = None
    category: str = None
    output_node: bool = None
    deprecated: bool = None
    experimental: bool = None
    api_node: bool = None


@dataclass
class Schema:
    node_id: str
    display_name: str = None
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

    def validate(self) -> None:
        ids = [i.id for inp in self.inputs for i in inp.get_all()]
        out_ids = [o.id for o in self.outputs]
        issues = []
        if len(set(ids)) != len(ids):
            issues.append(f"Input ids must be unique, but {[k for k, n in Counter(ids).items() if n > 1]} are not.")
        if len(set(out_ids)) != len(out_ids):
            issues.append(f"Output ids must be unique, but {[k for k, n in Counter(out_ids).items() if n > 1]} are not.")
        if issues:
            raise ValueError("\n".join(issues))
        for x in (*self.inputs, *self.outputs):
            x.validate()

    def finalize(self) -> None:
        self.inputs = self.inputs or []
        self.outputs = self.outputs or []
        self.hidden = self.hidden or []
        if self.is_api_node:
            for h in (Hidden.auth_token_comfy_org, Hidden.api_key_comfy_org):
                if h not in self.hidden:
                    self.hidden.append(h)
        if self.is_output_node:
            for h in (Hidden.prompt, Hidden.extra_pnginfo):
                if h not in self.hidden:
                    self.hidden.append(h)
        for i, o in enumerate(self.outputs):
            if o.id is None:
                o.id = f"_{i}_{o.io_type}_"

    def get_v1_info(self, cls) -> NodeInfoV1:
        inputs: dict[str, dict] = {"required": {}}
        for i in self.inputs:
            d = i.as_dict()
            d.pop("optional", None)
            inputs.setdefault("optional" if i.optional else "required", {})[i.id] = (i.get_io_type(), d)
        for h in self.hidden:
            inputs.setdefault("hidden", {})[h.name] = (h.value,)
        return NodeInfoV1(
            input=inputs,
            input_order={k: list(v) for k, v in inputs.items()},
            output=[o.io_type for o in self.outputs],
            output_is_list=[o.is_output_list for o in self.outputs],
            output_name=[o.display_name or o.io_type for o in self.outputs],
            output_tooltips=[o.tooltip or None for o in self.outputs],
            output_matchtypes=None,
            name=self.node_id,
            display_name=self.display_name,
            category=self.category,
            description=self.description,
            output_node=self.is_output_node,
            deprecated=self.is_deprecated,
            experimental=self.is_experimental,
            api_node=self.is_api_node,
            python_module=getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
        )


class NodeOutput:
    def __init__(self, *args: Any, ui=None, expand: dict = None, block_execution: str = None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self):
        return self.args if len(self.args) > 0 else None

    @classmethod
    def from_dict(cls, data: dict) -> NodeOutput:
        return cls(*data.get("result", ()), ui=data.get("ui"), expand=data.get("expand"))

    def __getitem__(self, index):
        return self.args[index]


class _classproperty:  # noqa: N801
    def __init__(self, fget):
        self.fget = fget

    def __get__(self, obj, owner):
        return self.fget(owner)


class ComfyNode:
    """Base class of V3 nodes: classmethods only; the host calls a fresh clone of the class per run."""

    RELATIVE_PYTHON_MODULE = None
    SCHEMA = None
    hidden: HiddenHolder = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs):
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        raise NotImplementedError

    @classmethod
    def check_lazy_status(cls, **kwargs) -> list[str]:
        return [k for k, v in kwargs.items() if v is None]

    @classmethod
    def GET_BASE_CLASS(cls):  # noqa: N802 (real name)
        return ComfyNode

    @classmethod
    def VALIDATE_CLASS(cls) -> None:  # noqa: N802 (real name)
        for name in ("define_schema", "execute"):
            if getattr(cls, name).__func__ is getattr(ComfyNode, name).__func__:
                raise Exception(f"No {name} function was defined for node class {cls.__name__}.")

    @classmethod
    def FINALIZE_SCHEMA(cls) -> Schema:  # noqa: N802 (real name)
        schema = cls.define_schema()
        schema.finalize()
        return schema

    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802 (real name)
        cls.VALIDATE_CLASS()
        schema = cls.FINALIZE_SCHEMA()
        schema.validate()
        cls.SCHEMA = schema
        return schema

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict:  # noqa: N802 (real name)
        return asdict(cls.GET_SCHEMA().get_v1_info(cls))

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802 (real name)
        return cls.FINALIZE_SCHEMA().get_v1_info(cls).input

    @_classproperty
    def RETURN_TYPES(cls) -> list[str]:  # noqa: N802 (real name)
        return [o.io_type for o in cls.GET_SCHEMA().outputs]

    @_classproperty
    def RETURN_NAMES(cls) -> list[str]:  # noqa: N802 (real name)
        return [o.display_name or o.io_type for o in cls.GET_SCHEMA().outputs]

    @_classproperty
    def OUTPUT_NODE(cls) -> bool:  # noqa: N802 (real name)
        return cls.GET_SCHEMA().is_output_node

    @_classproperty
    def INPUT_IS_LIST(cls) -> bool:  # noqa: N802 (real name)
        return cls.GET_SCHEMA().is_input_list

    @_classproperty
    def NOT_IDEMPOTENT(cls) -> bool:  # noqa: N802 (real name)
        return cls.GET_SCHEMA().not_idempotent

    @classmethod
    def PREPARE_CLASS_CLONE(cls, hidden_inputs: dict | None) -> type[ComfyNode]:  # noqa: N802 (real name)
        """A throw-away subclass carrying this call's hidden inputs (state never sticks to the real class)."""
        clone = type(cls.__name__, (cls,), {"__module__": cls.__module__})
        clone.hidden = HiddenHolder.from_dict(hidden_inputs)
        return clone

    @classmethod
    def EXECUTE_NORMALIZED(cls, **kwargs) -> NodeOutput:  # noqa: N802 (real name)
        out = cls.execute(**kwargs)
        return _normalize(cls, out)


def _normalize(cls, out) -> NodeOutput:
    if out is None:
        out = NodeOutput()
    elif isinstance(out, tuple):
        out = NodeOutput(*out)
    elif isinstance(out, dict):
        out = NodeOutput.from_dict(out)
    elif not isinstance(out, NodeOutput):
        raise Exception(f"Invalid return type from node: {type(out)}")
    if out.expand is not None and not cls.GET_SCHEMA().enable_expand:
        raise Exception(f"Node {cls.__name__} is not expandable, but expand included in NodeOutput")
    return out


__all__ = [
    "AnyType", "Boolean", "Combo", "ComfyNode", "ComfyTypeI", "ComfyTypeIO", "Conditioning", "Custom", "Float",
    "FolderType", "Hidden", "HiddenHolder", "Image", "Input", "Int", "Latent", "Load3DCamera", "Mask", "Mesh",
    "Model", "NodeInfoV1", "NodeOutput", "NumberDisplay", "Output", "Schema", "String", "UploadType", "Voxel",
    "WidgetInput", "comfytype",
]
