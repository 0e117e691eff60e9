"""Typed access to MITRE ATT&CK (Enterprise, Mobile, ICS) and the CWE catalog, and the project's id validator."""

from __future__ import annotations

from pathlib import Path

from secfm.knowledge.attack import AttackKB, load_attack
from secfm.knowledge.cwe import CweKB, load_cwe
from secfm.knowledge.ids import IdCheck, find_ids, parent_technique, validate_id

__all__ = [
    "AttackKB", "CweKB", "IdCheck", "find_ids", "load_attack", "load_cwe", "parent_technique",
    "summary", "validate_id",
]


def summary(attack_bundle: str | Path | None = None) -> dict[str, str | int]:
    """Versions and counts of the knowledge base (for ``secfm kb stats``): current (not
    revoked or deprecated) objects; ATT&CK counts over every domain, then per domain
    (``attack_domains``: version, source, counts); ``attack_bundle`` replaces its domain's
    packaged data."""
    attack = load_attack(attack_bundle)
    cwe = load_cwe()
    a, c = attack.counts(), cwe.counts()
    return {
        "attack_version": attack.version,
        "attack_domains": {d: {"version": attack.versions[d], "source": attack.sources.get(d, ""),
                               **attack.counts(d)} for d in attack.domains},
        "techniques": a["techniques"],
        "subtechniques": a["subtechniques"],
        "tactics": a["tactics"],
        "mitigations": a["mitigations"],
        "groups": a["groups"],
        "software": a["software"],
        "campaigns": a["campaigns"],
        "procedure_examples": a["procedure_examples"],
        "detection_strategies": a["detection_strategies"],
        "cwe_version": cwe.version,
        "cwe_weaknesses": c["weaknesses"],
        "cwe_observed_examples": c["cve_observed_examples"],
    }
