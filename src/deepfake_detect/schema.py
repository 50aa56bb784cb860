"""Type checks for dataclasses read from files a user may have edited (settings, artifacts).

Python does not check a dataclass's annotations; a hand-edited JSON file with `"crop_size":
"64"` would otherwise fail later, far from the file, with a traceback. `check_field_types`
checks plain fields (bool, int, float, str, Optional, tuples and lists of them) once, on load.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def setting(default: Any, help: str) -> Any:
    """A settings dataclass field: its default and the one-line help the CLI shows for it, so
    that the dataclass is the single home of both."""
    return dataclasses.field(default=default, metadata={"help": help})


def check_field_types(instance: Any) -> None:
    """Raise TypeError naming the first field whose value does not match its annotation."""
    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        expected = hints[field.name]
        if not _matches(value, expected):
            raise TypeError(f"{field.name} must be {_describe(expected)}, got {value!r}")


def _matches(value: Any, expected: Any) -> bool:
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if expected is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin in (tuple, list):
        if not isinstance(value, tuple | list):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_matches, value, args))
        return all(_matches(item, args[0]) for item in value) if args else True
    if origin is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(expected) or isinstance(expected, type):
        return isinstance(value, expected)
    return True


def _describe(expected: Any) -> str:
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(expected))
    if expected is type(None):
        return "null"
    return getattr(expected, "__name__", str(expected))
