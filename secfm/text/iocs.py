"""Find indicators of compromise (IOCs) and security identifiers in free text.

``extract_iocs(text)`` returns one ``Ioc`` per indicator, in text order, of the kinds in
``ioc_kinds()``: ``ipv4``, ``ipv6``, ``domain``, ``url``, ``email``, ``md5``, ``sha1``,
``sha256``, ``cve``, ``cwe``, ``attack``, ``windows_path``, ``posix_path``, ``registry_key``.

How it works: the text is refanged first (``secfm.text.defang``; this also drops zero-width
characters), every kind is matched on the refanged text, overlaps are resolved, and spans are
mapped back, so ``Ioc.raw == text[ioc.start:ioc.end]`` is the indicator as it was written.

Decisions:

* Overlaps: the longest match wins and whatever overlaps it is dropped (ties go to the more
  specific kind, URL first). So a URL's host, an e-mail's domain or a hash inside a path are
  not reported separately; the same domain elsewhere in the text is.
* ``value`` is normalised: refanged; domains, e-mail domains, URL schemes and hosts, hashes
  lower-cased; IPv6 compressed (``ipaddress``); CVE/CWE upper-cased (``CWE-079`` -> ``CWE-79``);
  doubled (JSON-escaped) backslashes in Windows paths and registry keys collapsed. With
  ``refang=False`` a defanged indicator keeps its value exactly as written (``value == raw``).
* IPv4: octets 0-255 without leading zeros (``010.0.0.1`` could be octal: rejected). A dotted
  run of five or more numbers (``1.2.3.4.5``) or one glued to a word (``v1.2.3.4``) is a version,
  not an address: nothing is reported. A bare four-part version (``1.2.3.4``) cannot be told
  from an address and is reported. An optional ``:port`` (1-65535) is part of the value.
* IPv6: validated by ``ipaddress``; must contain a decimal digit (so C++ ``abc::def`` and a bare
  ``::`` are not addresses); ``[addr]:port`` keeps brackets and port in the value.
* Domains: ASCII (or punycode) names whose last label is in ``TLDS``, a compact list of the
  country-code TLDs, the classic generic ones, the new ones common in threat reports, and the
  special-use ``onion``, ``local`` and ``internal``. File extensions that are not TLDs (``exe``,
  ``dll``, ``pdf``, ``json``...) never make a domain. Real TLDs that are mostly file extensions in
  security text (``FILE_EXTENSION_TLDS``: ``zip``, ``mov``, ``py``, ``sh``, ``md``, ``pl``...)
  make a domain only when the indicator was defanged (``payload[.]zip``) or starts with
  ``www.``; inside a URL or e-mail address they are always accepted. A name directly followed
  by ``(`` is a function call (``logging.info(``), not a domain.
* URLs: ``http``, ``https``, ``ftp``, ``ftps`` (and their defanged forms); trailing
  punctuation and unbalanced closing brackets are cut (``(see https://x.com/a).`` ->
  ``https://x.com/a``); quotes, angle brackets, backticks, square brackets, ``|``, ``{}`` and
  ``\\`` end a URL (markdown ``[x](url)`` and ``<url>`` work), and so does ``,`` or ``;``
  directly before another scheme (``https://a.com/x,https://b.com/y`` is two URLs).
* Hashes: a word-bounded hex run of exactly 32/40/64 characters, not all decimal digits
  (``0x``-prefixed constants and longer runs are not hashes).
* CVE/CWE: ``CVE-YYYY-NNNN`` (4-7 digits, years 1990-2099) and ``CWE-N``, any case; the
  unicode dashes word processors insert (``CVE‑2021‑44228``) count as hyphens.
* ATT&CK: ``T1234``, ``T1234.001`` and ``TA0001`` anywhere (case-sensitive); group, software,
  mitigation, campaign and data-source ids (``G0016``, ``S0154``, ``M1036``, ``C0024``,
  ``DS0009``) only when the text mentions ATT&CK or MITRE.
* Windows paths: ``C:\\...``, ``%APPDATA%\\...``, ``\\\\server\\share\\...``; JSON-escaped
  ``C:\\\\Windows`` too. A folder name may contain spaces when every word after a space starts
  with a capital, digit or ``(`` (``Program Files (x86)``, ``Windows NT``) and no word before one
  contains ``.,;%`` (so ``C:\\a.exe and ...`` ends at ``a.exe``). The last name has no spaces
  unless the whole path is in double quotes (``"C:\\Users\\Bob\\My Documents"``). Registry keys:
  ``HKLM``, ``HKCU``, ``HKU``, ``HKCR``, ``HKCC`` and the ``HKEY_...`` names, also PowerShell's
  ``HKLM:\\``, with the same naming rules.
* POSIX paths: absolute with at least two components (``/etc/passwd``; a lone ``/c`` is a
  command switch), or starting ``~/``, ``./``, ``../``. Never glued to a word, digit, ``:`` or
  ``/`` before it, so URLs, ``and/or`` and dates (``12/05/2024``) are not paths.

Every pattern is linear (possessive quantifiers and atomic groups, no nested backtracking;
the fiddly checks are in Python): time grows linearly with the text, about 1-3 s per megabyte
even for adversarial input (``"a" * N``, ``"." * N``, ``"C:\\a " * N``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from secfm.text.defang import Refanged, refang_with_offsets

_KINDS = ("ipv4", "ipv6", "domain", "url", "email", "md5", "sha1", "sha256", "cve", "cwe",
          "attack", "windows_path", "posix_path", "registry_key")
# Tie-break between overlapping matches of the same length: earlier is more specific.
_PRIORITY = {kind: i for i, kind in enumerate((
    "url", "email", "registry_key", "windows_path", "posix_path", "ipv6", "ipv4", "domain",
    "sha256", "sha1", "md5", "cve", "cwe", "attack"))}

_CCTLDS = """
ac ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bm bn bo br bs
bt bw by bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj dk dm do dz ec ee
eg er es et eu fi fj fk fm fo fr ga gb gd ge gf gg gh gi gl gm gn gp gq gr gs gt gu gw gy hk
hm hn hr ht hu id ie il im in io iq ir is it je jm jo jp ke kg kh ki km kn kp kr kw ky kz la
lb lc li lk lr ls lt lu lv ly ma mc md me mg mh mk ml mm mn mo mp mq mr ms mt mu mv mw mx my
mz na nc ne nf ng ni nl no np nr nu nz om pa pe pf pg ph pk pl pm pn pr ps pt pw py qa re ro
rs ru rw sa sb sc sd se sg sh si sk sl sm sn so sr ss st su sv sx sy sz tc td tf tg th tj tk
tl tm tn to tr tt tv tw tz ua ug uk us uy uz va vc ve vg vi vn vu wf ws ye yt za zm zw
"""
_GTLDS = """
com net org edu gov mil int info biz pro mobi aero asia cat coop jobs museum tel travel xxx
arpa app dev page xyz top club online site icu vip shop store live tech space website click
link fun buzz rest cyou monster cloud win bid loan download stream gdn ltd lol best quest sbs
bond cfd pics rocks guru kim work mov zip cab run onion local internal
"""
TLDS = frozenset(_CCTLDS.split() + _GTLDS.split())
FILE_EXTENSION_TLDS = frozenset(
    "zip mov py sh md rs so pl pm ps mk tf mo cab run cat mobi".split())

_PORT = r"[0-9]{1,5}+"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = re.compile(
    rf"(?<![\w.])(?P<addr>{_OCTET}(?:\.{_OCTET}){{3}})(?::(?P<port>{_PORT}))?(?!\.?\w)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f:.]{2,}+(?!\w)")
_IPV6_PORT = re.compile(rf"\[(?P<addr>[0-9A-Fa-f:.]{{2,}}+)\]:(?P<port>{_PORT})(?!\w)")
_HOSTNAME = re.compile(r"(?<![\w.])[A-Za-z0-9][A-Za-z0-9.-]*+(?!\w)")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SCHEME = r"(?i:https?|ftps?)"
_URL = re.compile(
    rf"(?<!\w)(?P<scheme>{_SCHEME})://"
    r"(?P<userinfo>[^\s/?#<>\"'`\[\]|{}^\\@]{1,256}+@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]{2,}+\]|[\w.-]{1,253}+)"
    r"(?::[0-9]{1,5}+)?"
    rf"(?:[/?#](?:(?![,;]{_SCHEME}://)[^\s<>\"'`\[\]|{{}}^\\])*+)?"  # "a,http://b" is two URLs
)
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9_%+-][A-Za-z0-9._%+-]{0,63}+@"
    r"(?P<domain>[A-Za-z0-9-]{1,63}+(?:\.[A-Za-z0-9-]{1,63}+)++)(?!\w)"
)
_HEX = re.compile(r"(?<!\w)[0-9A-Fa-f]{32,}+(?!\w)")
_HASH_KINDS = {32: "md5", 40: "sha1", 64: "sha256"}
_DASH = r"[-\u2010-\u2015]"  # hyphen, or one of the unicode dashes that word processors insert
_CVE = re.compile(
    rf"(?<![\w-])CVE{_DASH}(?P<year>199[0-9]|20[0-9][0-9]){_DASH}(?P<num>[0-9]{{4,7}}+)(?!\w)",
    re.IGNORECASE)
_CWE = re.compile(rf"(?<![\w-])CWE{_DASH}(?P<num>[0-9]{{1,6}}+)(?!\w)", re.IGNORECASE)
_ATTACK = re.compile(r"(?<![\w.-])(?:TA[0-9]{4}|T[0-9]{4}(?:\.[0-9]{3})?)(?!\w|\.[0-9])")
_ATTACK_OTHER = re.compile(r"(?<![\w.-])(?:DS|[GSMC])[0-9]{4}(?!\w|\.[0-9])")
_ATTACK_CONTEXT = re.compile(r"ATT&CK|\bMITRE\b", re.IGNORECASE)

# Windows paths and registry keys. A folder (or key) name may contain spaces when each word
# after a space starts with a capital, digit or "(" but not "HK" ("Program Files (x86)",
# "Windows NT"; "...\Software HKCR\..." is two keys) and no word before a space has ".,;%"
# ("a.exe and", "Data, HKCU" end a path). The last name has no spaces. Names do not end in "."
# (Windows drops it). A JSON-escaped "\\" separates too.
_WIN_CHAR = r'[^\\/:*?"<>|\s]'
_WIN_DIR = rf'(?:[^\\/:*?"<>|\s.,;%]++ (?=[A-Z0-9(])(?!HK))*+{_WIN_CHAR}++(?<!\.)'
_WIN_SEP = r"\\\\?"
_WIN_TAIL = rf"(?={_WIN_CHAR})(?:{_WIN_DIR}{_WIN_SEP})*+{_WIN_CHAR}*+"
_UNC_TAIL = rf"(?={_WIN_CHAR})(?:{_WIN_DIR}\\)*+{_WIN_CHAR}*+"
_DRIVE = r"[A-Za-z]:"
_ENV_VAR = r"%[A-Za-z_][\w()]{0,63}+%"
_UNC_HOST = r"\\\\[\w$.-]{1,255}+"
_HIVE = (r"(?i:HKEY_LOCAL_MACHINE|HKEY_CURRENT_USER|HKEY_CLASSES_ROOT|HKEY_CURRENT_CONFIG"
         r"|HKEY_USERS|HKLM|HKCU|HKCR|HKCC|HKU):?")
_WIN_PATH = re.compile(rf"(?<![\w\\/])(?:{_DRIVE}|{_ENV_VAR}){_WIN_SEP}(?P<tail>{_WIN_TAIL})")
_UNC_PATH = re.compile(rf"(?<![\w\\:]){_UNC_HOST}\\(?P<tail>{_UNC_TAIL})")
_REGISTRY = re.compile(rf"(?<![\w\\]){_HIVE}{_WIN_SEP}(?P<tail>{_WIN_TAIL})")
_QUOTED = re.compile(
    rf'"(?P<path>(?:(?P<hive>{_HIVE})|{_DRIVE}|{_ENV_VAR}|{_UNC_HOST})\\[^"\r\n<>|*?]{{1,1024}}+)"')
_POSIX_NAME = r"[\w.+@%~-]{1,255}+"
_POSIX = re.compile(rf"(?<![\w/:.~\\-])(?P<prefix>~|\.{{1,2}})?(?:/{_POSIX_NAME})++/?")

_TRAILING = ".,;:!?*'\""  # punctuation that ends a sentence rather than an indicator
_CLOSERS = {")": "(", "]": "[", "}": "{"}


@dataclass(frozen=True)
class Ioc:
    """One indicator: ``text[start:end] == raw``; ``value`` is normalised (module docstring)."""

    kind: str
    value: str
    raw: str
    start: int
    end: int
    defanged: bool


class _Hit(NamedTuple):  # a match in the refanged text
    kind: str
    start: int
    end: int
    value: str


def ioc_kinds() -> tuple[str, ...]:
    """The kinds ``extract_iocs`` reports, in a stable order."""
    return _KINDS


def _trim(text: str, start: int, end: int, chars: str = _TRAILING) -> int:
    """End of ``text[start:end]`` without trailing ``chars`` and unbalanced closing brackets."""
    excess = {c: text.count(c, start, end) - text.count(o, start, end) for c, o in _CLOSERS.items()}
    while end > start:
        char = text[end - 1]
        if char in chars:
            end -= 1
        elif excess.get(char, 0) > 0:
            excess[char] -= 1
            end -= 1
        else:
            break
    return end


def _valid_port(port: str) -> bool:
    return not port.startswith("0") and int(port) <= 65535


def _is_domain(name: str, *, file_extensions_ok: bool) -> bool:
    """``name`` (lower case, no trailing dot) is a plausible registered domain name."""
    labels = name.split(".")
    tld = labels[-1]
    return (
        len(labels) >= 2 and len(name) <= 253 and tld in TLDS
        and (file_extensions_ok or tld not in FILE_EXTENSION_TLDS)
        and all(_LABEL.fullmatch(label) for label in labels)
    )


def _ipv4(text: str, _: Refanged) -> Iterator[_Hit]:
    for m in _IPV4.finditer(text):
        end = m.end() if m["port"] is None or _valid_port(m["port"]) else m.end("addr")
        yield _Hit("ipv4", m.start(), end, text[m.start() : end])


def _ipv6_address(candidate: str) -> str | None:
    if candidate.count(":") < 2 or not any(c.isdigit() for c in candidate):
        return None
    try:
        return str(ipaddress.IPv6Address(candidate))
    except ValueError:
        return None


def _ipv6(text: str, _: Refanged) -> Iterator[_Hit]:
    for m in _IPV6.finditer(text):
        candidate = m[0].rstrip(".")
        if address := _ipv6_address(candidate):
            yield _Hit("ipv6", m.start(), m.start() + len(candidate), address)
    for m in _IPV6_PORT.finditer(text):
        if (address := _ipv6_address(m["addr"])) and _valid_port(m["port"]):
            yield _Hit("ipv6", m.start(), m.end(), f"[{address}]:{m['port']}")


def _domains(text: str, refanged: Refanged) -> Iterator[_Hit]:
    for m in _HOSTNAME.finditer(text):
        start, end = m.start(), m.end()
        while text[end - 1] in ".-":  # the run starts with a letter or digit: this stops
            end -= 1
        if text.startswith("(", m.end()):
            continue
        name = text[start:end].lower()
        special_ok = name.startswith("www.") or refanged.defanged(start, end)
        if _is_domain(name, file_extensions_ok=special_ok):
            yield _Hit("domain", start, end, name)


def _urls(text: str, _: Refanged) -> Iterator[_Hit]:
    for m in _URL.finditer(text):
        end = _trim(text, m.start(), m.end())
        host_end = min(m.end("host"), end)
        host = text[m.start("host") : host_end].lower()
        if not any(c.isalnum() for c in host):
            continue
        value = (m["scheme"].lower() + text[m.end("scheme") : m.start("host")] + host
                 + text[host_end:end])
        yield _Hit("url", m.start(), end, value)


def _emails(text: str, _: Refanged) -> Iterator[_Hit]:
    for m in _EMAIL.finditer(text):
        domain = m["domain"].lower()
        if _is_domain(domain, file_extensions_ok=True):
            local = text[m.start() : m.start("domain")]
            yield _Hit("email", m.start(), m.end(), local + domain)


def _hashes(text: str, _: Refanged) -> Iterator[_Hit]:
    for m in _HEX.finditer(text):
        kind = _HASH_KINDS.get(len(m[0]))
        if kind and not m[0].isdigit():
            yield _Hit(kind, m.start(), m.end(), m[0].lower())


def _vuln_ids(text: str, _: Refanged) -> Iterator[_Hit]:
    for m in _CVE.finditer(text):
        yield _Hit("cve", m.start(), m.end(), f"CVE-{m['year']}-{m['num']}")
    for m in _CWE.finditer(text):
        yield _Hit("cwe", m.start(), m.end(), f"CWE-{int(m['num'])}")


def _attack_ids(text: str, _: Refanged) -> Iterator[_Hit]:
    matches = list(_ATTACK.finditer(text))
    if _ATTACK_CONTEXT.search(text):
        matches += _ATTACK_OTHER.finditer(text)
    for m in matches:
        yield _Hit("attack", m.start(), m.end(), m[0])


def _windows(kind: str, text: str, start: int, end: int) -> _Hit:
    value = text[start:end]
    if not value.startswith("\\\\"):  # a UNC path keeps its leading double backslash
        value = value.replace("\\\\", "\\")
    return _Hit(kind, start, end, value)


def _windows_paths(text: str, _: Refanged) -> Iterator[_Hit]:
    for pattern, kind in ((_WIN_PATH, "windows_path"), (_UNC_PATH, "windows_path"),
                          (_REGISTRY, "registry_key")):
        for m in pattern.finditer(text):
            end = _trim(text, m.start(), m.end())
            if end > m.start("tail"):  # a name is left after the root
                yield _windows(kind, text, m.start(), end)
    for m in _QUOTED.finditer(text):
        kind = "registry_key" if m["hive"] else "windows_path"
        yield _windows(kind, text, m.start("path"), m.end("path"))


def _posix_paths(text: str, _: Refanged) -> Iterator[_Hit]:
    for m in _POSIX.finditer(text):
        end = _trim(text, m.start(), m.end(), ".")
        path = text[m.start() : end]
        components = len(path.strip("/").split("/")) - (1 if m["prefix"] else 0)
        if components >= 2 or (m["prefix"] and components >= 1):
            yield _Hit("posix_path", m.start(), end, path)


_FINDERS: tuple[Callable[[str, Refanged], Iterator[_Hit]], ...] = (
    _ipv4, _ipv6, _domains, _urls, _emails, _hashes, _vuln_ids, _attack_ids, _windows_paths,
    _posix_paths)


def _resolve(hits: list[_Hit]) -> list[_Hit]:
    """Drop every hit that overlaps a longer (or equally long, more specific) one."""
    hits.sort(key=lambda h: (h.start, -h.end))
    kept: list[_Hit] = []
    cluster: list[_Hit] = []
    cluster_end = 0
    for hit in hits:
        if cluster and hit.start >= cluster_end:
            kept += _pick(cluster)
            cluster = []
        cluster.append(hit)
        cluster_end = max(cluster_end, hit.end)
    return kept + _pick(cluster)


def _pick(cluster: list[_Hit]) -> list[_Hit]:
    chosen: list[_Hit] = []
    for hit in sorted(cluster, key=lambda h: (h.start - h.end, _PRIORITY[h.kind], h.start)):
        if all(hit.end <= c.start or hit.start >= c.end for c in chosen):
            chosen.append(hit)
    return sorted(chosen, key=lambda h: h.start)


def extract_iocs(text: str, refang: bool = True) -> list[Ioc]:
    """All indicators in ``text``, in order (see the module docstring for the rules).

    ``refang=True`` gives defanged indicators their real value (``hxxp://evil[.]com`` ->
    ``http://evil.com``); with ``refang=False`` their value stays as written. ``raw`` is always
    the text as written.
    """
    refanged = refang_with_offsets(text)
    hits = [hit for finder in _FINDERS for hit in finder(refanged.text, refanged)]
    iocs = []
    for hit in _resolve(hits):
        start, end = refanged.to_original(hit.start, hit.end)
        defanged = refanged.defanged(hit.start, hit.end)
        raw = text[start:end]
        value = hit.value if refang or not defanged else raw
        iocs.append(Ioc(hit.kind, value, raw, start, end, defanged))
    return iocs


def unique_iocs(iocs: Iterable[Ioc]) -> dict[str, list[str]]:
    """``{kind: [distinct values in first-seen order]}`` for the kinds present, in kind order."""
    seen: dict[str, dict[str, None]] = {}
    for ioc in iocs:
        seen.setdefault(ioc.kind, {})[ioc.value] = None
    return {kind: list(seen[kind]) for kind in _KINDS if kind in seen}
