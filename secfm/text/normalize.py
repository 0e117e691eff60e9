"""The one normalisation of untrusted text, with a map back to the original.

Alerts, logs, reports, configs and chat pastes are matched (signatures, Sigma rules, config
rules, injection scanning) on ``normalize(text).text``, never on the raw text, so that the
tricks that hide a word from a matcher while a human or a model still reads it do not work:

* **invisible characters** are removed: zero-width space/joiners, word joiner, BOM, soft
  hyphen, bidi embeddings/overrides/isolates, invisible operators, the Mongolian vowel
  separator, variation selectors, Hangul fillers, combining grapheme joiner, every other
  format (``Cf``) character, and control characters other than tab, newline and carriage
  return (``\\x00``, ``\\x1b``...);
* **tag characters** (U+E0000-U+E007F, "ASCII smuggling") are removed too, and the ASCII they
  spell is kept in :attr:`Normalized.hidden` so an injection scanner can read the message;
* **compatibility forms** are folded by NFKC: fullwidth ``ｍｉｍｉｋａｔｚ``, mathematical
  ``𝐦𝐢𝐦𝐢𝐤𝐚𝐭𝐳``, ligatures ``ﬁ``, circled and super/subscript letters, odd spaces;
* **diacritics** are dropped (NFKD, then non-spacing marks removed, then NFC), so
  ``m̀imikatz`` and ``précédentes`` match ``mimikatz`` and ``precedentes``;
* **homoglyphs**: a character the Unicode confusables table (from the kept
  ``confusable-homoglyphs`` package) lists as looking like one ASCII character becomes that
  character: Cyrillic ``аеорсхі``, Greek ``ορν``... (``mіmіkаtz`` -> ``mimikatz``).

Case is kept (matchers choose their own case rules). ASCII text without control characters
comes back unchanged (``normalize(t).text is t``), so the common case costs one regex scan.
Only characters outside printable ASCII are looked at, one code point at a time (memoised):
time is linear in the input. Jamo sequences typed as separate code points are not composed
(whole-string NFKC would compose them); nothing else differs from NFKC of the folded text.

Evidence quotes the original: :meth:`Normalized.to_original` maps a span of the normalised
text back to the span of the original it came from, and :meth:`Normalized.quote` returns that
original text. Apply :func:`fold` to the pattern side (rule values, keywords) so both sides
agree.
"""

from __future__ import annotations

import json
import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Change", "HiddenText", "Normalized", "fold", "normalize"]

#: what a change was (``Normalized.changes``)
CHANGE_KINDS = ("invisible", "control", "tag", "compatibility", "diacritic", "homoglyph")

# everything outside printable ASCII, tab, newline and carriage return
_SPECIAL = re.compile(r"[^\t\n\r\x20-\x7e]+")
_EXTRA_INVISIBLE = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f\u3164\uffa0\u2800"
)
_TAG_START, _TAG_END = 0xE0000, 0xE007F


@dataclass(frozen=True)
class Change:
    """One stretch of the original that normalisation changed."""

    kind: str  # one of CHANGE_KINDS
    start: int  # in the original
    end: int


