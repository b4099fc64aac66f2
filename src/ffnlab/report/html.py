"""Small HTML building blocks: escaping, tables that scroll, definition lists, badges."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from ffnlab import numbers as fmt
from ffnlab.results import base_verdict, is_indicative


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def slug(*parts: str) -> str:
    """An HTML id from free text: lower case, [a-z0-9-] only."""
    text = "-".join(parts).lower()
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text)).strip("-") or "x"


def cell(x: Any) -> str:
    if isinstance(x, (list, tuple)):
        return esc(", ".join(fmt.num(v) for v in x))
    if isinstance(x, dict):
        return f"<code>{esc(json.dumps(x, default=str))}</code>"
    return esc(fmt.num(x))


def table(columns: list[str], rows: list[list[Any]], caption: str = "", note: str = "",
          raw: bool = False) -> str:
    """A table in a horizontally scrolling box; `raw` cells are trusted HTML."""
    numeric = [all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool)
                   for r in rows if i < len(r) and r[i] is not None) and bool(rows) for i in range(len(columns))]
    num_cls = ' class="num"'
    head = "".join(f'<th scope="col"{num_cls if numeric[i] else ""}>{esc(c)}</th>' for i, c in enumerate(columns))
    body = []
    for r in rows:
        tds = []
        for i, v in enumerate(r):
            content = v if raw else cell(v)
            cls = num_cls if i < len(numeric) and numeric[i] else ""
            tds.append(f"<td{cls}>{content}</td>")
        body.append(f"<tr>{''.join(tds)}</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    foot = f'<p class="note">{esc(note)}</p>' if note else ""
    return (f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>{foot}")


def badge(verdict: str | None) -> str:
    """A verdict badge; an indicative verdict (fewer than 3 seeds) keeps its colour, dashed."""
    v = verdict or "no verdict"
    cls = slug(base_verdict(v)) + (" indicative" if is_indicative(v) else "")
    return f'<span class="badge {cls}">{esc(v)}</span>'


def pre_json(data: Any) -> str:
    return f"<pre>{esc(json.dumps(data, indent=1, sort_keys=True, default=str))}</pre>"
