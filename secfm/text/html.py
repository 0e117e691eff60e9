"""Readable text of an HTML page (the one HTML reader: corpus curation and knowledge-base documents).

Scripts, styles, templates, SVG and the ``<head>`` are dropped; block elements end a paragraph; white
space inside a line is folded and runs of blank lines become one. Character references are decoded
once (by the parser), so ``&amp;lt;`` stays ``&lt;``.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser


@dataclass(frozen=True)
class HtmlPage:
    text: str
    title: str = ""


class _PageParser(HTMLParser):
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table", "section",
              "article", "header", "footer", "blockquote", "ul", "ol", "dd", "dt"}
    _SKIP = {"script", "style", "noscript", "template", "svg", "head"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self._skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")
        if tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def read_html(markup: str) -> HtmlPage:
    """The text and the ``<title>`` of an HTML page."""
    parser = _PageParser()
    parser.feed(markup)
    parser.close()
    paragraphs, current = [], []
    for line in "".join(parser.parts).splitlines():
        line = " ".join(line.split())
        if line:
            current.append(line)
        elif current:
            paragraphs.append("\n".join(current))
            current = []
    if current:
        paragraphs.append("\n".join(current))
    return HtmlPage("\n\n".join(paragraphs), " ".join(parser.title.split()))


def html_to_text(markup: str) -> str:
    """The readable text of an HTML page (see :func:`read_html` for its title too)."""
    return read_html(markup).text


__all__ = ["HtmlPage", "html_to_text", "read_html"]
