"""Reading official ``config.json`` contents into typed config dataclasses."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from ..errors import ConfigError

__all__ = ["config_from_official"]

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
    return cls(**kwargs)
