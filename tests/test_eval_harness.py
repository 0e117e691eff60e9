"""The one evaluation harness (secfm.evals.harness): the gold sets and training's held-out checks are
registered tasks beside the CTIBench ones, and their own commands are aliases over it (same numbers).
The train-heldout alias is checked on the tiny model in tests/test_training.py."""

from __future__ import annotations

import json

import pytest
from test_workflows_cli import home, run  # noqa: F401 - fixture

from secfm.errors import SecfmError

#: what differs between two runs of the same settings: where they went, when, and how long they took
RUN_ONLY = {"command", "timings", "finished", "created", "provenance", "settings", "latency_s", "headline"}


def secfm(*args: str) -> tuple[int, str, str]:
    proc = run(*args)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def _same_figures(a: dict, b: dict) -> None:
    assert {k: v for k, v in a.items() if k not in RUN_ONLY} == {k: v for k, v in b.items() if k not in RUN_ONLY}


def test_gold_sets_and_heldout_checks_are_registered_tasks_of_the_harness():
    from secfm.evals.harness import figures_of, run_task, task_settings
    from secfm.evals.specs import PipelineTaskSpec, all_tasks, get_registered_task, registered_tasks
    from secfm.training.evaluate import HeldoutSettings
    from secfm.workflows.evaluate import EvalSettings

    tasks = registered_tasks()
    assert {"workflows", "chat", "train-heldout"} <= set(tasks) and set(all_tasks()) < set(tasks)
    assert {tasks[n].kind for n in ("workflows", "chat", "train-heldout")} == {"pipeline"}
    assert {tasks[n].kind for n in all_tasks()} == {"ctibench"}
    assert get_registered_task("cti-mcq").name == "cti-mcqa"  # CTIBench aliases still resolve
    settings = task_settings("workflows", {"out": "run", "use_model": "false", "limit": "3"})
    assert isinstance(settings, EvalSettings) and settings.use_model is False and settings.limit == 3
    held = task_settings("train-heldout", {"out": "r.json", "corpus": "c", "sft": "s", "adapters": ["a"]})
    assert isinstance(held, HeldoutSettings) and held.adapters == ["a"]
    assert task_settings("cti-rcm", {"out": "r", "exclude_sources": "G0007,S0002"}).exclude_sources == ("G0007", "S0002")
    with pytest.raises(SecfmError, match="task workflows has no setting colour"):
        task_settings("workflows", {"out": "run", "colour": "red"})
    with pytest.raises(SecfmError, match="task workflows: limit: "):
        task_settings("workflows", {"out": "run", "limit": "many"})
    with pytest.raises(SecfmError, match="task chat takes ChatEvalSettings settings, not EvalSettings"):
        run_task("chat", settings)
    with pytest.raises(SecfmError, match="unknown task 'bleu-42'.*train-heldout"):
        get_registered_task("bleu-42")
    spec = tasks["train-heldout"]
    assert isinstance(spec, PipelineTaskSpec) and spec.samples_path("r/x.json").name == "x.samples.jsonl"
    runs = {"runs": {"base": {"perplexity": {"perplexity": 9.5}}, "base + a": {"perplexity": {"perplexity": 7.0}}}}
    assert figures_of(spec, runs)["perplexity"] == {"base": 9.5, "base + a": 7.0}
    assert spec.figures["perplexity"].higher_is_better is False
    code, out, err = secfm("eval", "tasks", "--json")
    assert code == 0, err
    listed = {row["task"]: row for row in json.loads(out)}
    assert listed["chat"]["command"] == "secfm eval chat" and listed["train-heldout"]["command"] == "secfm train eval"
    assert listed["cti-vsp"]["figures"]["mad"]["higher_is_better"] is False
    code, _, err = secfm("eval", "run", "workflows", "--out", "never-written", "--set", "use_model")
    assert code != 0 and err.strip().splitlines()[-1] == "secfm: error: --set expects KEY=VALUE (got 'use_model')"


def test_a_pipeline_task_without_a_command_gets_one_from_its_settings(monkeypatch):
    """`secfm eval train-heldout`: one option per field of the task's settings dataclass, run through the harness."""
    from secfm.evals import cli as evals_cli
    from secfm.training.evaluate import HeldoutSettings

    seen = []
    monkeypatch.setattr(evals_cli, "_run_and_print", lambda spec, settings, allow_busy: seen.append((spec.name, settings)))
    code, _, err = secfm("eval", "train-heldout", "--out", "r.json", "--corpus", "c", "--sft", "s", "--adapters", "a1",
                         "--adapters", "a2", "--no-bf16", "--max-mcq", "5")
    assert code == 0, err
    assert seen == [("train-heldout", HeldoutSettings(out="r.json", corpus="c", sft="s", adapters=["a1", "a2"], max_mcq=5,
                                                      bf16=False))]
    code, _, err = secfm("eval", "train-heldout", "--out", "r.json", "--sft", "s")
    assert code != 0 and "--corpus" in err


def test_eval_workflows_is_an_alias_of_the_registered_task(home, tmp_path):
    a, b = tmp_path / "alias", tmp_path / "task"
    code, out, err = secfm("eval", "workflows", "--no-model", "--no-kb", "--no-head", "--limit", "1", "--out", str(a))
    assert code == 0, err
    code, out2, err = secfm("eval", "run", "workflows", "--out", str(b), "--set", "use_model=false", "--set", "use_kb=false",
                            "--set", "use_head=false", "--set", "limit=1")
    assert code == 0, err
    assert out.splitlines()[0] == out2.splitlines()[0]  # the same summary line
    assert f"samples: {b / 'predictions.jsonl'}" in out2
    alias, task = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    _same_figures(alias, task)
    assert alias["headline"] == task["headline"] and task["provenance"]["data"]
    assert (a / "predictions.jsonl").read_text() == (b / "predictions.jsonl").read_text()
    code, out, err = secfm("eval", "report", str(a), str(b), "--out", str(tmp_path / "report"))  # the harness compares them
    assert code == 0, err
    report = (tmp_path / "report" / "report.md").read_text()
    value = alias["triage"]["severity_accuracy"]
    assert f"| alias | workflows | - | triage_severity_accuracy | {value:.4g} | higher |" in report
    assert "| task | workflows | - | invented_entity_rate | n/a | lower |" in report


def test_eval_chat_is_an_alias_of_the_registered_task(home, tmp_path):
    a, b = tmp_path / "alias", tmp_path / "task"
    code, out, err = secfm("eval", "chat", "--no-model", "--no-kb", "--limit", "1", "--split", "all", "--allow-busy",
                           "--out", str(a))
    assert code == 0, err
    code, out2, err = secfm("eval", "run", "chat", "--out", str(b), "--set", "use_model=false", "--set", "use_kb=false",
                            "--set", "limit=1", "--set", "split=all", "--allow-busy")
    assert code == 0, err
    alias, task = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    _same_figures(alias, task)
    assert alias["fact_recall"]["value"] > 0 and task["provenance"]["command"].startswith("secfm eval chat")
    rows = [json.loads((d / "predictions.jsonl").read_text()) for d in (a, b)]
    assert [[(t["facts"], t["found"], t["invented_ids"]) for t in r["turns"]] for r in rows][0] == \
        [[(t["facts"], t["found"], t["invented_ids"]) for t in r["turns"]] for r in rows][1]
