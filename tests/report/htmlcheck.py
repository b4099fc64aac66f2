"""A strict structural check of the report's HTML with Python's html.parser.

The report closes every element it opens (also the optional ones like </p>, </li>, </td>),
so the check can demand exact nesting; it also gathers ids, internal links and every URL
that would make a browser fetch something.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# attributes through which a page loads something (an <a href> only navigates when clicked)
FETCHING = {("script", "src"), ("link", "href"), ("img", "src"), ("img", "srcset"), ("iframe", "src"),
            ("source", "src"), ("video", "src"), ("audio", "src"), ("embed", "src"), ("object", "data"),
            ("image", "href"), ("image", "xlink:href"), ("use", "href"), ("use", "xlink:href"),
            ("input", "src")}


@dataclass
class Structure:
    ids: list[str] = field(default_factory=list)
    internal_links: list[str] = field(default_factory=list)
    outbound_links: list[str] = field(default_factory=list)
    fetches: list[str] = field(default_factory=list)  # (tag attr=value) that would load a resource
    errors: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    css_urls: list[str] = field(default_factory=list)


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.s = Structure()
        self.stack: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)
        self._in_style = tag == "style"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)  # <path ... /> inside SVG

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.s.errors.append(f"</{tag}> at line {self.getpos()[0]} closes <{self.stack[-1] if self.stack else ''}>")
            if tag in self.stack:
                while self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self._in_style and "url(" in data:
            self.s.css_urls.append(data[data.index("url("):][:80])

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.s.counts[tag] = self.s.counts.get(tag, 0) + 1
        for name, value in attrs:
            value = value or ""
            if name == "id":
                self.s.ids.append(value)
            if (tag, name) in FETCHING and not value.startswith("#"):
                self.s.fetches.append(f"<{tag} {name}={value[:60]}>")
            if tag == "a" and name == "href":
                (self.s.internal_links if value.startswith("#") else self.s.outbound_links).append(value)
            if name == "style" and "url(" in value and "url(#" not in value:
                self.s.css_urls.append(value)


def check(text: str) -> Structure:
    parser = _Checker()
    parser.feed(text)
    parser.close()
    if parser.stack:
        parser.s.errors.append(f"unclosed at end: {parser.stack}")
    return parser.s
