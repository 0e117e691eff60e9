"""Every cookbook recipe runs, as a user runs it, on the embedded default (so none can rot)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COOKBOOK = ROOT / "cookbook"

pytestmark = pytest.mark.slow


def run_recipe(name: str, *args: str, timeout: int = 900) -> str:
    proc = subprocess.run([sys.executable, str(COOKBOOK / name), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_recipes_only_import_the_public_api():
    allowed = ("secfm.engines", "secfm.workflows", "secfm.evals", "secfm.training", "secfm.knowledge", "secfm.text")
    for recipe in sorted(COOKBOOK.glob("[0-9][0-9]_*.py")):
        for line in recipe.read_text().splitlines():
            if line.startswith(("from secfm", "import secfm")):
                module = line.split()[1]
                assert module.startswith(allowed), f"{recipe.name} imports {module}"
        assert recipe.read_text().startswith('"""Recipe'), f"{recipe.name} needs its why-and-when docstring"


def test_01_quickstart():
    out = run_recipe("01_quickstart.py", "--max-new-tokens", "8")
    assert "completion:" in out and "chat:" in out and "streamed" in out


def test_02_zero_shot_classification_reports_accuracy():
    out = run_recipe("02_zero_shot_classification.py", "--limit", "8")
    assert "raw accuracy on 8 labelled texts" in out and "calibrated accuracy" in out


def test_03_rank_log_lines_reports_precision_at_k():
    out = run_recipe("03_rank_log_lines.py", "--k", "3", "--limit", "10")
    assert "precision@3:" in out


def test_08_serve_and_call():
    from secfm.serving import free_port

    out = run_recipe("08_serve_and_call.py", "--port", str(free_port()))
    assert "completion:" in out and "streamed chat:" in out and "engine:" in out


def test_09_quantized_inference_writes_the_table(tmp_path):
    out = tmp_path / "quant.json"
    printed = run_recipe("09_quantized_inference.py", "--items", "4", "--decode-tokens", "4",
                         "--variants", "fp32", "int8-dynamic", "--out", str(out), "--allow-busy")
    result = json.loads(out.read_text())
    rows = {r["variant"]: r for r in result["variants"]}
    assert rows["fp32"]["mcqa_items"] == 4 and rows["fp32"]["answers_same_as_fp32"] == 4
    assert rows["int8-dynamic"]["tokens_per_s"] > 0
    assert "| int8-dynamic |" in printed and out.with_suffix(".md").is_file()
    assert rows["int8-dynamic"]["weights_mib"] < rows["fp32"]["weights_mib"]  # memory explained: weights vs RSS
    assert result["provenance"]["command"] and result["provenance"]["allow_busy"] is True


def test_04_triage_summarize_review():
    out = run_recipe("04_triage_summarize_review.py", "--no-model")
    queue = re.findall(r"^ *(\d+)\. \[(\w+) +(\d+)\]", out, flags=re.M)
    assert [int(rank) for rank, _, _ in queue] == list(range(1, 9))  # all eight alerts, ranked
    scores = [int(score) for _, _, score in queue]
    assert scores == sorted(scores, reverse=True) and queue[0][1] == "critical" and queue[-1][1] == "info"
    assert "model skipped" in out
    for audience in ("executive", "analyst"):
        assert f"== summary for the {audience}" in out
    assert out.count("headline: Incident IR-2026-0302") == 2
    assert "http://203.0.113.41/p.ps1" in out and "T1490" in out  # IOCs and ids extracted from the report
    # the seeded misconfigurations, each at its line
    for finding in ("main.tf:lines 19-25: [high] TF-SG-ADMIN-OPEN", "main.tf:line 34: [high] TF-S3-PUBLIC-ACL",
                    "main.tf:line 43: [high] TF-HARDCODED-SECRET", "main.tf:line 44: [medium] TF-STORAGE-UNENCRYPTED"):
        assert finding in out
    assert '  34 |   acl    = "public-read"' in out
    assert "4 findings" in out and out.count("TF-SG-ADMIN-OPEN") == 1  # HTTPS open to all (line 12) is not a finding


