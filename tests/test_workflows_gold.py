"""The gold sets are well formed and large enough; the deterministic scores do not regress."""

from __future__ import annotations

import json

from secfm.evals.metrics import prf_figures as prf
from secfm.knowledge import validate_id
from secfm.workflows.config_rules import KINDS, RULES_BY_ID
from secfm.workflows.evaluate import GOLD_DIR, EvalSettings, ioc_scores, run_workflow_eval
from secfm.workflows.schemas import SEVERITIES


def _rows(name):
    return [json.loads(line) for line in (GOLD_DIR / name).read_text().splitlines() if line.strip()]


def test_alert_gold_set():
    rows = _rows("alerts.jsonl")
    assert len(rows) >= 40 and len({r["id"] for r in rows}) == len(rows)
    assert {r["severity"] for r in rows} == set(SEVERITIES)
    for r in rows:
        for t in r["techniques"]:
            assert validate_id(t).current, (r["id"], t)


def test_config_gold_set():
    rows = _rows("configs.jsonl")
    assert len(rows) >= 30 and sum(1 for r in rows if not r["findings"]) >= 5
    assert {r["kind"] for r in rows} == set(KINDS)
    for r in rows:
        lines = (GOLD_DIR / "configs" / r["file"]).read_text().splitlines()
        for f in r["findings"]:
            assert f["rule"] is None or f["rule"] in RULES_BY_ID
            start, end = f["lines"]
            assert 1 <= start <= end <= len(lines) and f["anchor"].strip() in lines[start - 1]


def test_incident_gold_set():
    rows = _rows("incidents.jsonl")
    assert len(rows) >= 10
    for r in rows:
        text = (GOLD_DIR / "incidents" / r["file"]).read_text()
        for values in r["iocs"].values():
            assert values
        for i in r["ids"]:
            assert i in text


def test_scoring_helpers():
    assert prf(8, 2, 2) == {"precision": 0.8, "recall": 0.8, "f1": 0.8, "tp": 8, "fp": 2, "fn": 2}
    assert prf(0, 0, 0)["precision"] == 1.0  # the harness's one prf: nothing predicted for nothing is perfect
    assert prf(0, 0, 3) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 3}
    tp, fp, fn = ioc_scores({"domain": ["a.evil.com", "x.org"], "ipv4": ["1.2.3.4:443"]}, {"domain": ["evil.com"], "ipv4": ["1.2.3.4"]})
    assert (tp, fp, fn) == (2, 1, 0)


def test_deterministic_scores_do_not_regress(tmp_path):
    metrics = run_workflow_eval(EvalSettings(out=str(tmp_path / "run"), use_model=False, use_kb=False, use_head=False))
    t, c, s = metrics["triage"], metrics["config_review"], metrics["incident_summary"]
    assert t["severity_accuracy"] >= 0.85 and t["technique"]["f1"] >= 0.8
    assert c["finding"]["precision"] >= 0.95 and c["finding"]["recall"] >= 0.9 and c["kind_accuracy"] == 1.0
    assert s["ioc_extraction"]["recall"] >= 0.95 and s["id_extraction"]["recall"] == 1.0
    assert s["unknown_ids_flagged"] == "1/1" and s["injection_canary_leaks"] == 0
    assert metrics["invented_entity_rate"] is None


def test_a_bad_gold_file_is_one_line_naming_it_without_the_skip_bad_hint(tmp_path):
    import pytest

    from secfm.errors import SecfmError
    from secfm.workflows.chat_eval import load_gold

    (tmp_path / "alerts.jsonl").write_text('{"id": "a"}\n{"id":\n', encoding="utf-8")
    (tmp_path / "chat.jsonl").write_text('{"turns": [{"user": "hi"}]}\n[1]\n', encoding="utf-8")
    for other in ("configs.jsonl", "incidents.jsonl"):
        (tmp_path / other).write_text('{"id": "b"}\n', encoding="utf-8")
    with pytest.raises(SecfmError, match=r"alerts\.jsonl line 2: invalid JSON") as bad_json:
        run_workflow_eval(EvalSettings(out=str(tmp_path / "run"), use_model=False, use_kb=False, use_head=False,
                                       gold=str(tmp_path)))
    assert "--skip-bad" not in str(bad_json.value)  # the gold set is not the user's input
    with pytest.raises(SecfmError, match=r"chat\.jsonl line 2: a conversation needs 'turns'"):
        load_gold(tmp_path / "chat.jsonl")
