"""Configuration review: rule findings with quoted lines, grounded retrieval, and model findings
that must cite real lines."""

from __future__ import annotations

import pytest
from test_workflows_support import constant, small_store  # noqa: F401 - fixture

from secfm.errors import SecfmError
from secfm.workflows import review_config
from secfm.workflows.schemas import ConfigReview

SSHD = """# bastion
Port 22
PermitRootLogin yes
PasswordAuthentication yes

AllowTcpForwarding yes
GatewayPorts yes
"""


def test_rule_findings_quote_their_lines():
    r = review_config(SSHD, use_model=False, store=False)
    ConfigReview.model_validate(r.model_dump())
    assert (r.kind, r.kind_detected_by, r.lines) == ("sshd", "content", 7)
    assert [(f.rule_id, f.line_start, f.evidence) for f in r.findings] == [
        ("SSHD-ROOT-LOGIN", 3, "PermitRootLogin yes"), ("SSHD-PASSWORD-AUTH", 4, "PasswordAuthentication yes")]
    assert r.findings[0].references == ["CWE-250", "M1026"] and r.findings[0].fix
    lines = SSHD.splitlines()
    for f in r.findings:
        assert f.evidence == "\n".join(lines[f.line_start - 1:f.line_end])
    assert r.counts["high"] == 1 and r.counts["medium"] == 1


def test_kind_argument_and_errors():
    assert review_config(SSHD, "sshd", use_model=False, store=False).kind_detected_by == "argument"
    with pytest.raises(SecfmError, match="unknown configuration kind"):
        review_config(SSHD, "apache", use_model=False)
    with pytest.raises(SecfmError, match="--kind"):
        review_config("just some words\n", use_model=False)


def test_model_findings_must_cite_real_lines():
    engine = constant({"findings": [
        {"line_start": 6, "line_end": 7, "severity": "medium", "title": "Port forwarding enabled", "why": "Tunnels can bypass firewalls."},
        {"line_start": 40, "line_end": 41, "severity": "high", "title": "Invented problem", "why": "Not there."},
    ]})
    r = review_config(SSHD, use_model=True, engine=engine, store=False)
    model = [f for f in r.findings if f.source == "model"]
    assert len(model) == 1 and (model[0].line_start, model[0].line_end) == (6, 7)
    assert model[0].evidence == "AllowTcpForwarding yes\nGatewayPorts yes" and model[0].rule_id == "MODEL-1"
    assert [(x.kind, "lines 1-7" in x.reason) for x in r.rejected] == [("line-range", True)]
    assert r.model.status == "ok" and r.model.proposed == 2 and r.model.invented == 1


def test_model_repeats_blank_lines_and_unknown_ids_are_not_kept():
    engine = constant({"findings": [
        {"line_start": 3, "line_end": 3, "severity": "high", "title": "Root login", "why": "Same as the rule."},
        {"line_start": 5, "line_end": 5, "severity": "low", "title": "Blank line", "why": "Nothing."},
    ]})
    r = review_config(SSHD, use_model=True, engine=engine, store=False)
    assert all(f.source == "rule" for f in r.findings)
    assert [x.reason for x in r.rejected] == ["the cited lines are blank"]
    engine = constant({"findings": [{"line_start": 6, "line_end": 6, "severity": "low", "title": "See CWE-99999", "why": "x"}]})
    r = review_config(SSHD, use_model=True, engine=engine, store=False)
    assert r.rejected[0].kind == "id" and all(f.source == "rule" for f in r.findings)


def test_model_failure_keeps_rules():
    r = review_config(SSHD, use_model=True, engine=constant("sorry"), store=False)
    assert r.model.status == "failed" and "rule findings stand" in r.model.detail and len(r.findings) == 2


def test_grounded_in_retrieved_guidance(small_store):
    engine = constant({"findings": []})
    r = review_config(SSHD, use_model=True, engine=engine, store=small_store, k=3)
    assert r.knowledge.startswith("ok") and 1 <= len(r.guidance) <= 3
    assert {g.kind for g in r.guidance} <= {"mitigation", "cwe", "document"}
    assert "Guidance from the knowledge base" in engine.prompts[0]
    assert any(g.id in engine.prompts[0] for g in r.guidance)
    assert "   3| PermitRootLogin yes" in engine.prompts[0]


def test_long_config_is_cut_for_the_model_and_rules_see_everything():
    text = "\n".join(f"# filler line {i}" for i in range(3000)) + "\nPermitRootLogin yes\n"
    engine = constant({"findings": [{"line_start": 3001, "line_end": 3001, "severity": "high", "title": "x", "why": "y"}]})
    r = review_config(text, "sshd", use_model=True, engine=engine, store=False)
    assert [f.rule_id for f in r.findings] == ["SSHD-ROOT-LOGIN"] and r.findings[0].line_start == 3001
    assert any(w.kind == "truncated" for w in r.warnings)
    assert r.rejected and "was shown lines" in r.rejected[0].reason


def test_runnable():
    from secfm.workflows import review_runnable

    out = review_runnable(store=False).invoke({"text": SSHD, "use_model": False})
    assert isinstance(out, ConfigReview) and len(out.findings) == 2


def test_batch_review_runs_one_generation():
    engine = constant({"findings": []})
    calls = []
    original = engine.chat

    def chat(conversations, params=None):
        calls.append(len(conversations))
        return original(conversations, params)

    engine.chat = chat
    from secfm.workflows import review_configs

    out = review_configs([SSHD, ("FROM ubuntu:latest\nUSER nobody\n", "auto", "Dockerfile")], use_model=True, engine=engine, store=False)
    assert [r.kind for r in out] == ["sshd", "dockerfile"] and calls == [2]
    assert out[1].findings[0].rule_id == "DOCKER-LATEST-TAG" and all(r.model.status == "ok" for r in out)


def test_model_findings_must_be_about_the_cited_lines():
    from secfm.workflows.review import grounded

    assert grounded("Root login allowed", "PermitRootLogin yes")
    assert not grounded("Security issue", "Port 22")
    engine = constant({"findings": [{"line_start": 2, "line_end": 2, "severity": "critical", "title": "Security", "why": "This is critical."}]})
    r = review_config(SSHD, use_model=True, engine=engine, store=False)
    assert all(f.source == "rule" for f in r.findings)
    assert r.rejected[0].reason == "does not refer to anything in the cited lines"