def test_05_attack_to_navigator_stix(tmp_path):
    import stix2

    from secfm.workflows.navigator import validate_layer

    out = run_recipe("05_attack_to_navigator_stix.py", "--out", str(tmp_path))
    layer = json.loads((tmp_path / "layer.json").read_text())
    assert validate_layer(layer) == [] and layer["versions"]["layer"] == "4.5"
    found = {t["techniqueID"] for t in layer["techniques"]}
    assert found, "no technique found in the threat report"
    assert all(t["comment"].startswith("score ") and "sentence" in t["comment"] for t in layer["techniques"])  # evidence
    bundle = stix2.parse((tmp_path / "bundle.json").read_text(), allow_custom=False)
    patterns = [o for o in bundle.objects if o.type == "attack-pattern"]
    assert {p.external_references[0].external_id for p in patterns} == found
    assert sum(o.type == "relationship" for o in bundle.objects) == len(found)
    assert f"{len(found)} techniques in threat_report.txt" in out and "valid ->" in out and "valid (strict, interop) ->" in out
    printed = re.findall(r"^(T\d{4}(?:\.\d{3})?) +(0\.\d\d|1\.00) ", out, flags=re.M)
    assert {tid for tid, _ in printed} == found
    assert re.search(r"sentence \d+ \(\d\.\d\d\), chars \d+-\d+: ", out)


def test_06_train_your_own_head_and_lora(tmp_path):
    out = run_recipe("06_train_your_own.py", "--out", str(tmp_path), "--max-steps", "2", "--max-new-tokens", "8")
    manifest = json.loads((tmp_path / "head" / "head.json").read_text())
    assert manifest["base_model"] == "gemma-3-270m" and manifest["task"] == "attack"
    assert manifest["labels"] == ["T1003.001", "T1053.005", "T1059.001", "T1110.003", "T1486", "T1566.001"]
    assert (tmp_path / "head" / "head.safetensors").is_file()
    # the head, reloaded, tags unseen texts: phishing attachment, spraying, LSASS dump, encryption
    predicted = [line.split()[1] if not line.startswith("predict: (none") else None
                 for line in out.splitlines() if line.startswith("predict: ")]
    expected = ["T1566.001", "T1110.003", "T1003.001", "T1486"]
    assert len(predicted) == 4 and sum(p == e for p, e in zip(predicted, expected)) >= 3, out
    assert "extract_attack with your head: T" in out
    summary = json.loads((tmp_path / "lora" / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["train_loss"] > 0
    adapter = tmp_path / "lora" / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    answer = re.search(r"^adapter answer: (.+)$", out, flags=re.M)
    assert answer and answer.group(1).strip()


def test_07_eval_and_model_card(tmp_path):
    out = run_recipe("07_eval_and_model_card.py", "--out", str(tmp_path), "--limit", "8")
    m = re.search(r"^cti-mcqa: accuracy (\d+\.\d)% \(95% CI (\d+\.\d)% to (\d+\.\d)%\), n=8", out, flags=re.M)
    assert m and float(m.group(2)) <= float(m.group(1)) <= float(m.group(3))
    metrics = json.loads((tmp_path / "runs" / "mcqa" / "metrics.json").read_text())
    assert metrics["mode"] == "loglik" and metrics["n"] == 8 and metrics["data"]["rows"] == 240
    assert abs(100 * metrics["figures"]["accuracy"] - float(m.group(1))) < 0.06
    assert len((tmp_path / "runs" / "mcqa" / "predictions.jsonl").read_text().splitlines()) == 8
    header = (tmp_path / "data" / "cti-mcq.tsv").read_bytes().split(b"\r\n")[0].decode()
    assert header.split("\t") == ["URL", "Question", "Option A", "Option B", "Option C", "Option D", "Prompt", "GT"]
    assert re.search(r"^cti-rcm: accuracy .*n=8", out, flags=re.M)
    assert (tmp_path / "report" / "report.md").is_file()
    card = (tmp_path / "model_card" / "README.md").read_text()
    assert card.startswith("---") and "model-index" in card and "CTI-MCQA" in card and "CTI-RCM" in card
    assert f"model card: {tmp_path / 'model_card' / 'README.md'}" in out
