"""The project's one validator for ATT&CK, CWE and CVE ids, and an id finder for free text.

``validate_id`` checks the shape first (case and whitespace tolerant: ``' t1059/001 '`` is
``T1059.001``, ``'cwe79'`` is ``CWE-79``), then looks the id up in the offline catalogs
(``load_attack()``, ``load_cwe()``, or the knowledge bases passed in).

Decisions:

* ATT&CK ids of every domain (Enterprise, Mobile, ICS) are checked; ``IdCheck.domain`` names
  the object's domain (``enterprise``, ``mobile``, ``ics``; for a group, software, campaign or
  mitigation in several, the first) and ``IdCheck.domains`` all of them;
* revoked or deprecated ATT&CK objects are ``known`` (they are in the catalog), flagged, and
  carry their replacement; ``IdCheck.current`` is the "known, not revoked, not deprecated" test;
* a CWE id of a category or view (e.g. CWE-16, CWE-1000) is not ``known``: it is not a weakness;
* a CVE id is ``known`` when the local CVE store (``secfm kb add-nvd``, see
  :mod:`secfm.knowledge.nvd`) holds it or a CWE observed example cites it; any other
  well-formed CVE id gets ``known=False``, ``well_formed=True``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from secfm.knowledge.attack import AttackKB, load_attack
from secfm.knowledge.cwe import CweKB, load_cwe

KINDS = ("technique", "subtechnique", "tactic", "mitigation", "software", "group", "campaign",
         "cwe", "cve", "unknown")

_TECHNIQUE = re.compile(r"T(\d{4})(?:[./](\d{3}))?")
_SIMPLE = {  # prefix -> kind for the four-digit ids
    "TA": "tactic", "M": "mitigation", "S": "software", "G": "group", "C": "campaign",
}
_SIMPLE_ID = re.compile(r"(TA|M|S|G|C)\d{4}")
_CWE = re.compile(r"CWE[-_ ]?(\d{1,6})")
_CVE = re.compile(r"CVE-(\d{4})-(\d{4,7})")
_FIND = re.compile(
    r"(?<!\w)(?:(?i:CVE-\d{4}-\d{4,7})|(?i:CWE-\d{1,6})|TA\d{4}|T\d{4}(?:[./]\d{3}(?!\d))?"
    r"|[MSGC]\d{4})(?!\w)"
)
_KIND_WORDS = {"tactic": "tactic", "mitigation": "mitigation", "software": "software",
               "group": "group", "campaign": "campaign", "technique": "technique",
               "subtechnique": "sub-technique"}


@dataclass(frozen=True)
class IdCheck:
    input: str
    normalized: str | None  # canonical spelling (T1059.001, CWE-79, CVE-2021-44228)
    kind: str  # one of KINDS
    well_formed: bool
    known: bool
    name: str | None = None
    replaced_by: str | None = None
    deprecated: bool = False
    revoked: bool = False
    message: str = ""
    domain: str | None = None  # ATT&CK domain: enterprise, mobile or ics
    domains: tuple[str, ...] = ()

    @property
    def current(self) -> bool:
        """Known, and neither revoked nor deprecated."""
        return self.known and not self.revoked and not self.deprecated


def normalize_id(s: str) -> tuple[str, str] | None:
    """(canonical id, kind) for a well-formed ATT&CK/CWE/CVE id, else None."""
    text = s.strip().upper()
    if m := _TECHNIQUE.fullmatch(text):
        if m.group(2):
            return f"T{m.group(1)}.{m.group(2)}", "subtechnique"
        return f"T{m.group(1)}", "technique"
    if _SIMPLE_ID.fullmatch(text):
        return text, _SIMPLE[text[:2] if text.startswith("TA") else text[0]]
    if m := _CWE.fullmatch(text):
        return f"CWE-{int(m.group(1))}", "cwe"
    if m := _CVE.fullmatch(text):
        return f"CVE-{m.group(1)}-{m.group(2)}", "cve"
    return None


def validate_id(s: str, *, attack: AttackKB | None = None, cwe: CweKB | None = None) -> IdCheck:
    """Check one id against its shape and the offline catalogs (see the module docstring)."""
    parsed = normalize_id(s)
    if parsed is None:
        return IdCheck(s, None, "unknown", False, False, message=_malformed_message(s))
    norm, kind = parsed
    if kind == "cwe":
        return _check_cwe(s, norm, cwe or load_cwe())
    if kind == "cve":
        return _check_cve(s, norm, cwe or load_cwe())
    return _check_attack(s, norm, kind, attack or load_attack())


def find_ids(text: str) -> list[str]:
    """All ATT&CK/CWE/CVE ids in free text, normalized, unique, in order of first mention.

    ATT&CK ids must be upper case (``T1059``, ``G0016``); CWE/CVE ids may be any case. Shape
    only: nothing is looked up.
    """
    found: dict[str, None] = {}
    for _start, _end, norm in id_spans(text):
        found.setdefault(norm)
    return list(found)


def id_spans(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, normalized id)`` of every id mention in ``text`` (the spans ``find_ids``
    reads), for code that must quote, link or remove the mention itself."""
    spans = []
    for m in _FIND.finditer(text):
        parsed = normalize_id(m.group(0))
        if parsed:
            spans.append((m.start(), m.end(), parsed[0]))
    return spans


