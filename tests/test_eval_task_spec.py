"""A new CTIBench-like task is one YAML file and its data: it gets a `secfm eval NAME` command and runs
through the harness (the metric registry, the run folder, the harness export) with no code change.

The task here is scored in head mode by the shipped CWE head (TF-IDF text features: no language model
loads), on three made-up CVEs (CVE-2099-*) no head trained on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from secfm.errors import SecfmError

TASK_YAML = """\
# a task written for this test: CVE description -> CWE id
name: toy-rcm
title: Toy RCM
description: Root-cause CWE of made-up CVE descriptions (exact match).
hf: {repo: local/toy, config: toy-rcm}
file: toy-rcm.tsv
columns: [URL, Description, Prompt, GT]
system_prompt: You are a cybersecurity expert.
parser: cwe_id
metric: accuracy
modes: [head]
head: {text_column: Description, kind: cwe}
card: {task_type: text-classification, metric_type: accuracy}
"""

ROWS = [
    ("CVE-2099-1001", "SQL injection in the login form of Acme Portal 2.1 lets remote attackers run arbitrary SQL "
                      "commands via the username parameter.", "CWE-89"),
    ("CVE-2099-1002", "Cross-site scripting (XSS) in the comment field of Acme Blog 3.0 allows remote attackers to "
                      "inject arbitrary web script or HTML.", "CWE-79"),
    ("CVE-2099-1003", "A path traversal in the download handler of Acme Files 1.2 lets remote attackers read "
                      "arbitrary files via ../ sequences in the name parameter.", "CWE-22"),
]


def _task(tmp_path: Path) -> tuple[Path, Path]:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "toy-rcm.yaml").write_text(TASK_YAML, encoding="utf-8")
    data = tmp_path / "toy-rcm.tsv"
    lines = ["URL\tDescription\tPrompt\tGT"]
    lines += [f"https://example.test/{cve}\t{text}\tMap it to a CWE: {text}\t{gold}" for cve, text, gold in ROWS]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tasks, data


def _secfm(*args: str, tasks: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SECFM_EVAL_TASKS": str(tasks)}
    return subprocess.run([sys.executable, "-m", "secfm.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, stdin=subprocess.DEVNULL)


def test_a_new_task_from_one_yaml_file_runs_through_secfm_eval(tmp_path):
    tasks, data = _task(tmp_path)
    listing = _secfm("eval", "--help", tasks=tasks)
    assert listing.returncode == 0 and "toy-rcm" in listing.stdout and "cti-rcm" in listing.stdout
    out = tmp_path / "run"
    proc = _secfm("eval", "toy-rcm", "--data", str(data), "--out", str(out), tasks=tasks)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "toy-rcm (head" in proc.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "toy-rcm" and m["metric"] == "accuracy" and m["headline"] == "accuracy"
    assert m["higher_is_better"] is True and m["n"] == 3 and not m["contaminated"]
    assert 0 <= m["figures"]["accuracy"] <= 1 and "accuracy_strict" in m["figures"]
    assert m["baselines"]["majority"]["value"] == pytest.approx(1 / 3, abs=1e-6)
    assert m["command"].startswith("secfm eval toy-rcm ")
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in records] == [gold for _, _, gold in ROWS]
    assert all(r["status"] == "ok" and r["parsed"].startswith("CWE-") for r in records)
    assert m["figures"]["accuracy"] == pytest.approx(sum(r["correct"] for r in records) / 3, abs=1e-6)
    samples = list(out.glob("samples_toy_rcm_*.jsonl"))  # the lm-evaluation-harness layout too
    assert len(samples) == 1 and len(samples[0].read_text().splitlines()) == 3


def test_a_bad_task_spec_or_metric_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from secfm.evals.registry import get_metric, in_points, metric_names
    from secfm.evals.specs import TASKS_ENV, _load_tasks, all_tasks

    assert {"accuracy", "mad", "micro_f1", "taa"} <= set(metric_names())
    assert get_metric("mad").higher_is_better is False and in_points("mad_strict") and not in_points("exact_vector")
    with pytest.raises(SecfmError, match="unknown metric 'bleu'"):
        get_metric("bleu")
    tasks, _ = _task(tmp_path)
    monkeypatch.setenv(TASKS_ENV, str(tasks))
    assert "toy-rcm" in all_tasks() and "cti-rcm" in all_tasks()
    import inspect

    from secfm.evals.cli import _task_command

    options = {name: set(inspect.signature(_task_command(spec)).parameters) for name, spec in all_tasks().items()}
    assert "head" in options["toy-rcm"] and "labels" not in options["toy-rcm"]  # from the spec's modes and columns
    assert "labels" in options["cti-taa"] and "head" not in options["cti-taa"] and "head" not in options["cti-mcqa"]
    (tasks / "toy-rcm.yaml").write_text(TASK_YAML.replace("metric: accuracy", "metric: bleu"), encoding="utf-8")
    _load_tasks.cache_clear()
    with pytest.raises(SecfmError, match=r"bad task spec .*toy-rcm\.yaml: metric: .*unknown metric 'bleu'"):
        all_tasks()
    (tasks / "toy-rcm.yaml").write_text(TASK_YAML.replace("toy-rcm", "cti-rcm"), encoding="utf-8")
    _load_tasks.cache_clear()
    with pytest.raises(SecfmError, match="task 'cti-rcm' is defined twice"):
        all_tasks()
    monkeypatch.setenv(TASKS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(SecfmError, match="is not a folder"):
        all_tasks()
    import typer

    from secfm.evals.cli import register

    app = typer.Typer()
    register(app)  # a bad folder warns and keeps the shipped tasks' commands (every other command still runs)
    assert "is not a folder" in capsys.readouterr().err
    group = next(g.typer_instance for g in app.registered_groups if g.name == "eval")
    assert "cti-rcm" in {c.name for c in group.registered_commands}
    _load_tasks.cache_clear()


def test_no_module_branches_on_a_metric_name():
    """Metrics live in the registry: nothing else compares a metric's name (a new metric is one entry)."""
    import re

    root = Path(__file__).resolve().parents[1]
    branch = re.compile(r"""metric\)?\s*(==|!=|in)\s*\(?["']|\.startswith\(["']mad|HIGHER_IS_BETTER|HARNESS_METRIC""")
    offenders = [f"{p.relative_to(root)}:{n}" for package in ("evals", "workflows", "training", "secfm", "app")
                 for p in (root / package).rglob("*.py") if p.name != "registry.py"
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if branch.search(line)]
    assert not offenders, offenders
