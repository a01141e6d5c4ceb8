"""Reading official ``config.json`` contents into typed config dataclasses."""

from __future__ import annotations

import collections.abc as collections_abc
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from ..errors import ConfigError

__all__ = ["check_value_type", "config_from_official"]

T = TypeVar("T")


def config_from_official(
    cls: type[T],
    data: Mapping[str, Any],
    *,
    names: Iterable[str],
    ignored: Iterable[str] = (),
    renames: Mapping[str, str] | None = None,
) -> T:
    """Build dataclass ``cls`` from a TRELLIS ``{"name", "args"}`` dict or a flat args dict.

    ``names``: accepted values of ``"name"``. ``ignored``: official keys with no effect at inference
    (e.g. ``use_checkpoint``). ``renames``: official key -> field name. Unknown keys raise
    :class:`ConfigError` naming them; so does a missing required field.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__}: expected a config mapping, got {type(data).__name__}")
    names = tuple(names)
    if "args" in data and isinstance(data["args"], Mapping):
        name = data.get("name")
        if name is not None and name not in names:
            raise ConfigError(
                f"config is for model {name!r}, not {' / '.join(names)}: check that the folder holds the right model"
            )
        extra = set(data) - {"name", "args"}
        if extra:
            raise ConfigError(f"{cls.__name__}: unknown top-level config keys {sorted(extra)}")
        args = dict(data["args"])
    else:
        args = dict(data)
    renames = dict(renames or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    ignored = set(ignored)
    kwargs: dict[str, Any] = {}
    unknown = []
    for k, v in args.items():
        key = renames.get(k, k)
        if key in fields:
            kwargs[key] = list(v) if isinstance(v, tuple) else v
        elif k not in ignored:
            unknown.append(k)
    if unknown:
        raise ConfigError(
            f"{cls.__name__}: config keys {sorted(unknown)} are not supported by this implementation "
            f"(known: {sorted(set(fields) | ignored)})"
        )
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{cls.__name__}: config lacks required keys {missing}")
    hints = _type_hints(cls)
    wrong = [f"{k}={v!r} (expected {_type_name(hints[k])})" for k, v in kwargs.items()
             if k in hints and not check_value_type(v, hints[k])]
    if wrong:
        raise ConfigError(f"{cls.__name__}: config values of the wrong type: {', '.join(wrong)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, ZeroDivisionError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{cls.__name__}: invalid config values ({e})") from None


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: no type check, the constructor still validates
        return {}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check_value_type(value: Any, tp: Any) -> bool:
    """Does a JSON value fit the annotation ``tp``? ``int`` refuses ``bool`` and ``float`` accepts ``int``;
    ``list[int]``/``tuple[...]`` check their items; unions, ``Optional`` and ``Literal`` are understood;
    anything else (``Any``, classes) is accepted (the constructor validates it)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return True
    if tp is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(check_value_type(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections_abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(check_value_type(v, a) for v, a in zip(value, args))
        return not args or all(check_value_type(v, args[0]) for v in value)
    if origin in (dict, collections_abc.Mapping):
        return isinstance(value, Mapping)
    return True
