"""The project's id validator and id finder, on the real packaged catalogs."""

from __future__ import annotations

from pathlib import Path

import pytest

from secfm.knowledge.attack import load_attack
from secfm.knowledge.ids import KINDS, find_ids, normalize_id, parent_technique, validate_id


@pytest.fixture(autouse=True)
def _home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECFM_HOME", str(tmp_path_factory.getbasetemp() / "secfm_home"))


@pytest.mark.parametrize(
    ("raw", "normalized", "kind", "name"),
    [
        ("T1059", "T1059", "technique", "Command and Scripting Interpreter"),
        ("T1059.001", "T1059.001", "subtechnique", "PowerShell"),
        ("t1059.001 ", "T1059.001", "subtechnique", "PowerShell"),
        ("T1059/001", "T1059.001", "subtechnique", "PowerShell"),
        ("TA0002", "TA0002", "tactic", "Execution"),
        ("M1036", "M1036", "mitigation", "Account Use Policies"),
        ("S0154", "S0154", "software", "Cobalt Strike"),
        ("g0016", "G0016", "group", "APT29"),
        ("C0022", "C0022", "campaign", "Operation Dream Job"),
        ("CWE-79", "CWE-79", "cwe",
         "Improper Neutralization of Input During Web Page Generation ('Cross-site Scripting')"),
        ("cwe79", "CWE-79", "cwe",
         "Improper Neutralization of Input During Web Page Generation ('Cross-site Scripting')"),
    ],
)
def test_known_ids(raw: str, normalized: str, kind: str, name: str) -> None:
    check = validate_id(raw)
    assert (check.normalized, check.kind, check.name) == (normalized, kind, name)
    assert check.well_formed and check.known and check.current
    assert check.input == raw and check.message and check.kind in KINDS


def test_cve_ids() -> None:
    log4shell = validate_id("CVE-2021-44228")
    assert log4shell.kind == "cve" and log4shell.known and log4shell.well_formed
    assert "CWE-917" in log4shell.message
    other = validate_id(" cve-2024-0001234 ")
    assert other.normalized == "CVE-2024-0001234" and other.well_formed and not other.known
    assert other.message == "well-formed CVE id, not in the offline catalog"


def test_revoked_and_deprecated_report_replacements() -> None:
    revoked = validate_id("T1086")
    assert revoked.known and revoked.revoked and not revoked.current
    assert revoked.replaced_by == "T1059.001" and "T1059.001 (PowerShell)" in revoked.message
    chained = validate_id("T1150")
    assert chained.revoked and chained.replaced_by == "T1647"
    deprecated = validate_id("T1064")
    assert deprecated.deprecated and not deprecated.revoked and deprecated.replaced_by == "T1059"
    no_replacement = validate_id("T1026")
    assert no_replacement.deprecated and no_replacement.replaced_by is None
    assert "no replacement" in no_replacement.message
    group = validate_id("G0118")
    assert group.revoked and group.replaced_by == "G0016"
    cwe = validate_id("CWE-1187")
    assert cwe.known and cwe.deprecated and cwe.replaced_by == "CWE-908"


@pytest.mark.parametrize(
    ("raw", "kind", "well_formed"),
    [
        ("", "unknown", False),
        ("   ", "unknown", False),
        ("T99999", "unknown", False),
        ("T1059.1", "unknown", False),
        ("T1059.0001", "unknown", False),
        ("CVE-21-44228", "unknown", False),
        ("CWE-", "unknown", False),
        ("hello world", "unknown", False),
        ("DET0455", "unknown", False),
        ("T9999", "technique", True),
        ("T1059.999", "subtechnique", True),
        ("G9999", "group", True),
        ("CWE-0", "cwe", True),
    ],
)
def test_unknown_and_malformed(raw: str, kind: str, well_formed: bool) -> None:
    check = validate_id(raw)
    assert (check.kind, check.well_formed, check.known) == (kind, well_formed, False)
    assert check.name is None and check.message


def test_messages_are_helpful() -> None:
    assert validate_id("").message == "empty id"
    assert "T1059.001" in validate_id("T1059.1").message
    assert "parent T1059" in validate_id("T1059.999").message


def test_cwe_category_is_not_a_weakness() -> None:
    check = validate_id("CWE-1000")
    assert check.kind == "cwe" and not check.known and check.name == "Research Concepts"
    assert "view" in check.message


def test_validate_against_a_given_kb() -> None:
    bundle = Path(__file__).parent / "fixtures" / "attack-mini-bundle.json"
    kb = load_attack(bundle)
    assert validate_id("T1059.001", attack=kb).known
    assert not validate_id("T1566", attack=kb).known  # in 18.1, not in the fixture
    assert validate_id("T1566").known


def test_find_ids() -> None:
    text = ("APT29 (G0016) used T1059.001 and T1059/003, see "
            "https://attack.mitre.org/techniques/T1059/001/ ; related to cwe-79 and "
            "CVE-2021-44228, CWE-79 again, TA0002, M1036, S0154, C0022, T1059.001 again. "
            "Not ids: T12345, XT1059, t1059, G001, CWE79, CVE-2021-1.")
    assert find_ids(text) == ["G0016", "T1059.001", "T1059.003", "CWE-79", "CVE-2021-44228",
                              "TA0002", "M1036", "S0154", "C0022"]
    assert find_ids("") == []


def test_parent_technique_and_normalize() -> None:
    assert parent_technique("T1059.001") == "T1059"
    assert parent_technique(" t1059.001") == "T1059"
    assert parent_technique("T1059") is None and parent_technique("CWE-79") is None
    assert normalize_id("CWE-079") == ("CWE-79", "cwe")
    assert normalize_id("nonsense") is None


def test_sigma_tags_with_ids_attack_does_not_have_are_known_unknowns() -> None:
    """SigmaHQ tags techniques newer than our ATT&CK (attack.t1685): well formed, not known, a
    message naming the versions checked; the rule compiler keeps them as rejected tags, no crash."""
    from secfm.workflows.sigma_rules import _techniques

    check = validate_id("T1685")
    assert check.well_formed and not check.known and check.kind == "technique" and check.domain is None
    assert "T1685 is not an ATT&CK technique" in check.message and "Mobile" in check.message
    sub = validate_id("t1685.001")
    assert sub.normalized == "T1685.001" and sub.well_formed and not sub.known
    good, rejected = _techniques(["attack.t1685", "attack.T1059.001", "attack.execution", "attack.t1685.001", "cve.2021-44228"])
    assert good == ("T1059.001",) and rejected == ("attack.t1685", "attack.t1685.001")