def parent_technique(id: str) -> str | None:
    """``'T1059'`` for a well-formed sub-technique id such as ``'T1059.001'``, else None."""
    parsed = normalize_id(id)
    return parsed[0].split(".")[0] if parsed and parsed[1] == "subtechnique" else None


# --- checks -----------------------------------------------------------------------------------


def _check_attack(s: str, norm: str, kind: str, kb: AttackKB) -> IdCheck:
    obj = kb.get(norm)
    what = _KIND_WORDS[kind]
    if obj is None:
        message = f"{norm} is not an ATT&CK {what} ({', '.join(kb.describe_version(d) for d in kb.domains)})"
        parent = parent_technique(norm)
        if parent and parent in kb.techniques_by_id:
            message += f" (its parent {parent}, {kb.techniques_by_id[parent].name}, is)"
        return IdCheck(s, norm, kind, True, False, message=message)
    revoked = bool(getattr(obj, "revoked", False))
    deprecated = bool(getattr(obj, "deprecated", False))
    replaced_by = getattr(obj, "replaced_by", None)
    domains = tuple(getattr(obj, "domains", None) or (getattr(obj, "domain", "enterprise"),))
    domain = domains[0]
    message = f"{norm} is the {kb.describe_version(domain)} {what} '{obj.name}'"
    if len(domains) > 1:
        message += f" (also in {', '.join(kb.describe_version(d) for d in domains[1:])})"
    if revoked or deprecated:
        status = "revoked" if revoked else "deprecated"
        if replaced_by:
            replacement = kb.get(replaced_by)
            label = f"{replaced_by} ({replacement.name})" if replacement else replaced_by
            message += f"; {status}, use {label} instead"
        else:
            message += f"; {status}, with no replacement"
    return IdCheck(s, norm, kind, True, True, obj.name, replaced_by, deprecated, revoked, message,
                   domain, domains)


def _check_cwe(s: str, norm: str, kb: CweKB) -> IdCheck:
    weakness = kb.get(norm)
    if weakness is not None:
        message = f"{norm} is the CWE {kb.version} weakness '{weakness.name}'"
        replaced_by = f"CWE-{weakness.replaced_by}" if weakness.replaced_by is not None else None
        if weakness.deprecated:
            message += f"; deprecated, see {replaced_by}" if replaced_by else "; deprecated"
        return IdCheck(s, norm, "cwe", True, True, weakness.name, replaced_by,
                       weakness.deprecated, False, message)
    category = kb.category(norm)
    if category is not None:
        return IdCheck(s, norm, "cwe", True, False, category.name, None, category.deprecated,
                       False, f"{norm} is a CWE {category.kind} ('{category.name}'), "
                              "not a weakness")
    return IdCheck(s, norm, "cwe", True, False,
                   message=f"{norm} is not in the CWE {kb.version} catalog")


def _check_cve(s: str, norm: str, kb: CweKB) -> IdCheck:
    from secfm.knowledge.nvd import lookup as nvd_lookup

    record = nvd_lookup(norm)
    if record is not None:
        facts = [f"CWE {', '.join(record.cwes)}" if record.cwes else "no CWE",
                 f"CVSS {record.cvss_score} ({record.cvss_vector})" if record.cvss_vector else "no CVSS v3"]
        return IdCheck(s, norm, "cve", True, True, name=record.description[:120],
                       message=f"{norm} is in the local NVD store (published {record.published_date}; "
                               f"{'; '.join(facts)})")
    cwes = kb.cwe_for_cve(norm)
    if cwes:
        return IdCheck(s, norm, "cve", True, True,
                       message=f"{norm} is a CWE observed example of {', '.join(cwes)}")
    return IdCheck(s, norm, "cve", True, False,
                   message="well-formed CVE id, not in the offline catalog")


def _malformed_message(s: str) -> str:
    text = s.strip().upper()
    if not text:
        return "empty id"
    if re.fullmatch(r"T\d+([./]\d+)?", text):
        return (f"malformed ATT&CK technique id {s.strip()!r}: expected T and 4 digits, "
                "sub-techniques with 3 more (T1059.001)")
    if re.fullmatch(r"(TA|M|S|G|C)\d+", text):
        return f"malformed ATT&CK id {s.strip()!r}: expected a prefix and 4 digits (G0016)"
    if text.startswith("CVE"):
        return f"malformed CVE id {s.strip()!r}: expected CVE-YYYY-NNNN"
    if text.startswith("CWE"):
        return f"malformed CWE id {s.strip()!r}: expected CWE-<number>"
    return f"{s.strip()!r} is not an ATT&CK, CWE or CVE id"
