"""Every cookbook recipe runs, as a user runs it, on the embedded default (so none can rot)."""

from __future__ import annotations

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
    import json

    out = tmp_path / "quant.json"
    printed = run_recipe("09_quantized_inference.py", "--items", "4", "--decode-tokens", "4",
                         "--variants", "fp32", "int8-dynamic", "--out", str(out))
    result = json.loads(out.read_text())
    rows = {r["variant"]: r for r in result["variants"]}
    assert rows["fp32"]["mcqa_items"] == 4 and rows["fp32"]["answers_same_as_fp32"] == 4
    assert rows["int8-dynamic"]["tokens_per_s"] > 0
    assert "| int8-dynamic |" in printed and out.with_suffix(".md").is_file()
