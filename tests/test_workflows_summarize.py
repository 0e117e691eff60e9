"""Incident summaries: deterministic extraction, map-reduce within the context, and the checks
that flag invented ids and IOCs."""

from __future__ import annotations

import json

import pytest
from test_workflows_support import FIXTURES, FakeEngine, constant

from secfm.errors import SecfmError
from secfm.workflows import summarize_incident
from secfm.workflows.schemas import IncidentSummary
from secfm.workflows.summarize import check_summary, extract_entities

REPORT = (FIXTURES / "report_short.md").read_text()


def test_deterministic_part():
    s = summarize_incident(REPORT, "analyst", use_model=False, technique_source=None)
    IncidentSummary.model_validate(s.model_dump())
    assert s.iocs["ipv4"] == ["185.234.219.12", "102.129.143.7"]
    assert s.iocs["url"] == ["https://invoice-portal-secure.com/login"]
    assert s.iocs["email"] == ["billing@invoice-portal-secure.com"]
    assert [(i.id, i.known) for i in s.ids] == [("T1114.003", True), ("T1566.002", True)]
    assert {t.id for t in s.techniques} == {"T1114.003", "T1566.002"}
    assert s.timeline and s.timeline[0].time.startswith("2026-04-12 08:41")
    assert s.summary_source == "extractive" and s.headline == "Phishing incident IR-77"
    assert "Indicators:" in s.summary and s.model.status == "skipped"
    exec_view = summarize_incident(REPORT, "executive", use_model=False, technique_source=None)
    assert "185.234.219.12" not in exec_view.summary and "indicator" in exec_view.summary


def test_bad_arguments():
    with pytest.raises(SecfmError, match="audience"):
        summarize_incident(REPORT, "board", use_model=False)
    with pytest.raises(SecfmError, match="empty"):
        summarize_incident("   ", use_model=False)


def test_check_summary_flags_invented_entities():
    iocs, ids = extract_entities(REPORT)
    text = ("The attacker used 185.234.219.12 for phishing (T1566.002). "
            "They also used 203.0.113.99 and evil-new.com. "
            "This matches T1059.001 and CVE-2099-12345. "
            "The user reset the password.")
    kept, flags, entities = check_summary(text, REPORT, iocs, ids)
    assert kept == "The attacker used 185.234.219.12 for phishing (T1566.002). The user reset the password."
    kinds = sorted((f.kind, f.value) for f in flags)
    assert ("invented-ioc", "203.0.113.99") in kinds and ("invented-ioc", "evil-new.com") in kinds
    assert ("invented-id", "T1059.001") in kinds and ("invented-id", "CVE-2099-12345") in kinds
    assert entities == 6


def test_single_chunk_model_summary_checked():
    engine = constant({"headline": "Phishing led to mailbox takeover",
                       "summary": "A phishing e-mail from billing@invoice-portal-secure.com harvested a password. "
                                  "The attacker signed in from 102.129.143.7 and forwarded mail (T1114.003). "
                                  "Block 198.51.100.200 as well."})
    s = summarize_incident(REPORT, use_model=True, engine=engine, technique_source=None)
    assert s.summary_source == "model" and s.model.status == "ok" and s.model.calls == 1
    assert "198.51.100.200" not in s.summary and "102.129.143.7" in s.summary
    assert [(f.kind, f.value) for f in s.flags] == [("invented-ioc", "198.51.100.200")]
    assert s.model.proposed == 4 and s.model.invented == 1
    assert s.headline == "Phishing led to mailbox takeover"


def test_map_reduce_over_a_long_report():
    paragraphs = [f"Step {i}: the attacker touched host-{i}.corp.example from 198.51.100.{i} at 2026-01-0{1 + i % 9} 10:00 UTC. " * 6
                  for i in range(1, 13)]
    long_report = "# Long incident\n\n" + "\n\n".join(paragraphs)

    def responder(prompt: str) -> str:
        if "part" in prompt.split("\n", 2)[1] and "Summarize part" in prompt:
            return json.dumps({"summary": "The attacker moved between hosts."})
        return json.dumps({"headline": "Lateral movement", "summary": "The attacker moved between many hosts over several days."})

    engine = FakeEngine(responder, max_context=1024)
    s = summarize_incident(long_report, use_model=True, engine=engine, technique_source=None, chunk_tokens=300, max_new_tokens=64)
    maps = [p for p in engine.prompts if "Summarize part" in p]
    finals = [p for p in engine.prompts if "Write the summary of summaries" in p]
    assert len(maps) >= 4 and len(finals) == 1
    assert all(engine.count_tokens(p) < engine.max_context for p in engine.prompts)
    assert s.summary_source == "model" and s.summary.startswith("The attacker moved")
    assert s.chunks == len(maps)
    assert len(s.iocs["ipv4"]) == 12


def test_model_failure_keeps_the_extractive_summary():
    s = summarize_incident(REPORT, use_model=True, engine=constant("no json at all"), technique_source=None)
    assert s.model.status == "failed" and s.summary_source == "extractive" and s.summary == s.extractive


def test_runnable():
    from secfm.workflows import summarize_runnable

    out = summarize_runnable(technique_source=None).invoke({"text": REPORT, "audience": "executive", "use_model": False})
    assert isinstance(out, IncidentSummary) and out.audience == "executive"


def test_batch_summaries_share_generations():
    engine = FakeEngine(lambda p: json.dumps({"summary": "Part summary."}) if "Summarize part" in p
                        else json.dumps({"headline": "H", "summary": "A phishing incident."}))
    from secfm.workflows import summarize_incidents

    long_report = "# L\n\n" + "\n\n".join("Paragraph about lateral movement between servers. " * 8 for _ in range(6))
    out = summarize_incidents([(REPORT, "analyst"), (long_report, "executive")], use_model=True, engine=engine,
                              technique_source=None, chunk_tokens=200, max_new_tokens=32)
    assert [s.summary_source for s in out] == ["model", "model"] and out[0].chunks == 1 and out[1].chunks > 1
    assert out[0].model.calls == 1 and out[1].model.calls == out[1].chunks + 1


def test_counts_are_pluralized_in_english():
    from secfm.workflows.summarize import _plural

    assert [_plural(1, "IPv4 address"), _plural(4, "IPv4 address"), _plural(2, "SHA-256 hash"), _plural(3, "domain")] == [
        "1 IPv4 address", "4 IPv4 addresses", "2 SHA-256 hashes", "3 domains"]
