"""The explorer's pages as HTML, from Jinja2 templates: the same templates serve the app and the static export.

`Links` says where a page links to: in the app, routes (`/layer/3`); in an export, files beside each
other (`layer-03.html`), and no link at all to a neuron that was not exported or to the live pages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from ffnlab.explore.explorer import Explorer, Histogram
from ffnlab.explore.stored import ladder_path


@dataclass(frozen=True)
class Links:
    served: bool
    exported: frozenset[tuple[int, int]] = frozenset()  # neurons with a page (export only)

    def overview(self) -> str:
        return "/" if self.served else "index.html"

    def layer(self, layer: int, **query: str) -> str:
        base = f"/layer/{layer}" if self.served else f"layer-{layer:02d}.html"
        return base + (f"?{urlencode(query)}" if query else "")

    def neuron(self, layer: int, neuron: int) -> str | None:
        if self.served:
            return f"/neuron/{layer}/{neuron}"
        return f"neuron-{layer:02d}-{neuron:05d}.html" if (layer, neuron) in self.exported else None

    def static(self, name: str) -> str:
        return f"/static/{name}" if self.served else f"static/{name}"

    def live(self, page: str, **query: str) -> str | None:
        """The prompt and intervention pages exist only in the app."""
        if not self.served:
            return None
        query = {k: v for k, v in query.items() if v}
        return f"/{page}" + (f"?{urlencode(query)}" if query else "")


def histogram_svg(h: Histogram, width: int = 320, height: int = 120) -> Markup:
    """A bar chart of `h` as inline SVG (log-free counts; the x axis labelled at both ends)."""
    pad_l, pad_b, pad_t = 34, 20, 6
    top = max(h.counts) if h.counts and max(h.counts) > 0 else 1
    bw = (width - pad_l - 4) / max(len(h.counts), 1)
    ih = height - pad_b - pad_t
    bars = []
    for i, c in enumerate(h.counts):
        bh = ih * c / top
        lo, hi = h.edges[i], h.edges[i + 1]
        bars.append(f'<rect x="{pad_l + i * bw:.1f}" y="{pad_t + ih - bh:.1f}" width="{max(bw - 1, 0.5):.1f}" '
                    f'height="{bh:.1f}"><title>{_num(lo)} to {_num(hi)}: {c:,}</title></rect>')
    lo, hi = (h.edges[0], h.edges[-1]) if h.edges else (0.0, 1.0)
    text = (f'<text x="{pad_l}" y="{height - 5}" class="tick">{_num(lo)}</text>'
            f'<text x="{width - 4}" y="{height - 5}" class="tick end">{_num(hi)}</text>'
            f'<text x="{pad_l - 4}" y="{pad_t + 9}" class="tick end">{top:,}</text>'
            f'<text x="{pad_l - 4}" y="{pad_t + ih}" class="tick end">0</text>')
    label = escape(h.label)
    return Markup(f'<svg class="hist" viewBox="0 0 {width} {height}" role="img" aria-label="histogram of {label}">'
                  f'<title>{label}</title><g class="bars">{"".join(bars)}</g>{text}'
                  f'<line x1="{pad_l}" y1="{pad_t + ih}" x2="{width - 4}" y2="{pad_t + ih}" class="axis"/></svg>')


def _num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}g}"


def _pct(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.{digits}f}%"


VISIBLE = str.maketrans({" ": "␣", "\n": "⏎", "\r": "␍", "\t": "⇥"})


def _token(text: str) -> str:
    """A token as shown: spaces, line breaks and tabs made visible, so '␣the' and 'the' differ on screen."""
    return text.translate(VISIBLE) or "∅"


_ENV = Environment(loader=PackageLoader("ffnlab.explore", "templates"), autoescape=select_autoescape(["html"]),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
def _oneline(text: str) -> str:
    """Context text on one line (as `ffnlab neuron` prints it): line breaks shown as ⏎."""
    return text.replace("\n", "⏎")


_ENV.filters.update(num=_num, pct=_pct, token=_token, hist=histogram_svg, oneline=_oneline)


def render(template: str, ex: Explorer, links: Links, **context: object) -> str:
    return _ENV.get_template(template).render(ex=ex, links=links, ladder_path=ladder_path(ex.root),
                                              **context)


def overview(ex: Explorer, links: Links) -> str:
    rows = ex.overview()
    rungs = list(dict.fromkeys(r for row in rows for r in row.ladder))
    return render("overview.html", ex, links, rows=rows, rungs=rungs,
                  has_agreement=any(r.agreement is not None for r in rows))


def layer(ex: Explorer, links: Links, layer: int) -> str:
    return render("layer.html", ex, links, view=ex.layer(layer))


def neuron(ex: Explorer, links: Links, layer: int, neuron: int) -> str:
    view = ex.neuron(layer, neuron)
    top = view.triggers[0] if view.triggers else None
    context = (top.before + top.token) if top else ""
    return render("neuron.html", ex, links, view=view,
                  try_off=links.live("intervene", prompt=context, off=f"{layer}:{neuron}"))


def error(message: str, links: Links, status: int) -> str:
    return _ENV.get_template("error.html").render(message=message, links=links, status=status)