@dataclass(frozen=True)
class HiddenText:
    """ASCII spelled with tag characters at ``original[start:end]``."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Normalized:
    """The normalised ``text`` of ``original`` and the map between them."""

    text: str
    original: str
    changes: tuple[Change, ...] = ()
    hidden: tuple[HiddenText, ...] = ()
    # edits: (start in text, length in text, start in original, end in original), text order
    _edits: tuple[tuple[int, int, int, int], ...] = ()
    _starts: tuple[int, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self._edits)

    def _orig(self, pos: int, *, end: bool) -> int:
        i = bisect_right(self._starts, pos) - 1
        if i < 0:
            return pos + int(end)
        start, length, orig_start, orig_end = self._edits[i]
        if pos < start + length:  # inside a replacement: all of it
            return orig_end if end else orig_start
        return orig_end + (pos - start - length) + int(end)

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """The span of ``original`` that ``text[start:end]`` came from (``start == end``: the
        position in the original, after whatever was removed before it)."""
        start = max(0, min(start, len(self.text)))
        end = max(start, min(end, len(self.text)))
        if start == end:
            if start == len(self.text):
                return len(self.original), len(self.original)
            o = self._orig(start, end=False)
            return o, o
        return self._orig(start, end=False), self._orig(end - 1, end=True)

    def quote(self, start: int, end: int) -> str:
        """The original text behind ``text[start:end]``."""
        s, e = self.to_original(start, end)
        return self.original[s:e]

    def line(self, pos: int) -> int:
        """The 1-based line of the original on which ``text[pos]`` stands."""
        s, _ = self.to_original(pos, pos + 1) if pos < len(self.text) else (len(self.original), 0)
        return self.original.count("\n", 0, s) + 1

    def changes_between(self, start: int, end: int) -> list[Change]:
        """Changes of the original inside ``original[start:end]``."""
        return [c for c in self.changes if c.start < end and c.end > start]


@lru_cache(maxsize=65536)
def _fold_char(ch: str) -> tuple[str, str]:
    """(replacement, kind) for one code point outside printable ASCII; kind '' = unchanged."""
    cp = ord(ch)
    if _TAG_START <= cp <= _TAG_END:
        return "", "tag"
    cat = unicodedata.category(ch)
    if cat == "Cc":
        return ("", "control") if ch not in "\t\n\r" else (ch, "")
    if cat == "Cf" or ch in _EXTRA_INVISIBLE or 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE0FFF:
        return "", "invisible"
    if cat in ("Cs", "Co", "Cn"):  # surrogates, private use, unassigned: leave them
        return ch, ""
    if ch in "\u2028\u2029\x85":
        return " ", "compatibility"
    decomposed = unicodedata.normalize("NFKD", ch)
    kind = "compatibility" if decomposed != unicodedata.normalize("NFD", ch) else ""
    kept = []
    for c in decomposed:
        if unicodedata.category(c) == "Mn":
            kind = kind or "diacritic"
            continue
        look = _confusables().get(c)
        if look is not None:
            kind = kind or "homoglyph"
            c = look
        kept.append(c)
    out = unicodedata.normalize("NFC", "".join(kept))
    return (out, kind) if out != ch else (ch, "")


@lru_cache(maxsize=1)
def _confusables() -> dict[str, str]:
    """Non-ASCII code point -> the one ASCII character it is confusable with."""
    from importlib.resources import files

    data = json.loads(files("confusable_homoglyphs").joinpath("confusables.json").read_text(encoding="utf-8"))
    table: dict[str, str] = {}
    for ch, looks in data.items():
        if len(ch) != 1 or ord(ch) < 128:
            continue
        for look in looks:
            c = look.get("c", "")
            if len(c) == 1 and 32 < ord(c) < 127:
                # the table's skeleton for I is l; an upper-case letter stays upper-case
                table[ch] = "I" if c == "l" and ch.isupper() else c
                break
    return table


def normalize(text: str) -> Normalized:
    """``text`` normalised for matching (module docstring), with the map back to it."""
    if not _SPECIAL.search(text):
        return Normalized(text, text)
    parts: list[str] = []
    edits: list[tuple[int, int, int, int]] = []
    changes: list[Change] = []
    hidden: list[HiddenText] = []
    out_len = 0
    pos = 0
    for m in _SPECIAL.finditer(text):
        if m.start() > pos:
            parts.append(text[pos:m.start()])
            out_len += m.start() - pos
        tag_start = -1
        tag_chars: list[str] = []
        for i in range(m.start(), m.end()):
            ch = text[i]
            new, kind = _fold_char(ch)
            if kind == "tag":
                if tag_start < 0:
                    tag_start = i
                cp = ord(ch)
                if 0xE0020 <= cp <= 0xE007E:
                    tag_chars.append(chr(cp - _TAG_START))
            elif tag_start >= 0:
                hidden.append(HiddenText(tag_start, i, "".join(tag_chars)))
                tag_start, tag_chars = -1, []
            if not kind:
                parts.append(ch)
                out_len += 1
                continue
            if changes and changes[-1].kind == kind and changes[-1].end == i:
                changes[-1] = Change(kind, changes[-1].start, i + 1)
            else:
                changes.append(Change(kind, i, i + 1))
            if not new and edits and edits[-1][0] + edits[-1][1] == out_len and edits[-1][3] == i:
                s, n, os_, _ = edits[-1]  # a run of removals (or a removal after a replacement)
                edits[-1] = (s, n, os_, i + 1)
            else:
                edits.append((out_len, len(new), i, i + 1))
            parts.append(new)
            out_len += len(new)
        if tag_start >= 0:
            hidden.append(HiddenText(tag_start, m.end(), "".join(tag_chars)))
        pos = m.end()
    parts.append(text[pos:])
    if not edits:
        return Normalized(text, text)
    return Normalized("".join(parts), text, tuple(changes), tuple(hidden), tuple(edits), tuple(e[0] for e in edits))


def fold(text: str) -> str:
    """The normalised form alone (for the pattern side: rule values, keywords)."""
    return normalize(text).text
