"""ATT&CK extraction: sentence splitting with offsets, aggregation with evidence, Navigator layers
and STIX bundles (fast, with stub features), then the shipped head on the real model (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import stix2

from secfm.errors import SecfmError
from secfm.heads import load_head, shipped_head_path
from secfm.knowledge import load_attack
from secfm.workflows.attack_extraction import AttackExtractor, Evidence, TechniqueHit, split_sentences
from secfm.workflows.navigator import navigator_layer, validate_layer
from secfm.workflows.stix_export import stix_bundle

FIXTURES = Path(__file__).parent / "fixtures" / "heads"
REPORT = (FIXTURES / "report.txt").read_text()


# --- splitting ------------------------------------------------------------------------------------
def test_sentences_keep_exact_offsets_and_respect_abbreviations():
    text = ("APT29 sent emails, e.g. to diplomats in Europe. The payload used PowerShell v2.1 to fetch 185.220.101.4! "
            "Mr. Smith at Acme Inc. reported it.\n- Mimikatz against lsass.exe\n- SMB lateral movement\n  over days\n"
            "Host: WS-0001 alerted\n\nNew paragraph here.")
    segs = split_sentences(text)
    assert [s.text for s in segs] == [
        "APT29 sent emails, e.g. to diplomats in Europe.",
        "The payload used PowerShell v2.1 to fetch 185.220.101.4!",
        "Mr. Smith at Acme Inc. reported it.",
        "Mimikatz against lsass.exe",
        "SMB lateral movement\n  over days",
        "Host: WS-0001 alerted",
        "New paragraph here.",
    ]
    assert all(text[s.start : s.end] == s.text for s in segs)
    assert [s.index for s in segs] == list(range(len(segs)))


def test_long_sentences_become_overlapping_windows():
    text = " ".join(f"w{i}" for i in range(600))
    segs = split_sentences(text, max_chars=300, overlap=60)
    assert len(segs) > 5 and all(len(s.text) <= 300 for s in segs)
    assert all(text[s.start : s.end] == s.text for s in segs)
    assert all(b.start < a.end for a, b in zip(segs, segs[1:]))  # windows overlap
    assert segs[-1].end == len(text)


def test_no_letters_no_segments_but_short_alerts_survive():
    assert split_sentences("---- ==== 1234") == []
    assert [s.text for s in split_sentences("whoami /all")] == ["whoami /all"]


# --- aggregation with stub features (no model) ----------------------------------------------------
@pytest.fixture(scope="module")
def stub_extractor():
    head = load_head(shipped_head_path("attack", "gemma-3-270m"))
    extractor = AttackExtractor(head, index=None, document=None)  # the sentence aggregation alone
    labels = head.labels
    rng = np.random.default_rng(0)
    targets = {"PowerShell": "T1059.001", "scheduled task": "T1053.005", "Mimikatz": "T1003.001"}

    def fake_scores(texts):
        S = rng.random((len(texts), len(labels))).astype(np.float32) * 0.01
        for i, t in enumerate(texts):
            for word, tid in targets.items():
                if word in t:
                    S[i, labels.index(tid)] = 0.97
        from secfm.heads import lift_parents, parent_index

        return lift_parents(S, parent_index(labels))

    extractor.scores = fake_scores
    return extractor


def test_hits_carry_evidence_that_is_in_the_input(stub_extractor):
    hits = stub_extractor.extract(REPORT)
    ids = [h.id for h in hits]
    assert {"T1059.001", "T1059", "T1053.005", "T1053", "T1003.001", "T1003"} <= set(ids)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for h in hits:
        assert h.name and h.tactics and h.evidence
        for ev in h.evidence:
            assert REPORT[ev.start : ev.end] == ev.text
            assert ev.score >= 0.5
    ps = next(h for h in hits if h.id == "T1059.001")
    assert "PowerShell" in ps.evidence[0].text and ps.name == "PowerShell" and "execution" in ps.tactics
    assert stub_extractor.predict([REPORT])[0][0][1] == hits[0].score


def test_top_k_and_threshold_options(stub_extractor):
    top2 = AttackExtractor(stub_extractor.head, top_k=2, index=None, document=None)
    top2.scores = stub_extractor.scores
    assert len(top2.extract(REPORT)) == 2
    high = AttackExtractor(stub_extractor.head, threshold=0.999, index=None, document=None)
    high.scores = stub_extractor.scores
    assert high.extract(REPORT) == []
    with pytest.raises(SecfmError, match="between 0 and 1"):
        AttackExtractor(stub_extractor.head, threshold=1.5)


# --- Navigator and STIX ---------------------------------------------------------------------------
def _hits():
    kb = load_attack()

    def hit(tid, score):
        t = kb.technique(tid)
        return TechniqueHit(tid, t.name, t.tactics, score, (Evidence(1, "They used PowerShell.", 10, 31, score),), t.url)

    return [hit("T1059.001", 0.93), hit("T1059", 0.93), hit("T1078", 0.61)]


def test_navigator_layer_has_the_4_5_fields():
    layer = navigator_layer(_hits(), name="test layer")
    assert validate_layer(layer) == []
    assert layer["versions"] == {"attack": "18", "navigator": "5.1.0", "layer": "4.5"}
    assert layer["domain"] == "enterprise-attack"
    g = layer["gradient"]
    assert len(g["colors"]) >= 2 and g["minValue"] == 0 and g["maxValue"] == 100
    entries = [t for t in layer["techniques"] if t["techniqueID"] == "T1078"]
    kb = load_attack()
    assert {t["tactic"] for t in entries} == set(kb.technique("T1078").tactics)  # one entry per tactic
    assert all(t["score"] == 61 and "PowerShell" in t["comment"] for t in entries)
    parent = next(t for t in layer["techniques"] if t["techniqueID"] == "T1059")
    assert parent["showSubtechniques"] is True
    json.dumps(layer)  # serializable


def test_navigator_validator_catches_mistakes():
    layer = navigator_layer(_hits())
    bad = json.loads(json.dumps(layer))
    bad["versions"]["layer"] = "4.4"
    bad["techniques"][0]["techniqueID"] = "T99"
    bad["techniques"][1]["tactic"] = "lunch"
    bad["gradient"]["maxValue"] = -1
    del bad["domain"]
    problems = validate_layer(bad)
    assert len(problems) >= 5


def test_stix_bundle_parses_with_stix2():
    doc = "They used PowerShell. Then more."
    bundle = stix_bundle(_hits(), doc, name="test report")
    parsed = stix2.parse(bundle.serialize(), allow_custom=False)
    kinds = [o.type for o in parsed.objects]
    assert kinds.count("attack-pattern") == 3 and kinds.count("relationship") == 3 and kinds.count("report") == 1
    report = next(o for o in parsed.objects if o.type == "report")
    ids = {o.id for o in parsed.objects if o.type != "report"}
    assert set(report.object_refs) == ids
    ap = next(o for o in parsed.objects if o.type == "attack-pattern" and o.name == "PowerShell")
    assert ap.external_references[0].source_name == "mitre-attack" and ap.external_references[0].external_id == "T1059.001"
    assert ap.kill_chain_phases[0].kill_chain_name == "mitre-attack"
    rel = next(o for o in parsed.objects if o.type == "relationship" and o.target_ref == ap.id)
    assert rel.source_ref == report.id and "They used PowerShell." in rel.description and rel.confidence == 93
    # MITRE's own attack-pattern id and version, never a minted one
    kb = load_attack()
    assert ap.id == kb.technique("T1059.001").stix_id == "attack-pattern--970a3432-3237-47ad-bcca-7d8cbb217736"
    assert ap.created_by_ref == "identity--c78cb6e5-0c4b-4611-8297-d1b8b55e40b5"
    assert ap.modified.strftime("%Y-%m-%d") == kb.technique("T1059.001").modified[:10]
    again = stix_bundle(_hits()[:1], "other doc")
    assert next(o for o in again.objects if o.type == "attack-pattern").id == ap.id
    assert stix2.parse(stix_bundle([], "nothing found").serialize()).objects[1].type == "report"


def test_stix_bundle_passes_the_strict_interop_validator(tmp_path):
    """stix2-validator --strict --interop: UUIDv4 ids, every object created by an identity in the
    bundle that names its own producer, MITRE's ids for Enterprise, Mobile and ICS techniques."""
    from secfm.workflows.stix_export import SECFM_IDENTITY_ID, validate_bundle

    kb = load_attack()
    hits = _hits() + [TechniqueHit(t, kb.technique(t).name, kb.technique(t).tactics, 0.8,
                                   (Evidence(0, "The implant roots the phone.", 0, 28, 0.8),), kb.technique(t).url,
                                   kb.technique(t).domain) for t in ("T1404", "T0817")]
    serialized = stix_bundle(hits, "The implant roots the phone.").serialize(pretty=True)
    assert validate_bundle(serialized) == []
    bundle = json.loads(serialized)
    patterns = {o["external_references"][0]["external_id"]: o for o in bundle["objects"] if o["type"] == "attack-pattern"}
    assert patterns["T1404"]["id"] == kb.technique("T1404").stix_id
    assert patterns["T1404"]["external_references"][0]["source_name"] == "mitre-mobile-attack"
    assert patterns["T0817"]["kill_chain_phases"][0]["kill_chain_name"] == "mitre-ics-attack"
    assert all(o.get("created_by_ref") for o in bundle["objects"])
    assert {o["created_by_ref"] for o in bundle["objects"] if o["type"] in ("report", "relationship")} == {SECFM_IDENTITY_ID}
    # the validator's own command line agrees; a broken bundle is caught
    path = tmp_path / "bundle.json"
    path.write_text(serialized)
    proc = subprocess.run([sys.executable, "-c", "from stix2validator.scripts.stix2_validator import main; main()",
                           "--strict", "--interop", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    broken = json.loads(serialized)
    del next(o for o in broken["objects"] if o["type"] == "report")["created_by_ref"]
    assert validate_bundle(json.dumps(broken))


def test_navigator_layers_split_by_domain():
    from secfm.workflows.navigator import navigator_layers

    kb = load_attack()
    t = kb.technique("T1404")
    mobile = TechniqueHit("T1404", t.name, t.tactics, 0.7, (), t.url, "mobile")
    layers = navigator_layers(_hits() + [mobile])
    assert list(layers) == ["enterprise", "mobile"]
    assert layers["mobile"]["domain"] == "mobile-attack" and layers["mobile"]["versions"]["attack"] == "17"
    assert [e["techniqueID"] for e in layers["mobile"]["techniques"]] == ["T1404"]
    assert all(validate_layer(layer) == [] for layer in layers.values())
    with pytest.raises(SecfmError, match="several ATT&CK domains"):
        navigator_layer(_hits() + [mobile])
    wrong = navigator_layer([mobile])
    wrong["domain"] = "enterprise-attack"
    assert any("mobile technique" in p for p in validate_layer(wrong))


# --- the shipped head on the real model -------------------------------------------------------------
@pytest.mark.slow
def test_extract_attack_on_a_report_with_the_real_model(engine):
    extractor = AttackExtractor.load(engine=engine)
    hits = extractor.extract(REPORT)
    assert hits, "the shipped head finds techniques in a plain report"
    found = {h.id for h in hits}
    assert found & {"T1059", "T1059.001", "T1053", "T1053.005", "T1003", "T1003.001", "T1566", "T1566.001",
                    "T1490", "T1486", "T1560", "T1560.001", "T1021", "T1021.002", "T1550", "T1550.002", "T1547"}
    for h in hits:
        assert h.evidence and all(REPORT[e.start : e.end] == e.text for e in h.evidence)
    assert validate_layer(navigator_layer(hits)) == []
    stix2.parse(stix_bundle(hits, REPORT).serialize(), allow_custom=False)
    preds = extractor.predict([REPORT, "The malware used HTTPS for command and control."])
    assert len(preds) == 2 and all(isinstance(t, str) and 0 <= s <= 1 for t, s in preds[0])


@pytest.mark.slow
def test_mobile_and_enterprise_documents_with_the_real_model(engine):
    """The shipped extractor (head, retrieval, document model) names Mobile techniques in a
    paragraph about an Android implant and Enterprise ones in a Windows intrusion report, each
    with its sentence, score and nearest ATT&CK procedure example."""
    extractor = AttackExtractor.load(engine=engine)
    assert extractor.document is not None and extractor.index is not None
    android = (FIXTURES / "android_implant.txt").read_text()
    mobile, windows = extractor.extract_many([android, REPORT])
    assert mobile and {h.domain for h in mobile if "." not in h.id} == {"mobile"}, [(h.id, h.domain) for h in mobile]
    assert {h.id for h in mobile} & {"T1429", "T1636", "T1430", "T1624", "T1628", "T1437", "T1521", "T1453", "T1646"}
    assert windows and {h.domain for h in windows} == {"enterprise"}
    assert {h.id for h in windows} & {"T1566", "T1059", "T1053", "T1003", "T1486", "T1490", "T1560", "T1021", "T1547"}
    for text, hits in ((android, mobile), (REPORT, windows)):
        for h in hits:
            assert h.evidence and all(text[e.start : e.end] == e.text for e in h.evidence)
            assert any(e.example and e.example_source and e.similarity > 0 for e in h.evidence)


@pytest.mark.slow
def test_map_cwe_with_the_real_model(engine):
    from secfm.workflows.cwe_mapping import CweMapper

    mapper = CweMapper.load(engine=engine)
    hits = mapper.map("SQL injection in the login form of the admin panel allows remote attackers to execute arbitrary SQL commands via the username parameter.")
    assert len(hits) == 5 and [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0].score >= hits[-1].score and all(h.id.startswith("CWE-") for h in hits)
    assert "CWE-89" in {h.id for h in hits}
    assert len(mapper.predict(["a", "buffer overflow in the parser"])) == 2


@pytest.mark.slow
def test_a_head_refuses_another_base_model(engine, tmp_path):
    import shutil

    head_dir = tmp_path / "head"
    shutil.copytree(shipped_head_path("attack", "gemma-3-270m"), head_dir)
    m = json.loads((head_dir / "head.json").read_text())
    m["base_model"] = "llama-3.1-8b"
    (head_dir / "head.json").write_text(json.dumps(m))
    with pytest.raises(SecfmError, match="refusing"):
        AttackExtractor.load(head_dir, engine=engine)


@pytest.mark.slow
def test_cli_attack_extract_writes_a_layer_and_a_bundle(tmp_path):
    """`secfm attack extract FILE` on the Android paragraph: Mobile techniques with evidence, a
    mobile-attack Navigator layer and a STIX bundle that passes the strict interop validator."""
    from secfm.workflows.stix_export import validate_bundle

    nav, bundle = tmp_path / "layer.json", tmp_path / "bundle.json"
    proc = subprocess.run(
        [sys.executable, "-m", "secfm.cli", "attack", "extract", str(FIXTURES / "android_implant.txt"),
         "--navigator", str(nav), "--stix", str(bundle), "--json"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)["techniques"]
    assert found and {t["domain"] for t in found} == {"mobile"} and all(t["evidence"] for t in found)
    layer = json.loads(nav.read_text())
    assert validate_layer(layer) == [] and layer["techniques"] and layer["domain"] == "mobile-attack"
    assert validate_bundle(bundle.read_text()) == []
    parsed = stix2.parse(bundle.read_text(), allow_custom=False)
    assert any(o.type == "attack-pattern" for o in parsed.objects)
