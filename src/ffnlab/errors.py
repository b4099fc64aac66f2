"""User-facing errors: one line saying what was wrong and what is accepted."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FFNLabError(ValueError):
    """An error caused by user input. The CLI prints its message as one line and exits 2."""


def unknown(what: str, name: object, known: Iterable[str]) -> FFNLabError:
    """`unknown 'ffn kind' 'swigloo'; did you mean 'swiglu'? known: ...`"""
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return FFNLabError(f"unknown {what} {name!r}{hint} known: {', '.join(known)}")
