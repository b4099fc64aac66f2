"""Rendering `Result.extra` generically, with a readable form for key-value memory examples.

A neuron example is a dict with scalar fields (layer, neuron, ...) and lists: trigger contexts
(strings with the token marked as ``[[token]]``, or dicts with ``before``/``token``/``after``)
and tokens (promoted or suppressed). Anything else is shown as nested lists and tables.
"""

from __future__ import annotations

import re
from typing import Any

from ffnlab import numbers as fmt
from ffnlab.report.html import esc, pre_json, table

_MARKED = re.compile(r"\[\[(.*?)\]\]|⟦(.*?)⟧", re.S)
_CONTEXT_KEYS = ("context", "trigger", "prefix", "example")
_CHIP_CHARS = 24  # longer strings are sentences, not tokens


def render(extra: dict[str, Any]) -> str:
    return "".join(_field(k, v, level=0) for k, v in extra.items())


def _title(key: str) -> str:
    return key.replace("_", " ").strip().capitalize()


def _field(key: str, value: Any, level: int) -> str:
    head = f'<h5>{esc(_title(key))}</h5>' if level == 0 else f'<div class="key">{esc(_title(key))}</div>'
    if _is_scalar(value):
        return f'<p class="kv"><span class="key">{esc(_title(key))}:</span> {esc(fmt.num(value))}</p>'
    if isinstance(value, dict):
        return head + '<div class="nested">' + "".join(_field(k, v, level + 1) for k, v in value.items()) + "</div>"
    if isinstance(value, list):
        return head + _list(key, value, level)
    return head + pre_json(value)


def _list(key: str, items: list, level: int) -> str:
    if not items:
        return '<p class="note">(empty)</p>'
    if all(isinstance(x, dict) for x in items):
        if any(_is_example(x) for x in items):
            return '<div class="cards">' + "".join(_card(x) for x in items) + "</div>"
        cols = list(dict.fromkeys(k for x in items for k in x))
        if all(_is_scalar(x.get(c)) for x in items for c in cols):
            return table([_title(c) for c in cols], [[x.get(c) for c in cols] for x in items])
        return "".join(_field(f"{key} {i + 1}", x, level + 1) for i, x in enumerate(items))
    if all(isinstance(x, str) for x in items):
        if _is_context_key(key) or any(_MARKED.search(x) for x in items):
            return "<ol class=\"contexts\">" + "".join(f"<li>{_context(x)}</li>" for x in items) + "</ol>"
        if max(len(x) for x in items) <= _CHIP_CHARS:
            return _chips(items)
        return '<ul class="texts">' + "".join(f"<li>{_show(x)}</li>" for x in items) + "</ul>"
    if all(_is_scalar(x) for x in items):
        return f"<p>{esc(', '.join(fmt.num(x) for x in items))}</p>"
    if all(isinstance(x, list) and all(_is_scalar(y) for y in x) for x in items):
        width = max(len(x) for x in items)
        return table([str(i) for i in range(width)], items)
    return pre_json(items)


def _is_scalar(x: Any) -> bool:
    return x is None or isinstance(x, (str, int, float, bool))


def _is_context_key(key: str) -> bool:
    return any(k in key.lower() for k in _CONTEXT_KEYS)


def _is_example(x: dict) -> bool:
    """A neuron example: has a list of contexts beside its scalar fields."""
    return any(_is_context_key(k) and isinstance(v, list) for k, v in x.items())


def _card(x: dict) -> str:
    scalars = [(k, v) for k, v in x.items() if _is_scalar(v) and not (isinstance(v, str) and len(v) > 60)]
    title = " · ".join(f"{_title(k).lower()} {fmt.num(v)}" for k, v in scalars)
    contexts = next((v for k, v in x.items() if isinstance(v, list) and _is_context_key(k)), [])
    # a numeric list as long as the contexts (e.g. activations) is shown beside each context
    beside = {k: v for k, v in x.items() if isinstance(v, list) and not _is_context_key(k) and v
              and len(v) == len(contexts) and all(_is_scalar(n) and not isinstance(n, str) for n in v)}
    body = []
    for k, v in x.items():
        if (k, v) in scalars or k in beside:
            continue
        if isinstance(v, list) and _is_context_key(k):
            notes = [" ".join(f"{_title(b).lower().removesuffix('s')} {fmt.num(vals[j])}" for b, vals in beside.items())
                     for j in range(len(v))]
            body.append(f'<div class="key">{esc(_title(k))}</div><ol class="contexts">'
                        + "".join(f'<li>{_context(c)}{_note(n)}</li>' for c, n in zip(v, notes)) + "</ol>")
        elif isinstance(v, list) and all(isinstance(t, str) for t in v):
            body.append(f'<div class="key">{esc(_title(k))}</div>{_chips(v)}')
        else:
            body.append(_field(k, v, level=1))
    return f'<div class="card"><div class="card-title">{esc(title)}</div>{"".join(body)}</div>'


def _note(text: str) -> str:
    return f' <span class="note">({esc(text)})</span>' if text else ""


def _context(c: Any) -> str:
    """A trigger context with its token highlighted."""
    if isinstance(c, dict):
        before = c.get("before", c.get("prefix", ""))
        token = c.get("token", "")
        after = c.get("after", c.get("suffix", ""))
        rest = {k: v for k, v in c.items() if k not in ("before", "prefix", "token", "after", "suffix", "text")}
        if not token and "text" in c:
            return _context(c["text"]) + _meta(rest)
        return f"{_show(before)}<mark>{_show(token)}</mark>{_show(after)}{_meta(rest)}"
    text = str(c)
    out, pos = [], 0
    for m in _MARKED.finditer(text):
        out.append(_show(text[pos:m.start()]))
        out.append(f"<mark>{_show(m.group(1) if m.group(1) is not None else m.group(2))}</mark>")
        pos = m.end()
    out.append(_show(text[pos:]))
    return "".join(out)


def _meta(rest: dict) -> str:
    if not rest:
        return ""
    return ' <span class="note">(' + esc(", ".join(f"{k} {fmt.num(v)}" for k, v in rest.items())) + ")</span>"


def _show(text: str) -> str:
    """Escape, and make newlines visible without breaking the line."""
    return esc(text).replace("\n", "<span class=\"ws\">↵</span>")


def _chips(tokens: list[str]) -> str:
    # a leading space is part of a BPE token; show it so " Paris" and "Paris" differ
    return '<p class="chips">' + "".join(f'<code class="tok">{_visible(t)}</code>' for t in tokens) + "</p>"


def _visible(token: str) -> str:
    return esc(token).replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"
