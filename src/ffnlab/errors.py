"""User-facing errors: one line saying what was wrong and what is accepted."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Iterable


class FFNLabError(ValueError):
    """An error caused by user input. The CLI prints its message as one line and exits 2."""


def unknown(what: str, name: object, known: Iterable[str]) -> FFNLabError:
    """`unknown 'ffn kind' 'swigloo'; did you mean 'swiglu'? known: ...`"""
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return FFNLabError(f"unknown {what} {name!r}{hint} known: {', '.join(known)}")


def check_field_types(config: object) -> None:
    """Every field of a dataclass `config` holds a value of its annotated type, checked before any
    other validation: `int` is not a bool, `float` is a finite int or float, `X | None` allows None.
    Fields of other types (nested configs, tuples) are the class's own business."""
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        value, kind = getattr(config, f.name), hints[f.name]
        accepted = [a for a in typing.get_args(kind) if a is not type(None)] if _optional(kind) else [kind]
        if value is None and _optional(kind) or not all(a in _CHECKS for a in accepted):
            continue
        if not any(_CHECKS[a][0](value) for a in accepted):
            raise FFNLabError(f"{f.name} must be {' or '.join(_CHECKS[a][1] for a in accepted)}"
                              f"{' or null' if _optional(kind) else ''}, got {value!r}")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _optional(kind: object) -> bool:
    return isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind)


_CHECKS = {
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), "a finite number"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    str: (lambda v: isinstance(v, str), "a string"),
}
