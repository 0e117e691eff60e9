"""Defang and refang indicators (URLs, domains, IP addresses, e-mail addresses).

Analysts "defang" indicators so that nobody clicks or resolves them by accident:
``hxxps://evil[.]com``, ``10[.]0[.]0[.]1``, ``user[@]example[.]org``.

``refang`` undoes the common forms, case-insensitively:

* schemes ``hxxp``/``hxxps``/``fxp``/``fxps`` (any case) when a ``:`` follows -> ``http``...;
* dots ``[.]`` ``(.)`` ``{.}`` ``[dot]`` ``(dot)`` ``{dot}`` -> ``.``;
* at-signs ``[@]`` ``(@)`` ``{@}`` ``[at]`` ``(at)`` ``{at}`` -> ``@``;
* ``[:]`` -> ``:``, ``[://]`` -> ``://``, ``[/]`` -> ``/``.

The word forms (``[dot]``, ``(at)``...) also swallow one space or tab on each side, so
``user [at] example [dot] org`` becomes ``user@example.org``. ``refang`` also deletes invisible
characters (zero-width space/joiners, word joiner, BOM, soft hyphen), which hide indicators
from matchers the same way. Bare words (``evil dot com``) are left alone: too ambiguous.

``refang_with_offsets`` keeps a map back to the original text; ``secfm.text.iocs`` uses it to
report where each indicator appeared and whether it was defanged.

``defang`` is the inverse for the indicators that ``secfm.text.iocs.extract_iocs`` finds:
URLs (``hxxp``/``hxxps``/``fxp``/``fxps`` scheme, dots of the host -> ``[.]``), domains and IPv4
addresses (dots -> ``[.]``), IPv6 addresses (colons -> ``[:]``) and e-mail addresses
(``@`` -> ``[@]``, dots of the domain -> ``[.]``). Indicators that were already defanged are
re-written in this canonical form, so ``defang`` is idempotent and
``refang(defang(text)) == text`` for text whose indicators are in normal form (lower-case
hosts, compressed IPv6).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

_FANG = re.compile(
    r"(?P<scheme>\b(?:hxxps?|fxps?)(?=\[?:))"
    r"|(?P<dot>\[\.\]|\(\.\)|\{\.\}|[ \t]?(?:\[dot\]|\(dot\)|\{dot\})[ \t]?)"
    r"|(?P<at>\[@\]|\(@\)|\{@\}|[ \t]?(?:\[at\]|\(at\)|\{at\})[ \t]?)"
    r"|(?P<colon>\[:(?://)?\])"
    r"|(?P<slash>\[/\])"
    r"|(?P<invisible>[\u200b\u200c\u200d\u2060\ufeff\u00ad])",
    re.IGNORECASE,
)
_SCHEMES = {"hxxp": "http", "hxxps": "https", "fxp": "ftp", "fxps": "ftps"}
_DEFANGED_SCHEMES = {real: fake for fake, real in _SCHEMES.items()}
_URL_PARTS = re.compile(
    r"(?P<scheme>[a-z]+)://(?P<userinfo>[^/?#@]*@)?(?P<host>\[[^\]]*\]|[^/?#:]*)(?P<rest>.*)",
    re.DOTALL,
)


def _replacement(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "scheme":
        return _SCHEMES[m[0].lower()]
    if kind == "colon":
        return m[0][1:-1]
    return {"dot": ".", "at": "@", "slash": "/", "invisible": ""}[kind]


@dataclass(frozen=True)
class _Edit:
    clean_start: int  # where the replacement starts in the refanged text
    clean_len: int
    orig_start: int
    orig_end: int
    fang: bool  # a defang marker (not just an invisible character)


@dataclass(frozen=True)
class Refanged:
    """A refanged text and the map back to the original it came from."""

    text: str
    original: str
    _edits: tuple[_Edit, ...]
    _starts: tuple[int, ...]  # clean_start of each edit, for bisection

    def _orig(self, pos: int, *, end: bool) -> int:
        """Original index of the character at ``pos``; one past it when ``end``."""
        i = bisect_right(self._starts, pos) - 1
        if i < 0:
            return pos + int(end)
        edit = self._edits[i]
        if pos < edit.clean_start + edit.clean_len:  # inside a replacement: take all of it
            return edit.orig_end if end else edit.orig_start
        return edit.orig_end + (pos - edit.clean_start - edit.clean_len) + int(end)

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original text that refanged ``text[start:end]`` (non-empty) came from."""
        return self._orig(start, end=False), self._orig(end - 1, end=True)

    def defanged(self, start: int, end: int) -> bool:
        """Whether ``text[start:end]`` came from original text with a defang marker in it."""
        first = max(bisect_left(self._starts, start) - 1, 0)
        last = bisect_left(self._starts, end)
        return any(
            e.fang and e.clean_start < end and e.clean_start + e.clean_len > start
            for e in self._edits[first:last]
        )


def refang_with_offsets(text: str) -> Refanged:
    """Refang ``text`` (see the module docstring), keeping the map back to the original."""
    parts: list[str] = []
    edits: list[_Edit] = []
    pos = clean_len = 0
    for m in _FANG.finditer(text):
        parts.append(text[pos : m.start()])
        clean_len += m.start() - pos
        replacement = _replacement(m)
        fang = m.lastgroup != "invisible"
        edits.append(_Edit(clean_len, len(replacement), m.start(), m.end(), fang))
        parts.append(replacement)
        clean_len += len(replacement)
        pos = m.end()
    parts.append(text[pos:])
    return Refanged("".join(parts), text, tuple(edits), tuple(e.clean_start for e in edits))


def refang(text: str) -> str:
    """``text`` with defanged indicators restored and invisible characters deleted."""
    return refang_with_offsets(text).text


def _defang_url(url: str) -> str:
    m = _URL_PARTS.fullmatch(url)
    if m is None:  # not a URL as extract_iocs writes them; leave it
        return url
    scheme = _DEFANGED_SCHEMES.get(m["scheme"], m["scheme"])
    host = m["host"] if m["host"].startswith("[") else m["host"].replace(".", "[.]")
    return f"{scheme}://{m['userinfo'] or ''}{host}{m['rest']}"


def _defang_ipv6(value: str) -> str:
    """``2001:db8::1`` -> ``2001[:]db8[:][:]1``; in ``[2001:db8::1]:443`` the port colon stays."""
    if not value.startswith("["):
        return value.replace(":", "[:]")
    address, _, port = value[1:].partition("]")
    return f"[{address.replace(':', '[:]')}]{port}"


def _defang_email(email: str) -> str:
    local, _, domain = email.rpartition("@")
    return f"{local}[@]{domain.replace('.', '[.]')}"


_DEFANGERS = {
    "url": _defang_url,
    "domain": lambda v: v.replace(".", "[.]"),
    "ipv4": lambda v: v.replace(".", "[.]"),
    "ipv6": _defang_ipv6,
    "email": _defang_email,
}


def defang(text: str) -> str:
    """``text`` with its URLs, domains, IP and e-mail addresses defanged (module docstring)."""
    from secfm.text.iocs import extract_iocs  # iocs imports this module at import time

    parts: list[str] = []
    pos = 0
    for ioc in extract_iocs(text):
        if ioc.kind in _DEFANGERS:
            parts += [text[pos : ioc.start], _DEFANGERS[ioc.kind](ioc.value)]
            pos = ioc.end
    parts.append(text[pos:])
    return "".join(parts)
