"""What the chat knows about a CVE: the local NVD data, the CWE catalog, and the ATT&CK technique
that exploiting it maps to.

Sources, in order:

* the local NVD store (``secfm.knowledge.nvd``, filled by ``secfm kb add-nvd`` / ``secfm kb update
  nvd``): description, CWE ids, CVSS v3 vector and base score (severity from FIRST's rating table);
* the CWE catalog's observed examples (CWE 4.14 lists 2,967 CVEs with a one-line description
  and the weaknesses they exemplify), used when the CVE is not in the NVD store.

The exploitation technique follows the "exploitation technique" step of the Center for
Threat-Informed Defense's *Mapping ATT&CK to CVE for Impact* methodology, as rules over the
CVSS vector (when NVD gives one) or the description:

* a local attack vector with privileges gained -> T1068 Exploitation for Privilege Escalation;
* user interaction required (open a file, visit a page) -> T1203 Exploitation for Client Execution;
* a network attack vector without user interaction (a server-side flaw) -> T1190 Exploit
  Public-Facing Application (T1210 Exploitation of Remote Services when reached from inside);
* an adjacent-network vector -> T1210 Exploitation of Remote Services.

The mapping is labelled as secfm's rule with the evidence it used; it is never presented as an
NVD fact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from secfm.knowledge import load_cwe

NVD_URL = "https://nvd.nist.gov/vuln/detail/{id}"
CWE_URL = "https://cwe.mitre.org/data/definitions/{n}.html"
MAPPING_TOOL = "CVE→ATT&CK exploitation rules (after CTID's Mapping ATT&CK to CVE for Impact)"
_ABSTRACTION_ORDER = {"Variant": 0, "Base": 1, "Compound": 2, "Class": 3, "Pillar": 4}


@dataclass
class CveFacts:
    id: str
    description: str = ""
    cwes: list[str] = field(default_factory=list)  # most specific first
    cwe_source: str = ""  # "NVD" or "CWE catalog"
    cvss_score: float | None = None
    cvss_vector: str | None = None
    cvss_severity: str | None = None
    published: str | None = None
    source: str = ""  # "NVD" or "CWE catalog"
    found: bool = False

    @property
    def url(self) -> str:
        return NVD_URL.format(id=self.id)


@dataclass(frozen=True)
class Exploitation:
    technique: str  # T1190
    reason: str  # the evidence the rule used
    also: tuple[str, ...] = ()


def cwe_url(cwe_id: str) -> str:
    return CWE_URL.format(n=cwe_id.split("-")[-1])


def cvss_severity(score: float | None) -> str | None:
    """The CVSS v3 qualitative rating of a base score (FIRST's table)."""
    if score is None:
        return None
    if score == 0:
        return "NONE"
    return "LOW" if score < 4 else "MEDIUM" if score < 7 else "HIGH" if score < 9 else "CRITICAL"


def default_cve_store():
    """The local NVD store of ``secfm kb add-nvd`` (``$SECFM_HOME/nvd``), or None when there is none."""
    from secfm.knowledge import nvd

    return nvd.open_store(create=False)


def how_to_add() -> str:
    from secfm.knowledge import nvd

    return nvd.how_to_add()


def lookup_cve(cve_id: str, store=None) -> CveFacts:
    """Everything the offline knowledge says about ``cve_id`` (``found`` False when nothing):
    the NVD record in ``store`` (a CVE store, or None), else the CWE catalog's observed example."""
    facts = CveFacts(cve_id)
    record = store.lookup(cve_id) if store is not None else None
    if record is not None:
        facts.found = True
        facts.source = "NVD"
        facts.description = record.description
        facts.cwes = [c for c in record.cwes if c.startswith("CWE-")]
        facts.cwe_source = "NVD" if facts.cwes else ""
        facts.cvss_score = record.cvss_score
        facts.cvss_vector = record.cvss_vector
        facts.cvss_severity = cvss_severity(record.cvss_score)
        facts.published = record.published[:10] if record.published else None
    catalog = load_cwe().cwe_for_cve(cve_id)
    if catalog:
        if not facts.found:
            facts.found = True
            facts.source = "CWE catalog"
            facts.description = _observed_description(cve_id, catalog)
        if not facts.cwes:
            facts.cwes = list(catalog)
            facts.cwe_source = "CWE catalog"
    facts.cwes = _most_specific_first(facts.cwes)
    return facts


def _observed_description(cve_id: str, cwe_ids: list[str]) -> str:
    cwe = load_cwe()
    best = ""
    for cid in cwe_ids:
        w = cwe.get(cid)
        for ex in (w.observed_examples if w else ()):
            if ex.reference == cve_id and len(ex.description) > len(best):
                best = ex.description
    return best


def _most_specific_first(cwe_ids: list[str]) -> list[str]:
    cwe = load_cwe()

    def rank(cid: str) -> int:
        w = cwe.get(cid)
        return _ABSTRACTION_ORDER.get(w.abstraction, 5) if w else 6

    return sorted(dict.fromkeys(cwe_ids), key=rank)


# ---------------------------------------------------------------------------------------------
# the exploitation technique
# ---------------------------------------------------------------------------------------------
_LOCAL_PRIV = re.compile(r"\b(?:local\s+(?:users?|attackers?)|privilege\s+escalation|escalat\w+\s+(?:of\s+)?privileges?|"
                         r"gain\s+(?:root|system|elevated|administrator|kernel)?\s*privileges?|elevation\s+of\s+privilege)\b", re.I)
_CLIENT = re.compile(r"\b(?:user[-\s]interaction|(?:open|opens|opening)\s+(?:a\s+)?(?:crafted|malicious|specially)|"
                     r"visit\w*\s+(?:a\s+)?(?:crafted|malicious)|crafted\s+(?:document|file|web\s+page|email|pdf|image)|"
                     r"malicious\s+(?:document|file|web\s*page|website|email|link))\b", re.I)
_REMOTE = re.compile(r"\b(?:remote\s+code\s+execution|remote(?:ly)?\s+(?:unauthenticated\s+)?attackers?|remote\s+"
                     r"(?:unauthenticated|authenticated)?\s*(?:users?)|unauthenticated\s+remote|remotely\s+exploitable|"
                     r"crafted\s+(?:http|request|packet|header|url)|network\s+request|over\s+the\s+network|"
                     r"execute\s+arbitrary\s+(?:code|commands)\s+via\s+(?:a\s+)?(?:crafted\s+)?(?:request|environment))\b",
                     re.I)


def exploitation_technique(description: str, vector: str | None = None) -> Exploitation | None:
    """The ATT&CK technique an adversary uses to exploit the CVE (module docstring), or None."""
    metrics = dict(part.split(":", 1) for part in (vector or "").split("/")[1:] if ":" in part)
    av, ui = metrics.get("AV"), metrics.get("UI")
    text = description or ""
    if av in ("L", "P"):
        if _LOCAL_PRIV.search(text) or metrics.get("S") == "C" or metrics.get("PR") in ("L", "H"):
            return Exploitation("T1068", f"CVSS attack vector {'local' if av == 'L' else 'physical'} ({vector})")
        if ui == "R":
            return Exploitation("T1203", f"local attack vector with user interaction ({vector})")
        return Exploitation("T1068", f"CVSS attack vector {'local' if av == 'L' else 'physical'} ({vector})")
    if ui == "R":
        return Exploitation("T1203", f"user interaction required ({vector})")
    if av == "N":
        return Exploitation("T1190", f"network attack vector, no user interaction ({vector})", ("T1210",))
    if av == "A":
        return Exploitation("T1210", f"adjacent-network attack vector ({vector})")
    if not text:
        return None
    if _CLIENT.search(text):
        return Exploitation("T1203", "the description needs a user to open or visit crafted content")
    if _LOCAL_PRIV.search(text) and not _REMOTE.search(text):
        return Exploitation("T1068", "the description names local privilege escalation")
    if m := _REMOTE.search(text):
        return Exploitation("T1190", f"the description says '{m.group(0)}' (a remotely reachable service, "
                                     "no user interaction)", ("T1210",))
    return None


__all__ = ["CveFacts", "Exploitation", "MAPPING_TOOL", "NVD_URL", "cvss_severity", "cwe_url", "default_cve_store",
           "exploitation_technique", "how_to_add", "lookup_cve"]
